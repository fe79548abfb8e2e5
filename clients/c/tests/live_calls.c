/* test-live: calls and their errors (the API misused, errors naming the call, a loan that fails
 * while its request is with the server, max_response_bytes, answers no server may give). */
#define _GNU_SOURCE
#include "live.h"

/* The public API under misuse: NULL pointers, inputs the codec cannot send and loans that failed
 * are refused with a code and a message naming what and where (they were SIGSEGVs, UBSan reports,
 * "bad name, dtype or ndim" for three faults, and a failed fdn_loan_begin left the old loan "on"
 * with the new tensors half in place); a timeout past 2^64 ns is no deadline to speak of (it
 * wrapped into the past: DEADLINE_EXCEEDED at once); a capacity near 2^64 is refused (it was
 * rounded up past 2^64 to one page; TOO_LARGE until max_response_bytes bounded it). */
void misuse_checks(const char *name, fdn_client *c) {
    struct fdn_error err;
    struct fdn_result res;
    struct fdn_input ok = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    struct fdn_input in = ok;
    REFUSED(fdn_infer(c, NULL, &ok, 1, 5000, &res, &err), FDN_INVALID_INPUT, "model name is NULL", c);
    REFUSED(fdn_infer(c, "echo", NULL, 1, 5000, &res, &err), FDN_INVALID_INPUT, "inputs is NULL", c);
    REFUSED(fdn_infer(c, "echo", &ok, 1, 5000, NULL, &err), FDN_INVALID_INPUT, "result is NULL", c);
    in.name = NULL;
    REFUSED(fdn_infer(c, "echo", &in, 1, 5000, &res, &err), FDN_INVALID_INPUT, "input 0: name is NULL", c);
    in = ok;
    in.shape = NULL;
    REFUSED(fdn_infer(c, "echo", &in, 1, 5000, &res, &err), FDN_INVALID_INPUT, "input 0 ('x'): shape is NULL", c);
    in = ok;
    in.data = NULL;
    REFUSED(fdn_infer(c, "echo", &in, 1, 5000, &res, &err), FDN_INVALID_INPUT, "input 0 ('x'): data is NULL for 8", c);
    in = ok;
    in.dtype = 15;
    REFUSED(fdn_infer(c, "echo", &in, 1, 5000, &res, &err), FDN_INVALID_INPUT, "input 0 ('x'): dtype 15", c);
    in = ok;
    in.ndim = 9;
    REFUSED(fdn_infer(c, "echo", &in, 1, 5000, &res, &err), FDN_INVALID_INPUT, "input 0 ('x'): 9 dimensions", c);
    const uint64_t wide[2] = {1ull << 62, 8};
    in = ok;
    in.ndim = 2;
    in.shape = wide;
    REFUSED(fdn_infer(c, "echo", &in, 1, 5000, &res, &err), FDN_INVALID_INPUT, "input 0 ('x'): shape times itemsize", c);
    const uint64_t empty_wide[2] = {0, 1ull << 63}; /* no bytes, and no decoder takes it */
    in.shape = empty_wide;
    REFUSED(fdn_infer(c, "echo", &in, 1, 5000, &res, &err), FDN_INVALID_INPUT,
            "input 0 ('x'): shape beyond 2^63 - 1 bytes over its nonzero dimensions", c);
    CHECK(err.request_id == 0, "an empty shape no decoder takes was sent (request %llu)",
          (unsigned long long)err.request_id);
    const char *outs[1] = {NULL};
    REFUSED(fdn_infer_call(c, "echo", &ok, 1, 5000, &(struct fdn_call){.outputs = outs, .output_count = 1}, &res, &err),
            FDN_INVALID_INPUT, "requested output 0 is NULL", c);
    size_t big = (1u << 20) + 9;
    char *params = malloc(big + 1);
    if (params) { /* {"p":"aaa...a"}: valid, over 1 MiB: refused before it is copied */
        memset(params, 'a', big);
        memcpy(params, "{\"p\":\"", 6);
        memcpy(params + big - 2, "\"}", 3);
        REFUSED(fdn_infer_call(c, "echo", &ok, 1, 5000, &(struct fdn_call){.params = params}, &res, &err),
                FDN_TOO_LARGE, "params of 1048585 bytes", c);
        CHECK(err.request_id == 0, "params over 1 MiB were sent (request %llu)", (unsigned long long)err.request_id);
        free(params);
    }

    memset(&err, 0, sizeof err);
    enum fdn_status st = fdn_infer(c, "echo", &ok, 1, INT64_MAX, &res, &err);
    CHECK(st == FDN_OK, "timeout_ms INT64_MAX: %s %s", fdn_strerror(st), err.message);
    st = fdn_infer(c, "echo", &ok, 1, (int64_t)(UINT64_MAX / 1000000u), &res, &err);
    CHECK(st == FDN_OK, "a timeout of 2^64 ns: %s %s", fdn_strerror(st), err.message);

    struct fdn_tensor spec[2] = {{.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = {2}},
                                 {.name = "b", .dtype = FDN_INT32, .ndim = 9}};
    /* a failed fdn_loan_begin leaves no loan (the old one's tensors were half overwritten) */
    CHECK(fdn_loan_begin(c, "echo", spec, 1, &err) == FDN_OK, "a loan: %s", err.message);
    REFUSED_ONLY(fdn_loan_begin(c, "echo", spec, 2, &err), FDN_INVALID_INPUT, "tensor 1 ('b'): 9 dimensions");
    CHECK(fdn_loan_data(c, 0) == NULL && fdn_loan_data(c, 1) == NULL, "a failed fdn_loan_begin left a loan");
    REFUSED(fdn_loan_infer(c, 5000, &res, &err), FDN_INVALID_INPUT, "no loan", c);
    CHECK(fdn_loan_begin(c, "echo", spec, 1, &err) == FDN_OK, "a loan: %s", err.message);
    spec[1] = (struct fdn_tensor){.dtype = FDN_UINT8, .ndim = 1, .shape = {1ull << 40}}; /* over max bytes */
    memcpy(spec[1].name, "b", 2);
    REFUSED_ONLY(fdn_loan_begin(c, "echo", spec, 2, &err), FDN_TOO_LARGE, "exceeds the server's");
    CHECK(fdn_loan_data(c, 0) == NULL, "a loan refused as too large left the old loan");
    REFUSED(fdn_loan_infer(c, 5000, &res, &err), FDN_INVALID_INPUT, "no loan", c);
    spec[1] = (struct fdn_tensor){.name = "e", .dtype = FDN_UINT8, .ndim = 3, .shape = {1ull << 62, 2, 0}};
    REFUSED_ONLY(fdn_loan_begin(c, "echo", spec, 2, &err), FDN_INVALID_INPUT,
                 "tensor 1 ('e'): shape beyond 2^63 - 1 bytes over its nonzero dimensions");
    CHECK(fdn_loan_data(c, 0) == NULL, "a loan no decoder takes was granted");
    memset(spec[0].name, 'n', sizeof spec[0].name); /* no NUL: it was cut to 63 bytes and sent */
    REFUSED(fdn_loan_begin(c, "echo", spec, 1, &err), FDN_INVALID_INPUT, "tensor 0: name 'nnn", c);
    REFUSED(fdn_loan_begin(c, NULL, spec, 1, &err), FDN_INVALID_INPUT, "model name is NULL", c);
    REFUSED(fdn_loan_begin(c, "echo", NULL, 1, &err), FDN_INVALID_INPUT, "specs is NULL", c);

    struct fdn_options opts = FDN_DEFAULT_OPTIONS;
    opts.capacity = UINT64_MAX - 10;
    fdn_client *d = NULL;
    st = fdn_connect(&d, name, &opts, &err);
    CHECK(st == FDN_INVALID_INPUT && d == NULL && strstr(err.message, "exceeds max_response_bytes"),
          "capacity 2^64 - 11: %s %s", fdn_strerror(st), err.message);
    if (d) fdn_close(d);
}

