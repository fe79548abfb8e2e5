/* client.h: the client's state, shared by the library's sources (not part of the API). */
#ifndef FDN_CLIENT_STATE_H
#define FDN_CLIENT_STATE_H

#include <pthread.h>
#include <semaphore.h>
#include <sys/types.h>

#include "internal.h"

struct fdn_client {
    char name[FDN_SERVER_NAME_MAX + 1];
    struct fdn_options opts;
    /* the connection: control segment and semaphores of one server instance */
    int connected;
    uint8_t *ctl;
    size_t ctl_size;
    struct fdn_region_header *region;
    sem_t *mutex, *bell;
    uint32_t server_pid;
    uint64_t server_start, instance_id, max_request_bytes, default_capacity;
    mode_t mode;
    /* the claimed channel */
    uint32_t index;
    struct fdn_channel *ch;
    sem_t *sem;
    uint64_t seq;
    /* the server died with the last request published but never dispatched (spec 10.3): no
     * handler ran it, and it may be sent again (set when a wait finds the server dead, cleared as a request
     * is published) */
    int unsent;
    uint8_t *data;
    uint64_t req_cap, resp_cap, used;
    char data_name[64];
    uint64_t next_id;
    /* the loan: its model and laid-out tensors */
    int loaned;
    uint64_t loan_end;
    uint64_t loan_ended; /* the request id of an fdn_loan_infer that failed still with the server */
    char loan_model[FDN_NAME_SIZE];
    struct fdn_request_fields req; /* reused for every request: no allocation per call */
    struct fdn_response_fields resp;
    /* the last response's header and payload, copied out of the area before any check reads it
     * (grown as needed, reused: no allocation per call in the steady state) */
    uint8_t *snap;
    uint64_t snap_cap;
    /* spec 10.5: whether a connection was ever made (the next is a reconnect), and the counts,
     * stored and read with relaxed atomics (fdn_client_counters may run in another thread) */
    int ever_connected;
    int found_gone; /* the last connect failed because the region's server is gone (10.3) */
    struct fdn_counters counts;
    unsigned long forks; /* the process's fork count when it connected (fdn_forked) */
};

uint64_t fdn_now_ns(void); /* CLOCK_MONOTONIC, the clock of deadlines */
int fdn_server_alive(const struct fdn_client *c); /* section 10.3 */
int fdn_server_gone(const struct fdn_client *c);  /* section 10.3: its process proven dead */
/* section 10.3: process pid, started at `started`, proven gone (unreadable /proc: kill(pid, 0)) */
int fdn_process_gone(uint32_t pid, uint64_t started);
/* Fields 3 (the state) and 22 (the start time) of /proc/PID/stat: 1; 0 if there is no such
 * process; -1 (errno) if it cannot be told (liveness.c says which errors) */
int fdn_read_stat(uint32_t pid, char *state, uint64_t *start);
/* whether process pid, started at `started`, is a zombie seen from here (the server, dead) */
int fdn_zombie_here(uint32_t pid, uint64_t started);
/* whether a live process holds the flock on the lock file /dev/shm/fdn-NAME.lock */
int fdn_lock_file_held(const char *name);
/* opens /proc/PID/stat (O_RDONLY | O_CLOEXEC), or -1 and errno; a test makes it fail as at the
 * process's file limit (EMFILE), which says nothing of the server's death */
extern int (*fdn_open_stat)(uint32_t pid);
/* whether /proc is mounted (a stat of /proc/self): without it an ENOENT from /proc/PID/stat proves
 * no death; a test makes it say no */
extern int (*fdn_proc_mounted)(void);
/* shm_open, as opening the control segment and creating a data segment call it; a test makes it
 * fail as a full /dev/shm (ENOSPC: a tmpfs out of inodes) or a file limit (EMFILE) does */
