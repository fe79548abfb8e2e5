/* The harness of test-live (test_live.c and live_*.c): the servers it starts and stops, the
 * echo call, a mapping of a server's region and what it says, and the wrapped malloc. */
#define _GNU_SOURCE
#include "live.h"

int failures;

/* Start the server `argv` (argv[0] the program) and wait for its "ready" line; its pid, or -1. */
pid_t ready_server(char *const argv[]) {
    int fds[2];
    if (pipe(fds) < 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    FILE *out = fdopen(fds[0], "r");
    char line[256] = {0};
    int ready = out && fgets(line, sizeof line, out) && strncmp(line, "ready", 5) == 0;
    if (out) fclose(out); /* the server never writes again: closing the pipe's end is safe */
    if (!ready) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

/* Start `python -m foundation_shm._echo NAME [--channels CHANNELS]`, or with `script` the Python
 * script `script NAME`, and wait for its "ready" line; its pid, or -1. */
pid_t server_of(const char *python, const char *script, const char *name, const char *channels) {
    char *py = (char *)python, *nm = (char *)name, *chs = (char *)channels;
    if (script) return ready_server((char *const[]){py, (char *)script, nm, NULL});
    if (channels) return ready_server((char *const[]){py, "-m", "foundation_shm._echo", nm, "--channels", chs, NULL});
    return ready_server((char *const[]){py, "-m", "foundation_shm._echo", nm, NULL});
}

pid_t echo_server_of(const char *python, const char *name, const char *channels) {
    return server_of(python, NULL, name, channels);
}

pid_t echo_server(const char *python, const char *name) { return echo_server_of(python, name, NULL); }

void kill_server(pid_t pid) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

void remove_objects(const char *name) {
    const char *patterns[] = {"/dev/shm/fdn-%s", "/dev/shm/fdn-%s-*", "/dev/shm/fdn-%s.lock", "/dev/shm/sem.fdn-%s-*"};
    for (size_t i = 0; i < sizeof patterns / sizeof *patterns; i++) {
        char pattern[256];
        glob_t g;
        snprintf(pattern, sizeof pattern, patterns[i], name);
        if (glob(pattern, 0, NULL, &g) == 0)
            for (size_t k = 0; k < g.gl_pathc; k++) unlink(g.gl_pathv[k]);
        globfree(&g);
    }
}

/* How many files match /dev/shm/fdn-NAME-d* (data segments); the last one's stat in *st. */
size_t data_segments(const char *name, struct stat *st) {
    char pattern[256];
    glob_t g;
    size_t n = 0;
    snprintf(pattern, sizeof pattern, "/dev/shm/fdn-%s-d*", name);
    if (glob(pattern, 0, NULL, &g) == 0) {
        n = g.gl_pathc;
        if (st && n) stat(g.gl_pathv[n - 1], st);
    }
    globfree(&g);
    return n;
}

int32_t x[2] = {1, 2};
const uint64_t shape[1] = {2};

void echo(fdn_client *c, const char *what) {
    struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    struct fdn_result res;
    struct fdn_error err = {0};
    enum fdn_status st = fdn_infer(c, "echo", &in, 1, 5000, &res, &err);
    const struct fdn_tensor *y = st == FDN_OK ? fdn_result_output(&res, "x") : NULL;
    CHECK(y && y->data_size == sizeof x && memcmp(y->data, x, sizeof x) == 0, "%s: %s %s", what,
          fdn_strerror(st), err.message);
}

/* Map the control segment of server `name` (a mapping of our own: it outlives a client's); NULL if
 * it cannot be. */
struct fdn_region_header *map_region(const char *name, size_t *size) {
    char path[128];
    snprintf(path, sizeof path, "/fdn-%s", name);
    int fd = shm_open(path, O_RDWR, 0);
    struct stat sb;
    void *ctl = MAP_FAILED;
    if (fd >= 0 && fstat(fd, &sb) == 0) {
        *size = (size_t)sb.st_size;
        ctl = mmap(NULL, *size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    }
    if (fd >= 0) close(fd);
    return ctl == MAP_FAILED ? NULL : ctl;
}

/* The first channel of the region this process owns, other than `skip`; NULL if none. */
struct fdn_channel *own_channel(struct fdn_region_header *r, const struct fdn_channel *skip) {
    struct fdn_channel *chs = (struct fdn_channel *)((uint8_t *)r + r->channels_offset);
    for (uint32_t i = 0; i < r->channel_count; i++)
        if (&chs[i] != skip && __atomic_load_n(&chs[i].owner_pid, __ATOMIC_ACQUIRE) == (uint32_t)getpid())
            return &chs[i];
    return NULL;
}

/* Poll until the channel has no owner (the server reclaimed it): 1, or 0 after a minute (the
 * server's beat comes late on a loaded machine, not never). */
int freed(struct fdn_channel *ch) {
    for (int i = 0; i < 6000; i++) {
        if (__atomic_load_n(&ch->owner_pid, __ATOMIC_ACQUIRE) == 0) return 1;
        usleep(10000);
    }
    return 0;
}

/* Stop `server` (SIGSTOP, waited for with WUNTRACED: the signal is asynchronous) and wait until its
 * heartbeat in region r is stale (section 10.3: older than 10 intervals, and 1 s): 1, or 0. */
int hang(pid_t server, struct fdn_region_header *r) {
    kill(server, SIGSTOP);
    int ws = 0;
    if (waitpid(server, &ws, WUNTRACED) != server || !WIFSTOPPED(ws)) return 0;
    for (int i = 0; i < 6000; i++) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        uint64_t t = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
        if (t - __atomic_load_n(&r->heartbeat_ns, __ATOMIC_ACQUIRE) > 1010000000u) return 1;
        usleep(10000);
    }
    return 0;
}

/* Resume the stopped `server` (SIGCONT) and wait until it has beaten again, read through a mapping
 * of its control segment `name`: until then a call still finds it hung (stopped over a second) and
 * gives up after its connect_timeout_ms (20 or 50 ms in these tests), which a resumed process on a
 * loaded machine may take to be run at all. 1, or 0 after a minute. */
int resume(pid_t server, const char *name) {
    size_t size = 0;
    struct fdn_region_header *r = map_region(name, &size);
    uint64_t beat = r ? __atomic_load_n(&r->heartbeat_ns, __ATOMIC_ACQUIRE) : 0;
    kill(server, SIGCONT);
    int beaten = 0;
    for (int i = 0; r && i < 60000 && !(beaten = __atomic_load_n(&r->heartbeat_ns, __ATOMIC_ACQUIRE) != beat); i++)
        usleep(1000);
    if (r) munmap(r, size);
    return beaten;
}

/* How many channels of region r this process owns. */
int owned(struct fdn_region_header *r) {
    struct fdn_channel *chs = (struct fdn_channel *)((uint8_t *)r + r->channels_offset);
    int n = 0;
    for (uint32_t i = 0; i < r->channel_count; i++)
        n += __atomic_load_n(&chs[i].owner_pid, __ATOMIC_ACQUIRE) == (uint32_t)getpid();
    return n;
}

int file_in(const char *dir, const char *model, const char *what) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.%s", dir, model, what);
    return access(path, F_OK) == 0;
}

/* malloc, wrapped in this binary (-Wl,--wrap=malloc, the Makefile's test-live rule): while
 * malloc_fails is set, the mallocs of this thread (the library's included) fail ENOMEM. */
void *__real_malloc(size_t size);
__thread int malloc_fails;

void *__wrap_malloc(size_t size) {
    if (malloc_fails) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_malloc(size);
}

/* The client's counts (spec 10.5) are `reconnects` and `resends` `when`. */
void counts_are(const fdn_client *c, uint64_t reconnects, uint64_t resends, const char *when) {
    struct fdn_counters n = {99, 99};
    fdn_client_counters(c, &n);
    CHECK(n.reconnects == reconnects && n.resends == resends,
          "the counts %s: %llu reconnects, %llu resends; want %llu and %llu", when, (unsigned long long)n.reconnects,
          (unsigned long long)n.resends, (unsigned long long)reconnects, (unsigned long long)resends);
}