/* The error of a call names the model it was made for (err.model) and its request (err.request_id),
 * so a program calling several models can tell which call failed: it named the request only (a
 * handler's "boom on request 3" said no model). err is filled with junk first: every failure sets
 * model, naming the call's or none. */
#define CALL_ERROR(call, want, model_, sent)                                                               \
    do {                                                                                                   \
        memset(&err, 'j', sizeof err);                                                                     \
        enum fdn_status st_ = (call);                                                                      \
        CHECK(st_ == (want) && err.code == (want) && memchr(err.model, 0, sizeof err.model) &&            \
                  strcmp(err.model, (model_)) == 0 && ((sent) ? err.request_id != 0 : err.request_id == 0), \
              "%s: %s model '%.64s' request %llu: %.256s", #call, fdn_strerror(st_),                       \
              memchr(err.model, 0, sizeof err.model) ? err.model : "(no NUL)", (unsigned long long)err.request_id, \
              err.message);                                                                                \
    } while (0)

void call_error_checks(const char *name) {
    fdn_client *c = NULL;
    struct fdn_error err;
    struct fdn_result res;
    struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    if (fdn_connect(&c, name, NULL, &err) != FDN_OK) {
        CHECK(0, "connect: %s", err.message);
        return;
    }
    CALL_ERROR(fdn_infer(c, "nosuch", &in, 1, 5000, &res, &err), FDN_MODEL_NOT_FOUND, "nosuch", 1);
    uint64_t first = err.request_id;
    /* the call an error names, made again with the error's own model field (a retry): a failure
     * cleared that field before naming the call, so the error named no model */
    enum fdn_status again = fdn_infer(c, err.model, &in, 1, 5000, &res, &err);
    CHECK(again == FDN_MODEL_NOT_FOUND && strcmp(err.model, "nosuch") == 0 && err.request_id > first,
          "fdn_infer(c, err.model, ...): %s model '%s' request %llu: %s", fdn_strerror(again), err.model,
          (unsigned long long)err.request_id, err.message);
    struct fdn_tensor nine[1] = {{.name = "x", .dtype = FDN_INT32, .ndim = 9}};
    again = fdn_loan_begin(c, err.model, nine, 1, &err);
    CHECK(again == FDN_INVALID_INPUT && strcmp(err.model, "nosuch") == 0,
          "fdn_loan_begin(c, err.model, ...): %s model '%s': %s", fdn_strerror(again), err.model, err.message);
    CALL_ERROR(fdn_infer(c, "fail", &in, 1, 5000, &res, &err), FDN_HANDLER_ERROR, "fail", 1);
    CHECK(err.request_id > first && strstr(err.message, "boom"), "a handler's error: request %llu: %s",
          (unsigned long long)err.request_id, err.message);
    CALL_ERROR(fdn_infer_call(c, "echo", &in, 1, 5000, &(struct fdn_call){.version = "a-version-of-20-bytes"}, &res,
                              &err),
               FDN_INVALID_INPUT, "echo", 0); /* refused before it was sent */
    char long_model[80];
    memset(long_model, 'm', sizeof long_model - 1);
    long_model[sizeof long_model - 1] = 0; /* over the field: the message names it, the model is not cut */
    CALL_ERROR(fdn_infer(c, long_model, &in, 1, 5000, &res, &err), FDN_INVALID_INPUT, "", 0);
    CALL_ERROR(fdn_infer(NULL, "echo", &in, 1, 5000, &res, &err), FDN_INVALID_INPUT, "echo", 0);

    struct fdn_tensor spec[1] = {{.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = {1}}};
    struct fdn_tensor bad[1] = {{.name = "x", .dtype = FDN_INT32, .ndim = 9}};
    CHECK(fdn_loan_begin(c, "nosuch", spec, 1, &err) == FDN_OK, "a loan: %s", err.message);
    CALL_ERROR(fdn_loan_infer(c, 5000, &res, &err), FDN_MODEL_NOT_FOUND, "nosuch", 1);
    CALL_ERROR(fdn_loan_begin(c, "nosuch", bad, 1, &err), FDN_INVALID_INPUT, "nosuch", 0);
    CALL_ERROR(fdn_loan_infer(c, 5000, &res, &err), FDN_INVALID_INPUT, "", 0); /* no loan: no model */
    fdn_close(c);

    fdn_client *d = NULL; /* an error of no call names none */
    CALL_ERROR(fdn_connect(&d, "fdnc_no_such_server", NULL, &err), FDN_SERVER_UNAVAILABLE, "", 0);
    if (d) fdn_close(d);
}

