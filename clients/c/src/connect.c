/* connect.c: attach to a server, claim a channel, its data segment, liveness (section 10). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
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
static int read_stat(uint32_t pid, char *state, uint64_t *start) {
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
    int known = read_stat(pid, &state, &start);
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
static int zombie_here(uint32_t pid, uint64_t started) {
    char state;
    uint64_t start;
    if (!pid || pid > INT32_MAX || read_stat(pid, &state, &start) != 1) return 0;
    return (state == 'Z' || state == 'X') && start == started;
}

/* Does a live process hold the flock on the server's lock file /dev/shm/fdn-NAME.lock? Only a
 * regular file is asked (no symlink followed, no wait on a fifo); anything else is "no". */
static int lock_file_held(const char *name) {
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

/* --- the data segment ------------------------------------------------------------------------ */
/* This process's data segments by name, and the client that made each (spec 10.1 step 6). A name
 * is the server's, the channel's index, the pid and a generation, so after a restart under the
 * name a client of this process that claims a channel of the new server makes the very name
 * another client still holds on the dead server's region: it replaces that segment, and the other,
 * dropping its dead connection, unlinked the name, the new owner's segment by then (the server
 * parked that channel; its call ran into its deadline). A client unlinks a name only while the
 * segment is its own: one recorded as another client's is left to it. A name that could not be
 * recorded (no memory) is unlinked as before. Reset in a forked child (its pid makes new names). */
struct named {
    char name[64];
    const struct fdn_client *owner;
};
static struct named *named;
static size_t named_len, named_cap;
static pthread_mutex_t named_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t named_once = PTHREAD_ONCE_INIT;

/* How many forks this process is down its line of descent from the one that loaded the library:
 * a client made (or forgotten, fdn_forget) at another count is its parent's copy. Written only in a
 * forked child's atfork handler, where that child has one thread. */
static unsigned long forks;

/* Whether the forking thread holds named_lock across its fork. A child forked while another thread
 * of its parent ran named_once's routine runs it again (glibc), so there the handlers may be
 * registered twice and each runs twice per fork: the lock is taken once (taken again, the forking
 * thread waited for itself), given back once, and the child's reset done once. */
static __thread int named_held;

static void named_lock_now(void) {
    if (named_held) return;
    pthread_mutex_lock(&named_lock);
    named_held = 1;
}
static void named_unlock_now(void) {
    if (!named_held) return;
    named_held = 0;
    pthread_mutex_unlock(&named_lock);
}
static void named_forget_all(void) { /* the child: the forking thread holds the lock (prepare) */
    if (!named_held) return;
    named_len = 0;
    forks++;
    named_held = 0;
    pthread_mutex_unlock(&named_lock);
}
void fdn_fork_handlers_register(void) { pthread_atfork(named_lock_now, named_unlock_now, named_forget_all); }

static struct named *named_find(const char *name) {
    for (size_t i = 0; i < named_len; i++)
        if (!strcmp(named[i].name, name)) return &named[i];
    return NULL;
}

/* Record c as the maker of `name` (under named_lock). */
static void named_record(const char *name, const struct fdn_client *c) {
    struct named *n = named_find(name);
    if (!n && named_len == named_cap) {
        size_t cap = named_cap ? named_cap * 2 : 16;
        struct named *grown = realloc(named, cap * sizeof *grown);
        if (!grown) return;
        named = grown, named_cap = cap;
    }
    if (!n) n = &named[named_len++];
    snprintf(n->name, sizeof n->name, "%s", name);
    n->owner = c;
}

/* Unlink `name` unless another client of this process made the segment of that name since;
 * forget c's record of it. */
static void unlink_own(const char *name, const struct fdn_client *c) {
    pthread_mutex_lock(&named_lock);
    struct named *n = named_find(name);
    if (!n || n->owner == c) {
        if (n) *n = named[--named_len];
        shm_unlink(name);
    }
    pthread_mutex_unlock(&named_lock);
}

static void drop_data(struct fdn_client *c) {
    if (c->data) {
        unlink_own(c->data_name, c);
        munmap(c->data, c->req_cap + c->resp_cap);
        c->data = NULL;
    }
}

int fdn_data_name(char out[64], const char *server, uint32_t index, uint32_t pid, uint64_t gen) {
    int n = snprintf(out, 64, "/fdn-%s-d%u-%u-%llu", server, index, pid, (unsigned long long)gen);
    if (n < 0 || n >= 64) {
        out[0] = 0;
        return 0;
    }
    return 1;
}

/* errno of a failed step of creating a data segment (spec 10.1 step 6), shm_open included (a tmpfs
 * out of inodes fails it ENOSPC): OVERLOADED when /dev/shm or memory has no room now or no file
 * descriptor is free now, or a posix_fallocate interrupted FDN_FALLOCATE_TRIES times in a row (it
 * may be later), TOO_LARGE for a size no file or /dev/shm can ever hold
 * (`sized`: a step after shm_open, which sizes, allocates or maps), INTERNAL for anything else. */
static enum fdn_status alloc_status(int e, int sized) {
    if (e == ENOSPC || e == ENOMEM || e == EMFILE || e == ENFILE || e == EINTR) return FDN_OVERLOADED;
    if (sized && (e == EFBIG || e == EOVERFLOW || e == EINVAL)) return FDN_TOO_LARGE;
    return FDN_INTERNAL;
}

int (*fdn_shm_open)(const char *name, int flags, mode_t mode) = shm_open;
int (*fdn_fchmod)(int fd, mode_t mode) = fchmod;
int (*fdn_ftruncate)(int fd, off_t size) = ftruncate;
int (*fdn_posix_fallocate)(int fd, off_t offset, off_t len) = posix_fallocate;
void *(*fdn_mmap)(void *addr, size_t len, int prot, int flags, int fd, off_t offset) = mmap;

/* Create, allocate and map the data segment `name` of req_cap + resp_cap bytes (section 10.1,
 * step 6). Its pages are allocated now (posix_fallocate): on a full /dev/shm a sparse segment maps
 * fine, and the server's first write to a missing page would be SIGBUS, its end. A segment of this
 * name is ours (it carries our pid), left over from a claim or grow that failed: it is replaced.
 * On any failure nothing is left in /dev/shm. */
static enum fdn_status create_data(struct fdn_client *c, const char *name, uint64_t req_cap, uint64_t resp_cap,
                                   void **out, struct fdn_error *err) {
    uint64_t size = req_cap + resp_cap;
    unsigned long long sz = (unsigned long long)size;
    if (size < req_cap || size > (uint64_t)SIZE_MAX || size > (uint64_t)INT64_MAX)
        return fdn_fail(err, FDN_TOO_LARGE, 0,
                        "shm server '%s' channel %u: data segment %s of capacities %llu+%llu bytes: too large",
                        c->name, c->index, name, (unsigned long long)req_cap, (unsigned long long)resp_cap);
    struct statvfs vfs;
    if (statvfs("/dev/shm", &vfs) == 0) {
        unsigned long long total = (unsigned long long)vfs.f_blocks * (unsigned long long)vfs.f_frsize;
        if (total && sz > total)
            return fdn_fail(err, FDN_TOO_LARGE, 0,
                            "shm server '%s' channel %u: data segment %s of %llu bytes is more than /dev/shm can "
                            "ever hold (%llu bytes)",
                            c->name, c->index, name, sz, total);
    }
    pthread_once(&named_once, fdn_fork_handlers_register);
    pthread_mutex_lock(&named_lock);
    int fd = fdn_shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, c->mode);
    /* ours (it carries our pid): left over from a failed claim or grow, or another client's of
     * this process on a dead server's region (named_record: that one leaves the name to us) */
    if (fd < 0 && errno == EEXIST) {
        shm_unlink(name);
        fd = fdn_shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, c->mode);
    }
    int e = fd < 0 ? errno : 0;
    if (!e) named_record(name, c);
    pthread_mutex_unlock(&named_lock);
    const char *step = "shm_open";
    if (!e) {
        step = "fchmod";
        e = fdn_fchmod(fd, c->mode) < 0 ? errno : 0;
    }
    if (!e) {
        step = "ftruncate";
        e = fdn_ftruncate(fd, (off_t)size) < 0 ? errno : 0;
    }
    if (!e) {
        step = "posix_fallocate";
        /* returns the error, leaves errno; EINTR: a signal came during it (older kernels stop a
         * tmpfs allocation at any signal, newer at a fatal one), made again as Python's
         * os.posix_fallocate does (PEP 475), FDN_FALLOCATE_TRIES times in a row at most: tmpfs
         * undoes what an interrupted call allocated, so signals that come faster than a large
         * segment allocates (a profiler's timer) kept the connect trying for ever */
        for (int tries = 1; (e = fdn_posix_fallocate(fd, 0, (off_t)size)) == EINTR && tries < FDN_FALLOCATE_TRIES;)
            tries++;
        if (e == EOPNOTSUPP || e == ENOSYS || e == ENODEV) e = 0; /* cannot allocate: stays sparse */
    }
    void *mem = MAP_FAILED;
    if (!e) {
        step = "mmap";
        mem = fdn_mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (mem == MAP_FAILED) e = errno;
    }
    if (fd >= 0) {
        close(fd);
        if (e) unlink_own(name, c);
    }
    if (e) {
        enum fdn_status st = alloc_status(e, fd >= 0);
        char later[80] = "";
        if (e == EMFILE || e == ENFILE) snprintf(later, sizeof later, ": no file descriptor free now, it may be later");
        else if (e == EINTR) snprintf(later, sizeof later, ": %d times in a row, it may pass later", FDN_FALLOCATE_TRIES);
        else if (st == FDN_OVERLOADED) snprintf(later, sizeof later, ": no room now, it may fit later");
        return fdn_fail(err, st, 0, "shm server '%s' channel %u: cannot allocate data segment %s of %llu bytes in /dev/shm (%s: %s)%s",
                        c->name, c->index, name, sz, step, strerror(e), later);
    }
    *out = mem;
    return FDN_OK;
}

