/* client.c: connect, claim a channel, send requests and wait for responses (sections 7, 10). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

struct fdn_client {
    char name[49];
    struct fdn_options opts;
    /* the connection: control segment and semaphores of one server instance */
    int connected;
    uint8_t *ctl;
    size_t ctl_size;
    struct fdn_region_header *region;
    sem_t *mutex, *bell;
    uint32_t server_pid;
    uint64_t server_start, instance_id, max_request_bytes, default_capacity;
    mode_t mode;
    /* the claimed channel */
    uint32_t index;
    struct fdn_channel *ch;
    sem_t *sem;
    uint64_t seq;
    uint8_t *data;
    uint64_t req_cap, resp_cap, used;
    char data_name[64];
    uint64_t next_id;
    /* the loan: its model and laid-out tensors */
    int loaned;
    uint64_t loan_end;
    char loan_model[FDN_NAME_SIZE];
    struct fdn_request_fields req; /* reused for every request: no allocation per call */
    struct fdn_response_fields resp;
};

/* --- time and liveness ----------------------------------------------------------------------- */
static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Field 22 of /proc/PID/stat (start time in clock ticks since boot); 0 if the process is gone
 * or a zombie (field 3 is Z or X). */
static uint64_t start_time(uint32_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return 0;
    p++;
    if (p[0] == ' ' && (p[1] == 'Z' || p[1] == 'X')) return 0; /* a zombie answers nothing */
    for (int field = 2; field < 21 && p; field++) p = strchr(p + 1, ' ');
    return p ? strtoull(p + 1, NULL, 10) : 0;
}

/* Section 10.3: READY or STOPPING, and the process server_pid is the one that started then. */
static int server_alive(const struct fdn_client *c) {
    uint32_t state = FDN_LOAD(&c->region->state);
    if (state != FDN_READY && state != FDN_STOPPING) return 0;
    return c->server_pid && start_time(c->server_pid) == c->server_start;
}

/* Wait up to timeout_ns for a post: 0 if taken. CLOCK_MONOTONIC where glibc has sem_clockwait
 * (the wall clock may jump); the caller re-checks its condition either way (section 7.2). */
static int sem_wait_ns(sem_t *sem, uint64_t timeout_ns) {
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

static uint64_t pages(uint64_t n) {
    uint64_t p = (n + FDN_PAGE - 1) / FDN_PAGE * FDN_PAGE;
    return p < FDN_PAGE ? FDN_PAGE : p;
}

/* --- the data segment ------------------------------------------------------------------------ */
static void drop_data(struct fdn_client *c) {
    if (c->data) {
        shm_unlink(c->data_name);
        munmap(c->data, c->req_cap + c->resp_cap);
        c->data = NULL;
    }
}

/* Create a data segment with these capacities and publish it in the channel (section 10.1,
 * "Growing"); the request bytes in use are carried over. */
static enum fdn_status attach(struct fdn_client *c, uint64_t req_cap, uint64_t resp_cap, struct fdn_error *err) {
    uint64_t gen = FDN_LOAD(&c->ch->data_gen) + 1;
    char name[64];
    snprintf(name, sizeof name, "/fdn-%s-d%u-%u-%llu", c->name, c->index, (unsigned)getpid(),
             (unsigned long long)gen);
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, c->mode);
    if (fd < 0) return fdn_fail(err, FDN_INTERNAL, 0, "shm_open(%s): %s", name, strerror(errno));
    size_t size = (size_t)(req_cap + resp_cap);
    void *mem = MAP_FAILED;
    if (fchmod(fd, c->mode) == 0 && ftruncate(fd, (off_t)size) == 0)
        mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int saved = errno;
    close(fd);
    if (mem == MAP_FAILED) {
        shm_unlink(name);
        return fdn_fail(err, FDN_INTERNAL, 0, "data segment %s of %zu bytes: %s", name, size, strerror(saved));
    }
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
static void disconnect(struct fdn_client *c) {
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
    if (!server_alive(c))
        return fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0, "shm server '%s' (pid %u) is gone", c->name, c->server_pid);
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

static enum fdn_status claim(struct fdn_client *c, struct fdn_error *err) {
    struct fdn_region_header *r = c->region;
    if (sem_wait_ns(c->mutex, (uint64_t)c->opts.connect_timeout_ms * 1000000u) < 0)
        return fdn_fail(err, FDN_OVERLOADED, 0, "shm server '%s': region mutex busy for %u ms", c->name,
                        c->opts.connect_timeout_ms);
    uint32_t pid = (uint32_t)getpid();
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
        uint64_t cap = pages(c->opts.capacity ? c->opts.capacity : c->default_capacity);
        c->used = 0;
        st = attach(c, cap, cap, err);
        if (st == FDN_OK) {
            struct fdn_channel *ch = c->ch;
            FDN_STORE(&ch->client_sleeping, 0);
            FDN_STORE(&ch->owner_start_time, start_time(pid));
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
        c->sem = NULL;
        return fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0, "shm server '%s': channel semaphore missing", c->name);
    }
    while (sem_trywait(c->sem) == 0) { /* drain stale posts of a previous owner */
    }
    return FDN_OK;
}