/* An fdn_loan_infer that fails while its request is still with the server (the server may still be
 * reading the inputs) ends the loan: fdn_loan_data pointed into the request area at once, and
 * writing there changed the inputs under the server's read. The server is stopped (SIGSTOP) to
 * hold the request as long as this needs, with no sleep to race against. */
void late_loan_checks(const char *name, pid_t server) {
    struct fdn_options opts = FDN_DEFAULT_OPTIONS;
    opts.connect_timeout_ms = 20; /* how long fdn_loan_begin waits for the held request */
    struct fdn_error err = {0};
    struct fdn_result res;
    fdn_client *c = NULL;
    enum fdn_status st = fdn_connect(&c, name, &opts, &err);
    CHECK(st == FDN_OK, "connect: %s", err.message);
    if (st) return;
    struct fdn_tensor spec = {.name = "x", .dtype = FDN_UINT8, .ndim = 1, .shape = {4}};
    CHECK(fdn_loan_begin(c, "echo", &spec, 1, &err) == FDN_OK, "a loan: %s", err.message);
    uint8_t *in = fdn_loan_data(c, 0);
    if (in) memset(in, 1, 4);
    st = fdn_loan_infer(c, 5000, &res, &err);
    CHECK(st == FDN_OK && ((const uint8_t *)res.outputs[0].data)[0] == 1, "the first loan call: %s", err.message);
    kill(server, SIGSTOP);
    int ws = 0; /* the signal is asynchronous: wait until the server has stopped */
    CHECK(waitpid(server, &ws, WUNTRACED) == server && WIFSTOPPED(ws), "the server did not stop");
    st = fdn_loan_infer(c, 20, &res, &err);
    CHECK(st == FDN_DEADLINE_EXCEEDED, "a stopped server: %s %s", fdn_strerror(st), err.message);
    uint64_t rid = err.request_id;
    CHECK(fdn_loan_data(c, 0) == NULL, "fdn_loan_data lends the bytes the server may still be reading");
    char says[128];
    snprintf(says, sizeof says, "no loan: it ended when its request %llu failed while still with the server",
             (unsigned long long)rid);
    REFUSED_ONLY(fdn_loan_infer(c, 5000, &res, &err), FDN_INVALID_INPUT, says);
    REFUSED_ONLY(fdn_loan_begin(c, "echo", &spec, 1, &err), FDN_DEADLINE_EXCEEDED, "is still with the server");
    CHECK(resume(server, name), "the resumed server did not beat again");
    echo(c, "the call after the late answer (it waits for that answer first)");
    CHECK(fdn_loan_begin(c, "echo", &spec, 1, &err) == FDN_OK, "a new loan: %s", err.message);
    in = fdn_loan_data(c, 0);
    if (in) memset(in, 2, 4);
    st = fdn_loan_infer(c, 5000, &res, &err);
    CHECK(st == FDN_OK && ((const uint8_t *)res.outputs[0].data)[0] == 2, "a new loan's call: %s", err.message);
    fdn_close(c);
}