/* Create a data segment with these capacities and publish it in the channel (section 10.1,
 * "Growing"); the request bytes in use are carried over. On failure the channel keeps its old
 * segment and nothing new is left in /dev/shm. */
enum fdn_status fdn_attach(struct fdn_client *c, uint64_t req_cap, uint64_t resp_cap, struct fdn_error *err) {
    uint64_t gen = FDN_LOAD(&c->ch->data_gen) + 1;
    char name[64];
    if (!fdn_data_name(name, c->name, c->index, (uint32_t)getpid(), gen))
        return fdn_fail(err, FDN_INTERNAL, 0,
                        "shm data segment name /fdn-%s-d%u-%u-%llu does not fit data_name (at most 63 bytes)",
                        c->name, c->index, (unsigned)getpid(), (unsigned long long)gen);
    void *mem = NULL;
    enum fdn_status st = create_data(c, name, req_cap, resp_cap, &mem, err);
    if (st) return st;
    if (c->data && c->used) memcpy(mem, c->data, (size_t)c->used);
    FDN_STORE(&c->ch->request_capacity, req_cap);
    FDN_STORE(&c->ch->response_capacity, resp_cap);
    memset(c->ch->data_name, 0, sizeof c->ch->data_name);
    memcpy(c->ch->data_name, name, strlen(name));
    FDN_STORE(&c->ch->data_gen, gen);
    drop_data(c);
    c->data = mem;
    c->req_cap = req_cap;
    c->resp_cap = resp_cap;
    memcpy(c->data_name, name, sizeof name);
    return FDN_OK;
}

