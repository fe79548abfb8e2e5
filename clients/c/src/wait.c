/* wait.c: waiting for the server's answer on the claimed channel: spin, then block in slices,
 * telling a dead or hung server from a slow one between them (sections 7.2, 7.5, 10.3). */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>

#include "client.h"

/* --- waiting (section 7.2, steps 4-7) -------------------------------------------------------- */
static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Wait until server_seq == s: spin for spin_us (`spin`: 0 for none), then block in slices, checking
 * the deadline (0: none) and the server's liveness between slices. */
enum fdn_status fdn_wait_seq(struct fdn_client *c, uint64_t s, uint64_t deadline, int spin, struct fdn_error *err) {
    struct fdn_channel *ch = c->ch;
    if (FDN_LOAD(&ch->server_seq) == s) return FDN_OK;
    if (spin && c->opts.spin_us) {
        /* never past the deadline, and at most one wait slice: a spin checks neither liveness nor
         * the deadline inside (spin_us may be up to 1 s) */
        uint64_t start = fdn_now_ns(), window = (uint64_t)c->opts.spin_us * 1000u;
        uint64_t slice_ns = (uint64_t)FDN_WAIT_SLICE_MS * 1000000u;
        if (window > slice_ns) window = slice_ns;
        if (deadline && deadline > start && deadline - start < window) window = deadline - start;
        if (deadline && deadline <= start) window = 0;
        uint64_t end = start + window;
        int polite = 0;
        for (unsigned k = 0;; k++) {
            if (FDN_LOAD(&ch->server_seq) == s) return FDN_OK;
            if (polite) sched_yield(); /* the server may need this CPU (more threads than CPUs) */
            else cpu_relax();
            if ((k & 15) == 15 || polite) {
                uint64_t t = fdn_now_ns();
                if (t > end) break;
                polite = t - start > FDN_YIELD_AFTER_NS;
            }
        }
    }
    FDN_STORE(&ch->client_sleeping, 1);
    FDN_FENCE();
    enum fdn_status st = FDN_OK;
    while (FDN_LOAD(&ch->server_seq) != s) {
        uint64_t slice = (uint64_t)FDN_WAIT_SLICE_MS * 1000000u;
        if (deadline) {
            uint64_t t = fdn_now_ns();
            if (t >= deadline) {
                st = fdn_fail(err, FDN_DEADLINE_EXCEEDED, 0, "no response from '%s' before the deadline", c->name);
                break;
            }
            if (deadline - t < slice) slice = deadline - t;
        }
        fdn_sem_wait_ns(c->sem, slice);
        if (FDN_LOAD(&ch->server_seq) == s) break;
        if (!fdn_server_alive(c)) {
            c->connected = 0; /* the next call reconnects */
            /* a process proven dead changes neither word any more: an answer that came just
             * before the death is a normal one; server_busy still 0, dispatch (which stores 1
             * before it decodes) never began, so no handler ran the request. Not alive is no such
             * proof: a region STOPPED while its process lives (its serving loop may yet dispatch)
             * may hide a live server with the request queued, which a request sent again would
             * make run twice. */
            int dead = fdn_server_gone(c);
            if (FDN_LOAD(&ch->server_seq) == s) break;
            c->unsent = dead && FDN_LOAD(&ch->server_busy) == 0;
            st = fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0, "shm server '%s' (pid %u) is gone", c->name, c->server_pid);
            break;
        }
    }
    FDN_STORE(&ch->client_sleeping, 0);
    return st;
}

/* Wait until the channel is idle: the answer to a request that passed its deadline (or whose call
 * was abandoned) may still be owed; it is never read, the next request is written once it is in
 * (spec 7.5). Up to `deadline` (0: none), then DEADLINE_EXCEEDED; a server that is hung (10.3)
 * meanwhile is waited for as a claim waits for its beat, up to connect_timeout_ms and no later than
 * the deadline, then SERVER_UNAVAILABLE: a call without a deadline waited for ever on a stopped
 * server, its request not even sent. */
enum fdn_status fdn_wait_idle(struct fdn_client *c, uint64_t deadline, struct fdn_error *err) {
    uint64_t hung_end = 0, silent_ms = 0, slice = (uint64_t)FDN_WAIT_SLICE_MS * 1000000u;
    int first = 1;
    while (FDN_LOAD(&c->ch->server_seq) != c->seq) {
        uint64_t now = fdn_now_ns();
        if (!fdn_hung(c, &silent_ms)) {
            hung_end = 0;
        } else {
            if (!hung_end) hung_end = now + (uint64_t)c->opts.connect_timeout_ms * 1000000u;
            int by_deadline = deadline && deadline < hung_end;
            if (now >= (by_deadline ? deadline : hung_end)) {
                char limit[64];
                if (by_deadline) snprintf(limit, sizeof limit, "before the call's deadline");
                else snprintf(limit, sizeof limit, "within connect_timeout_ms (%u ms)", c->opts.connect_timeout_ms);
                return fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0,
                                "shm server '%s' (pid %u) is hung: no heartbeat for %llu ms (stopped or stalled; no "
                                "beat came %s): the previous request on this channel (a call that passed its "
                                "deadline) is still with it",
                                c->name, c->server_pid, (unsigned long long)silent_ms, limit);
            }
        }
        uint64_t until = now + slice; /* a slice at a time: the heartbeat is looked at between them */
        if (deadline && deadline < until) until = deadline;
        /* the spin in the first slice only: a spin window of a whole slice spun every slice (a CPU
         * burnt while waiting) and never looked at the server's liveness (each slice ended in it) */
        enum fdn_status st = fdn_wait_seq(c, c->seq, until, first, err);
        first = 0;
        if (!st && !c->connected) /* the late answer came in as the wait found the server gone (its
                                   * region STOPPED, or its process dead just after it answered):
                                   * this call's request must not go there; ready reconnects (7.5).
                                   * It was published there and sent on by 10.3's resend a slice
                                   * later, or, to a STOPPED server whose process lives, failed gone */
            return fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0, "shm server '%s' (pid %u) is gone", c->name, c->server_pid);
        if (st == FDN_DEADLINE_EXCEEDED && deadline && fdn_now_ns() >= deadline)
            return fdn_fail(err, st, 0, "the previous request on this channel (a call that passed its deadline) is "
                                        "still with the server");
        if (st && st != FDN_DEADLINE_EXCEEDED) return st;
    }
    return FDN_OK;
}