#define PAGE ((uint64_t)FDN_PAGE)

/* A call to `model` of the sized server (clients/tests/sized_server.py) answering n zero bytes. */
static enum fdn_status sized(fdn_client *c, const char *model, uint64_t n, struct fdn_error *err) {
    char params[64];
    snprintf(params, sizeof params, "{\"n\": %llu}", (unsigned long long)n);
    struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    struct fdn_result res;
    memset(err, 0, sizeof *err);
    enum fdn_status st = fdn_infer_call(c, model, &in, 1, 10000, &(struct fdn_call){.params = params}, &res, err);
    const struct fdn_tensor *y = st == FDN_OK ? fdn_result_output(&res, "y") : NULL;
    if (st == FDN_OK && (!y || y->data_size != n)) {
        snprintf(err->message, sizeof err->message, "no output y of %llu bytes", (unsigned long long)n);
        return FDN_INTERNAL;
    }
    return st;
}

/* What a channel says of its data segment: generation, capacities, name. */
struct segment {
    uint64_t gen, req_cap, resp_cap;
    char name[64];
};

static struct segment segment_of(const struct fdn_channel *ch) {
    struct segment s = {__atomic_load_n(&ch->data_gen, __ATOMIC_ACQUIRE), ch->request_capacity,
                        ch->response_capacity, {0}};
    memcpy(s.name, ch->data_name, sizeof s.name - 1);
    return s;
}

