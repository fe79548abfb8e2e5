/* test-live: a server's liveness (late answers after a deadline, a hung server, a busy region
 * mutex). */
#define _GNU_SOURCE
#include "live.h"

/* A call without a deadline, on a thread of its own (late_answer_checks). */
struct lone_call {
    fdn_client *c;
    struct fdn_error err;
    enum fdn_status st;
};

static void *lone_call(void *arg) {
    struct lone_call *k = arg;
    struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    struct fdn_result res;
    k->st = fdn_infer(k->c, "echo", &in, 1, -1, &res, &k->err);
    return NULL;
}

/* The call after an abandoned one (it passed its deadline) on a server of one channel waits for
 * the late answer, up to its own deadline (DEADLINE_EXCEEDED, still with the server), then sends
 * its own request and reads its own answer, never the late one (spec 7.5). A server hung (10.3)
 * meanwhile fails it SERVER_UNAVAILABLE after connect_timeout_ms: a call without a deadline waited
 * for ever, its request not even sent. */
void late_answer_checks(const char *python) {
    char name[64];
    snprintf(name, sizeof name, "fdncl%d", (int)getpid());
    pid_t server = echo_server_of(python, name, "1");
    CHECK(server > 0, "start a server of 1 channel");
    if (server < 0) return;
    struct fdn_options opts = FDN_DEFAULT_OPTIONS;
    opts.connect_timeout_ms = 50;
    struct fdn_error err = {0};
    struct fdn_result res;
    int32_t ones[2] = {1, 1};
    struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    struct fdn_input old = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = ones};
    struct fdn_call slow = {.params = "{\"ms\": 300}"}, brief = {.params = "{\"ms\": 1}"};
    fdn_client *c = NULL;
    size_t size = 0;
    struct fdn_region_header *r = map_region(name, &size);
    CHECK(r, "map the control segment");
    enum fdn_status st = fdn_connect(&c, name, &opts, &err);
    CHECK(st == FDN_OK, "connect: %s", err.message);
    if (st || !r) goto out;

    st = fdn_infer_call(c, "sleep", &old, 1, 20, &slow, &res, &err);
    CHECK(st == FDN_DEADLINE_EXCEEDED, "a 20 ms deadline on a 300 ms call: %s", fdn_strerror(st));
    uint64_t abandoned = err.request_id;
    st = fdn_infer(c, "echo", &in, 1, 60000, &res, &err);
    const struct fdn_tensor *y = st == FDN_OK ? fdn_result_output(&res, "x") : NULL;
    CHECK(y && res.request_id == abandoned + 1 && strcmp(res.model, "echo") == 0 && memcmp(y->data, x, sizeof x) == 0,
          "the call after the abandoned one reads its own answer: %s %s", fdn_strerror(st), err.message);

    kill(server, SIGSTOP); /* it holds the next request as long as this needs; hung a second later */
    int ws = 0;
    CHECK(waitpid(server, &ws, WUNTRACED) == server && WIFSTOPPED(ws), "the server did not stop");
    st = fdn_infer_call(c, "sleep", &old, 1, 20, &brief, &res, &err);
    CHECK(st == FDN_DEADLINE_EXCEEDED, "a call to a stopped server: %s", fdn_strerror(st));
    REFUSED_ONLY(fdn_infer(c, "echo", &in, 1, 30, &res, &err), FDN_DEADLINE_EXCEEDED,
                 "the previous request on this channel (a call that passed its deadline) is still with the server");
    struct lone_call k = {.c = c};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, lone_call, &k) == 0, "start a thread");
    struct timespec limit;
    clock_gettime(CLOCK_REALTIME, &limit);
    limit.tv_sec += 60; /* not a timing check: a wait for ever fails here, not at the harness's limit */
    int joined = pthread_timedjoin_np(t, NULL, &limit) == 0;
    CHECK(joined, "a call without a deadline still waits for a hung server's late answer");
    int beaten = resume(server, name);
    if (!joined) pthread_join(t, NULL);
    char says[128];
    snprintf(says, sizeof says, "shm server '%s' (pid %d) is hung: no heartbeat for ", name, (int)server);
    CHECK(joined && k.st == FDN_SERVER_UNAVAILABLE && strstr(k.err.message, says) &&
              strstr(k.err.message, "no beat came within connect_timeout_ms (50 ms)") &&
              strstr(k.err.message, "the previous request on this channel (a call that passed its deadline) is still with it"),
          "a call without a deadline on a hung server: %s %s", fdn_strerror(k.st), k.err.message);
    CHECK(beaten, "the resumed server did not beat again");
    echo(c, "the call after the server resumed (its late answer in, then its own)");