static enum fdn_status connect_now(struct fdn_client *c, struct fdn_error *err) {
    enum fdn_status st = open_region(c, err);
    if (st == FDN_OK) st = claim(c, err);
    if (st) {
        disconnect(c);
        return st;
    }
    c->connected = 1;
    return FDN_OK;
}

static int valid_name(const char *name) {
    size_t n = strlen(name);
    if (n < 1 || n > 48) return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_'))
            return 0;
    }
    return 1;
}

enum fdn_status fdn_connect(fdn_client **out, const char *name, const struct fdn_options *opts,
                            struct fdn_error *err) {
    *out = NULL;
    if (strncmp(name, "shm://", 6) == 0) name += 6;
    if (!valid_name(name))
        return fdn_fail(err, FDN_INVALID_INPUT, 0, "shm server name '%.64s' must be 1-48 characters of [A-Za-z0-9_]", name);
    struct fdn_client *c = calloc(1, sizeof *c);
    if (!c) return fdn_fail(err, FDN_INTERNAL, 0, "out of memory");
    strcpy(c->name, name);
    c->opts = opts ? *opts : FDN_DEFAULT_OPTIONS;
    if (!c->opts.connect_timeout_ms) c->opts.connect_timeout_ms = 2000;
    c->next_id = 1;
    enum fdn_status st = connect_now(c, err);
    if (st) {
        free(c);
        return st;
    }
    *out = c;
    return FDN_OK;
}

void fdn_close(fdn_client *c) {
    if (!c) return;
    if (c->connected && server_alive(c)) {
        uint64_t end = now_ns() + 100000000u; /* give an answer still owed 100 ms */
        while (FDN_LOAD(&c->ch->server_seq) != c->seq && now_ns() < end) usleep(1000);
        if (sem_wait_ns(c->mutex, (uint64_t)c->opts.connect_timeout_ms * 1000000u) == 0) {
            FDN_STORE(&c->region->mutex_holder_pid, (uint32_t)getpid());
            if (FDN_LOAD(&c->ch->server_seq) == c->seq) FDN_STORE(&c->ch->owner_pid, 0);
            else FDN_STORE(&c->ch->owner_start_time, 0); /* busy: the server reclaims it when done */
            FDN_STORE(&c->region->connect_epoch, FDN_LOAD(&c->region->connect_epoch) + 1);
            FDN_STORE(&c->region->mutex_holder_pid, 0);
            sem_post(c->mutex);
        }
    }
    disconnect(c);
    free(c);
}

/* --- waiting (section 7.2, steps 4-7) -------------------------------------------------------- */
static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Wait until server_seq == s: spin for spin_us, then block in slices, checking the deadline
 * (0: none) and the server's liveness between slices. */
