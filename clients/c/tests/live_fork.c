/* test-live's checks of a client copied into a forked child (a preforking service that connected
 * before it forked): the child's copy, closed or called, leaves the parent's channel and data
 * segment to the parent; a call in the child connects a channel of its own (a reconnect, as the
 * Python client's copy does), and a loan made before the fork is not lent out in the child. */
#define _GNU_SOURCE
#include "live.h"

/* Run `child` in a forked child with the parent's client c; its checks' failures are the child's
 * exit status, counted here. */
static void in_child(fdn_client *c, void (*child)(fdn_client *c), const char *what) {
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        failures = 0;
        child(c);
        _exit(failures ? 1 : 0);
    }
    int status = 0;
    if (pid > 0) waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: the child's checks failed (status %d)", what, status);
}

/* A child that only closes its copy (its cleanup at exit): the channel was the parent's. */
static void close_only(fdn_client *c) { fdn_close(c); }

/* A child whose first use of its copy is a call (no loan): it connects a channel of its own, one
 * reconnect counted, before it publishes anything; then it closes its copy. */
static void call_first(fdn_client *c) {
    echo(c, "the child's first call through its copy of the parent's client");
    counts_are(c, 1, 0, "in the child after its first call (its own channel: a reconnect)");
    fdn_close(c);
}

/* A child that calls through its copy: a channel of its own, one reconnect counted; the parent's
 * loan is not the child's; then it closes its copy. */
static void call_and_close(fdn_client *c) {
    struct fdn_error err = {0};
    struct fdn_result res;
    CHECK(fdn_loan_data(c, 0) == NULL, "the parent's loan lent out in the child");
    REFUSED_ONLY(fdn_loan_infer(c, 1000, &res, &err), FDN_INVALID_INPUT, "before fork()");
    echo(c, "the child's call through its copy of the parent's client");
    counts_are(c, 1, 0, "in the child after its call (its own channel: a reconnect)");
    echo(c, "the child's second call");
    fdn_close(c);
}

/* A child forked while another thread of its parent ran the atfork registration (its first
 * connect) runs it again (glibc's pthread_once), so its handlers are registered twice: played by a
 * child that registers them twice more, then forks a grandchild that connects and calls. Each
 * handler ran twice took the records' lock twice on the forking thread, which waited for itself:
 * the child is killed after 10 s, a failure here rather than a hang. */
static void registered_twice_checks(const char *name) {
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        fdn_fork_handlers_register();
        fdn_fork_handlers_register();
        pid_t grandchild = fork();
        if (grandchild == 0) {
            fdn_client *g = NULL;
            struct fdn_error err = {0};
            failures = 0;
            CHECK(fdn_connect(&g, name, NULL, &err) == FDN_OK, "the grandchild's connect: %s", err.message);
            if (g) echo(g, "the grandchild's call");
            if (g) fdn_close(g);
            _exit(failures ? 1 : 0);
        }
        int status = -1;
        if (grandchild > 0) waitpid(grandchild, &status, 0);
        _exit(grandchild > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1);
    }
    if (pid < 0) return;
    int status = -1, done = 0;
    for (int i = 0; i < 1000 && !done; i++) {
        done = waitpid(pid, &status, WNOHANG) == pid;
        if (!done) usleep(10000);
    }
    if (!done) { /* the handlers deadlocked: no grandchild was forked */
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    CHECK(done && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "a child with its fork handlers registered twice, forking: %s (status %d)",
          done ? "its grandchild's checks failed" : "killed after 10 s", status);
}

void fork_checks(const char *python) {
    char name[64];
    snprintf(name, sizeof name, "fdncf%d", (int)getpid());
    pid_t server = echo_server(python, name);
    CHECK(server > 0, "start the echo server");
    if (server < 0) return;
    fdn_client *c = NULL;
    struct fdn_error err = {0};
    enum fdn_status st = fdn_connect(&c, name, NULL, &err);
    CHECK(st == FDN_OK, "connect: %s", err.message);
    if (st) goto out;
    echo(c, "the parent's call before the fork");

    in_child(c, close_only, "a child closing its copy");
    CHECK(data_segments(name, NULL) == 1, "the parent's data segment after the child's close: %zu",
          data_segments(name, NULL));
    echo(c, "the parent's call after a child closed its copy");

    in_child(c, call_first, "a child whose first call is through its copy");
    CHECK(data_segments(name, NULL) == 1, "the data segments after the child's call and close: %zu",
          data_segments(name, NULL));
    echo(c, "the parent's call after a child's first call");

    struct fdn_tensor spec = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = {2}};
    st = fdn_loan_begin(c, "echo", &spec, 1, &err);
    CHECK(st == FDN_OK, "the parent's loan: %s", err.message);
    in_child(c, call_and_close, "a child calling through its copy");
    CHECK(data_segments(name, NULL) == 1, "the data segments after the child's calls and close: %zu",
          data_segments(name, NULL));
    if (st == FDN_OK) { /* the parent's loan is still its own */
        int32_t *slot = fdn_loan_data(c, 0);
        CHECK(slot != NULL, "the parent's loan after the child's calls");
        if (slot) memcpy(slot, x, sizeof x);
        struct fdn_result res;
        st = fdn_loan_infer(c, 5000, &res, &err);
        const struct fdn_tensor *y = st == FDN_OK ? fdn_result_output(&res, "x") : NULL;
        CHECK(y && memcmp(y->data, x, sizeof x) == 0, "the parent's loan call: %s %s", fdn_strerror(st), err.message);
    }
    echo(c, "the parent's call after a child called through its copy");
    counts_are(c, 0, 0, "in the parent (the children's channels were theirs)");
    registered_twice_checks(name);
out:
    if (c) fdn_close(c);
    if (server > 0) kill_server(server);
    remove_objects(name);
}
