/* test-live: connecting and closing (a control segment that cannot be opened, data segments and their
 * failed steps, a STOPPING server, a channel semaphore that cannot be opened, channels given back,
 * connect/close cycles). */
#define _GNU_SOURCE
#include "live.h"

/* Spec 10.1 step 6: a capacity /dev/shm can never hold is TOO_LARGE with nothing left behind (and
 * the region mutex released: the next connect works); a segment of our own pid left over from a
 * failed claim is replaced; the fresh segment's pages are allocated (not sparse). Run first, on a
 * fresh server: channel 0's data_gen is 0, so our first segment is /fdn-NAME-d0-PID-1. */
fdn_client *allocation_checks(const char *name) {
    struct statvfs vfs;
    CHECK(statvfs("/dev/shm", &vfs) == 0, "statvfs /dev/shm");
    uint64_t total = (uint64_t)vfs.f_blocks * vfs.f_frsize;
    struct fdn_options opts = FDN_DEFAULT_OPTIONS;
    opts.capacity = (total / 2 + (1u << 20)) & ~(uint64_t)4095; /* both areas: more than /dev/shm */
    opts.max_response_bytes = opts.capacity;                    /* (else refused as over it) */
    fdn_client *c = NULL;
    struct fdn_error err = {0};
    enum fdn_status st = fdn_connect(&c, name, &opts, &err);
    CHECK(st == FDN_TOO_LARGE, "capacities beyond /dev/shm (%llu bytes): %s %s", (unsigned long long)total,
          fdn_strerror(st), err.message);
    CHECK(strstr(err.message, "/fdn-") && strstr(err.message, "bytes"), "the message names the segment and size: %s",
          err.message);
    CHECK(data_segments(name, NULL) == 0, "a refused data segment is left in /dev/shm");
    if (st == FDN_OK) fdn_close(c);

    char leftover[128];
    snprintf(leftover, sizeof leftover, "/fdn-%s-d0-%d-1", name, (int)getpid());
    int fd = shm_open(leftover, O_RDWR | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0 && ftruncate(fd, 4096) == 0, "create the leftover %s", leftover);
    if (fd >= 0) close(fd);
    c = NULL;
    st = fdn_connect(&c, name, NULL, &err);
    CHECK(st == FDN_OK, "connect over a leftover segment of our pid: %s %s", fdn_strerror(st), err.message);
    struct stat sb = {0};
    CHECK(data_segments(name, &sb) == 1, "one data segment");
    CHECK(sb.st_size > 4096, "the leftover was replaced (size %lld)", (long long)sb.st_size);
    CHECK((long long)sb.st_blocks * 512 >= (long long)sb.st_size, "the segment is sparse: %lld blocks for %lld bytes",
          (long long)sb.st_blocks, (long long)sb.st_size);
    if (st != FDN_OK) shm_unlink(leftover);
    return st == FDN_OK ? c : NULL;
}

/* Spec 10.1 step 6: each step of creating a data segment that fails is classified by its error and
 * named, with nothing claimed or left in /dev/shm: no room now (ENOSPC, ENOMEM) or no file
 * descriptor free now (EMFILE, ENFILE) is OVERLOADED, it may fit later (a shm_open without room was
 * INTERNAL: a tmpfs out of inodes fails it ENOSPC); a size no file or /dev/shm can ever hold
 * (EFBIG, EOVERFLOW, EINVAL once the segment exists) is TOO_LARGE; anything else, shm_open's EINVAL
 * included, is INTERNAL. A posix_fallocate the file system cannot do (EOPNOTSUPP) leaves the
 * segment sparse and the connect goes on; one a signal interrupted (EINTR) is made again: it failed
 * the connect INTERNAL; but not for ever: interrupted FDN_FALLOCATE_TRIES times in a row (signals
 * that come faster than tmpfs allocates, which undoes an interrupted call's pages), OVERLOADED,
 * it may pass later (it tried for as long as the signals came). */
static const char *failing_step; /* the next `step_fails` calls of this step fail `step_errno` */
static int step_fails, step_errno;

static int step_fails_now(const char *step) {
    if (step_fails <= 0 || !failing_step || strcmp(step, failing_step) != 0) return 0;
    step_fails--;
    errno = step_errno;
    return 1;
}

static int failing_shm_open(const char *name, int flags, mode_t mode) { /* a data segment's (O_CREAT) */
    return (flags & O_CREAT) && step_fails_now("shm_open") ? -1 : shm_open(name, flags, mode);
}