static enum fdn_status wait_seq(struct fdn_client *c, uint64_t s, uint64_t deadline, struct fdn_error *err) {
    struct fdn_channel *ch = c->ch;
    if (FDN_LOAD(&ch->server_seq) == s) return FDN_OK;
    if (c->opts.spin_us) {
        uint64_t start = now_ns(), end = start + (uint64_t)c->opts.spin_us * 1000u;
        int polite = 0;
        for (unsigned k = 0;; k++) {
            if (FDN_LOAD(&ch->server_seq) == s) return FDN_OK;
            if (polite) sched_yield(); /* the server may need this CPU (more threads than CPUs) */
            else cpu_relax();
            if ((k & 15) == 15 || polite) {
                uint64_t t = now_ns();
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
            uint64_t t = now_ns();
            if (t >= deadline) {
                st = fdn_fail(err, FDN_DEADLINE_EXCEEDED, 0, "no response from '%s' before the deadline", c->name);
                break;
            }
            if (deadline - t < slice) slice = deadline - t;
        }
        sem_wait_ns(c->sem, slice);
        if (FDN_LOAD(&ch->server_seq) == s) break;
        if (!server_alive(c)) {
            c->connected = 0; /* the next call reconnects */
            st = fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0, "shm server '%s' (pid %u) is gone", c->name, c->server_pid);
            break;
        }
    }
    FDN_STORE(&ch->client_sleeping, 0);
    return st;
}

/* Reconnect if the server died, and wait until the channel is idle (an answer to a request that
 * passed its deadline may still be owed). */
static enum fdn_status ready(struct fdn_client *c, uint64_t deadline, struct fdn_error *err) {
    if (!c->connected) {
        disconnect(c);
        enum fdn_status st = connect_now(c, err);
        if (st) return st;
    }
    if (FDN_LOAD(&c->ch->server_seq) != c->seq) return wait_seq(c, c->seq, deadline, err);
    return FDN_OK;
}

/* Make the request area hold `end` bytes (and the response area as many). */
static enum fdn_status ensure(struct fdn_client *c, uint64_t end, struct fdn_error *err) {
    if (end <= c->req_cap) return FDN_OK;
    if (end - FDN_HEADER_SIZE > c->max_request_bytes + (1u << 20))
        return fdn_fail(err, FDN_TOO_LARGE, 0, "a request of %llu bytes exceeds the server's %llu",
                        (unsigned long long)end, (unsigned long long)c->max_request_bytes);
    c->used = 0;
    uint64_t cap = pages(end);
    return attach(c, cap, c->resp_cap > cap ? c->resp_cap : cap, err);
}

static uint64_t deadline_of(int64_t timeout_ms) {
    return timeout_ms < 0 ? 0 : now_ns() + (uint64_t)timeout_ms * 1000000u;
}

/* Publish the request already in the request area, wait, decode (section 7.2). */
static enum fdn_status exchange(struct fdn_client *c, uint64_t deadline, int retry, struct fdn_result *res,
                                struct fdn_error *err) {
    uint64_t rid = c->req.request_id;
    uint64_t s = ++c->seq;
    FDN_STORE(&c->ch->client_seq, s);
    FDN_FENCE();
    if (FDN_LOAD(&c->region->server_sleeping)) sem_post(c->bell);
    enum fdn_status st = wait_seq(c, s, deadline, err);
    if (st) {
        if (err) err->request_id = rid;
        return st;
    }
    struct fdn_response_fields *resp = &c->resp;
    st = fdn_decode_response(c->data + c->req_cap, c->resp_cap, NULL, resp, err);
    if (st) return st;
    if (resp->request_id != rid)
        return fdn_fail(err, FDN_BAD_CHECKSUM, rid, "response carries request id %llu, not %llu",
                        (unsigned long long)resp->request_id, (unsigned long long)rid);
    if (resp->status) {
        if (resp->status == FDN_TOO_LARGE && resp->required_bytes > c->resp_cap && retry) {
            if ((st = attach(c, c->req_cap, pages(resp->required_bytes), err))) return st;
            return exchange(c, deadline, 0, res, err);
        }
        enum fdn_status code = resp->status <= FDN_INTERNAL ? (enum fdn_status)resp->status : FDN_INTERNAL;
        return fdn_fail(err, code, rid, "%.*s", (int)(resp->text_size < 255 ? resp->text_size : 255), resp->text);
    }
    res->request_id = rid;
    memcpy(res->model, resp->model, sizeof res->model);
    memcpy(res->version, resp->version, sizeof res->version);
    res->output_count = resp->output_count;
    memcpy(res->outputs, resp->outputs, resp->output_count * sizeof *res->outputs);
    return FDN_OK;
}

