/* call.c: one request on the claimed channel: write, publish, wait, decode (sections 7.2, 7.5). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

/* A server that stopped (gracefully) marked its region STOPPED; a restarted one has a new region.
 * One load, so every call can afford it; a killed server is noticed while waiting instead. Returns
 * whether this look found it so. */
static int notice_stop(struct fdn_client *c) {
    if (!c->connected || FDN_LOAD(&c->region->state) != FDN_STOPPED) return 0;
    c->connected = 0;
    return 1;
}

/* A request not sent (spec 7.5: `what` "not sent") or not sent again (10.3: "not sent again"): its
 * gone error in *err, the reason appended. */
static enum fdn_status not_sent(struct fdn_error *err, const char *what, const char *reason) {
    if (err) {
        size_t used = strlen(err->message);
        snprintf(err->message + used, sizeof err->message - used, "; %s: %s", what, reason);
    }
    return FDN_SERVER_UNAVAILABLE;
}

/* The reconnect of a call whose server is gone (*err says so) before its request reached a handler
 * (10.3, 7.5): a channel of a server restarted under the name, within the call's deadline. Without
 * one (no server yet, the dead one's region, a hung or full one, the deadline) the call fails with
 * its gone error, `what` and the reason appended. */
static enum fdn_status reconnect(struct fdn_client *c, uint64_t deadline, const char *what, struct fdn_error *err) {
    fdn_disconnect(c);
    struct fdn_error why = {0};
    if (fdn_connect_now(c, deadline, &why) == FDN_OK) return FDN_OK;
    if (err && !strcmp(why.message, err->message)) /* the dead server's region, still there */
        return not_sent(err, what, "no server has started under that name since");
    return not_sent(err, what, why.message);
}

/* Reconnect if the server stopped, and wait until the channel is idle (fdn_wait_idle). A server found
 * gone (stopped, or its process proven dead) while the call waits for an abandoned request's late
 * answer (spec 7.5) had none of this call's request: with `again` set (a call that may send its
 * request once more, cleared as that attempt is spent here) it is reconnected to once, within the
 * deadline, and the request goes to the server restarted under the name; else the call fails gone,
 * "; not sent: WHY" appended. A loan's call passes NULL: its inputs are in the old area. The
 * abandoned request is never sent again: only the call's own is written, on the new channel.
 * *moved (when not NULL) says whether this call found its server gone itself (stopped, or gone
 * while it waited) and is on a new connection: its request is a resend once published (spec
 * 10.5); a connection an earlier call dropped is only reconnected. */
static enum fdn_status ready(struct fdn_client *c, uint64_t deadline, int *again, int *moved, struct fdn_error *err) {
    if (fdn_forked(c)) fdn_forget(c); /* a forked child connects its own channel, as a reconnect */
    int stopped = notice_stop(c);
    if (!c->connected) {
        fdn_disconnect(c);
        enum fdn_status st = fdn_connect_now(c, deadline, err);
        /* nothing of the call is written: a call (moved: not fdn_connect, nor a loan's begin,
         * which sends nothing) says so, as 7.5's does, where the words alone ("is gone") would
         * not tell it from a call its handler may have run */
        if (st && c->found_gone && moved)
            return not_sent(err, "not sent", "no server has started under that name since");
        if (st) return st;
        if (moved) *moved = stopped;
    }
    enum fdn_status st = fdn_wait_idle(c, deadline, err);
    if (st != FDN_SERVER_UNAVAILABLE || c->connected || !again || !*again) return st; /* hung: connected */
    *again = 0;
    st = reconnect(c, deadline, "not sent", err);
    if (!st && moved) *moved = 1;
    return st;
}

/* Make the request area hold `end` bytes (and the response area as many, up to
 * max_response_bytes: a larger answer is refused, not made room for). */