out:
    if (r) munmap(r, size);
    if (c) fdn_close(c);
    kill_server(server);
    remove_objects(name);
}


/* With a spin window of a whole wait slice (spin_us up to 1 s is taken), the wait for an abandoned
 * call's late answer spun its every 50 ms slice (a CPU burnt for as long as it waited) and never
 * looked at the server's liveness (each slice ended in the spin): a server killed meanwhile was
 * found "hung" a second and connect_timeout_ms later, not gone within a slice. It spins once. */
void late_answer_spin_checks(const char *python) {
    char name[64];
    snprintf(name, sizeof name, "fdncs%d", (int)getpid());
    pid_t server = echo_server_of(python, name, "1");
    CHECK(server > 0, "start a server of 1 channel");
    if (server < 0) return;
    struct fdn_options opts = FDN_DEFAULT_OPTIONS;
    opts.spin_us = 1000000;
    opts.connect_timeout_ms = 500;
    struct fdn_error err = {0};
    struct fdn_result res;
    int32_t ones[2] = {1, 1};
    struct fdn_input old = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = ones};
    struct fdn_call slow = {.params = "{\"ms\": 60000}"};
    fdn_client *c = NULL;
    enum fdn_status st = fdn_connect(&c, name, &opts, &err);
    CHECK(st == FDN_OK, "connect: %s", err.message);
    if (st) goto out;
    st = fdn_infer_call(c, "sleep", &old, 1, 20, &slow, &res, &err);
    CHECK(st == FDN_DEADLINE_EXCEEDED, "a 20 ms deadline on a 60 s call: %s", fdn_strerror(st));
    struct lone_call k = {.c = c};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, lone_call, &k) == 0, "start a thread");
    usleep(200000); /* it waits for the late answer (the server sleeps 60 s) */
    kill_server(server);
    server = -1;
    pthread_join(t, NULL);
    char says[128];
    snprintf(says, sizeof says, "shm server '%s' (pid ", name);
    CHECK(k.st == FDN_SERVER_UNAVAILABLE && strstr(k.err.message, says) && strstr(k.err.message, ") is gone"),
          "a server killed while a call waits for its late answer is gone: %s %s", fdn_strerror(k.st), k.err.message);
out:
    if (c) fdn_close(c);
    if (server > 0) kill_server(server);
    remove_objects(name);
}


/* A hung server (section 10.3) takes no new client. Each connect to a stopped server claimed a
 * channel and its call left a request there the server could not answer: on 4 channels, 4
 * DEADLINE_EXCEEDED, then OVERLOADED "all 4 channels are in use" for every client, when the server
 * was hung. A connect now waits up to connect_timeout_ms for a beat, then is SERVER_UNAVAILABLE
 * naming the server, its pid and how long it has not beaten, claiming nothing; a call's reconnect
 * waits no longer than the call's timeout; a server that dies during the wait is gone at once. */