/* --- connect and disconnect ------------------------------------------------------------------ */
int fdn_forked(const struct fdn_client *c) { return c->forks != forks; }

void fdn_forget(struct fdn_client *c) {
    if (c->sem) sem_close(c->sem);
    if (c->mutex) sem_close(c->mutex);
    if (c->bell) sem_close(c->bell);
    if (c->data) munmap(c->data, c->req_cap + c->resp_cap); /* the name is the parent's: kept */
    if (c->ctl) munmap(c->ctl, c->ctl_size);
    c->sem = c->mutex = c->bell = NULL;
    c->data = NULL;
    c->ctl = NULL;
    c->region = NULL;
    c->ch = NULL;
    c->connected = 0;
    c->loaned = 0;
    c->loan_ended = 0;
    c->forks = forks;
}

void fdn_disconnect(struct fdn_client *c) {
    if (c->sem) sem_close(c->sem);
    if (c->mutex) sem_close(c->mutex);
    if (c->bell) sem_close(c->bell);
    drop_data(c);
    if (c->ctl) munmap(c->ctl, c->ctl_size);
    c->sem = c->mutex = c->bell = NULL;
    c->ctl = NULL;
    c->region = NULL;
    c->ch = NULL;
    c->connected = 0;
    c->loaned = 0;
}

