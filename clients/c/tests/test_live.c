/* test_live: the C client against a real server (the shm echo server, started with the Python in
 * FDN_TEST_PYTHON): a deadline keeps the channel busy until the late answer, a killed server is
 * SERVER_UNAVAILABLE, and the next call finds a restarted one; data segments are allocated, not
 * sparse, a capacity /dev/shm can never hold is TOO_LARGE, a leftover of our own pid is replaced; a
 * response over max_response_bytes is TOO_LARGE, nothing grown (clients/tests/sized_server.py); what
 * no server may answer fails INTERNAL (clients/tests/broken_server.py); the
 * API under misuse (NULL arguments, bad inputs, failed loans, extreme timeouts) gets a code and a
 * message naming the fault. Skipped without FDN_TEST_PYTHON. */
#define _GNU_SOURCE
#include "live.h"

/* The checks are in live_*.c (declared in live.h); main runs them in this order. */
int main(void) {
    const char *python = getenv("FDN_TEST_PYTHON");
    if (!python || !*python) {
        printf("test-live: skipped (set FDN_TEST_PYTHON to a Python with foundation_shm)\n");
        return 0;
    }
    char name[64]; /* the longest server name: its data names still fit (spec section 2) */
    snprintf(name, sizeof name, "fdnc%d_______________________________", (int)getpid());
    name[FDN_SERVER_NAME_MAX] = 0;
    pid_t server = echo_server(python, name);
    if (server < 0) {
        fprintf(stderr, "test-live: the echo server did not start\n");
        return 1;
    }
    fdn_client *c = allocation_checks(name);
    struct fdn_error err = {0};
    enum fdn_status st = c ? FDN_OK : FDN_INTERNAL;
    if (st == FDN_OK) {
        echo(c, "first call");
        segment_step_failure_checks(name);
        control_open_failure_checks(name);
        misuse_checks(name, c);
        max_response_checks(python);
        broken_server_checks(python);
        call_error_checks(name);
        stopping_checks(name, c);
        semaphore_failure_checks(python);
        late_loan_checks(name, server);
        cycle_checks(name);
        hung_checks(python);
        late_answer_checks(python);
        late_answer_spin_checks(python);
        late_answer_gone_checks(python);
        mutex_checks(python);
        restart_checks(python);
        dying_checks(python);
        abandoned_checks(python);
        sent_again_once_checks(python);
        moved_twice_checks(python);
        shared_name_checks(python);
        hung_call_gone_checks(python);
        counters_thread_checks(python);
        fork_checks(python);
        proof_checks(python);

        struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
        struct fdn_call slow = {.params = "{\"ms\": 300}"};
        struct fdn_result res;
        st = fdn_infer_call(c, "sleep", &in, 1, 20, &slow, &res, &err);
        CHECK(st == FDN_DEADLINE_EXCEEDED, "a 20 ms deadline on a 300 ms call: %s", fdn_strerror(st));
        echo(c, "the call after a deadline (waits for the late answer, then reads its own)");

        struct fdn_counters n0;
        fdn_client_counters(c, &n0);
        kill_server(server);
        st = fdn_infer(c, "echo", &in, 1, 5000, &res, &err);
        CHECK(st == FDN_SERVER_UNAVAILABLE, "a killed server: %s", fdn_strerror(st));
        server = echo_server(python, name);
        CHECK(server > 0, "restart");
        if (server > 0) echo(c, "the call after the server restarted");
        /* the failed call dropped the connection: the next one only reconnects (spec 10.5) */
        counts_are(c, n0.reconnects + 1, n0.resends, "after a call reconnected to a restarted server");

        if (server > 0) { /* a graceful stop: the region says STOPPED */
            kill(server, SIGTERM);
            waitpid(server, NULL, 0);
        }
        server = echo_server(python, name);
        CHECK(server > 0, "restart");
        if (server > 0) echo(c, "the first call after a graceful restart");
        /* it found the region STOPPED itself and went to the new server: a resend */
        counts_are(c, n0.reconnects + 2, n0.resends + 1, "after a call found its server stopped");
        if (server > 0) close_checks(name);

        if (server > 0) kill_server(server); /* closing a client whose server died */
        server = -1;
        fdn_close(c);
        CHECK(data_segments(name, NULL) == 0, "close after the server died: its data segment is left");
    }
    if (server > 0) kill_server(server);
    remove_objects(name);
    printf("test-live: %s\n", failures ? "FAIL" : "ok");
    return failures ? 1 : 0;
}