void hung_checks(const char *python) {
    char name[64], says[160];
    snprintf(name, sizeof name, "fdnch%d", (int)getpid());
    pid_t server = echo_server_of(python, name, "4");
    CHECK(server > 0, "start a server of 4 channels");
    if (server < 0) return;
    struct fdn_options patient = FDN_DEFAULT_OPTIONS, brief = FDN_DEFAULT_OPTIONS;
    patient.connect_timeout_ms = 60000;
    brief.connect_timeout_ms = 200;
    struct fdn_error err = {0};
    struct fdn_result res;
    struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    fdn_client *c = NULL, *d = NULL;
    enum fdn_status st = fdn_connect(&c, name, &patient, &err);
    CHECK(st == FDN_OK, "connect: %s", err.message);
    size_t size = 0;
    struct fdn_region_header *r = map_region(name, &size);
    CHECK(r, "map the control segment");
    if (st || !r) goto out;
    echo(c, "a call before the server hangs");

    CHECK(hang(server, r), "the stopped server's heartbeat did not go stale");
    snprintf(says, sizeof says, "shm server '%s' (pid %d) is hung: no heartbeat for ", name, (int)server);
    for (int i = 0; i < 8; i++) {
        memset(&err, 0, sizeof err);
        st = fdn_connect(&d, name, &brief, &err);
        if (st == FDN_OK) {
            st = fdn_infer(d, "echo", &in, 1, 200, &res, &err);
            fdn_close(d);
            d = NULL;
        }
        CHECK(st == FDN_SERVER_UNAVAILABLE && strstr(err.message, says) &&
                  strstr(err.message, "no beat came within connect_timeout_ms (200 ms)"),
              "connect %d to a hung server: %s %s", i, fdn_strerror(st), err.message);
    }
    CHECK(owned(r) == 1, "this process owns %d channels after 8 connects to a hung server, not 1", owned(r));
    kill(server, SIGCONT);
    st = fdn_connect(&d, name, &patient, &err); /* its next beat is up to an interval away */
    CHECK(st == FDN_OK, "connect to the resumed server: %s", err.message);
    if (d) echo(d, "a call on the resumed server");
    if (d) fdn_close(d);
    d = NULL;

    /* a call's reconnect (the server restarted) to a hung server: its own timeout, not 60 s */
    kill(server, SIGTERM);
    waitpid(server, NULL, 0);
    munmap(r, size);
    r = NULL;
    server = echo_server_of(python, name, "4");
    CHECK(server > 0, "restart");
    if (server < 0) goto out;
    r = map_region(name, &size);
    CHECK(r && hang(server, r), "the restarted server did not hang");
    if (!r) goto out;
    memset(&err, 0, sizeof err);
    st = fdn_infer(c, "echo", &in, 1, 200, &res, &err);
    CHECK(st == FDN_SERVER_UNAVAILABLE && strstr(err.message, "is hung: ") &&
              strstr(err.message, "before the call's deadline"),
          "a call reconnecting to a hung server: %s %s", fdn_strerror(st), err.message);
    kill(server, SIGCONT);
    echo(c, "the call after the server resumed");

    /* a connect waiting (60 s) for a hung server's beat sees it die: gone then, not hung later */
    CHECK(hang(server, r), "the server did not hang again");
    int fds[2];
    if (pipe(fds) < 0) goto out;
    pid_t child = fork();
    if (child == 0) {
        close(fds[0]);
        struct fdn_error e = {0};
        fdn_client *k = NULL;
        enum fdn_status s = fdn_connect(&k, name, &patient, &e);
        if (k) fdn_close(k);
        dprintf(fds[1], "%d %s", (int)s, e.message);
        _exit(0);
    }
    close(fds[1]);
    usleep(300000); /* the connect waits for a beat by now */
    pid_t dead = server;
    kill_server(server);
    server = -1;
    struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
    char got[300] = {0};
    int ready = poll(&pfd, 1, 30000) == 1;
    if (ready) {
        ssize_t n = read(fds[0], got, sizeof got - 1);
        got[n > 0 ? n : 0] = 0;
    }
    close(fds[0]);
    if (!ready) kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    snprintf(says, sizeof says, "%d shm server '%s' (pid %d) is gone", FDN_SERVER_UNAVAILABLE, name, (int)dead);
    CHECK(ready && strcmp(got, says) == 0, "a connect whose hung server died: %s", ready ? got : "still waiting");
out:
    if (r) munmap(r, size);
    if (c) fdn_close(c);
    if (server > 0) {
        kill(server, SIGCONT);
        kill_server(server);
    }
    remove_objects(name);
}