static enum fdn_status open_region(struct fdn_client *c, struct fdn_error *err) {
    char path[64];
    snprintf(path, sizeof path, "/fdn-%s", c->name);
    int fd = shm_open(path, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) return fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0, "no shm server named '%s'", c->name);
    struct stat st;
    if (fstat(fd, &st) < 0 || (size_t)st.st_size < sizeof(struct fdn_region_header)) {
        close(fd);
        return fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0, "shm server '%s' is not ready", c->name);
    }
    c->ctl_size = (size_t)st.st_size;
    c->mode = st.st_mode & 0777;
    void *mem = mmap(NULL, c->ctl_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (mem == MAP_FAILED)
        return fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0, "mmap %s: %s", path, strerror(errno));
    c->ctl = mem;
    c->region = mem;
    struct fdn_region_header *r = c->region;
    if (FDN_LOAD(&r->magic) != FDN_REGION_MAGIC)
        return fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0, "shm server '%s' is not ready (no region header)", c->name);
    if (r->version_major != FDN_PROTOCOL_VERSION)
        return fdn_fail(err, FDN_BAD_VERSION, 0, "shm server '%s' speaks protocol %u, this client %d", c->name,
                        r->version_major, FDN_PROTOCOL_VERSION);
    c->server_pid = r->server_pid;
    c->server_start = r->server_start_time;
    c->instance_id = r->instance_id;
    c->max_request_bytes = r->max_request_bytes;
    c->default_capacity = r->default_capacity;
    if (!fdn_server_alive(c)) {
        /* liveness is told by pid (section 10): a READY server whose pid is not seen here while its
         * lock file is held runs in another PID namespace (a container sharing /dev/shm but not
         * the pids). Python's words, cut to fit err->message whole (252 bytes at most: a 32-byte
         * name, a 7-digit pid). Not a zombie of the server's start time: the server, dead, seen
         * from here (a reconnect right after a SIGKILL was told another PID namespace) */
        if (FDN_LOAD(&r->state) == FDN_READY && lock_file_held(c->name) &&
            !zombie_here(c->server_pid, c->server_start))
            return fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0,
                            "shm server '%s' holds its lock, but its pid %u is not a live process seen from "
                            "here: another PID namespace, or restarting. Share pids and /dev/shm (docker "
                            "run --pid=container:S; Kubernetes: shareProcessNamespace: true)",
                            c->name, c->server_pid);
        c->found_gone = 1;
        return fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0, "shm server '%s' (pid %u) is gone", c->name, c->server_pid);
    }
    if (FDN_LOAD(&r->state) != FDN_READY) /* section 10.1 step 2: a STOPPING server takes no one new */
        return fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0, "shm server '%s' is stopping", c->name);
    if (r->channels_offset + (uint64_t)r->channel_count * r->channel_size > c->ctl_size ||
        r->channel_size != sizeof(struct fdn_channel))
        return fdn_fail(err, FDN_INTERNAL, 0, "shm server '%s': region header disagrees with its size", c->name);
    snprintf(path, sizeof path, "/fdn-%s-lock", c->name);
    c->mutex = sem_open(path, 0);
    snprintf(path, sizeof path, "/fdn-%s-bell", c->name);
    c->bell = sem_open(path, 0);
    if (c->mutex == SEM_FAILED || c->bell == SEM_FAILED) {
        if (c->mutex == SEM_FAILED) c->mutex = NULL;
        if (c->bell == SEM_FAILED) c->bell = NULL;
        return fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0, "shm server '%s': semaphores missing", c->name);
    }
    return FDN_OK;
}

