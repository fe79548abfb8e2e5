/* connect.c: attach to a server, claim a channel, disconnect (section 10.1). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

/* --- connect and disconnect ------------------------------------------------------------------ */
int fdn_forked(const struct fdn_client *c) { return c->forks != fdn_forks; }

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
    c->forks = fdn_forks;
}

void fdn_disconnect(struct fdn_client *c) {
    if (c->sem) sem_close(c->sem);
    if (c->mutex) sem_close(c->mutex);
    if (c->bell) sem_close(c->bell);
    fdn_drop_data(c);
    if (c->ctl) munmap(c->ctl, c->ctl_size);
    c->sem = c->mutex = c->bell = NULL;
    c->ctl = NULL;
    c->region = NULL;
    c->ch = NULL;
    c->connected = 0;
    c->loaned = 0;
}

/* Section 10.1 step 1's failure, by errno: only ENOENT says no server has the name. A server
 * another user started (mode 0600) was told "no shm server named" though it served; a process at
 * its file limit (EMFILE, ENFILE) may connect later: OVERLOADED, as a data segment's creation. */
static enum fdn_status open_failed(const struct fdn_client *c, int e, struct fdn_error *err) {
    if (e == ENOENT) return fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0, "no shm server named '%s'", c->name);
    if (e == EACCES)
        return fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0,
                        "no permission to use shm server '%s' (/dev/shm/fdn-%s): another user's; a server "
                        "started with mode 0o660 lets its group in",
                        c->name, c->name);
    return fdn_fail(err, e == EMFILE || e == ENFILE ? FDN_OVERLOADED : FDN_SERVER_UNAVAILABLE, 0,
                    "shm server '%s': cannot open /dev/shm/fdn-%s: %s", c->name, c->name, strerror(e));
}

static enum fdn_status open_region(struct fdn_client *c, struct fdn_error *err) {
    char path[64];
    snprintf(path, sizeof path, "/fdn-%s", c->name);
    int fd = fdn_shm_open(path, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) return open_failed(c, errno, err);
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
        if (FDN_LOAD(&r->state) == FDN_READY && fdn_lock_file_held(c->name) &&
            !fdn_zombie_here(c->server_pid, c->server_start))
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
    int known = fdn_read_stat(pid, &own_state, &own_start);
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
    pthread_once(&fdn_named_once, fdn_fork_handlers_register); /* a fork from now on is counted (fdn_forked) */
    c->forks = fdn_forks;
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
