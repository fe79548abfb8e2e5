/* call.c: one request on the claimed channel: write, publish, wait, decode (sections 7.2, 7.5). */
#define _GNU_SOURCE
#include <sched.h>
#include <string.h>

#include "client.h"

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
            st = fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0, "shm server '%s' (pid %u) is gone", c->name, c->server_pid);
            break;
        }
    }
    FDN_STORE(&ch->client_sleeping, 0);
    return st;
}

/* Reconnect if the server died, and wait until the channel is idle (an answer to a request that
 * passed its deadline may still be owed). */
/* A server that stopped (gracefully) marked its region STOPPED; a restarted one has a new region.
 * One load, so every call can afford it; a killed server is noticed while waiting instead. */
static void notice_stop(struct fdn_client *c) {
    if (c->connected && FDN_LOAD(&c->region->state) == FDN_STOPPED) c->connected = 0;
}

static enum fdn_status ready(struct fdn_client *c, uint64_t deadline, struct fdn_error *err) {
    notice_stop(c);
    if (!c->connected) {
        fdn_disconnect(c);
        enum fdn_status st = fdn_connect_now(c, err);
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
    uint64_t cap = fdn_pages(end);
    return fdn_attach(c, cap, c->resp_cap > cap ? c->resp_cap : cap, err);
}

static uint64_t deadline_of(int64_t timeout_ms) {
    return timeout_ms < 0 ? 0 : fdn_now_ns() + (uint64_t)timeout_ms * 1000000u;
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
    uint64_t n;
    if (fdn_snapshot_response(c->data + c->req_cap, c->resp_cap, &c->snap, &c->snap_cap, &n))
        return fdn_fail(err, FDN_INTERNAL, rid, "no memory for a copy of the response");
    st = fdn_decode_response_msg(c->snap, n, c->data + c->req_cap, c->resp_cap, NULL, resp, err);
    if (st) return st;
    if (resp->request_id != rid)
        return fdn_fail(err, FDN_BAD_CHECKSUM, rid, "response carries request id %llu, not %llu",
                        (unsigned long long)resp->request_id, (unsigned long long)rid);
    if (resp->status) {
        if (resp->status == FDN_TOO_LARGE && resp->required_bytes > c->resp_cap && retry) {
            if ((st = fdn_attach(c, c->req_cap, fdn_pages(resp->required_bytes), err))) return st;
            return exchange(c, deadline, 0, res, err);
        }
        enum fdn_status code = resp->status <= FDN_INTERNAL ? (enum fdn_status)resp->status : FDN_INTERNAL;
        return fdn_fail(err, code, rid, "%.*s", (int)(resp->text_size < 255 ? resp->text_size : 255), resp->text);
    }
    for (uint32_t i = 0; i < resp->output_count; i++) /* spec 15.2: never asked for, never taken */
        if (resp->outputs[i].location != FDN_HOST)
            return fdn_fail(err, FDN_INVALID_INPUT, rid,
                            "output '%s' is not in host memory, which this client asked for (spec 15.2)",
                            resp->outputs[i].name);
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
    notice_stop(c);
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