/* 10.1 steps 4-8. The region mutex is waited for up to connect_timeout_ms (then OVERLOADED) and no
 * later than `deadline` (a call's, 0 for none: then DEADLINE_EXCEEDED). It is held for
 * microseconds, but for as long as a client stopped inside it stays stopped: a call with a 200 ms
 * timeout that reconnected waited the whole connect_timeout_ms for it. */
static enum fdn_status claim(struct fdn_client *c, uint64_t deadline, struct fdn_error *err) {
    struct fdn_region_header *r = c->region;
    uint64_t now = fdn_now_ns(), wait = (uint64_t)c->opts.connect_timeout_ms * 1000000u;
    int by_deadline = deadline && deadline < now + wait;
    if (by_deadline) wait = deadline > now ? deadline - now : 0; /* spent: one look, a free mutex is taken */
    /* owner_start_time 0 says "given back" (10.1): written because this process's own stat file
     * could not be read (EMFILE), it had the server reclaim a live client's channel. Such a
     * connect fails, having taken nothing. */
    uint32_t pid = (uint32_t)getpid();
    char own_state;
    uint64_t own_start;
    int known = read_stat(pid, &own_state, &own_start);
    if (known != 1 || own_state == 'Z' || own_state == 'X')
        return fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0,
                        "shm server '%s': cannot read this process's start time (/proc/%u/stat): %s; no channel claimed",
                        c->name, pid, known == 1 ? "a zombie" : strerror(errno));
    if (fdn_sem_wait_ns(c->mutex, wait) < 0) {
        if (by_deadline)
            return fdn_fail(err, FDN_DEADLINE_EXCEEDED, 0, "shm server '%s': region mutex still busy at the deadline",
                            c->name);
        return fdn_fail(err, FDN_OVERLOADED, 0, "shm server '%s': region mutex busy for %u ms", c->name,
                        c->opts.connect_timeout_ms);
    }
    FDN_STORE(&r->mutex_holder_pid, pid);
    enum fdn_status st = FDN_OK;
    uint32_t i, count = r->channel_count;
    struct fdn_channel *channels = (struct fdn_channel *)(c->ctl + r->channels_offset);
    for (i = 0; i < count && FDN_LOAD(&channels[i].owner_pid); i++) {
    }
    if (i == count) {
        st = fdn_fail(err, FDN_OVERLOADED, 0, "shm server '%s': all %u channels are in use", c->name, count);
    } else {
        c->index = i;
        c->ch = &channels[i];
        /* the server's default_capacity is a suggestion: one over max_response_bytes would make
         * every claim reserve what the client refuses to grow to (the areas grow on demand) */
        uint64_t dflt = c->default_capacity < c->opts.max_response_bytes ? c->default_capacity
                                                                          : c->opts.max_response_bytes;
        uint64_t cap = fdn_pages(c->opts.capacity ? c->opts.capacity : dflt);
        c->used = 0;
        st = fdn_attach(c, cap, cap, err);
        if (st == FDN_OK) {
            struct fdn_channel *ch = c->ch;
            FDN_STORE(&ch->client_sleeping, 0);
            FDN_STORE(&ch->owner_start_time, own_start);
            c->seq = FDN_LOAD(&ch->server_seq);
            FDN_STORE(&ch->client_seq, c->seq);
            FDN_STORE(&ch->owner_pid, pid);
            FDN_STORE(&r->connect_epoch, FDN_LOAD(&r->connect_epoch) + 1);
        }
    }
    FDN_STORE(&r->mutex_holder_pid, 0);
    sem_post(c->mutex);
    if (st) return st;
    char path[64];
    snprintf(path, sizeof path, "/fdn-%s-c%u", c->name, c->index);
    c->sem = sem_open(path, 0);
    if (c->sem == SEM_FAILED) {
        int e = errno;
        c->sem = NULL;
        /* claimed but of no use: give the channel back as a disconnect without the mutex does
         * (spec 10.1; only its owner writes this word), and the server reclaims it within a
         * heartbeat (10.4). Left owned by this live process it was never reclaimed: a process
         * whose connects kept failing (EMFILE) lost one channel per try. */
        FDN_STORE(&c->ch->owner_start_time, 0);
        return fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0, "shm server '%s': cannot open the semaphore of channel %u (%s): %s",
                        c->name, c->index, path, strerror(e));
    }
    while (sem_trywait(c->sem) == 0) { /* drain stale posts of a previous owner */
    }
    return FDN_OK;
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