static int failing_fchmod(int fd, mode_t mode) { return step_fails_now("fchmod") ? -1 : fchmod(fd, mode); }

static int failing_ftruncate(int fd, off_t size) { return step_fails_now("ftruncate") ? -1 : ftruncate(fd, size); }

static int fallocate_calls;

static int failing_fallocate(int fd, off_t offset, off_t len) {
    fallocate_calls++;
    return step_fails_now("posix_fallocate") ? step_errno : posix_fallocate(fd, offset, len);
}

static void *failing_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t offset) {
    return step_fails_now("mmap") ? MAP_FAILED : mmap(addr, len, prot, flags, fd, offset);
}

void segment_step_failure_checks(const char *name) {
    static const char room[] = ": no room now, it may fit later", fds[] = ": no file descriptor free now, it may be later";
    static const struct {
        const char *step;
        int e;
        enum fdn_status want;
        const char *tail;
    } cases[] = {
        {"shm_open", ENOSPC, FDN_OVERLOADED, room},
        {"shm_open", ENOMEM, FDN_OVERLOADED, room},
        {"shm_open", ENFILE, FDN_OVERLOADED, fds},
        {"shm_open", EINVAL, FDN_INTERNAL, ""},
        {"fchmod", EPERM, FDN_INTERNAL, ""},
        {"ftruncate", ENOSPC, FDN_OVERLOADED, room},
        {"ftruncate", ENOMEM, FDN_OVERLOADED, room},
        {"ftruncate", EFBIG, FDN_TOO_LARGE, ""},
        {"ftruncate", EINVAL, FDN_TOO_LARGE, ""},
        {"ftruncate", EIO, FDN_INTERNAL, ""},
        {"posix_fallocate", ENOSPC, FDN_OVERLOADED, room},
        {"posix_fallocate", EFBIG, FDN_TOO_LARGE, ""},
        {"posix_fallocate", EIO, FDN_INTERNAL, ""},
        {"posix_fallocate", EOPNOTSUPP, FDN_OK, ""},
        {"posix_fallocate", EINTR, FDN_OK, ""},
        {"mmap", ENOMEM, FDN_OVERLOADED, room},
        {"mmap", EMFILE, FDN_OVERLOADED, fds},
        {"mmap", ENFILE, FDN_OVERLOADED, fds},
        {"mmap", EOVERFLOW, FDN_TOO_LARGE, ""},
        {"mmap", EINVAL, FDN_TOO_LARGE, ""},
        {"mmap", EACCES, FDN_INTERNAL, ""},
    };
    size_t size = 0;
    struct fdn_region_header *r = map_region(name, &size);
    CHECK(r != NULL, "map the region");
    if (!r) return;
    int before = owned(r);
    size_t segments = data_segments(name, NULL);
    fdn_shm_open = failing_shm_open;
    fdn_fchmod = failing_fchmod;
    fdn_ftruncate = failing_ftruncate;
    fdn_posix_fallocate = failing_fallocate;
    fdn_mmap = failing_mmap;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        fdn_client *c = NULL;
        struct fdn_error err = {0};
        char want[160];
        snprintf(want, sizeof want, "(%s: %s)%s", cases[i].step, strerror(cases[i].e), cases[i].tail);
        failing_step = cases[i].step;
        step_errno = cases[i].e;
        step_fails = 1;
        fallocate_calls = 0;
        enum fdn_status st = fdn_connect(&c, name, NULL, &err);
        int called = step_fails == 0;
        step_fails = 0;
        size_t n = strlen(err.message), w = strlen(want);
        if (cases[i].want == FDN_OK)
            CHECK(st == FDN_OK && called && owned(r) == before + 1 && data_segments(name, NULL) == segments + 1,
                  "a data segment whose %s fails %s: %s '%s'; want a channel", cases[i].step,
                  strerror(cases[i].e), fdn_strerror(st), err.message);
        else
            CHECK(st == cases[i].want && n >= w && strcmp(err.message + n - w, want) == 0,
                  "a data segment whose %s fails %s: %s '%s'; want %s '...%s'", cases[i].step, strerror(cases[i].e),
                  fdn_strerror(st), err.message, fdn_strerror(cases[i].want), want);
        /* made again, not left sparse as for EOPNOTSUPP (the server's write to a missing page: SIGBUS) */
        CHECK(cases[i].e != EINTR || fallocate_calls == 2, "a posix_fallocate interrupted (EINTR) made %d times, not 2",
              fallocate_calls);
        if (c) fdn_close(c);
        CHECK(owned(r) == before && data_segments(name, NULL) == segments,
              "the connect whose %s failed %s kept a channel or left a data segment", cases[i].step,
              strerror(cases[i].e));
    }
    fdn_client *c = NULL;
    struct fdn_error err = {0};
    char want[160];
    snprintf(want, sizeof want, "(posix_fallocate: %s): %d times in a row, it may pass later",
             strerror(EINTR), FDN_FALLOCATE_TRIES);
    failing_step = "posix_fallocate";
    step_errno = EINTR;
    step_fails = 1000 * FDN_FALLOCATE_TRIES; /* (the old loop got through them: a connect) */
    fallocate_calls = 0;
    enum fdn_status st = fdn_connect(&c, name, NULL, &err);
    step_fails = 0;
    size_t n = strlen(err.message), w = strlen(want);
    CHECK(st == FDN_OVERLOADED && n >= w && strcmp(err.message + n - w, want) == 0 &&
              fallocate_calls == FDN_FALLOCATE_TRIES,
          "a posix_fallocate interrupted every time: %s '%s' after %d calls; want OVERLOADED '...%s' after %d",
          fdn_strerror(st), err.message, fallocate_calls, want, FDN_FALLOCATE_TRIES);
    if (c) fdn_close(c);
    CHECK(owned(r) == before && data_segments(name, NULL) == segments,
          "the connect whose posix_fallocate was interrupted every time kept a channel or left a data segment");
    fdn_shm_open = shm_open;
    fdn_fchmod = fchmod;
    fdn_ftruncate = ftruncate;
    fdn_posix_fallocate = posix_fallocate;
    fdn_mmap = mmap;
    munmap(r, size);
}