static enum fdn_status send_request(struct fdn_client *c, const char *model, uint64_t end, uint64_t deadline,
                                    struct fdn_result *res, struct fdn_error *err) {
    struct fdn_request_fields *f = &c->req;
    f->kind = FDN_INFER_REQUEST;
    f->request_id = c->next_id++;
    f->flags = c->opts.data_crc ? FDN_FLAG_DATA_CRC : 0;
    if (strlen(model) >= sizeof f->model)
        return fdn_fail(err, FDN_INVALID_INPUT, f->request_id, "model name '%.64s' is over 63 bytes", model);
    strcpy(f->model, model);
    f->deadline_ns = deadline;
    enum fdn_status st = fdn_encode_request(c->data, c->req_cap, f, err);
    if (st) return st;
    c->used = end;
    return exchange(c, deadline, 1, res, err);
}

/* The call's version, requested outputs and parameters into the request fields. */
static enum fdn_status set_call(struct fdn_client *c, const struct fdn_call *call, struct fdn_error *err) {
    struct fdn_request_fields *f = &c->req;
    const char *version = call && call->version ? call->version : "";
    const char *params = call && call->params ? call->params : "";
    uint32_t outputs = call && call->outputs ? call->output_count : 0;
    if (strlen(version) >= sizeof f->version)
        return fdn_fail(err, FDN_INVALID_INPUT, 0, "model version '%.16s' is over 15 bytes", version);
    if (outputs > FDN_MAX_TENSORS)
        return fdn_fail(err, FDN_TOO_LARGE, 0, "%u requested outputs (at most %d)", outputs, FDN_MAX_TENSORS);
    for (uint32_t i = 0; i < outputs; i++) {
        if (strlen(call->outputs[i]) >= FDN_NAME_SIZE)
            return fdn_fail(err, FDN_INVALID_INPUT, 0, "output name '%.64s' is over 63 bytes", call->outputs[i]);
        strcpy(f->outputs[i], call->outputs[i]);
    }
    size_t n = strlen(params);
    if (n && (n > UINT32_MAX || !fdn_params_valid(params, n)))
        return fdn_fail(err, FDN_INVALID_INPUT, 0, "params must be a JSON object of strings, numbers and booleans");
    strcpy(f->version, version);
    f->output_count = outputs;
    f->params = n ? params : NULL;
    f->params_size = (uint32_t)n;
    return FDN_OK;
}

enum fdn_status fdn_infer(fdn_client *c, const char *model, const struct fdn_input *inputs,
                          uint32_t input_count, int64_t timeout_ms, struct fdn_result *res,
                          struct fdn_error *err) {
    return fdn_infer_call(c, model, inputs, input_count, timeout_ms, NULL, res, err);
}