/* A hung server takes no new client (section 10.3): wait up to connect_timeout_ms, and no later
 * than `deadline` (a call's, 0 for none), for its heartbeat to move (a server that has just
 * resumed beats within an interval), then SERVER_UNAVAILABLE saying it is hung; a server that
 * dies meanwhile is reported gone at once. A connect to a hung server claimed a channel and its
 * call left a request there that the server could not answer, to be reclaimed only once it ran
 * again: a service retrying through a stall took every channel, and every client got
 * OVERLOADED. */
static enum fdn_status wait_beating(struct fdn_client *c, uint64_t deadline, struct fdn_error *err) {
    uint64_t end = fdn_now_ns() + (uint64_t)c->opts.connect_timeout_ms * 1000000u;
    int by_deadline = deadline && deadline < end;
    if (by_deadline) end = deadline;
    uint64_t silent_ms = 0;
    while (fdn_hung(c, &silent_ms)) {
        if (!fdn_server_alive(c)) {
            c->found_gone = 1;
            return fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0, "shm server '%s' (pid %u) is gone", c->name,
                            c->server_pid);
        }
        if (fdn_now_ns() >= end) {
            char limit[64];
            if (by_deadline) snprintf(limit, sizeof limit, "before the call's deadline");
            else snprintf(limit, sizeof limit, "within connect_timeout_ms (%u ms)", c->opts.connect_timeout_ms);
            return fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0,
                            "shm server '%s' (pid %u) is hung: no heartbeat for %llu ms (stopped or stalled; "
                            "no beat came %s)",
                            c->name, c->server_pid, (unsigned long long)silent_ms, limit);
        }
        struct timespec poll = {0, 5000000}; /* 5 ms */
        nanosleep(&poll, NULL);
    }
    return FDN_OK;
}

enum fdn_status fdn_connect_now(struct fdn_client *c, uint64_t deadline, struct fdn_error *err) {
    c->found_gone = 0;
    enum fdn_status st = open_region(c, err);
    if (st == FDN_OK) st = wait_beating(c, deadline, err);
    if (st == FDN_OK) st = claim(c, deadline, err);
    if (st) {
        fdn_disconnect(c);
        return st;
    }
    c->connected = 1;
    if (c->ever_connected) __atomic_fetch_add(&c->counts.reconnects, 1, __ATOMIC_RELAXED); /* spec 10.5 */
    c->ever_connected = 1;
    return FDN_OK;
}

void fdn_client_counters(const fdn_client *c, struct fdn_counters *out) {
    if (!out) return;
    out->reconnects = c ? __atomic_load_n(&c->counts.reconnects, __ATOMIC_RELAXED) : 0;
    out->resends = c ? __atomic_load_n(&c->counts.resends, __ATOMIC_RELAXED) : 0;
}