/* Spec 10.1 step 1: a control segment that exists but cannot be opened is no "no shm server named":
 * EACCES (another user's server, mode 0600) says whose it is and what lets a group in; a file limit
 * (EMFILE, ENFILE) is OVERLOADED, it may pass later; anything else names the path and the error. The
 * open of the live server's segment is made to fail (the server serves: an unhooked open connects). */
static const char *control_path; /* fdn_shm_open of this name fails `control_errno` */
static int control_errno;

static int failing_control_open(const char *name, int flags, mode_t mode) {
    if (control_path && strcmp(name, control_path) == 0) {
        errno = control_errno;
        return -1;
    }
    return shm_open(name, flags, mode);
}

void control_open_failure_checks(const char *name) {
    static const struct {
        int e;
        enum fdn_status want;
    } cases[] = {
        {EACCES, FDN_SERVER_UNAVAILABLE}, {EMFILE, FDN_OVERLOADED}, {ENFILE, FDN_OVERLOADED},
        {ELOOP, FDN_SERVER_UNAVAILABLE},  {ENOENT, FDN_SERVER_UNAVAILABLE},
    };
    char path[64];
    snprintf(path, sizeof path, "/fdn-%s", name);
    control_path = path;
    fdn_shm_open = failing_control_open;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int e = cases[i].e;
        char want[256];
        if (e == ENOENT)
            snprintf(want, sizeof want, "no shm server named '%s'", name);
        else if (e == EACCES)
            snprintf(want, sizeof want,
                     "no permission to use shm server '%s' (/dev/shm/fdn-%s): another user's; a server started "
                     "with mode 0o660 lets its group in",
                     name, name);
        else
            snprintf(want, sizeof want, "shm server '%s': cannot open /dev/shm/fdn-%s: %s", name, name, strerror(e));
        control_errno = e;
        fdn_client *c = NULL;
        struct fdn_error err = {0};
        enum fdn_status st = fdn_connect(&c, name, NULL, &err);
        CHECK(st == cases[i].want && err.code == cases[i].want && strcmp(err.message, want) == 0,
              "a control segment whose shm_open fails %s: %s '%s'; want %s '%s'", strerror(e), fdn_strerror(st),
              err.message, fdn_strerror(cases[i].want), want);
        if (c) fdn_close(c);
    }
    fdn_shm_open = shm_open;
    control_path = NULL;
}

/* Spec 10.1, "Disconnect": fdn_close gives the channel back with owner_start_time = 0 when its
 * request is still with the server (after a deadline), and also when the region mutex stays busy
 * for connect_timeout_ms (it kept the channel owned by this live process for good); the server
 * reclaims it within a heartbeat. The client of main() stays connected meanwhile. */
