/* test-live: a request is sent again only on proof of its server's death (stat reads blinded,
 * no /proc, this process's own start time, a copy malloc cannot make). */
#define _GNU_SOURCE
#include "live.h"

/* A request is sent again only when its server's process is proven dead (spec 10.3): not when
 * /proc/PID/stat cannot be read, nor when the region says STOPPED while the process lives. The
 * request is queued behind another client's (clients/tests/hold_client.py, its hold model holding
 * the serving loop of clients/tests/gate_server.py), so the live server never dispatched it
 * (server_busy 0): sent again on a new connection, it ran twice. */
static uint32_t blind_pid;
static int blind_reads; /* the next reads of blind_pid's stat fail blind_errno (this thread's calls only) */
static int blind_errno = EMFILE;

static int blind_open_stat(uint32_t pid) {
    if (pid == blind_pid && blind_reads > 0) {
        blind_reads--;
        errno = blind_errno;
        return -1;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    return open(path, O_RDONLY | O_CLOEXEC);
}

struct proof {
    const char *dir, *hold;
    struct fdn_region_header *region; /* set: write STOPPED once the call has published */
    int release_ms;                   /* the hold gate opens then, unless the call has returned */
    int done;
};

static void touch_in(const char *dir, const char *model, const char *what) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.%s", dir, model, what);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) close(fd);
}

/* Write STOPPED once the call has published (if asked), then open the hold gate after release_ms
 * unless the call has returned: a request sent again waits for its answer behind the held loop. */
static void *proof_helper(void *arg) {
    struct proof *p = arg;
    if (p->region) {
        struct fdn_channel *ch = own_channel(p->region, NULL);
        for (int i = 0; i < 6000 && ch && __atomic_load_n(&ch->client_seq, __ATOMIC_ACQUIRE) ==
                                                 __atomic_load_n(&ch->server_seq, __ATOMIC_ACQUIRE); i++)
            usleep(1000);
        __atomic_store_n(&p->region->state, FDN_STOPPED, __ATOMIC_RELEASE);
    }
    for (int i = 0; i < p->release_ms / 5 && !__atomic_load_n(&p->done, __ATOMIC_ACQUIRE); i++) usleep(5000);
    touch_in(p->dir, p->hold, "release");
    return NULL;
}

/* One case: `reads` stat reads of the server blinded (EMFILE): kill(pid, 0) says it lives, the
 * call waits on and is answered once the gate opens (300 ms: six wait slices, each with a look),
 * run once; it failed gone (and before 311f17c was sent again, run twice). Or (stopped) the region
 * STOPPED by the helper: the call fails gone, run once. */
