/* test-live's check of fdn_client_counters read from another thread while the client's calls go
 * on across server restarts (spec 10.5: the counts may be read at any time, from any thread, while
 * the client is in a call): the reader never sees a count go down, and the counts it ends on are
 * the calls' own. Under `make test-tsan` a count written and read without an atomic is a report. */
#define _GNU_SOURCE
#include "live.h"

/* The reading thread: what it read last, how often, and whether a count ever went down. */
struct watcher {
    const fdn_client *c;
    int stop;
    long reads;
    int went_down;
    struct fdn_counters last;
};

static void *watch(void *arg) {
    struct watcher *w = arg;
    while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
        struct fdn_counters n;
        fdn_client_counters(w->c, &n);
        if (n.reconnects < w->last.reconnects || n.resends < w->last.resends) w->went_down = 1;
        w->last = n;
        w->reads++;
        usleep(100);
    }
    return NULL;
}

/* Three rounds, each: a server killed and restarted under the name, then a call (its request
 * published on the dead server's channel, never dispatched: sent again to the new server, one
 * reconnect and one resend); a server stopped gracefully and restarted, then a call (the region
 * STOPPED: it goes to the new server, one reconnect and one resend); echo calls between. */
void counters_thread_checks(const char *python) {
    char name[64];
    snprintf(name, sizeof name, "fdncw%d", (int)getpid());
    pid_t server = echo_server(python, name);
    CHECK(server > 0, "start the echo server");
    if (server < 0) return;
    fdn_client *c = NULL;
    struct fdn_error err = {0};
    enum fdn_status st = fdn_connect(&c, name, NULL, &err);
    CHECK(st == FDN_OK, "connect: %s", err.message);
    if (st) goto out;
    struct watcher w = {.c = c};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, watch, &w) == 0, "start the reading thread");
    const int rounds = 3;
    for (int i = 0; i < rounds && server > 0; i++) {
        echo(c, "a call before the kill");
        kill_server(server);
        server = echo_server(python, name);
        CHECK(server > 0, "restart after a kill");
        if (server < 0) break;
        echo(c, "the call after the kill (sent again)");
        kill(server, SIGTERM); /* a graceful stop: its region says STOPPED */
        waitpid(server, NULL, 0);
        server = echo_server(python, name);
        CHECK(server > 0, "restart after a stop");
        if (server > 0) echo(c, "the call after the stop (moved)");
    }
    __atomic_store_n(&w.stop, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    CHECK(!w.went_down && w.reads > 10, "the reading thread: %ld reads, a count went down: %d", w.reads, w.went_down);
    CHECK(w.last.reconnects <= 2u * rounds && w.last.resends <= 2u * rounds,
          "the reading thread's last read passed the counts: %llu, %llu", (unsigned long long)w.last.reconnects,
          (unsigned long long)w.last.resends);
    counts_are(c, 2u * rounds, 2u * rounds, "after three kills and three stops, each restarted");
out:
    if (c) fdn_close(c);
    if (server > 0) kill_server(server);
    remove_objects(name);
}