static enum fdn_status ensure(struct fdn_client *c, uint64_t end, struct fdn_error *err) {
    if (end <= c->req_cap) return FDN_OK;
    if (end - FDN_HEADER_SIZE > c->max_request_bytes + (1u << 20))
        return fdn_fail(err, FDN_TOO_LARGE, 0, "a request of %llu bytes exceeds the server's %llu",
                        (unsigned long long)end, (unsigned long long)c->max_request_bytes);
    c->used = 0;
    uint64_t cap = fdn_pages(end), most = fdn_pages(c->opts.max_response_bytes);
    uint64_t resp = cap < most ? cap : most;
    return fdn_attach(c, cap, c->resp_cap > resp ? c->resp_cap : resp, err);
}

/* The absolute deadline of a timeout: 0 (none) for a negative one; one past 2^64 ns saturates (a
 * wrapped sum lay in the past: INT64_MAX ms failed at once with DEADLINE_EXCEEDED). */
static uint64_t deadline_of(int64_t timeout_ms) {
    if (timeout_ms < 0) return 0;
    uint64_t now = fdn_now_ns(), ms = (uint64_t)timeout_ms;
    if (ms > (UINT64_MAX - now) / 1000000u) return UINT64_MAX;
    return now + ms * 1000000u;
}

/* The error a response with a nonzero status fails its call with (section 9): that status with
 * the server's text; INTERNAL naming the code for one this version does not define. */
static enum fdn_status server_error(const struct fdn_response_fields *resp, uint64_t rid, struct fdn_error *err) {
    int n = (int)(resp->text_size < 255 ? resp->text_size : 255);
    if (resp->status > FDN_INTERNAL)
        return fdn_fail(err, FDN_INTERNAL, rid, "unknown error code %u: %.*s", resp->status, n, resp->text);
    return fdn_fail(err, (enum fdn_status)resp->status, rid, "%.*s", n, resp->text);
}

/* Publish the request already in the request area, wait, decode (section 7.2). */
static enum fdn_status exchange(struct fdn_client *c, uint64_t deadline, int retry, struct fdn_result *res,
                                struct fdn_error *err) {
    uint64_t rid = c->req.request_id;
    uint64_t s = ++c->seq;
    /* unsent speaks of this request alone: left set by an earlier call (sent again, or whose dead server
     * never dispatched it), a handler's SERVER_UNAVAILABLE answer was taken for it and the request sent
     * again, its handler run twice */
    c->unsent = 0;
    FDN_STORE(&c->ch->client_seq, s);
    FDN_FENCE();
    if (FDN_LOAD(&c->region->server_sleeping)) sem_post(c->bell);
    enum fdn_status st = fdn_wait_seq(c, s, deadline, 1, err);
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
        if (resp->status == FDN_TOO_LARGE && resp->required_bytes > c->resp_cap) {
            /* a hostile or broken server could ask for all of /dev/shm: the area is left as it is */
            if (resp->required_bytes > c->opts.max_response_bytes)
                return fdn_fail(err, FDN_TOO_LARGE, rid,
                                "the response needs %llu bytes, more than this client's max_response_bytes (%llu): "
                                "connect with a larger max_response_bytes to take it",
                                (unsigned long long)resp->required_bytes,
                                (unsigned long long)c->opts.max_response_bytes);
            if (retry) {
                if ((st = fdn_attach(c, c->req_cap, fdn_pages(resp->required_bytes), err))) return st;
                return exchange(c, deadline, 0, res, err);
            }
        }
        return server_error(resp, rid, err);
    }
    for (uint32_t i = 0; i < resp->output_count; i++) /* spec 15.2: never asked for, never taken */
        if (resp->outputs[i].location != FDN_HOST)
            return fdn_fail(err, FDN_INTERNAL, rid,
                            "output \"%s\" came as a CUDA_IPC descriptor, which this client did not ask for",
                            resp->outputs[i].name);
    res->request_id = rid;
    memcpy(res->model, resp->model, sizeof res->model);
    memcpy(res->version, resp->version, sizeof res->version);
    res->output_count = resp->output_count;
    memcpy(res->outputs, resp->outputs, resp->output_count * sizeof *res->outputs);
    return FDN_OK;
}

/* Name the call a failure `st` belongs to: its model (one over the field, which the message names
 * by its start, or NULL: none), and the request id `rid` where the error has none. Returns st. */