extern int (*fdn_shm_open)(const char *name, int flags, mode_t mode);
/* the steps of creating a data segment after shm_open, as it calls them; a test makes each fail as
 * a full /dev/shm, a file limit, a size no file holds or a signal (posix_fallocate's EINTR) does */
extern int (*fdn_fchmod)(int fd, mode_t mode);
extern int (*fdn_ftruncate)(int fd, off_t size);
extern int (*fdn_posix_fallocate)(int fd, off_t offset, off_t len); /* returns the error number */
/* posix_fallocate calls in a row a signal may interrupt (EINTR) before a data segment's creation
 * fails OVERLOADED (spec 10.1 step 6) */
#define FDN_FALLOCATE_TRIES 100
extern void *(*fdn_mmap)(void *addr, size_t len, int prot, int flags, int fd, off_t offset);
/* section 10.3: whether the server counts hung, and how long it has not beaten (*silent_ms) */
int fdn_hung(const struct fdn_client *c, uint64_t *silent_ms);
int fdn_sem_wait_ns(sem_t *sem, uint64_t timeout_ns); /* 0 if a post was taken */
uint64_t fdn_pages(uint64_t n); /* n rounded up to whole pages, at least one */
/* Create a data segment with these capacities and publish it (10.1, "Growing"). */
enum fdn_status fdn_attach(struct fdn_client *c, uint64_t req_cap, uint64_t resp_cap, struct fdn_error *err);
/* Unmap the data segment and unlink it unless another client of this process made one of its name since. */
void fdn_drop_data(struct fdn_client *c);
/* How many forks this process is down from the one that loaded the library (data.c's atfork child
 * handler counts them), and the once that registers those handlers (the first connect or segment). */
extern unsigned long fdn_forks;
extern pthread_once_t fdn_named_once;
/* 10.1; `deadline` (monotonic ns, 0 for none): the calling request's, which bounds the waits for a
 * hung server's beat (10.3) and for the region mutex as connect_timeout_ms does */
enum fdn_status fdn_connect_now(struct fdn_client *c, uint64_t deadline, struct fdn_error *err);
void fdn_disconnect(struct fdn_client *c); /* unmap, close, unlink the data segment */
/* Whether c was connected in another process than this one: this is a child forked since, and
 * c's channel and data segment are the parent's. */
int fdn_forked(const struct fdn_client *c);
/* Register the pthread_atfork handlers that hold the data segments' records across a fork and
 * count forks (fdn_forked); run under a pthread_once by the first connect and segment. Registered
 * twice (as in a child forked while its parent ran that once), each handler does its work once. */
void fdn_fork_handlers_register(void);
/* A forked child's copy of a client: unmap and close this process's handles only, neither giving
 * the channel back nor unlinking the data segment (the parent's, in use), and leave c disconnected,
 * this process's own: its next call connects anew. */
void fdn_forget(struct fdn_client *c);

/* wait.c: wait until server_seq == s (spin first if `spin`), up to `deadline` (0: none), checking
 * the server's liveness between slices (section 7.2) */
enum fdn_status fdn_wait_seq(struct fdn_client *c, uint64_t s, uint64_t deadline, int spin, struct fdn_error *err);
/* wait.c: wait until the channel is idle (an abandoned request's late answer in, spec 7.5) */
enum fdn_status fdn_wait_idle(struct fdn_client *c, uint64_t deadline, struct fdn_error *err);
/* check.c: a call's arguments, checked before anything is written */
enum fdn_status fdn_check_model(const char *model, struct fdn_error *err);
enum fdn_status fdn_check_tensor(const char *what, uint32_t i, const char *name, uint32_t dtype, uint32_t ndim,
                                 const uint64_t *shape, uint64_t *bytes, struct fdn_error *err);
enum fdn_status fdn_check_inputs(const struct fdn_input *inputs, uint32_t input_count, struct fdn_error *err);
enum fdn_status fdn_set_call(struct fdn_client *c, const struct fdn_call *call, struct fdn_error *err);

#endif