static int same_segment(struct segment a, struct segment b) {
    return a.gen == b.gen && a.req_cap == b.req_cap && a.resp_cap == b.resp_cap && strcmp(a.name, b.name) == 0;
}

/* Spec 10.1 "Growing", 11, 13: a TOO_LARGE answer made the client grow its response area to
 * whatever required_bytes said (a server asking 1 TiB got a 1 TiB segment tried, limited only by
 * /dev/shm and fallocate), as did the region's default_capacity at each claim. max_response_bytes
 * (4 GiB) bounds both: up to it the area grows and the call is sent again; past it the call fails
 * TOO_LARGE naming the bytes and the option, the segment unchanged, and the client serves its next
 * call. A capacity over it, or a limit outside 4096..2^48, is refused at connect; a request larger
 * than the areas grows the response area no further than it. The server is
 * clients/tests/sized_server.py (default_capacity 64 pages), run from clients/c. */
void max_response_checks(const char *python) {
    char name[64];
    snprintf(name, sizeof name, "fdncsz%d", (int)getpid());
    pid_t server = server_of(python, "../tests/sized_server.py", name, NULL);
    CHECK(server > 0, "start clients/tests/sized_server.py (run from clients/c)");
    if (server < 0) return;
    size_t size = 0;
    struct fdn_region_header *r = map_region(name, &size);
    CHECK(r != NULL, "map the region");
    struct fdn_options opts = FDN_DEFAULT_OPTIONS;
    struct fdn_error err = {0};
    fdn_client *c = NULL;
    enum fdn_status st;

    opts.capacity = 8 * PAGE;
    opts.max_response_bytes = 4 * PAGE;
    st = fdn_connect(&c, name, &opts, &err);
    CHECK(st == FDN_INVALID_INPUT && !c &&
              strstr(err.message, "capacity (32768 bytes) exceeds max_response_bytes (16384 bytes): the response "
                                  "area starts at capacity; lower capacity or raise max_response_bytes"),
          "capacity over max_response_bytes: %s %s", fdn_strerror(st), err.message);
    opts = FDN_DEFAULT_OPTIONS;
    opts.capacity = 8ull << 30;
    st = fdn_connect(&c, name, &opts, &err);
    CHECK(st == FDN_INVALID_INPUT && !c && strstr(err.message, "exceeds max_response_bytes (4294967296 bytes)"),
          "capacity 8 GiB over the default max_response_bytes: %s %s", fdn_strerror(st), err.message);
    const uint64_t bad[] = {100, 4095, (1ull << 48) + 1, UINT64_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        opts = FDN_DEFAULT_OPTIONS;
        opts.max_response_bytes = bad[i];
        st = fdn_connect(&c, name, &opts, &err);
        CHECK(st == FDN_INVALID_INPUT && !c && strstr(err.message, "max_response_bytes must be 4096..2^48 bytes"),
              "max_response_bytes %llu: %s %s", (unsigned long long)bad[i], fdn_strerror(st), err.message);
    }
    CHECK(data_segments(name, NULL) == 0, "a refused connect left a data segment");

    opts = FDN_DEFAULT_OPTIONS;
    opts.capacity = 4 * PAGE;
    opts.max_response_bytes = 8 * PAGE;
    st = fdn_connect(&c, name, &opts, &err);
    CHECK(st == FDN_OK, "connect: %s %s", fdn_strerror(st), err.message);
    struct fdn_channel *ch = st == FDN_OK && r ? own_channel(r, NULL) : NULL;
    if (ch) {
        st = sized(c, "sized", 6 * PAGE, &err);
        CHECK(st == FDN_OK, "6 pages over an area of 4, within 8: %s %s", fdn_strerror(st), err.message);
        struct segment grown = segment_of(ch);
        CHECK(grown.resp_cap > 6 * PAGE && grown.resp_cap <= 8 * PAGE, "grown to %llu bytes",
              (unsigned long long)grown.resp_cap);
        st = sized(c, "sized", 16 * PAGE, &err);
        char want[160];
        snprintf(want, sizeof want, "more than this client's max_response_bytes (%llu): connect with a larger "
                                    "max_response_bytes to take it", (unsigned long long)(8 * PAGE));
        CHECK(st == FDN_TOO_LARGE && err.code == FDN_TOO_LARGE && strstr(err.message, "the response needs ") &&
                  strstr(err.message, want) && strcmp(err.model, "sized") == 0 && err.request_id != 0,
              "16 pages over max_response_bytes of 8: %s model '%s' request %llu: %s", fdn_strerror(st), err.model,
              (unsigned long long)err.request_id, err.message);
        unsigned long long needs = 0;
        CHECK(sscanf(err.message, "the response needs %llu bytes", &needs) == 1 && needs > 16 * PAGE,
              "the bytes it needs: %s", err.message);
        struct segment after = segment_of(ch);
        CHECK(same_segment(after, grown), "the segment changed: gen %llu -> %llu, response %llu -> %llu, %s -> %s",
              (unsigned long long)grown.gen, (unsigned long long)after.gen, (unsigned long long)grown.resp_cap,
              (unsigned long long)after.resp_cap, grown.name, after.name);
        CHECK(data_segments(name, NULL) == 1, "%zu data segments", data_segments(name, NULL));
        st = sized(c, "sized", 5 * PAGE, &err);
        CHECK(st == FDN_OK, "the next call: %s %s", fdn_strerror(st), err.message);
        CHECK(same_segment(segment_of(ch), grown), "the next call grew the segment");
        echo(c, "echo after a response over max_response_bytes");
    }
    fdn_close(c);
    c = NULL;

    st = fdn_connect(&c, name, NULL, &err); /* the defaults: 4 GiB */
    CHECK(st == FDN_OK, "connect: %s %s", fdn_strerror(st), err.message);
    ch = st == FDN_OK && r ? own_channel(r, NULL) : NULL;
    if (ch) {
        struct segment before = segment_of(ch);
        st = sized(c, "tib", 2u << 20, &err);
        CHECK(st == FDN_TOO_LARGE &&
                  strstr(err.message, "the response needs 1099511627776 bytes, more than this client's "
                                      "max_response_bytes (4294967296): connect with a larger max_response_bytes "
                                      "to take it"),
              "a server asking 1 TiB: %s %s", fdn_strerror(st), err.message);
        CHECK(same_segment(segment_of(ch), before), "a server asking 1 TiB had the segment replaced");
        st = sized(c, "tib", 8, &err);
        CHECK(st == FDN_OK, "the call after a server asked 1 TiB: %s %s", fdn_strerror(st), err.message);
    }
    fdn_close(c);
    c = NULL;

    opts = FDN_DEFAULT_OPTIONS;
    opts.max_response_bytes = 3 * PAGE + 1; /* under the server's default_capacity of 64 pages */
    st = fdn_connect(&c, name, &opts, &err);
    CHECK(st == FDN_OK, "connect: %s %s", fdn_strerror(st), err.message);
    ch = st == FDN_OK && r ? own_channel(r, NULL) : NULL;
    if (ch) {
        struct segment claimed = segment_of(ch);
        CHECK(claimed.req_cap == 4 * PAGE && claimed.resp_cap == 4 * PAGE,
              "default_capacity %llu over max_response_bytes: areas of %llu+%llu bytes",
              (unsigned long long)r->default_capacity, (unsigned long long)claimed.req_cap,
              (unsigned long long)claimed.resp_cap);
        echo(c, "echo on areas of max_response_bytes");
    }
    fdn_close(c);
    c = NULL;

    opts = FDN_DEFAULT_OPTIONS;
    opts.capacity = PAGE;
    opts.max_response_bytes = 4 * PAGE;
    st = fdn_connect(&c, name, &opts, &err);
    CHECK(st == FDN_OK, "connect: %s %s", fdn_strerror(st), err.message);
    ch = st == FDN_OK && r ? own_channel(r, NULL) : NULL;
    if (ch) {
        static uint8_t big[16 * FDN_PAGE];
        const uint64_t n[1] = {sizeof big};
        struct fdn_input in = {.name = "x", .dtype = FDN_UINT8, .ndim = 1, .shape = n, .data = big};
        struct fdn_result res;
        st = fdn_infer_call(c, "sized", &in, 1, 10000, &(struct fdn_call){.params = "{\"n\": 8}"}, &res, &err);
        CHECK(st == FDN_OK, "a request of 16 pages: %s %s", fdn_strerror(st), err.message);
        struct segment grown = segment_of(ch);
        CHECK(grown.req_cap > sizeof big && grown.resp_cap == 4 * PAGE,
              "a request of 16 pages grew the areas to %llu+%llu bytes (the response area: at most 4 pages)",
              (unsigned long long)grown.req_cap, (unsigned long long)grown.resp_cap);
    }
    fdn_close(c);

    if (r) munmap(r, size);
    kill(server, SIGTERM);
    waitpid(server, NULL, 0);
    CHECK(data_segments(name, NULL) == 0, "data segments left");
    remove_objects(name);
}