static enum fdn_status with_call(enum fdn_status st, struct fdn_error *err, const char *model, uint64_t rid) {
    if (st && err) {
        size_t n = model ? strlen(model) : sizeof err->model;
        if (n < sizeof err->model) memcpy(err->model, model, n + 1);
        else err->model[0] = 0;
        if (!err->request_id) err->request_id = rid;
    }
    return st;
}

/* The model name of a call as the call uses it: a copy in `own` when it fits the error's field, as
 * the caller may pass that very field (err.model, retrying the call an error names), which a failure
 * clears before naming the call (the error named no model, its message ''). A longer name is no
 * field's: it is used as it is. */
static const char *own_model(const char *model, char own[FDN_NAME_SIZE]) {
    const char *end = model ? memchr(model, 0, FDN_NAME_SIZE) : NULL;
    if (!end) return model;
    memcpy(own, model, (size_t)(end - model) + 1);
    return own;
}

/* The transparent retry of spec 10.3: the server died before it dispatched the request, so no
 * handler ran it; it is sent once more, its bytes unchanged (request id, absolute deadline_ns), to
 * a server restarted under the name, within the same deadline. Without one (reconnect), or without
 * memory for the copy of the request, the call fails with its gone error, the reason appended. A
 * loan never comes here: its caller wrote the dead server's area. */
static enum fdn_status send_again(struct fdn_client *c, uint64_t deadline, int moved, struct fdn_result *res,
                                  struct fdn_error *err) {
    uint64_t n = c->used;
    uint8_t *request = malloc(n ? n : 1); /* the reconnect unmaps the old area */
    if (!request) return not_sent(err, "not sent again", "no memory for the copy of the request");
    memcpy(request, c->data, n);
    struct fdn_error why = {0};
    enum fdn_status st = reconnect(c, deadline, "not sent again", err);
    if (!st && (st = ensure(c, n, &why))) st = not_sent(err, "not sent again", why.message);
    if (st) {
        free(request);
        return st;
    }
    memcpy(c->data, request, n);
    free(request);
    c->used = n;
    if (!moved) __atomic_fetch_add(&c->counts.resends, 1, __ATOMIC_RELAXED); /* spec 10.5: once a call */
    return exchange(c, deadline, 1, res, err);
}

/* `again`: whether the call's one extra attempt (send_again) is still its own (ready may have spent it);
 * `moved`: ready put the call on a new connection, its server found gone (counted as a resend once
 * published, spec 10.5; a call that ready found stopped may still be sent again once, counted once). */
static enum fdn_status send_request(struct fdn_client *c, const char *model, uint64_t end, uint64_t deadline,
                                    int again, int moved, struct fdn_result *res, struct fdn_error *err) {
    struct fdn_request_fields *f = &c->req;
    f->kind = FDN_INFER_REQUEST;
    f->request_id = c->next_id++;
    f->flags = c->opts.data_crc ? FDN_FLAG_DATA_CRC : 0;
    strcpy(f->model, model); /* checked by the caller: fdn_check_model */
    f->deadline_ns = deadline;
    enum fdn_status st = fdn_encode_request(c->data, c->req_cap, f, err);
    if (!st) {
        c->used = end;
        if (moved) __atomic_fetch_add(&c->counts.resends, 1, __ATOMIC_RELAXED); /* published just below */
        st = exchange(c, deadline, 1, res, err); /* (a failed grow of the response area named no request) */
        if (st == FDN_SERVER_UNAVAILABLE && c->unsent && !c->loaned && again) st = send_again(c, deadline, moved, res, err);
    }
    return with_call(st, err, model, f->request_id);
}

enum fdn_status fdn_infer(fdn_client *c, const char *model, const struct fdn_input *inputs,
                          uint32_t input_count, int64_t timeout_ms, struct fdn_result *res,
                          struct fdn_error *err) {
    return fdn_infer_call(c, model, inputs, input_count, timeout_ms, NULL, res, err);
}

static enum fdn_status infer_call(fdn_client *c, const char *model, const struct fdn_input *inputs,
                                  uint32_t input_count, int64_t timeout_ms, const struct fdn_call *call,
                                  struct fdn_result *res, struct fdn_error *err);