/* A call that reconnected (its server stopped and started again) waited for a busy region mutex
 * up to connect_timeout_ms whatever its own timeout: a call of 200 ms waited 30 s here, then failed
 * OVERLOADED. It now waits no later than its deadline and fails DEADLINE_EXCEEDED saying what it
 * waited for; a connect outside a call still waits connect_timeout_ms and is OVERLOADED. The mutex
 * is held as a client stopped inside it holds it: its holder a live pid, never freed by the server. */
void mutex_checks(const char *python) {
    char name[64], says[160], lock[128];
    snprintf(name, sizeof name, "fdncm%d", (int)getpid());
    snprintf(lock, sizeof lock, "/fdn-%s-lock", name);
    pid_t server = echo_server(python, name);
    CHECK(server > 0, "start a server");
    if (server < 0) return;
    struct fdn_options patient = FDN_DEFAULT_OPTIONS, brief = FDN_DEFAULT_OPTIONS;
    patient.connect_timeout_ms = 30000;
    brief.connect_timeout_ms = 200;
    struct fdn_error err = {0};
    struct fdn_result res;
    struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    fdn_client *c = NULL, *d = NULL;
    struct fdn_region_header *r = NULL;
    size_t size = 0;
    sem_t *mutex = SEM_FAILED;
    int held = 0;
    enum fdn_status st = fdn_connect(&c, name, &patient, &err);
    CHECK(st == FDN_OK, "connect: %s", err.message);
    if (st) goto out;
    echo(c, "a call before the server restarts");
    kill(server, SIGTERM); /* a graceful stop: the client reconnects on its next call */
    waitpid(server, NULL, 0);
    server = echo_server(python, name);
    CHECK(server > 0, "restart");
    if (server < 0) goto out;
    r = map_region(name, &size);
    mutex = sem_open(lock, 0);
    CHECK(r && mutex != SEM_FAILED, "map the control segment, open the region mutex");
    if (!r || mutex == SEM_FAILED) goto out;
    CHECK(sem_wait(mutex) == 0, "take the region mutex");
    held = 1;
    __atomic_store_n(&r->mutex_holder_pid, (uint32_t)getpid(), __ATOMIC_RELEASE); /* alive: left held */

    st = fdn_infer(c, "echo", &in, 1, 200, &res, &err);
    snprintf(says, sizeof says, "shm server '%s': region mutex still busy at the deadline", name);
    CHECK(st == FDN_DEADLINE_EXCEEDED && strstr(err.message, says),
          "a call reconnecting while the region mutex is held: %s %s", fdn_strerror(st), err.message);
    memset(&err, 0, sizeof err);
    st = fdn_connect(&d, name, &brief, &err);
    snprintf(says, sizeof says, "shm server '%s': region mutex busy for 200 ms", name);
    CHECK(st == FDN_OVERLOADED && strstr(err.message, says), "a connect while the region mutex is held: %s %s",
          fdn_strerror(st), err.message);
    if (d) fdn_close(d);
    CHECK(owned(r) == 0, "this process owns %d channels of the restarted server, not 0", owned(r));
    __atomic_store_n(&r->mutex_holder_pid, 0, __ATOMIC_RELEASE);
    sem_post(mutex);
    held = 0;
    echo(c, "the call once the mutex is free");
out:
    if (held) {
        __atomic_store_n(&r->mutex_holder_pid, 0, __ATOMIC_RELEASE);
        sem_post(mutex);
    }
    if (mutex != SEM_FAILED) sem_close(mutex);
    if (r) munmap(r, size);
    if (c) fdn_close(c);
    if (server > 0) kill_server(server);
    remove_objects(name);
}

/* The landing of a late answer in late_answer_gone_checks: the first look at the killed server's
 * stat stores the answer to the abandoned request first, as a server's respond does just before
 * it dies (server_seq, then server_busy 0). */
