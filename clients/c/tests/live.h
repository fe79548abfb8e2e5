/* test-live's shared part: the CHECK macros, the harness (live_support.c) and the check groups
 * (live_*.c) that main (test_live.c) runs in order. Include it first, after _GNU_SOURCE. */
#ifndef FDN_TEST_LIVE_H
#define FDN_TEST_LIVE_H

#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h" /* fdn_open_stat, which the proof checks blind */
#include "fdn_client.h"

extern int failures;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: CHECK(%s): ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fputc('\n', stderr);                                           \
            failures++;                                                    \
        }                                                                  \
    } while (0)

/* The call is refused with `want` and a message containing `says`. */
#define REFUSED_ONLY(call, want, says)                                                                     \
    do {                                                                                                   \
        memset(&err, 0, sizeof err);                                                                       \
        enum fdn_status st_ = (call);                                                                      \
        CHECK(st_ == (want) && err.code == (want) && strstr(err.message, (says)), "%s: %s %s", #call,     \
              fdn_strerror(st_), err.message);                                                             \
    } while (0)
/* ... and the client still works. */
#define REFUSED(call, want, says, c)       \
    do {                                   \
        REFUSED_ONLY(call, want, says);    \
        echo((c), #call);                  \
    } while (0)

/* live_support.c: servers, the echo call, a server's region, the wrapped malloc */
pid_t ready_server(char *const argv[]);
pid_t server_of(const char *python, const char *script, const char *name, const char *channels);
pid_t echo_server_of(const char *python, const char *name, const char *channels);
pid_t echo_server(const char *python, const char *name);
void kill_server(pid_t pid);
void remove_objects(const char *name);
size_t data_segments(const char *name, struct stat *st);
extern int32_t x[2];
extern const uint64_t shape[1];
void echo(fdn_client *c, const char *what);
struct fdn_region_header *map_region(const char *name, size_t *size);
struct fdn_channel *own_channel(struct fdn_region_header *r, const struct fdn_channel *skip);
int freed(struct fdn_channel *ch);
int hang(pid_t server, struct fdn_region_header *r);
int resume(pid_t server, const char *name);
int owned(struct fdn_region_header *r);
int file_in(const char *dir, const char *model, const char *what);
/* fail unless c counted `reconnects` and `resends` (spec 10.5); `when` names the moment */
void counts_are(const fdn_client *c, uint64_t reconnects, uint64_t resends, const char *when);
extern __thread int malloc_fails;

/* live_connect.c */
fdn_client *allocation_checks(const char *name);
void segment_step_failure_checks(const char *name);
void control_open_failure_checks(const char *name);
void close_checks(const char *name);
void stopping_checks(const char *name, fdn_client *c);
void semaphore_failure_checks(const char *python);
void cycle_checks(const char *name);

/* live_calls.c */
void misuse_checks(const char *name, fdn_client *c);
void call_error_checks(const char *name);
void late_loan_checks(const char *name, pid_t server);
void max_response_checks(const char *python);
void broken_server_checks(const char *python);

/* live_liveness.c */
void late_answer_checks(const char *python);
void late_answer_spin_checks(const char *python);
void late_answer_gone_checks(const char *python);
void hung_checks(const char *python);
void mutex_checks(const char *python);

/* live_resend.c */
void restart_checks(const char *python);
void dying_checks(const char *python);
void sent_again_once_checks(const char *python);
void abandoned_checks(const char *python);
void moved_twice_checks(const char *python);
void shared_name_checks(const char *python);
void hung_call_gone_checks(const char *python);

/* live_counters.c */
void counters_thread_checks(const char *python);

/* live_proof.c */
void proof_checks(const char *python);

/* live_fork.c */
void fork_checks(const char *python);

#endif