void close_checks(const char *name) {
    size_t size = 0;
    struct fdn_region_header *r = map_region(name, &size);
    CHECK(r, "map the control segment");
    if (!r) return;
    struct fdn_channel *other = own_channel(r, NULL); /* the connected client of main() */
    size_t segments = data_segments(name, NULL);
    struct fdn_options opts = FDN_DEFAULT_OPTIONS;
    opts.connect_timeout_ms = 100;
    for (int busy_mutex = 0; busy_mutex < 2; busy_mutex++) {
        const char *what = busy_mutex ? "a busy region mutex" : "a pending request";
        fdn_client *c = NULL;
        struct fdn_error err = {0};
        enum fdn_status st = fdn_connect(&c, name, &opts, &err);
        CHECK(st == FDN_OK, "connect: %s %s", fdn_strerror(st), err.message);
        if (st) break;
        struct fdn_channel *ch = own_channel(r, other);
        CHECK(ch, "the claimed channel");
        if (!busy_mutex) {
            struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
            struct fdn_call slow = {.params = "{\"ms\": 400}"};
            struct fdn_result res;
            st = fdn_infer_call(c, "sleep", &in, 1, 20, &slow, &res, &err);
            CHECK(st == FDN_DEADLINE_EXCEEDED, "a 20 ms deadline on a 400 ms call: %s", fdn_strerror(st));
        }
        char lock[128];
        snprintf(lock, sizeof lock, "/fdn-%s-lock", name);
        sem_t *mutex = busy_mutex ? sem_open(lock, 0) : SEM_FAILED;
        if (busy_mutex) CHECK(mutex != SEM_FAILED && sem_wait(mutex) == 0, "take the region mutex");
        fdn_close(c);
        if (mutex != SEM_FAILED) {
            sem_post(mutex);
            sem_close(mutex);
        }
        if (ch) {
            uint32_t pid = __atomic_load_n(&ch->owner_pid, __ATOMIC_ACQUIRE);
            uint64_t start = __atomic_load_n(&ch->owner_start_time, __ATOMIC_ACQUIRE);
            CHECK(pid == 0 || start == 0, "%s: the channel is kept by this live process (owner_start_time %llu)",
                  what, (unsigned long long)start);
            CHECK(freed(ch), "%s: the server did not reclaim the channel", what);
        }
        CHECK(data_segments(name, NULL) == segments, "%s: the closed client's data segment is left", what);
    }
    munmap(r, size);
}

/* Section 10.1 step 2: a STOPPING server takes no new client (its region is set so here, as the
 * server does when it stops); the clients it has (c) are still served. */
void stopping_checks(const char *name, fdn_client *c) {
    size_t size = 0;
    struct fdn_region_header *r = map_region(name, &size);
    CHECK(r, "map the control segment");
    if (!r) return;
    __atomic_store_n(&r->state, FDN_STOPPING, __ATOMIC_RELEASE);
    fdn_client *d = NULL;
    struct fdn_error err = {0};
    enum fdn_status st = fdn_connect(&d, name, NULL, &err);
    char says[128];
    snprintf(says, sizeof says, "shm server '%s' is stopping", name);
    CHECK(st == FDN_SERVER_UNAVAILABLE && d == NULL && strcmp(err.message, says) == 0,
          "connect to a STOPPING server: %s %s", fdn_strerror(st), err.message);
    if (d) fdn_close(d);
    echo(c, "a call of a client connected before the server began to stop");
    __atomic_store_n(&r->state, FDN_READY, __ATOMIC_RELEASE);
    munmap(r, size);
}

/* Section 10.1: a connect claims its channel (owner_pid = this process), then opens the channel's
 * semaphore. When that failed (a semaphore unlinked, or EMFILE in a process out of descriptors)
 * the channel stayed owned by this live process, which the server never reclaims: a service whose
 * connects kept failing lost a channel per try until every client got OVERLOADED. It is given
 * back (owner_start_time = 0, as a disconnect without the mutex does): on a server of one channel,
 * a connect after the failed one is served once the server has reclaimed it. */