static int valid_name(const char *name) {
    size_t n = strlen(name);
    if (n < 1 || n > FDN_SERVER_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_'))
            return 0;
    }
    return 1;
}

enum fdn_status fdn_connect(fdn_client **out, const char *name, const struct fdn_options *opts,
                            struct fdn_error *err) {
    if (!out) return fdn_fail(err, FDN_INVALID_INPUT, 0, "out is NULL");
    *out = NULL;
    if (!name) return fdn_fail(err, FDN_INVALID_INPUT, 0, "shm server name is NULL");
    if (strncmp(name, "shm://", 6) == 0) name += 6;
    if (!valid_name(name))
        return fdn_fail(err, FDN_INVALID_INPUT, 0, "shm server name '%.64s' must be 1-%d characters of [A-Za-z0-9_]", name,
                        FDN_SERVER_NAME_MAX);
    struct fdn_options o = opts ? *opts : FDN_DEFAULT_OPTIONS;
    if (!o.connect_timeout_ms) o.connect_timeout_ms = 2000;
    if (!o.max_response_bytes) o.max_response_bytes = FDN_MAX_RESPONSE_BYTES;
    if (o.max_response_bytes < FDN_PAGE || o.max_response_bytes > FDN_MAX_RESPONSE_BYTES_LIMIT)
        return fdn_fail(err, FDN_INVALID_INPUT, 0,
                        "max_response_bytes must be 4096..2^48 bytes (0: the default, 4 GiB), not %llu",
                        (unsigned long long)o.max_response_bytes);
    /* the response area starts at capacity: one over the limit would be a limit that is not one
     * (refused rather than either silently winning) */
    if (o.capacity > o.max_response_bytes)
        return fdn_fail(err, FDN_INVALID_INPUT, 0,
                        "capacity (%llu bytes) exceeds max_response_bytes (%llu bytes): the response area starts "
                        "at capacity; lower capacity or raise max_response_bytes",
                        (unsigned long long)o.capacity, (unsigned long long)o.max_response_bytes);
    struct fdn_client *c = calloc(1, sizeof *c);
    if (!c) return fdn_fail(err, FDN_INTERNAL, 0, "out of memory");
    strcpy(c->name, name);
    c->opts = o;
    c->next_id = 1;
    pthread_once(&named_once, fdn_fork_handlers_register); /* a fork from now on is counted (fdn_forked) */
    c->forks = forks;
    enum fdn_status st = fdn_connect_now(c, 0, err);
    if (st) {
        free(c);
        return st;
    }
    *out = c;
    return FDN_OK;
}

void fdn_close(fdn_client *c) {
    if (!c) return;
    if (fdn_forked(c)) fdn_forget(c); /* a forked child's copy: the channel stays its parent's */
    if (c->connected && fdn_server_alive(c)) {
        uint64_t end = fdn_now_ns() + 100000000u; /* give an answer still owed 100 ms */
        while (FDN_LOAD(&c->ch->server_seq) != c->seq && fdn_now_ns() < end) usleep(1000);
        if (fdn_sem_wait_ns(c->mutex, (uint64_t)c->opts.connect_timeout_ms * 1000000u) == 0) {
            FDN_STORE(&c->region->mutex_holder_pid, (uint32_t)getpid());
            if (FDN_LOAD(&c->ch->server_seq) == c->seq) FDN_STORE(&c->ch->owner_pid, 0);
            else FDN_STORE(&c->ch->owner_start_time, 0); /* busy: the server reclaims it when done */
            FDN_STORE(&c->region->connect_epoch, FDN_LOAD(&c->region->connect_epoch) + 1);
            FDN_STORE(&c->region->mutex_holder_pid, 0);
            sem_post(c->mutex);
        } else {
            /* the mutex stayed busy: give the channel back without it (only its owner writes this
             * word); the server reclaims it within a heartbeat (spec 10.1, 10.4) */
            FDN_STORE(&c->ch->owner_start_time, 0);
        }
    }
    fdn_disconnect(c);
    free(c->snap);
    free(c);
}