static void proof_case(const char *python, int reads, int stopped) {
    char name[64], dir[] = "/tmp/fdnproofXXXXXX", model[16], hold[16];
    snprintf(name, sizeof name, "fdnproof%d_%d", (int)getpid(), reads + 3 * stopped);
    snprintf(model, sizeof model, "count_%d", reads);
    snprintf(hold, sizeof hold, "hold_%d", reads);
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    pid_t server = ready_server((char *const[]){(char *)python, "../tests/gate_server.py", name, dir, "--channels", "4", NULL});
    CHECK(server > 0, "start clients/tests/gate_server.py (run from clients/c)");
    if (server < 0) return;
    fdn_client *c = NULL;
    pid_t holder = -1;
    struct fdn_error err = {0};
    struct fdn_result res;
    struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    size_t size = 0;
    struct fdn_region_header *r = map_region(name, &size);
    enum fdn_status st = fdn_connect(&c, name, NULL, &err);
    CHECK(st == FDN_OK && r, "connect: %s", err.message);
    if (st || !r) goto out;
    echo(c, "the first call");
    holder = fork();
    if (holder == 0) {
        execl(python, python, "../tests/hold_client.py", name, hold, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 60000 && !file_in(dir, hold, "with-server"); i++) usleep(1000);
    CHECK(file_in(dir, hold, "with-server"), "the hold never reached the server");
    struct proof p = {.dir = dir, .hold = hold, .region = stopped ? r : NULL, .release_ms = stopped ? 5000 : 300};
    pthread_t helper;
    pthread_create(&helper, NULL, proof_helper, &p);
    blind_pid = (uint32_t)server;
    blind_reads = reads;
    st = fdn_infer(c, model, &in, 1, 30000, &res, &err);
    blind_reads = 0;
    char got[512];
    snprintf(got, sizeof got, "%s", err.message);
    __atomic_store_n(&p.done, 1, __ATOMIC_RELEASE);
    pthread_join(helper, NULL);
    __atomic_store_n(&r->state, FDN_READY, __ATOMIC_RELEASE);
    for (int i = 0; i < 60000 && !file_in(dir, hold, "answered"); i++) usleep(1000);
    char runs[512];
    snprintf(runs, sizeof runs, "%s/%s.runs", dir, model);
    struct stat sb = {0};
    for (int i = 0; i < 60000 && (stat(runs, &sb) != 0 || sb.st_size == 0); i++) usleep(1000);
    usleep(200000); /* a second run, if any, would be in by now */
    sb.st_size = 0;
    stat(runs, &sb);
    char gone[128];
    snprintf(gone, sizeof gone, "shm server '%s' (pid %d) is gone", name, (int)server);
    if (stopped)
        CHECK(st == FDN_SERVER_UNAVAILABLE && strcmp(got, gone) == 0 && sb.st_size == 1,
              "a call queued behind another on a live server (the region STOPPED): %s '%s', the handler ran it %lld "
              "times; want '%s', once",
              fdn_strerror(st), st ? got : "", (long long)sb.st_size, gone);
    else
        CHECK(st == FDN_OK && sb.st_size == 1,
              "a call queued behind another on a live server (%d of its looks unreadable): %s '%s', the handler ran "
              "it %lld times; want it answered, once",
              reads, fdn_strerror(st), st ? got : "", (long long)sb.st_size);
out:
    if (c) fdn_close(c);
    if (holder > 0) kill_server(holder);
    if (r) munmap(r, size);
    kill_server(server);
    remove_objects(name);
    const char *left[] = {"with-server", "release", "answered", "runs"};
    for (size_t i = 0; i < sizeof left / sizeof *left; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s.%s", dir, hold, left[i]);
        unlink(path);
        snprintf(path, sizeof path, "%s/%s.%s", dir, model, left[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* A dead process behind a stat file that cannot be read is proven gone (kill: ESRCH); a live one
 * is not, whatever start time it is asked with (that cannot be checked then). */
static void unreadable_pid_checks(void) {
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0); /* reaped: its pid names no process now */
    blind_pid = (uint32_t)dead;
    blind_reads = 1;
    CHECK(fdn_process_gone((uint32_t)dead, 1), "a dead pid whose stat file cannot be read is not proven gone");
    blind_pid = (uint32_t)getpid();
    blind_reads = 2;
    CHECK(!fdn_process_gone(blind_pid, 1) && !fdn_process_gone(blind_pid, 2),
          "this live process, its stat file unreadable, is taken for gone");
    blind_reads = 0;
}

static int proc_not_mounted(void) { return 0; }

/* Where /proc is not mounted every /proc/PID/stat is ENOENT, which proves no death (spec 10.3):
 * kill(pid, 0) settles it, as Rust and Python do. A live process was taken for gone (a call to a
 * live server failed gone, and was sent again). Where /proc is mounted, ENOENT is proof. */
static void no_proc_checks(void) {
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);
    int (*mounted)(void) = fdn_proc_mounted;
    fdn_proc_mounted = proc_not_mounted;
    blind_errno = ENOENT;
    blind_pid = (uint32_t)getpid();
    blind_reads = 2;
    CHECK(!fdn_process_gone(blind_pid, 1) && !fdn_process_gone(blind_pid, 2),
          "this live process, with no /proc mounted (its stat file ENOENT), is taken for gone");
    blind_pid = (uint32_t)dead;
    blind_reads = 1;
    CHECK(fdn_process_gone(blind_pid, 1), "a dead pid, with no /proc mounted, is not proven gone");
    fdn_proc_mounted = mounted;
    blind_pid = (uint32_t)getpid();
    blind_reads = 1;
    CHECK(fdn_process_gone(blind_pid, 1), "with /proc mounted, a stat file ENOENT is no proof of death");
    blind_reads = 0;
    blind_errno = EMFILE;
}

/* A server killed behind a stat file this client cannot read: kill(pid, 0) proves it gone, and
 * the request it never dispatched is sent again to the server restarted under its name. It failed
 * gone (not proven dead: not sent again). */
static void killed_unreadable_checks(const char *python) {
    char name[64];
    snprintf(name, sizeof name, "fdncrashblind%d", (int)getpid());
    pid_t server = echo_server(python, name);
    CHECK(server > 0, "start");
    if (server < 0) return;
    fdn_client *c = NULL;
    struct fdn_error err = {0};
    enum fdn_status st = fdn_connect(&c, name, NULL, &err);
    CHECK(st == FDN_OK, "connect: %s", err.message);
    if (st) goto out;
    echo(c, "the first call");
    kill_server(server);
    blind_pid = (uint32_t)server;
    blind_reads = 1000000;
    server = echo_server(python, name);
    CHECK(server > 0, "restart");
    if (server > 0) echo(c, "the first call after a crash behind an unreadable stat file");
    blind_reads = 0;
out:
    if (c) fdn_close(c);
    if (server > 0) kill_server(server);
    remove_objects(name);
}

/* This process's own start time (owner_start_time) that cannot be read at connect fails the
 * connect SERVER_UNAVAILABLE naming why, having claimed nothing: it wrote 0, which says "given
 * back", and the server reclaimed the live client's channel. */
static void own_start_checks(const char *python) {
    char name[64], want[256];
    snprintf(name, sizeof name, "fdnself%d", (int)getpid());
    pid_t server = echo_server_of(python, name, "2");
    CHECK(server > 0, "start");
    if (server < 0) return;
    fdn_client *c = NULL;
    struct fdn_error err = {0};
    size_t size = 0;
    struct fdn_region_header *r = map_region(name, &size);
    blind_pid = (uint32_t)getpid();
    blind_reads = 1;
    enum fdn_status st = fdn_connect(&c, name, NULL, &err);
    blind_reads = 0;
    snprintf(want, sizeof want,
             "shm server '%s': cannot read this process's start time (/proc/%d/stat): %s; no channel claimed", name,
             (int)getpid(), strerror(EMFILE));
    CHECK(st == FDN_SERVER_UNAVAILABLE && strcmp(err.message, want) == 0,
          "a connect that cannot read its own start time: %s '%s'; want '%s'", fdn_strerror(st), err.message, want);
    if (c) fdn_close(c), c = NULL;
    CHECK(r != NULL, "map the region");
    if (r) {
        struct fdn_channel *chs = (struct fdn_channel *)((uint8_t *)r + r->channels_offset);
        for (uint32_t i = 0; i < r->channel_count; i++)
            CHECK(__atomic_load_n(&chs[i].owner_pid, __ATOMIC_ACQUIRE) == 0 &&
                      __atomic_load_n(&chs[i].owner_start_time, __ATOMIC_ACQUIRE) == 0,
                  "the failed connect claimed channel %u", i);
        munmap(r, size);
    }
    st = fdn_connect(&c, name, NULL, &err);
    CHECK(st == FDN_OK, "the connect after: %s", err.message);
    if (st == FDN_OK) echo(c, "a call once the start time can be read");
    if (c) fdn_close(c);
    kill_server(server);
    remove_objects(name);
}

/* A request its killed server never dispatched whose copy for sending it again cannot be made
 * (malloc fails) fails gone with the reason appended, as every other "not sent again" does (spec
 * 10.3); it said only "... is gone", as if it had not been tried. */
static void copy_failure_checks(const char *python) {
    char name[64], want[256];
    snprintf(name, sizeof name, "fdncopy%d", (int)getpid());
    pid_t server = echo_server(python, name);
    CHECK(server > 0, "start");
    if (server < 0) return;
    fdn_client *c = NULL;
    struct fdn_error err = {0};
    struct fdn_result res;
    struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    enum fdn_status st = fdn_connect(&c, name, NULL, &err);
    CHECK(st == FDN_OK, "connect: %s", err.message);
    if (st) goto out;
    echo(c, "the first call");
    kill_server(server);
    malloc_fails = 1;
    st = fdn_infer(c, "echo", &in, 1, 5000, &res, &err);
    malloc_fails = 0;
    snprintf(want, sizeof want, "shm server '%s' (pid %d) is gone; not sent again: no memory for the copy of the request",
             name, (int)server);
    CHECK(st == FDN_SERVER_UNAVAILABLE && strcmp(err.message, want) == 0,
          "a request never dispatched whose copy cannot be made: %s '%s'; want '%s'", fdn_strerror(st), err.message,
          want);
    server = echo_server(python, name);
    CHECK(server > 0, "restart");
    if (server > 0) echo(c, "the call after a request not sent again for want of memory");
out:
    if (c) fdn_close(c);
    if (server > 0) kill_server(server);
    remove_objects(name);
}

void proof_checks(const char *python) {
    fdn_open_stat = blind_open_stat;
    proof_case(python, 1, 0);
    proof_case(python, 2, 0);
    proof_case(python, 1000000, 0);
    proof_case(python, 0, 1);
    unreadable_pid_checks();
    no_proc_checks();
    killed_unreadable_checks(python);
    own_start_checks(python);
    copy_failure_checks(python);
}