void semaphore_failure_checks(const char *python) {
    char name[64];
    snprintf(name, sizeof name, "fdncs%d", (int)getpid());
    pid_t server = echo_server_of(python, name, "1");
    CHECK(server > 0, "start a server of one channel");
    if (server < 0) return;
    char sem[128], kept[160];
    snprintf(sem, sizeof sem, "/dev/shm/sem.fdn-%s-c0", name);
    snprintf(kept, sizeof kept, "%skept", sem); /* a second link to the server's semaphore */
    CHECK(link(sem, kept) == 0 && unlink(sem) == 0, "move %s aside: %s", sem, strerror(errno));
    fdn_client *c = NULL;
    struct fdn_error err = {0};
    enum fdn_status st = fdn_connect(&c, name, NULL, &err);
    CHECK(st == FDN_SERVER_UNAVAILABLE && strstr(err.message, "cannot open the semaphore of channel 0"),
          "connect with the channel semaphore gone: %s %s", fdn_strerror(st), err.message);
    if (c) fdn_close(c);
    size_t size = 0;
    struct fdn_region_header *r = map_region(name, &size);
    if (r) {
        struct fdn_channel *ch = (struct fdn_channel *)((uint8_t *)r + r->channels_offset);
        uint32_t pid = __atomic_load_n(&ch->owner_pid, __ATOMIC_ACQUIRE);
        uint64_t start = __atomic_load_n(&ch->owner_start_time, __ATOMIC_ACQUIRE);
        CHECK(pid == 0 || start == 0, "channel 0 is kept by this live process (pid %u, owner_start_time %llu)", pid,
              (unsigned long long)start);
        munmap(r, size);
    }
    CHECK(data_segments(name, NULL) == 0, "the failed connect's data segment is left");
    CHECK(rename(kept, sem) == 0, "put %s back: %s", sem, strerror(errno));
    c = NULL;
    st = FDN_OVERLOADED;
    for (int i = 0; i < 6000 && st == FDN_OVERLOADED; i++) { /* reclaimed within a heartbeat (a minute: late when loaded) */
        st = fdn_connect(&c, name, NULL, &err);
        if (st == FDN_OVERLOADED) usleep(10000);
    }
    CHECK(st == FDN_OK, "the connect after the failed one: %s %s", fdn_strerror(st), err.message);
    if (st == FDN_OK) {
        echo(c, "the call after a connect that could not open its channel semaphore");
        fdn_close(c);
    }
    kill(server, SIGTERM); /* a graceful stop removes its objects; what is left, remove_objects does */
    waitpid(server, NULL, 0);
    remove_objects(name);
}

/* This process's open descriptors and its mappings of /dev/shm objects (segments, semaphores). */
static void resources(int *fds, int *shm_maps) {
    *fds = *shm_maps = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d));) *fds += e->d_name[0] != '.';
    if (d) closedir(d);
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) *shm_maps += strstr(line, "/dev/shm/") != NULL;
    if (f) fclose(f);
}

/* A long-running process connects and closes again and again, through every outcome of a call:
 * descriptors, mappings and data segments come back to where they were (ASan's LeakSanitizer, in
 * make test-sanitize, checks the heap at exit). The client of main() stays connected meanwhile. */
void cycle_checks(const char *name) {
    struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    struct fdn_tensor spec = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = {2}};
    struct fdn_call slow = {.params = "{\"ms\": 5}"};
    struct fdn_result res;
    struct fdn_error err = {0};
    int fds0, maps0, fds, maps;
    size_t segments = data_segments(name, NULL);
    resources(&fds0, &maps0);
    for (int i = 0; i < 200; i++) {
        fdn_client *c = NULL;
        enum fdn_status st = fdn_connect(&c, name, NULL, &err);
        CHECK(st == FDN_OK, "cycle %d: connect: %s %s", i, fdn_strerror(st), err.message);
        if (st) return;
        echo(c, "a call of a cycle");
        switch (i % 4) {
        case 0: st = fdn_infer(c, "no_such_model", &in, 1, 5000, &res, &err); break;
        case 1: st = fdn_infer(c, "fail", &in, 1, 5000, &res, &err); break;
        case 2: st = fdn_loan_begin(c, "echo", &spec, 1, &err) ? FDN_INTERNAL : FDN_OK; break; /* abandoned */
        default: st = fdn_infer_call(c, "sleep", &in, 1, 0, &slow, &res, &err); break; /* closed pending */
        }
        CHECK(st != FDN_OK || i % 4 == 2, "cycle %d: the failing call succeeded", i);
        fdn_close(c);
    }
    resources(&fds, &maps);
    CHECK(fds == fds0 && maps == maps0, "after 200 connect/call/close cycles: %d descriptors (was %d), %d mappings "
          "of /dev/shm (was %d)", fds, fds0, maps, maps0);
    CHECK(data_segments(name, NULL) == segments, "after 200 cycles: %zu data segments (was %zu)",
          data_segments(name, NULL), segments);
}