enum fdn_status fdn_infer_call(fdn_client *c, const char *model, const struct fdn_input *inputs,
                               uint32_t input_count, int64_t timeout_ms, const struct fdn_call *call,
                               struct fdn_result *res, struct fdn_error *err) {
    char own[FDN_NAME_SIZE];
    model = own_model(model, own);
    return with_call(infer_call(c, model, inputs, input_count, timeout_ms, call, res, err), err, model, 0);
}

static enum fdn_status infer_call(fdn_client *c, const char *model, const struct fdn_input *inputs,
                                  uint32_t input_count, int64_t timeout_ms, const struct fdn_call *call,
                                  struct fdn_result *res, struct fdn_error *err) {
    if (!c) return fdn_fail(err, FDN_INVALID_INPUT, 0, "client is NULL");
    c->loaned = 0; /* the request area is this call's now */
    c->loan_ended = 0;
    uint64_t deadline = deadline_of(timeout_ms);
    enum fdn_status st;
    if ((st = fdn_check_model(model, err)) || (st = fdn_check_inputs(inputs, input_count, err))) return st;
    if (!res) return fdn_fail(err, FDN_INVALID_INPUT, 0, "result is NULL");
    int again = 1, moved = 0;
    if ((st = fdn_set_call(c, call, err)) || (st = ready(c, deadline, &again, &moved, err))) return st;
    struct fdn_tensor *t = c->req.inputs;
    for (uint32_t i = 0; i < input_count; i++) {
        strcpy(t[i].name, inputs[i].name);
        t[i].location = FDN_HOST;
        t[i].dtype = inputs[i].dtype;
        t[i].ndim = inputs[i].ndim;
        if (inputs[i].ndim) memcpy(t[i].shape, inputs[i].shape, inputs[i].ndim * sizeof(uint64_t));
    }
    c->req.input_count = input_count;
    uint64_t end = fdn_layout(t, input_count,
                              fdn_request_payload_size(input_count, c->req.output_count, c->req.params_size));
    if (!end) return fdn_fail(err, FDN_INVALID_INPUT, 0, "the inputs together pass 2^64 bytes");
    if ((st = ensure(c, end, err))) return st;
    for (uint32_t i = 0; i < input_count; i++)
        if (t[i].data_size) memcpy(c->data + t[i].data_offset, inputs[i].data, (size_t)t[i].data_size);
    return send_request(c, model, end, deadline, again, moved, res, err);
}

const struct fdn_tensor *fdn_result_output(const struct fdn_result *res, const char *name) {
    if (!res || !name) return NULL;
    for (uint32_t i = 0; i < res->output_count; i++)
        if (strcmp(res->outputs[i].name, name) == 0) return &res->outputs[i];
    return NULL;
}

/* --- loans ----------------------------------------------------------------------------------- */
static enum fdn_status loan_begin(fdn_client *c, const char *model, const struct fdn_tensor *specs,
                                  uint32_t count, struct fdn_error *err);

enum fdn_status fdn_loan_begin(fdn_client *c, const char *model, const struct fdn_tensor *specs,
                               uint32_t count, struct fdn_error *err) {
    char own[FDN_NAME_SIZE];
    model = own_model(model, own);
    return with_call(loan_begin(c, model, specs, count, err), err, model, 0);
}