/* What no server may answer (clients/tests/broken_server.py, run from clients/c), each a call that
 * fails INTERNAL saying why, the client serving its next call: a CUDA_IPC output to a request
 * without FDN_FLAG_CUDA_IPC (spec 15.2; it failed INVALID_INPUT) and a status this version does not
 * define (section 9; it gave the server's text alone, the code lost). A handler's own
 * SERVER_UNAVAILABLE is passed on as it is, as every client does. */
void broken_server_checks(const char *python) {
    char name[64];
    snprintf(name, sizeof name, "fdncbrk%d", (int)getpid());
    pid_t server = server_of(python, "../tests/broken_server.py", name, NULL);
    CHECK(server > 0, "start clients/tests/broken_server.py (run from clients/c)");
    if (server < 0) return;
    struct fdn_error err = {0};
    fdn_client *c = NULL;
    enum fdn_status st = fdn_connect(&c, name, NULL, &err);
    CHECK(st == FDN_OK, "connect: %s %s", fdn_strerror(st), err.message);
    struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    static const struct {
        const char *model;
        enum fdn_status code;
        const char *message;
    } broken[] = {
        {"cuda_out", FDN_INTERNAL, "output \"y\" came as a CUDA_IPC descriptor, which this client did not ask for"},
        {"unknown_status", FDN_INTERNAL, "unknown error code 99: a status of a later version"},
        {"unavailable", FDN_SERVER_UNAVAILABLE, "a server this handler calls is gone"},
    };
    for (size_t i = 0; c && i < sizeof broken / sizeof *broken; i++) {
        struct fdn_result res;
        memset(&err, 0, sizeof err);
        st = fdn_infer(c, broken[i].model, &in, 1, 10000, &res, &err);
        CHECK(st == broken[i].code && err.code == st && strcmp(err.message, broken[i].message) == 0 &&
                  strcmp(err.model, broken[i].model) == 0 && err.request_id != 0,
              "model %s: %s model '%s' request %llu: %s", broken[i].model, fdn_strerror(st), err.model,
              (unsigned long long)err.request_id, err.message);
        echo(c, "echo after a broken answer");
    }
    fdn_close(c);
    kill(server, SIGTERM);
    waitpid(server, NULL, 0);
    remove_objects(name);
}
