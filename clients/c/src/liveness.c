/* liveness.c: the monotonic clock, process liveness and a hung server (section 10.3), timed waits. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

/* --- time and liveness ----------------------------------------------------------------------- */
uint64_t fdn_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int open_stat(uint32_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    return open(path, O_RDONLY | O_CLOEXEC);
}

int (*fdn_open_stat)(uint32_t pid) = open_stat;

/* A stat of /proc/self takes no file descriptor: it tells a mounted /proc even at EMFILE. */
static int proc_mounted(void) {
    struct stat st;
    return stat("/proc/self", &st) == 0;
}

int (*fdn_proc_mounted)(void) = proc_mounted;

/* Fields 3 (the state: Z or X for a zombie, dead but not yet reaped) and 22 (the start time in
 * clock ticks since boot) of /proc/PID/stat: 1; 0 if there is no such process (ENOENT where /proc
 * itself is there, or ESRCH as it is reaped); -1 if it cannot be told (EMFILE at this process's
 * file limit, ENFILE, ENOMEM, no /proc mounted, a file that does not parse). The command name,
 * field 2, may hold spaces and ')': only what follows the last ')' is split. */
int fdn_read_stat(uint32_t pid, char *state, uint64_t *start) {
    char buf[1024];
    int fd = fdn_open_stat(pid);
    if (fd < 0) {
        int why = errno;
        int gone = why == ESRCH || (why == ENOENT && fdn_proc_mounted());
        errno = why;
        return gone ? 0 : -1;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    int why = errno;
    close(fd);
    errno = why;
    if (n < 0) return why == ESRCH ? 0 : -1;
    errno = EINVAL; /* what follows: a stat file that does not parse */
    if (n == 0) return -1;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ' || !p[2]) return -1;
    *state = p[2];
    p++;
    for (int field = 2; field < 21 && p; field++) p = strchr(p + 1, ' ');
    if (!p) return -1;
    *start = strtoull(p + 1, NULL, 10);
    return 1;
}

/* kill(pid, 0) says no process pid exists (ESRCH); EPERM is one of another user's. */
static int no_such_process(uint32_t pid) {
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* The one liveness classifier (section 10.3): 1 on proof that process pid, started at `started`,
 * has ended: no /proc entry (ENOENT where /proc is mounted; ESRCH as it is reaped), a zombie, or
 * another start time. A stat file that cannot be read for another reason (EMFILE at this
 * process's file limit, ENFILE, ENOMEM, EACCES, no /proc at all) proves nothing: kill(pid, 0),
 * which needs no descriptor, settles it (ESRCH: gone; success or EPERM: alive, its start time and
 * whether it is a zombie unchecked then). Taking such a read for death failed a call to a live
 * server gone. */
int fdn_process_gone(uint32_t pid, uint64_t started) {
    char state;
    uint64_t start;
    if (!pid || pid > INT32_MAX) return 1; /* no pid_t holds it: no such process (never kill(-1)) */
    int known = fdn_read_stat(pid, &state, &start);
    if (known == 0) return 1;
    if (known == 1) return state == 'Z' || state == 'X' || start != started;
    return no_such_process(pid);
}

/* Section 10.3: READY or STOPPING, and the process server_pid not proven gone. */
int fdn_server_alive(const struct fdn_client *c) {
    uint32_t state = FDN_LOAD(&c->region->state);
    if (state != FDN_READY && state != FDN_STOPPING) return 0;
    return !fdn_process_gone(c->server_pid, c->server_start);
}

/* Section 10.3: proof that the server's process has ended (fdn_process_gone, the classifier
 * fdn_server_alive asks too). Not alive is less: a region STOPPED may have its process alive,
 * whose serving loop may yet dispatch; a request sent again to it would run twice. */
int fdn_server_gone(const struct fdn_client *c) { return fdn_process_gone(c->server_pid, c->server_start); }

/* Whether process pid, started at `started`, is a zombie seen from here (dead, not yet reaped): the
 * server itself, its other threads perhaps still exiting with its lock file held (a SIGKILL ends
 * the main thread first; the last one unmaps the memory, a model's gigabytes for a tenth of a
 * second and more, then closes the files). */
int fdn_zombie_here(uint32_t pid, uint64_t started) {
    char state;
    uint64_t start;
    if (!pid || pid > INT32_MAX || fdn_read_stat(pid, &state, &start) != 1) return 0;
    return (state == 'Z' || state == 'X') && start == started;
}

/* Does a live process hold the flock on the server's lock file /dev/shm/fdn-NAME.lock? Only a
 * regular file is asked (no symlink followed, no wait on a fifo); anything else is "no". */
int fdn_lock_file_held(const char *name) {
    char path[96];
    snprintf(path, sizeof path, "/dev/shm/fdn-%s.lock", name);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat st;
    int held = 0;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
        held = flock(fd, LOCK_SH | LOCK_NB) < 0 && (errno == EWOULDBLOCK || errno == EAGAIN);
    close(fd); /* drops the shared lock if it was taken */
    return held;
}

/* Wait up to timeout_ns for a post: 0 if taken. CLOCK_MONOTONIC where glibc has sem_clockwait
 * (the wall clock may jump); the caller re-checks its condition either way (section 7.2). */
int fdn_sem_wait_ns(sem_t *sem, uint64_t timeout_ns) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
    const clockid_t clk = CLOCK_MONOTONIC;
#define FDN_SEM_WAIT(s, ts) sem_clockwait((s), CLOCK_MONOTONIC, (ts))
#else
    const clockid_t clk = CLOCK_REALTIME;
#define FDN_SEM_WAIT(s, ts) sem_timedwait((s), (ts))
#endif
    struct timespec ts;
    clock_gettime(clk, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + timeout_ns;
    ts.tv_sec += (time_t)(ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    int rc;
    while ((rc = FDN_SEM_WAIT(sem, &ts)) < 0 && errno == EINTR) {
    }
    return rc;
}

uint64_t fdn_pages(uint64_t n) {
    /* the last whole page for n past it: rounding up wrapped to one page (a capacity of
     * UINT64_MAX - 10 became 4096), this fails as too large where it is used */
    if (n > UINT64_MAX - (FDN_PAGE - 1)) return UINT64_MAX / FDN_PAGE * FDN_PAGE;
    uint64_t p = (n + FDN_PAGE - 1) / FDN_PAGE * FDN_PAGE;
    return p < FDN_PAGE ? FDN_PAGE : p;
}

/* Section 10.3: whether the server counts as hung (its heartbeat is older than 10 intervals, and
 * at least 1 s: a stopped or stalled process), and if so how long it has not beaten (*silent_ms).
 * The server beats from a thread of its own, so a model that runs for seconds does not make it
 * hung. */
int fdn_hung(const struct fdn_client *c, uint64_t *silent_ms) {
    uint64_t beat = FDN_LOAD(&c->region->heartbeat_ns);
    uint64_t interval = FDN_LOAD(&c->region->heartbeat_interval_ms);
    uint64_t stale = 10 * (interval ? interval : 1) * 1000000u;
    if (stale < 1000000000u) stale = 1000000000u;
    uint64_t now = fdn_now_ns();
    if (!beat || now <= beat + stale) return 0;
    *silent_ms = (now - beat) / 1000000u;
    return 1;
}