static enum fdn_status loan_begin(fdn_client *c, const char *model, const struct fdn_tensor *specs,
                                  uint32_t count, struct fdn_error *err) {
    if (!c) return fdn_fail(err, FDN_INVALID_INPUT, 0, "client is NULL");
    c->loaned = 0; /* a failed begin leaves no loan: the old one's tensors are overwritten below */
    c->loan_ended = 0;
    enum fdn_status st = fdn_check_model(model, err);
    if (st) return st;
    if (count > FDN_MAX_TENSORS)
        return fdn_fail(err, FDN_TOO_LARGE, 0, "%u tensors (at most %d)", count, FDN_MAX_TENSORS);
    if (count && !specs) return fdn_fail(err, FDN_INVALID_INPUT, 0, "specs is NULL with count %u", count);
    for (uint32_t i = 0; i < count; i++) {
        uint64_t bytes;
        if (!memchr(specs[i].name, 0, FDN_NAME_SIZE)) /* it was cut to 63 bytes and sent so */
            return fdn_fail(err, FDN_INVALID_INPUT, 0, "tensor %u: name '%.64s' is not NUL-terminated within 64 bytes",
                            i, specs[i].name);
        if (specs[i].location != FDN_HOST)
            return fdn_fail(err, FDN_CUDA_UNAVAILABLE, 0, "tensor %u ('%s'): this client sends host tensors only", i,
                            specs[i].name);
        if ((st = fdn_check_tensor("tensor", i, specs[i].name, specs[i].dtype, specs[i].ndim, specs[i].shape, &bytes, err)))
            return st;
    }
    int again = 1; /* nothing is written yet: a server gone meanwhile is left for a restarted one */
    if ((st = ready(c, deadline_of(c->opts.connect_timeout_ms), &again, NULL, err))) return st;
    struct fdn_tensor *t = c->req.inputs;
    for (uint32_t i = 0; i < count; i++) t[i] = specs[i];
    c->req.input_count = count;
    uint64_t end = fdn_layout(t, count, fdn_request_payload_size(count, 0, 0));
    if (!end) return fdn_fail(err, FDN_INVALID_INPUT, 0, "the tensors together pass 2^64 bytes");
    if ((st = ensure(c, end, err))) return st;
    strcpy(c->loan_model, model);
    c->loan_end = end;
    c->loaned = 1;
    return FDN_OK;
}

void *fdn_loan_data(fdn_client *c, uint32_t index) {
    if (!c || !c->loaned || fdn_forked(c) || index >= c->req.input_count) return NULL;
    return c->data + c->req.inputs[index].data_offset;
}

static enum fdn_status loan_infer(fdn_client *c, int64_t timeout_ms, struct fdn_result *res, struct fdn_error *err);

enum fdn_status fdn_loan_infer(fdn_client *c, int64_t timeout_ms, struct fdn_result *res, struct fdn_error *err) {
    if (!c) return fdn_fail(err, FDN_INVALID_INPUT, 0, "client is NULL");
    /* the loan's model (an ended loan's too: fdn_loan_begin sets it only when it grants one) */
    const char *model = c->loaned || c->loan_ended ? c->loan_model : NULL;
    return with_call(loan_infer(c, timeout_ms, res, err), err, model, 0);
}

static enum fdn_status loan_infer(fdn_client *c, int64_t timeout_ms, struct fdn_result *res, struct fdn_error *err) {
    if (fdn_forked(c)) {
        int had = c->loaned;
        fdn_forget(c);
        if (had)
            return fdn_fail(err, FDN_INVALID_INPUT, 0,
                            "no loan: it was made in the parent process, before fork(), in its request area; "
                            "fdn_loan_begin again in this one");
    }
    if (!c->loaned && c->loan_ended)
        return fdn_fail(err, FDN_INVALID_INPUT, 0,
                        "no loan: it ended when its request %llu failed while still with the server, which may be "
                        "reading its inputs; fdn_loan_begin again (it waits until the server is done)",
                        (unsigned long long)c->loan_ended);
    if (!c->loaned) return fdn_fail(err, FDN_INVALID_INPUT, 0, "no loan: call fdn_loan_begin first");
    if (!res) return fdn_fail(err, FDN_INVALID_INPUT, 0, "result is NULL");
    notice_stop(c);
    if (!c->connected) {
        c->loaned = 0;
        return fdn_fail(err, FDN_SERVER_UNAVAILABLE, 0, "the server of this loan is gone; take a new loan");
    }
    uint64_t deadline = deadline_of(timeout_ms);
    enum fdn_status st = ready(c, deadline, NULL, NULL, err);
    if (st) return st;
    fdn_set_call(c, NULL, NULL); /* a loan's tensors follow a payload without names or params */
    st = send_request(c, c->loan_model, c->loan_end, deadline, 0, 0, res, err);
    if (st && c->connected && FDN_LOAD(&c->ch->server_seq) != c->seq) {
        /* the server may still read the inputs: fdn_loan_data must not hand them out for writing */
        c->loaned = 0;
        c->loan_ended = c->req.request_id;
    }
    return st;
}