static uint32_t landing_pid;
static struct fdn_channel *landing_ch;
static int landed;

static int landing_open_stat(uint32_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC), e = errno;
    if (fd < 0 && pid == landing_pid && !__atomic_exchange_n(&landed, 1, __ATOMIC_ACQ_REL)) {
        uint64_t s = __atomic_load_n(&landing_ch->client_seq, __ATOMIC_ACQUIRE);
        __atomic_store_n(&landing_ch->server_seq, s, __ATOMIC_RELEASE);
        __atomic_store_n(&landing_ch->server_busy, 0, __ATOMIC_RELEASE);
    }
    errno = e;
    return fd;
}

/* Spec 7.5: a late answer that lands as the wait for it finds the server gone (the server answered
 * the abandoned request and died between the wait's look at server_seq and its look at the
 * server's liveness). The call's own request must not go to that server: it reconnects and, with
 * no server since, fails "... is gone; not sent: no server has started under that name since",
 * naming no request. It was published on the dead server's channel and failed "...; not sent
 * again: ..." a slice later (10.3's resend), naming a request that no server ever saw. */
void late_answer_gone_checks(const char *python) {
    char name[64], want[256];
    snprintf(name, sizeof name, "fdnlg%d", (int)getpid());
    pid_t server = echo_server_of(python, name, "1");
    CHECK(server > 0, "start a server of 1 channel");
    if (server < 0) return;
    struct fdn_error err = {0};
    struct fdn_result res;
    struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    struct fdn_call slow = {.params = "{\"ms\": 60000}"};
    fdn_client *c = NULL;
    size_t size = 0;
    struct fdn_region_header *r = map_region(name, &size);
    int (*real)(uint32_t) = fdn_open_stat;
    CHECK(r, "map the control segment");
    enum fdn_status st = fdn_connect(&c, name, NULL, &err);
    CHECK(st == FDN_OK, "connect: %s", err.message);
    if (st || !r) goto out;
    st = fdn_infer_call(c, "sleep", &in, 1, 20, &slow, &res, &err);
    CHECK(st == FDN_DEADLINE_EXCEEDED, "a 20 ms deadline on a 60 s call: %s", fdn_strerror(st));
    landing_ch = own_channel(r, NULL);
    CHECK(landing_ch, "the client's channel");
    if (!landing_ch) goto out;
    landing_pid = (uint32_t)server;
    __atomic_store_n(&landed, 0, __ATOMIC_RELEASE);
    fdn_open_stat = landing_open_stat;
    struct lone_call k = {.c = c};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, lone_call, &k) == 0, "start a thread");
    for (int i = 0; i < 60000 && !__atomic_load_n(&landing_ch->client_sleeping, __ATOMIC_ACQUIRE); i++) usleep(1000);
    CHECK(__atomic_load_n(&landing_ch->client_sleeping, __ATOMIC_ACQUIRE), "the call never waited for the late answer");
    kill_server(server);
    pthread_join(t, NULL);
    fdn_open_stat = real;
    snprintf(want, sizeof want,
             "shm server '%s' (pid %d) is gone; not sent: no server has started under that name since", name,
             (int)server);
    server = -1;
    CHECK(__atomic_load_n(&landed, __ATOMIC_ACQUIRE), "the late answer never landed");
    CHECK(k.st == FDN_SERVER_UNAVAILABLE && strcmp(k.err.message, want) == 0 && k.err.request_id == 0,
          "a call whose late answer came as its server was found gone: %s '%s' (request %llu); want '%s' naming no "
          "request",
          fdn_strerror(k.st), k.err.message, (unsigned long long)k.err.request_id, want);
    counts_are(c, 0, 0, "after a call whose reconnect failed");
out:
    fdn_open_stat = real;
    if (r) munmap(r, size);
    if (c) fdn_close(c);
    if (server > 0) kill_server(server);
    remove_objects(name);
}