enum fdn_status fdn_infer_call(fdn_client *c, const char *model, const struct fdn_input *inputs,
                               uint32_t input_count, int64_t timeout_ms, const struct fdn_call *call,
                               struct fdn_result *res, struct fdn_error *err) {
    uint64_t deadline = deadline_of(timeout_ms);
    if (input_count > FDN_MAX_TENSORS)
        return fdn_fail(err, FDN_TOO_LARGE, 0, "%u inputs (at most %d)", input_count, FDN_MAX_TENSORS);
    enum fdn_status st = ready(c, deadline, err);
    if (st) return st;
    c->loaned = 0;
    struct fdn_tensor *t = c->req.inputs;
    for (uint32_t i = 0; i < input_count; i++) {
        if (strlen(inputs[i].name) >= FDN_NAME_SIZE || inputs[i].ndim > FDN_MAX_NDIM ||
            !fdn_dtype_itemsize(inputs[i].dtype))
            return fdn_fail(err, FDN_INVALID_INPUT, 0, "input %u: bad name, dtype or ndim", i);
        strcpy(t[i].name, inputs[i].name);
        t[i].location = FDN_HOST;
        t[i].dtype = inputs[i].dtype;
        t[i].ndim = inputs[i].ndim;
        memcpy(t[i].shape, inputs[i].shape, inputs[i].ndim * sizeof(uint64_t));
    }
    c->req.input_count = input_count;
    if ((st = set_call(c, call, err))) return st;
    uint64_t end = fdn_layout(t, input_count,
                              fdn_request_payload_size(input_count, c->req.output_count, c->req.params_size));
    if (!end) return fdn_fail(err, FDN_INVALID_INPUT, 0, "inputs are too large");
    if ((st = ensure(c, end, err))) return st;
    for (uint32_t i = 0; i < input_count; i++)
        if (t[i].data_size) memcpy(c->data + t[i].data_offset, inputs[i].data, (size_t)t[i].data_size);
    return send_request(c, model, end, deadline, res, err);
}

const struct fdn_tensor *fdn_result_output(const struct fdn_result *res, const char *name) {
    for (uint32_t i = 0; i < res->output_count; i++)
        if (strcmp(res->outputs[i].name, name) == 0) return &res->outputs[i];
    return NULL;
}

/* --- loans ----------------------------------------------------------------------------------- */
enum fdn_status fdn_loan_begin(fdn_client *c, const char *model, const struct fdn_tensor *specs,
                               uint32_t count, struct fdn_error *err) {
    if (count > FDN_MAX_TENSORS || strlen(model) >= FDN_NAME_SIZE)
        return fdn_fail(err, FDN_INVALID_INPUT, 0, "too many tensors or model name too long");
    enum fdn_status st = ready(c, deadline_of(c->opts.connect_timeout_ms), err);
    if (st) return st;
    struct fdn_tensor *t = c->req.inputs;
    for (uint32_t i = 0; i < count; i++) {
        if (specs[i].location != FDN_HOST)
            return fdn_fail(err, FDN_CUDA_UNAVAILABLE, 0, "this client sends host tensors only");
        t[i] = specs[i];
        t[i].name[FDN_NAME_SIZE - 1] = 0;
    }
    c->req.input_count = count;
    uint64_t end = fdn_layout(t, count, fdn_request_payload_size(count, 0, 0));
    if (!end) return fdn_fail(err, FDN_INVALID_INPUT, 0, "a tensor has an unknown dtype or over 8 dimensions");
    if ((st = ensure(c, end, err))) return st;
    strcpy(c->loan_model, model);
    c->loan_end = end;
    c->loaned = 1;
    return FDN_OK;
}

void *fdn_loan_data(fdn_client *c, uint32_t index) {
    if (!c->loaned || index >= c->req.input_count) return NULL;
    return c->data + c->req.inputs[index].data_offset;
}

enum fdn_status fdn_loan_infer(fdn_client *c, int64_t timeout_ms, struct fdn_result *res, struct fdn_error *err) {
    if (!c->loaned) return fdn_fail(err, FDN_INVALID_INPUT, 0, "no loan: call fdn_loan_begin first");
    if (!c->connected) {
        c->loaned = 0;
        return fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0, "the server of this loan is gone; take a new loan");
    }
    uint64_t deadline = deadline_of(timeout_ms);
    enum fdn_status st = ready(c, deadline, err);
    if (st) return st;
    set_call(c, NULL, NULL); /* a loan's tensors follow a payload without names or params */
    return send_request(c, c->loan_model, c->loan_end, deadline, res, err);
}
