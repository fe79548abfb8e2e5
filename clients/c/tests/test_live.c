/* test_live: the C client against a real server (the shm echo server, started with the Python in
 * FDN_TEST_PYTHON): a deadline keeps the channel busy until the late answer, a killed server is
 * SERVER_UNAVAILABLE, and the next call finds a restarted one; data segments are allocated, not
 * sparse, a capacity /dev/shm can never hold is TOO_LARGE, a leftover of our own pid is replaced; a
 * response over max_response_bytes is TOO_LARGE, nothing grown (clients/tests/sized_server.py); what
 * no server may answer fails INTERNAL (clients/tests/broken_server.py); the
 * API under misuse (NULL arguments, bad inputs, failed loans, extreme timeouts) gets a code and a
 * message naming the fault. Skipped without FDN_TEST_PYTHON. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h" /* fdn_open_stat, which the proof checks blind */
#include "fdn_client.h"

static int failures;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: CHECK(%s): ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fputc('\n', stderr);                                           \
            failures++;                                                    \
        }                                                                  \
    } while (0)

/* Start the server `argv` (argv[0] the program) and wait for its "ready" line; its pid, or -1. */
static pid_t ready_server(char *const argv[]) {
    int fds[2];
    if (pipe(fds) < 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    FILE *out = fdopen(fds[0], "r");
    char line[256] = {0};
    int ready = out && fgets(line, sizeof line, out) && strncmp(line, "ready", 5) == 0;
    if (out) fclose(out); /* the server never writes again: closing the pipe's end is safe */
    if (!ready) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

/* Start `python -m foundation_shm._echo NAME [--channels CHANNELS]`, or with `script` the Python
 * script `script NAME`, and wait for its "ready" line; its pid, or -1. */
static pid_t server_of(const char *python, const char *script, const char *name, const char *channels) {
    char *py = (char *)python, *nm = (char *)name, *chs = (char *)channels;
    if (script) return ready_server((char *const[]){py, (char *)script, nm, NULL});
    if (channels) return ready_server((char *const[]){py, "-m", "foundation_shm._echo", nm, "--channels", chs, NULL});
    return ready_server((char *const[]){py, "-m", "foundation_shm._echo", nm, NULL});
}

static pid_t echo_server_of(const char *python, const char *name, const char *channels) {
    return server_of(python, NULL, name, channels);
}

static pid_t echo_server(const char *python, const char *name) { return echo_server_of(python, name, NULL); }

static void kill_server(pid_t pid) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void remove_objects(const char *name) {
    const char *patterns[] = {"/dev/shm/fdn-%s", "/dev/shm/fdn-%s-*", "/dev/shm/fdn-%s.lock", "/dev/shm/sem.fdn-%s-*"};
    for (size_t i = 0; i < sizeof patterns / sizeof *patterns; i++) {
        char pattern[256];
        glob_t g;
        snprintf(pattern, sizeof pattern, patterns[i], name);
        if (glob(pattern, 0, NULL, &g) == 0)
            for (size_t k = 0; k < g.gl_pathc; k++) unlink(g.gl_pathv[k]);
        globfree(&g);
    }
}

/* How many files match /dev/shm/fdn-NAME-d* (data segments); the last one's stat in *st. */
static size_t data_segments(const char *name, struct stat *st) {
    char pattern[256];
    glob_t g;
    size_t n = 0;
    snprintf(pattern, sizeof pattern, "/dev/shm/fdn-%s-d*", name);
    if (glob(pattern, 0, NULL, &g) == 0) {
        n = g.gl_pathc;
        if (st && n) stat(g.gl_pathv[n - 1], st);
    }
    globfree(&g);
    return n;
}

/* Spec 10.1 step 6: a capacity /dev/shm can never hold is TOO_LARGE with nothing left behind (and
 * the region mutex released: the next connect works); a segment of our own pid left over from a
 * failed claim is replaced; the fresh segment's pages are allocated (not sparse). Run first, on a
 * fresh server: channel 0's data_gen is 0, so our first segment is /fdn-NAME-d0-PID-1. */
static fdn_client *allocation_checks(const char *name) {
    struct statvfs vfs;
    CHECK(statvfs("/dev/shm", &vfs) == 0, "statvfs /dev/shm");
    uint64_t total = (uint64_t)vfs.f_blocks * vfs.f_frsize;
    struct fdn_options opts = FDN_DEFAULT_OPTIONS;
    opts.capacity = (total / 2 + (1u << 20)) & ~(uint64_t)4095; /* both areas: more than /dev/shm */
    opts.max_response_bytes = opts.capacity;                    /* (else refused as over it) */
    fdn_client *c = NULL;
    struct fdn_error err = {0};
    enum fdn_status st = fdn_connect(&c, name, &opts, &err);
    CHECK(st == FDN_TOO_LARGE, "capacities beyond /dev/shm (%llu bytes): %s %s", (unsigned long long)total,
          fdn_strerror(st), err.message);
    CHECK(strstr(err.message, "/fdn-") && strstr(err.message, "bytes"), "the message names the segment and size: %s",
          err.message);
    CHECK(data_segments(name, NULL) == 0, "a refused data segment is left in /dev/shm");
    if (st == FDN_OK) fdn_close(c);

    char leftover[128];
    snprintf(leftover, sizeof leftover, "/fdn-%s-d0-%d-1", name, (int)getpid());
    int fd = shm_open(leftover, O_RDWR | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0 && ftruncate(fd, 4096) == 0, "create the leftover %s", leftover);
    if (fd >= 0) close(fd);
    c = NULL;
    st = fdn_connect(&c, name, NULL, &err);
    CHECK(st == FDN_OK, "connect over a leftover segment of our pid: %s %s", fdn_strerror(st), err.message);
    struct stat sb = {0};
    CHECK(data_segments(name, &sb) == 1, "one data segment");
    CHECK(sb.st_size > 4096, "the leftover was replaced (size %lld)", (long long)sb.st_size);
    CHECK((long long)sb.st_blocks * 512 >= (long long)sb.st_size, "the segment is sparse: %lld blocks for %lld bytes",
          (long long)sb.st_blocks, (long long)sb.st_size);
    if (st != FDN_OK) shm_unlink(leftover);
    return st == FDN_OK ? c : NULL;
}

static int32_t x[2] = {1, 2};
static const uint64_t shape[1] = {2};

static void echo(fdn_client *c, const char *what) {
    struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    struct fdn_result res;
    struct fdn_error err = {0};
    enum fdn_status st = fdn_infer(c, "echo", &in, 1, 5000, &res, &err);
    const struct fdn_tensor *y = st == FDN_OK ? fdn_result_output(&res, "x") : NULL;
    CHECK(y && y->data_size == sizeof x && memcmp(y->data, x, sizeof x) == 0, "%s: %s %s", what,
          fdn_strerror(st), err.message);
}

/* The call is refused with `want` and a message containing `says`. */
#define REFUSED_ONLY(call, want, says)                                                                     \
    do {                                                                                                   \
        memset(&err, 0, sizeof err);                                                                       \
        enum fdn_status st_ = (call);                                                                      \
        CHECK(st_ == (want) && err.code == (want) && strstr(err.message, (says)), "%s: %s %s", #call,     \
              fdn_strerror(st_), err.message);                                                             \
    } while (0)
/* ... and the client still works. */
#define REFUSED(call, want, says, c)       \
    do {                                   \
        REFUSED_ONLY(call, want, says);    \
        echo((c), #call);                  \
    } while (0)

/* The public API under misuse: NULL pointers, inputs the codec cannot send and loans that failed
 * are refused with a code and a message naming what and where (they were SIGSEGVs, UBSan reports,
 * "bad name, dtype or ndim" for three faults, and a failed fdn_loan_begin left the old loan "on"
 * with the new tensors half in place); a timeout past 2^64 ns is no deadline to speak of (it
 * wrapped into the past: DEADLINE_EXCEEDED at once); a capacity near 2^64 is refused (it was
 * rounded up past 2^64 to one page; TOO_LARGE until max_response_bytes bounded it). */
static void misuse_checks(const char *name, fdn_client *c) {
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

static void call_error_checks(const char *name) {
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

static int resume(pid_t server, const char *name);

/* An fdn_loan_infer that fails while its request is still with the server (the server may still be
 * reading the inputs) ends the loan: fdn_loan_data pointed into the request area at once, and
 * writing there changed the inputs under the server's read. The server is stopped (SIGSTOP) to
 * hold the request as long as this needs, with no sleep to race against. */
static void late_loan_checks(const char *name, pid_t server) {
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

/* Map the control segment of server `name` (a mapping of our own: it outlives a client's); NULL if
 * it cannot be. */
static struct fdn_region_header *map_region(const char *name, size_t *size) {
    char path[128];
    snprintf(path, sizeof path, "/fdn-%s", name);
    int fd = shm_open(path, O_RDWR, 0);
    struct stat sb;
    void *ctl = MAP_FAILED;
    if (fd >= 0 && fstat(fd, &sb) == 0) {
        *size = (size_t)sb.st_size;
        ctl = mmap(NULL, *size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    }
    if (fd >= 0) close(fd);
    return ctl == MAP_FAILED ? NULL : ctl;
}

/* The first channel of the region this process owns, other than `skip`; NULL if none. */
static struct fdn_channel *own_channel(struct fdn_region_header *r, const struct fdn_channel *skip) {
    struct fdn_channel *chs = (struct fdn_channel *)((uint8_t *)r + r->channels_offset);
    for (uint32_t i = 0; i < r->channel_count; i++)
        if (&chs[i] != skip && __atomic_load_n(&chs[i].owner_pid, __ATOMIC_ACQUIRE) == (uint32_t)getpid())
            return &chs[i];
    return NULL;
}

/* Poll until the channel has no owner (the server reclaimed it): 1, or 0 after a minute (the
 * server's beat comes late on a loaded machine, not never). */
static int freed(struct fdn_channel *ch) {
    for (int i = 0; i < 6000; i++) {
        if (__atomic_load_n(&ch->owner_pid, __ATOMIC_ACQUIRE) == 0) return 1;
        usleep(10000);
    }
    return 0;
}

/* Stop `server` (SIGSTOP, waited for with WUNTRACED: the signal is asynchronous) and wait until its
 * heartbeat in region r is stale (section 10.3: older than 10 intervals, and 1 s): 1, or 0. */
static int hang(pid_t server, struct fdn_region_header *r) {
    kill(server, SIGSTOP);
    int ws = 0;
    if (waitpid(server, &ws, WUNTRACED) != server || !WIFSTOPPED(ws)) return 0;
    for (int i = 0; i < 6000; i++) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        uint64_t t = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
        if (t - __atomic_load_n(&r->heartbeat_ns, __ATOMIC_ACQUIRE) > 1010000000u) return 1;
        usleep(10000);
    }
    return 0;
}

/* Resume the stopped `server` (SIGCONT) and wait until it has beaten again, read through a mapping
 * of its control segment `name`: until then a call still finds it hung (stopped over a second) and
 * gives up after its connect_timeout_ms (20 or 50 ms in these tests), which a resumed process on a
 * loaded machine may take to be run at all. 1, or 0 after a minute. */
static int resume(pid_t server, const char *name) {
    size_t size = 0;
    struct fdn_region_header *r = map_region(name, &size);
    uint64_t beat = r ? __atomic_load_n(&r->heartbeat_ns, __ATOMIC_ACQUIRE) : 0;
    kill(server, SIGCONT);
    int beaten = 0;
    for (int i = 0; r && i < 60000 && !(beaten = __atomic_load_n(&r->heartbeat_ns, __ATOMIC_ACQUIRE) != beat); i++)
        usleep(1000);
    if (r) munmap(r, size);
    return beaten;
}

/* How many channels of region r this process owns. */
static int owned(struct fdn_region_header *r) {
    struct fdn_channel *chs = (struct fdn_channel *)((uint8_t *)r + r->channels_offset);
    int n = 0;
    for (uint32_t i = 0; i < r->channel_count; i++)
        n += __atomic_load_n(&chs[i].owner_pid, __ATOMIC_ACQUIRE) == (uint32_t)getpid();
    return n;
}

/* Spec 10.1 step 6: each step of creating a data segment that fails is classified by its error and
 * named, with nothing claimed or left in /dev/shm: no room now (ENOSPC, ENOMEM) or no file
 * descriptor free now (EMFILE, ENFILE) is OVERLOADED, it may fit later (a shm_open without room was
 * INTERNAL: a tmpfs out of inodes fails it ENOSPC); a size no file or /dev/shm can ever hold
 * (EFBIG, EOVERFLOW, EINVAL once the segment exists) is TOO_LARGE; anything else, shm_open's EINVAL
 * included, is INTERNAL. A posix_fallocate the file system cannot do (EOPNOTSUPP) leaves the
 * segment sparse and the connect goes on; one a signal interrupted (EINTR) is made again: it failed
 * the connect INTERNAL. */
static const char *failing_step; /* the next `step_fails` calls of this step fail `step_errno` */
static int step_fails, step_errno;

static int step_fails_now(const char *step) {
    if (step_fails <= 0 || !failing_step || strcmp(step, failing_step) != 0) return 0;
    step_fails--;
    errno = step_errno;
    return 1;
}

static int failing_shm_open(const char *name, int flags, mode_t mode) {
    return step_fails_now("shm_open") ? -1 : shm_open(name, flags, mode);
}

static int failing_fchmod(int fd, mode_t mode) { return step_fails_now("fchmod") ? -1 : fchmod(fd, mode); }

static int failing_ftruncate(int fd, off_t size) { return step_fails_now("ftruncate") ? -1 : ftruncate(fd, size); }

static int fallocate_calls;

static int failing_fallocate(int fd, off_t offset, off_t len) {
    fallocate_calls++;
    return step_fails_now("posix_fallocate") ? step_errno : posix_fallocate(fd, offset, len);
}

static void *failing_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t offset) {
    return step_fails_now("mmap") ? MAP_FAILED : mmap(addr, len, prot, flags, fd, offset);
}

static void segment_step_failure_checks(const char *name) {
    static const char room[] = ": no room now, it may fit later", fds[] = ": no file descriptor free now, it may be later";
    static const struct {
        const char *step;
        int e;
        enum fdn_status want;
        const char *tail;
    } cases[] = {
        {"shm_open", ENOSPC, FDN_OVERLOADED, room},
        {"shm_open", ENOMEM, FDN_OVERLOADED, room},
        {"shm_open", ENFILE, FDN_OVERLOADED, fds},
        {"shm_open", EINVAL, FDN_INTERNAL, ""},
        {"fchmod", EPERM, FDN_INTERNAL, ""},
        {"ftruncate", ENOSPC, FDN_OVERLOADED, room},
        {"ftruncate", ENOMEM, FDN_OVERLOADED, room},
        {"ftruncate", EFBIG, FDN_TOO_LARGE, ""},
        {"ftruncate", EINVAL, FDN_TOO_LARGE, ""},
        {"ftruncate", EIO, FDN_INTERNAL, ""},
        {"posix_fallocate", ENOSPC, FDN_OVERLOADED, room},
        {"posix_fallocate", EFBIG, FDN_TOO_LARGE, ""},
        {"posix_fallocate", EIO, FDN_INTERNAL, ""},
        {"posix_fallocate", EOPNOTSUPP, FDN_OK, ""},
        {"posix_fallocate", EINTR, FDN_OK, ""},
        {"mmap", ENOMEM, FDN_OVERLOADED, room},
        {"mmap", EMFILE, FDN_OVERLOADED, fds},
        {"mmap", ENFILE, FDN_OVERLOADED, fds},
        {"mmap", EOVERFLOW, FDN_TOO_LARGE, ""},
        {"mmap", EINVAL, FDN_TOO_LARGE, ""},
        {"mmap", EACCES, FDN_INTERNAL, ""},
    };
    size_t size = 0;
    struct fdn_region_header *r = map_region(name, &size);
    CHECK(r != NULL, "map the region");
    if (!r) return;
    int before = owned(r);
    size_t segments = data_segments(name, NULL);
    fdn_shm_open = failing_shm_open;
    fdn_fchmod = failing_fchmod;
    fdn_ftruncate = failing_ftruncate;
    fdn_posix_fallocate = failing_fallocate;
    fdn_mmap = failing_mmap;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        fdn_client *c = NULL;
        struct fdn_error err = {0};
        char want[160];
        snprintf(want, sizeof want, "(%s: %s)%s", cases[i].step, strerror(cases[i].e), cases[i].tail);
        failing_step = cases[i].step;
        step_errno = cases[i].e;
        step_fails = 1;
        fallocate_calls = 0;
        enum fdn_status st = fdn_connect(&c, name, NULL, &err);
        int called = step_fails == 0;
        step_fails = 0;
        size_t n = strlen(err.message), w = strlen(want);
        if (cases[i].want == FDN_OK)
            CHECK(st == FDN_OK && called && owned(r) == before + 1 && data_segments(name, NULL) == segments + 1,
                  "a data segment whose %s fails %s: %s '%s'; want a channel", cases[i].step,
                  strerror(cases[i].e), fdn_strerror(st), err.message);
        else
            CHECK(st == cases[i].want && n >= w && strcmp(err.message + n - w, want) == 0,
                  "a data segment whose %s fails %s: %s '%s'; want %s '...%s'", cases[i].step, strerror(cases[i].e),
                  fdn_strerror(st), err.message, fdn_strerror(cases[i].want), want);
        /* made again, not left sparse as for EOPNOTSUPP (the server's write to a missing page: SIGBUS) */
        CHECK(cases[i].e != EINTR || fallocate_calls == 2, "a posix_fallocate interrupted (EINTR) made %d times, not 2",
              fallocate_calls);
        if (c) fdn_close(c);
        CHECK(owned(r) == before && data_segments(name, NULL) == segments,
              "the connect whose %s failed %s kept a channel or left a data segment", cases[i].step,
              strerror(cases[i].e));
    }
    fdn_shm_open = shm_open;
    fdn_fchmod = fchmod;
    fdn_ftruncate = ftruncate;
    fdn_posix_fallocate = posix_fallocate;
    fdn_mmap = mmap;
    munmap(r, size);
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
static void max_response_checks(const char *python) {
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
static void broken_server_checks(const char *python) {
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
static void late_answer_checks(const char *python) {
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
static void late_answer_spin_checks(const char *python) {
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
static void hung_checks(const char *python) {
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
static void mutex_checks(const char *python) {
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

/* Spec 10.1, "Disconnect": fdn_close gives the channel back with owner_start_time = 0 when its
 * request is still with the server (after a deadline), and also when the region mutex stays busy
 * for connect_timeout_ms (it kept the channel owned by this live process for good); the server
 * reclaims it within a heartbeat. The client of main() stays connected meanwhile. */
static void close_checks(const char *name) {
    size_t size = 0;
    struct fdn_region_header *r = map_region(name, &size);
    CHECK(r, "map the control segment");
    if (!r) return;
    struct fdn_channel *other = own_channel(r, NULL); /* the connected client of main() */
    size_t segments = data_segments(name, NULL);
    struct fdn_options opts = FDN_DEFAULT_OPTIONS;
    opts.connect_timeout_ms = 100;
    for (int busy_mutex = 0; busy_mutex < 2; busy_mutex++) {
        const char *what = busy_mutex ? "a busy region mutex" : "a pending request";
        fdn_client *c = NULL;
        struct fdn_error err = {0};
        enum fdn_status st = fdn_connect(&c, name, &opts, &err);
        CHECK(st == FDN_OK, "connect: %s %s", fdn_strerror(st), err.message);
        if (st) break;
        struct fdn_channel *ch = own_channel(r, other);
        CHECK(ch, "the claimed channel");
        if (!busy_mutex) {
            struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
            struct fdn_call slow = {.params = "{\"ms\": 400}"};
            struct fdn_result res;
            st = fdn_infer_call(c, "sleep", &in, 1, 20, &slow, &res, &err);
            CHECK(st == FDN_DEADLINE_EXCEEDED, "a 20 ms deadline on a 400 ms call: %s", fdn_strerror(st));
        }
        char lock[128];
        snprintf(lock, sizeof lock, "/fdn-%s-lock", name);
        sem_t *mutex = busy_mutex ? sem_open(lock, 0) : SEM_FAILED;
        if (busy_mutex) CHECK(mutex != SEM_FAILED && sem_wait(mutex) == 0, "take the region mutex");
        fdn_close(c);
        if (mutex != SEM_FAILED) {
            sem_post(mutex);
            sem_close(mutex);
        }
        if (ch) {
            uint32_t pid = __atomic_load_n(&ch->owner_pid, __ATOMIC_ACQUIRE);
            uint64_t start = __atomic_load_n(&ch->owner_start_time, __ATOMIC_ACQUIRE);
            CHECK(pid == 0 || start == 0, "%s: the channel is kept by this live process (owner_start_time %llu)",
                  what, (unsigned long long)start);
            CHECK(freed(ch), "%s: the server did not reclaim the channel", what);
        }
        CHECK(data_segments(name, NULL) == segments, "%s: the closed client's data segment is left", what);
    }
    munmap(r, size);
}

/* Section 10.1 step 2: a STOPPING server takes no new client (its region is set so here, as the
 * server does when it stops); the clients it has (c) are still served. */
static void stopping_checks(const char *name, fdn_client *c) {
    size_t size = 0;
    struct fdn_region_header *r = map_region(name, &size);
    CHECK(r, "map the control segment");
    if (!r) return;
    __atomic_store_n(&r->state, FDN_STOPPING, __ATOMIC_RELEASE);
    fdn_client *d = NULL;
    struct fdn_error err = {0};
    enum fdn_status st = fdn_connect(&d, name, NULL, &err);
    char says[128];
    snprintf(says, sizeof says, "shm server '%s' is stopping", name);
    CHECK(st == FDN_SERVER_UNAVAILABLE && d == NULL && strcmp(err.message, says) == 0,
          "connect to a STOPPING server: %s %s", fdn_strerror(st), err.message);
    if (d) fdn_close(d);
    echo(c, "a call of a client connected before the server began to stop");
    __atomic_store_n(&r->state, FDN_READY, __ATOMIC_RELEASE);
    munmap(r, size);
}

/* Section 10.1: a connect claims its channel (owner_pid = this process), then opens the channel's
 * semaphore. When that failed (a semaphore unlinked, or EMFILE in a process out of descriptors)
 * the channel stayed owned by this live process, which the server never reclaims: a service whose
 * connects kept failing lost a channel per try until every client got OVERLOADED. It is given
 * back (owner_start_time = 0, as a disconnect without the mutex does): on a server of one channel,
 * a connect after the failed one is served once the server has reclaimed it. */
static void semaphore_failure_checks(const char *python) {
    char name[64];
    snprintf(name, sizeof name, "fdncs%d", (int)getpid());
    pid_t server = echo_server_of(python, name, "1");
    CHECK(server > 0, "start a server of one channel");
    if (server < 0) return;
    char sem[128], kept[160];
    snprintf(sem, sizeof sem, "/dev/shm/sem.fdn-%s-c0", name);
    snprintf(kept, sizeof kept, "%skept", sem); /* a second link to the server's semaphore */
    CHECK(link(sem, kept) == 0 && unlink(sem) == 0, "move %s aside: %s", sem, strerror(errno));
    fdn_client *c = NULL;
    struct fdn_error err = {0};
    enum fdn_status st = fdn_connect(&c, name, NULL, &err);
    CHECK(st == FDN_SERVER_UNAVAILABLE && strstr(err.message, "cannot open the semaphore of channel 0"),
          "connect with the channel semaphore gone: %s %s", fdn_strerror(st), err.message);
    if (c) fdn_close(c);
    size_t size = 0;
    struct fdn_region_header *r = map_region(name, &size);
    if (r) {
        struct fdn_channel *ch = (struct fdn_channel *)((uint8_t *)r + r->channels_offset);
        uint32_t pid = __atomic_load_n(&ch->owner_pid, __ATOMIC_ACQUIRE);
        uint64_t start = __atomic_load_n(&ch->owner_start_time, __ATOMIC_ACQUIRE);
        CHECK(pid == 0 || start == 0, "channel 0 is kept by this live process (pid %u, owner_start_time %llu)", pid,
              (unsigned long long)start);
        munmap(r, size);
    }
    CHECK(data_segments(name, NULL) == 0, "the failed connect's data segment is left");
    CHECK(rename(kept, sem) == 0, "put %s back: %s", sem, strerror(errno));
    c = NULL;
    st = FDN_OVERLOADED;
    for (int i = 0; i < 6000 && st == FDN_OVERLOADED; i++) { /* reclaimed within a heartbeat (a minute: late when loaded) */
        st = fdn_connect(&c, name, NULL, &err);
        if (st == FDN_OVERLOADED) usleep(10000);
    }
    CHECK(st == FDN_OK, "the connect after the failed one: %s %s", fdn_strerror(st), err.message);
    if (st == FDN_OK) {
        echo(c, "the call after a connect that could not open its channel semaphore");
        fdn_close(c);
    }
    kill(server, SIGTERM); /* a graceful stop removes its objects; what is left, remove_objects does */
    waitpid(server, NULL, 0);
    remove_objects(name);
}

/* This process's open descriptors and its mappings of /dev/shm objects (segments, semaphores). */
static void resources(int *fds, int *shm_maps) {
    *fds = *shm_maps = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d));) *fds += e->d_name[0] != '.';
    if (d) closedir(d);
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) *shm_maps += strstr(line, "/dev/shm/") != NULL;
    if (f) fclose(f);
}

/* A long-running process connects and closes again and again, through every outcome of a call:
 * descriptors, mappings and data segments come back to where they were (ASan's LeakSanitizer, in
 * make test-sanitize, checks the heap at exit). The client of main() stays connected meanwhile. */
static void cycle_checks(const char *name) {
    struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    struct fdn_tensor spec = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = {2}};
    struct fdn_call slow = {.params = "{\"ms\": 5}"};
    struct fdn_result res;
    struct fdn_error err = {0};
    int fds0, maps0, fds, maps;
    size_t segments = data_segments(name, NULL);
    resources(&fds0, &maps0);
    for (int i = 0; i < 200; i++) {
        fdn_client *c = NULL;
        enum fdn_status st = fdn_connect(&c, name, NULL, &err);
        CHECK(st == FDN_OK, "cycle %d: connect: %s %s", i, fdn_strerror(st), err.message);
        if (st) return;
        echo(c, "a call of a cycle");
        switch (i % 4) {
        case 0: st = fdn_infer(c, "no_such_model", &in, 1, 5000, &res, &err); break;
        case 1: st = fdn_infer(c, "fail", &in, 1, 5000, &res, &err); break;
        case 2: st = fdn_loan_begin(c, "echo", &spec, 1, &err) ? FDN_INTERNAL : FDN_OK; break; /* abandoned */
        default: st = fdn_infer_call(c, "sleep", &in, 1, 0, &slow, &res, &err); break; /* closed pending */
        }
        CHECK(st != FDN_OK || i % 4 == 2, "cycle %d: the failing call succeeded", i);
        fdn_close(c);
    }
    resources(&fds, &maps);
    CHECK(fds == fds0 && maps == maps0, "after 200 connect/call/close cycles: %d descriptors (was %d), %d mappings "
          "of /dev/shm (was %d)", fds, fds0, maps, maps0);
    CHECK(data_segments(name, NULL) == segments, "after 200 cycles: %zu data segments (was %zu)",
          data_segments(name, NULL), segments);
}

/* A server killed (SIGKILL) and restarted under its name (spec 10.3): a request the dead server never
 * dispatched is sent once more to the new one, within the call's deadline (before, the first call of
 * every idle client failed SERVER_UNAVAILABLE although the new server was up), a grown one too; with
 * no server restarted the call is gone as before, saying why it was not sent again; a loan, written
 * into the dead server's area, is not sent again. */
static void restart_checks(const char *python) {
    char name[64], says[256];
    snprintf(name, sizeof name, "fdncrash%d", (int)getpid());
    pid_t server = echo_server(python, name);
    CHECK(server > 0, "start");
    if (server < 0) return;
    fdn_client *c = NULL;
    struct fdn_error err = {0};
    struct fdn_result res;
    enum fdn_status st = fdn_connect(&c, name, NULL, &err);
    CHECK(st == FDN_OK, "connect: %s", err.message);
    if (st) goto out;
    echo(c, "the first call");
    kill_server(server);
    server = echo_server(python, name);
    CHECK(server > 0, "restart");
    if (server < 0) goto out;
    echo(c, "the first call after a crash and a restart");

    /* a request larger than the new channel's area: it grows before it is sent again */
    static uint8_t big[1200000];
    big[0] = 3, big[sizeof big - 1] = 9;
    const uint64_t big_shape[1] = {sizeof big};
    struct fdn_input in = {.name = "x", .dtype = FDN_UINT8, .ndim = 1, .shape = big_shape, .data = big};
    st = fdn_infer(c, "echo", &in, 1, 30000, &res, &err);
    CHECK(st == FDN_OK, "a grown request: %s", err.message);
    kill_server(server);
    server = echo_server(python, name);
    CHECK(server > 0, "restart");
    if (server < 0) goto out;
    st = fdn_infer(c, "echo", &in, 1, 30000, &res, &err);
    const struct fdn_tensor *y = st == FDN_OK ? fdn_result_output(&res, "x") : NULL;
    CHECK(y && y->data_size == sizeof big && memcmp(y->data, big, sizeof big) == 0,
          "a grown request after a crash and a restart: %s %s", fdn_strerror(st), err.message);

    struct fdn_tensor spec = {.name = "x", .dtype = FDN_UINT8, .ndim = 1, .shape = {4}};
    CHECK(fdn_loan_begin(c, "echo", &spec, 1, &err) == FDN_OK, "a loan: %s", err.message);
    uint8_t *lent = fdn_loan_data(c, 0);
    if (lent) memset(lent, 1, 4);
    CHECK(fdn_loan_infer(c, 30000, &res, &err) == FDN_OK, "the loan's first call: %s", err.message);
    pid_t dead = server;
    kill_server(server);
    server = echo_server(python, name);
    CHECK(server > 0, "restart");
    if (server < 0) goto out;
    if ((lent = fdn_loan_data(c, 0))) memset(lent, 2, 4);
    st = fdn_loan_infer(c, 30000, &res, &err);
    snprintf(says, sizeof says, "shm server '%s' (pid %d) is gone", name, (int)dead);
    CHECK(st == FDN_SERVER_UNAVAILABLE && strcmp(err.message, says) == 0,
          "a loan whose server was killed and restarted: %s %s", fdn_strerror(st), err.message);
    echo(c, "a copying call after the loan failed");

    dead = server;
    kill_server(server);
    server = -1;
    st = fdn_infer(c, "echo", &in, 1, 30000, &res, &err);
    snprintf(says, sizeof says,
             "shm server '%s' (pid %d) is gone; not sent again: no server has started under that name since", name,
             (int)dead);
    CHECK(st == FDN_SERVER_UNAVAILABLE && strcmp(err.message, says) == 0,
          "a call whose server was killed and not restarted: %s %s", fdn_strerror(st), err.message);
out:
    if (c) fdn_close(c);
    if (server > 0) kill_server(server);
    remove_objects(name);
}

/* Right after a SIGKILL the server's pid is a zombie (its main thread ended) while its other threads
 * still exit, the last one unmapping the memory (a model's gigabytes: a tenth of a second and more)
 * before it closes the lock file. A connect then, or a call's reconnect to send its request again,
 * was told the server held its lock but lived in another PID namespace; a zombie of the server's
 * start time is the server, dead: "gone" (and "no server has started under that name since").
 * This process holds the lock for those threads, the server killed and left unreaped. */
static void dying_checks(const char *python) {
    char name[64], path[96], says[256];
    snprintf(name, sizeof name, "fdndying%d", (int)getpid());
    snprintf(path, sizeof path, "/dev/shm/fdn-%s.lock", name);
    pid_t server = echo_server(python, name);
    CHECK(server > 0, "start");
    if (server < 0) return;
    fdn_client *c = NULL, *late = NULL;
    struct fdn_error err = {0};
    struct fdn_result res;
    int lock = -1;
    enum fdn_status st = fdn_connect(&c, name, NULL, &err);
    CHECK(st == FDN_OK, "connect: %s", err.message);
    if (st) goto out;
    echo(c, "the first call");
    kill(server, SIGKILL);
    char state = 0;
    for (int i = 0; i < 60000 && state != 'Z'; i++) { /* a minute at most (Go and Rust wait as long) */
        char stat_path[64], buf[512] = {0};
        snprintf(stat_path, sizeof stat_path, "/proc/%d/stat", (int)server);
        int fd = open(stat_path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
        if (fd >= 0) close(fd);
        char *p = n > 0 ? strrchr(buf, ')') : NULL;
        state = p && p[1] == ' ' ? p[2] : 0;
        if (state != 'Z') usleep(1000);
    }
    CHECK(state == 'Z', "the killed server never became a zombie");
    lock = open(path, O_RDONLY | O_CLOEXEC);
    int held = 0; /* once the server's last thread is gone */
    for (int i = 0; i < 60000 && lock >= 0 && !(held = flock(lock, LOCK_EX | LOCK_NB) == 0); i++) usleep(1000);
    CHECK(held, "hold the dead server's lock: %s", strerror(errno));
    snprintf(says, sizeof says, "shm server '%s' (pid %d) is gone", name, (int)server);
    st = fdn_connect(&late, name, NULL, &err);
    CHECK(st == FDN_SERVER_UNAVAILABLE && strcmp(err.message, says) == 0,
          "a connect right after a SIGKILL: %s '%s'; want '%s'", fdn_strerror(st), err.message, says);
    struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    st = fdn_infer(c, "echo", &in, 1, 30000, &res, &err);
    snprintf(says + strlen(says), sizeof says - strlen(says),
             "; not sent again: no server has started under that name since");
    CHECK(st == FDN_SERVER_UNAVAILABLE && strcmp(err.message, says) == 0,
          "a call sent again right after a SIGKILL: %s '%s'; want '%s'", fdn_strerror(st), err.message, says);
out:
    if (lock >= 0) close(lock);
    if (late) fdn_close(late);
    if (c) fdn_close(c);
    kill_server(server);
    remove_objects(name);
}

/* What a call sent again leaves behind: the flag "the dead server never dispatched it" was the client's
 * and was never cleared, so after one call sent again (or one whose dead server never dispatched it) a
 * later call answered SERVER_UNAVAILABLE by a live server's handler was taken for one the server never
 * saw and sent again: the handler ran twice (clients/tests/unavailable_server.py counts its calls). */
static void sent_again_once_checks(const char *python) {
    char name[64];
    snprintf(name, sizeof name, "fdnagain%d", (int)getpid());
    pid_t server = server_of(python, "../tests/unavailable_server.py", name, NULL);
    CHECK(server > 0, "start clients/tests/unavailable_server.py (run from clients/c)");
    if (server < 0) return;
    fdn_client *c = NULL;
    struct fdn_error err = {0};
    struct fdn_result res;
    struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    enum fdn_status st = fdn_connect(&c, name, NULL, &err);
    CHECK(st == FDN_OK, "connect: %s", err.message);
    if (st) goto out;
    echo(c, "the first call");
    kill_server(server);
    server = server_of(python, "../tests/unavailable_server.py", name, NULL);
    CHECK(server > 0, "restart");
    if (server < 0) goto out;
    echo(c, "a call sent again after a crash and a restart");
    st = fdn_infer(c, "unavailable", &in, 1, 30000, &res, &err);
    CHECK(st == FDN_SERVER_UNAVAILABLE && strcmp(err.message, "unavailable: call 1") == 0,
          "a handler's SERVER_UNAVAILABLE after a call sent again: %s '%s' (the handler ran twice?)",
          fdn_strerror(st), err.message);
    kill_server(server);
    server = -1;
    st = fdn_infer(c, "echo", &in, 1, 30000, &res, &err);
    CHECK(st == FDN_SERVER_UNAVAILABLE && strstr(err.message, "; not sent again: "), "no server: %s %s",
          fdn_strerror(st), err.message);
    server = server_of(python, "../tests/unavailable_server.py", name, NULL);
    CHECK(server > 0, "restart");
    if (server < 0) goto out;
    st = fdn_infer(c, "unavailable", &in, 1, 30000, &res, &err);
    CHECK(st == FDN_SERVER_UNAVAILABLE && strcmp(err.message, "unavailable: call 1") == 0,
          "a handler's SERVER_UNAVAILABLE after a call not sent again: %s '%s' (the handler ran twice?)",
          fdn_strerror(st), err.message);
out:
    if (c) fdn_close(c);
    if (server > 0) kill_server(server);
    remove_objects(name);
}

/* A request is sent again only when its server's process is proven dead (spec 10.3): not when
 * /proc/PID/stat cannot be read, nor when the region says STOPPED while the process lives. The
 * request is queued behind another client's (clients/tests/hold_client.py, its hold model holding
 * the serving loop of clients/tests/gate_server.py), so the live server never dispatched it
 * (server_busy 0): sent again on a new connection, it ran twice. */
static uint32_t blind_pid;
static int blind_reads; /* the next reads of blind_pid's stat fail blind_errno (this thread's calls only) */
static int blind_errno = EMFILE;

static int blind_open_stat(uint32_t pid) {
    if (pid == blind_pid && blind_reads > 0) {
        blind_reads--;
        errno = blind_errno;
        return -1;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    return open(path, O_RDONLY | O_CLOEXEC);
}

struct proof {
    const char *dir, *hold;
    struct fdn_region_header *region; /* set: write STOPPED once the call has published */
    int release_ms;                   /* the hold gate opens then, unless the call has returned */
    int done;
};

static int file_in(const char *dir, const char *model, const char *what) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.%s", dir, model, what);
    return access(path, F_OK) == 0;
}

static void touch_in(const char *dir, const char *model, const char *what) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.%s", dir, model, what);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) close(fd);
}

/* Write STOPPED once the call has published (if asked), then open the hold gate after release_ms
 * unless the call has returned: a request sent again waits for its answer behind the held loop. */
static void *proof_helper(void *arg) {
    struct proof *p = arg;
    if (p->region) {
        struct fdn_channel *ch = own_channel(p->region, NULL);
        for (int i = 0; i < 6000 && ch && __atomic_load_n(&ch->client_seq, __ATOMIC_ACQUIRE) ==
                                                 __atomic_load_n(&ch->server_seq, __ATOMIC_ACQUIRE); i++)
            usleep(1000);
        __atomic_store_n(&p->region->state, FDN_STOPPED, __ATOMIC_RELEASE);
    }
    for (int i = 0; i < p->release_ms / 5 && !__atomic_load_n(&p->done, __ATOMIC_ACQUIRE); i++) usleep(5000);
    touch_in(p->dir, p->hold, "release");
    return NULL;
}

/* One case: `reads` stat reads of the server blinded (EMFILE): kill(pid, 0) says it lives, the
 * call waits on and is answered once the gate opens (300 ms: six wait slices, each with a look),
 * run once; it failed gone (and before 311f17c was sent again, run twice). Or (stopped) the region
 * STOPPED by the helper: the call fails gone, run once. */
static void proof_case(const char *python, int reads, int stopped) {
    char name[64], dir[] = "/tmp/fdnproofXXXXXX", model[16], hold[16];
    snprintf(name, sizeof name, "fdnproof%d_%d", (int)getpid(), reads + 3 * stopped);
    snprintf(model, sizeof model, "count_%d", reads);
    snprintf(hold, sizeof hold, "hold_%d", reads);
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    pid_t server = ready_server((char *const[]){(char *)python, "../tests/gate_server.py", name, dir, "--channels", "4", NULL});
    CHECK(server > 0, "start clients/tests/gate_server.py (run from clients/c)");
    if (server < 0) return;
    fdn_client *c = NULL;
    pid_t holder = -1;
    struct fdn_error err = {0};
    struct fdn_result res;
    struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    size_t size = 0;
    struct fdn_region_header *r = map_region(name, &size);
    enum fdn_status st = fdn_connect(&c, name, NULL, &err);
    CHECK(st == FDN_OK && r, "connect: %s", err.message);
    if (st || !r) goto out;
    echo(c, "the first call");
    holder = fork();
    if (holder == 0) {
        execl(python, python, "../tests/hold_client.py", name, hold, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 60000 && !file_in(dir, hold, "with-server"); i++) usleep(1000);
    CHECK(file_in(dir, hold, "with-server"), "the hold never reached the server");
    struct proof p = {.dir = dir, .hold = hold, .region = stopped ? r : NULL, .release_ms = stopped ? 5000 : 300};
    pthread_t helper;
    pthread_create(&helper, NULL, proof_helper, &p);
    blind_pid = (uint32_t)server;
    blind_reads = reads;
    st = fdn_infer(c, model, &in, 1, 30000, &res, &err);
    blind_reads = 0;
    char got[512];
    snprintf(got, sizeof got, "%s", err.message);
    __atomic_store_n(&p.done, 1, __ATOMIC_RELEASE);
    pthread_join(helper, NULL);
    __atomic_store_n(&r->state, FDN_READY, __ATOMIC_RELEASE);
    for (int i = 0; i < 60000 && !file_in(dir, hold, "answered"); i++) usleep(1000);
    char runs[512];
    snprintf(runs, sizeof runs, "%s/%s.runs", dir, model);
    struct stat sb = {0};
    for (int i = 0; i < 60000 && (stat(runs, &sb) != 0 || sb.st_size == 0); i++) usleep(1000);
    usleep(200000); /* a second run, if any, would be in by now */
    sb.st_size = 0;
    stat(runs, &sb);
    char gone[128];
    snprintf(gone, sizeof gone, "shm server '%s' (pid %d) is gone", name, (int)server);
    if (stopped)
        CHECK(st == FDN_SERVER_UNAVAILABLE && strcmp(got, gone) == 0 && sb.st_size == 1,
              "a call queued behind another on a live server (the region STOPPED): %s '%s', the handler ran it %lld "
              "times; want '%s', once",
              fdn_strerror(st), st ? got : "", (long long)sb.st_size, gone);
    else
        CHECK(st == FDN_OK && sb.st_size == 1,
              "a call queued behind another on a live server (%d of its looks unreadable): %s '%s', the handler ran "
              "it %lld times; want it answered, once",
              reads, fdn_strerror(st), st ? got : "", (long long)sb.st_size);
out:
    if (c) fdn_close(c);
    if (holder > 0) kill_server(holder);
    if (r) munmap(r, size);
    kill_server(server);
    remove_objects(name);
    const char *left[] = {"with-server", "release", "answered", "runs"};
    for (size_t i = 0; i < sizeof left / sizeof *left; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s.%s", dir, hold, left[i]);
        unlink(path);
        snprintf(path, sizeof path, "%s/%s.%s", dir, model, left[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* A dead process behind a stat file that cannot be read is proven gone (kill: ESRCH); a live one
 * is not, whatever start time it is asked with (that cannot be checked then). */
static void unreadable_pid_checks(void) {
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0); /* reaped: its pid names no process now */
    blind_pid = (uint32_t)dead;
    blind_reads = 1;
    CHECK(fdn_process_gone((uint32_t)dead, 1), "a dead pid whose stat file cannot be read is not proven gone");
    blind_pid = (uint32_t)getpid();
    blind_reads = 2;
    CHECK(!fdn_process_gone(blind_pid, 1) && !fdn_process_gone(blind_pid, 2),
          "this live process, its stat file unreadable, is taken for gone");
    blind_reads = 0;
}

static int proc_not_mounted(void) { return 0; }

/* Where /proc is not mounted every /proc/PID/stat is ENOENT, which proves no death (spec 10.3):
 * kill(pid, 0) settles it, as Rust and Python do. A live process was taken for gone (a call to a
 * live server failed gone, and was sent again). Where /proc is mounted, ENOENT is proof. */
static void no_proc_checks(void) {
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);
    int (*mounted)(void) = fdn_proc_mounted;
    fdn_proc_mounted = proc_not_mounted;
    blind_errno = ENOENT;
    blind_pid = (uint32_t)getpid();
    blind_reads = 2;
    CHECK(!fdn_process_gone(blind_pid, 1) && !fdn_process_gone(blind_pid, 2),
          "this live process, with no /proc mounted (its stat file ENOENT), is taken for gone");
    blind_pid = (uint32_t)dead;
    blind_reads = 1;
    CHECK(fdn_process_gone(blind_pid, 1), "a dead pid, with no /proc mounted, is not proven gone");
    fdn_proc_mounted = mounted;
    blind_pid = (uint32_t)getpid();
    blind_reads = 1;
    CHECK(fdn_process_gone(blind_pid, 1), "with /proc mounted, a stat file ENOENT is no proof of death");
    blind_reads = 0;
    blind_errno = EMFILE;
}

/* A server killed behind a stat file this client cannot read: kill(pid, 0) proves it gone, and
 * the request it never dispatched is sent again to the server restarted under its name. It failed
 * gone (not proven dead: not sent again). */
static void killed_unreadable_checks(const char *python) {
    char name[64];
    snprintf(name, sizeof name, "fdncrashblind%d", (int)getpid());
    pid_t server = echo_server(python, name);
    CHECK(server > 0, "start");
    if (server < 0) return;
    fdn_client *c = NULL;
    struct fdn_error err = {0};
    enum fdn_status st = fdn_connect(&c, name, NULL, &err);
    CHECK(st == FDN_OK, "connect: %s", err.message);
    if (st) goto out;
    echo(c, "the first call");
    kill_server(server);
    blind_pid = (uint32_t)server;
    blind_reads = 1000000;
    server = echo_server(python, name);
    CHECK(server > 0, "restart");
    if (server > 0) echo(c, "the first call after a crash behind an unreadable stat file");
    blind_reads = 0;
out:
    if (c) fdn_close(c);
    if (server > 0) kill_server(server);
    remove_objects(name);
}

/* This process's own start time (owner_start_time) that cannot be read at connect fails the
 * connect SERVER_UNAVAILABLE naming why, having claimed nothing: it wrote 0, which says "given
 * back", and the server reclaimed the live client's channel. */
static void own_start_checks(const char *python) {
    char name[64], want[256];
    snprintf(name, sizeof name, "fdnself%d", (int)getpid());
    pid_t server = echo_server_of(python, name, "2");
    CHECK(server > 0, "start");
    if (server < 0) return;
    fdn_client *c = NULL;
    struct fdn_error err = {0};
    size_t size = 0;
    struct fdn_region_header *r = map_region(name, &size);
    blind_pid = (uint32_t)getpid();
    blind_reads = 1;
    enum fdn_status st = fdn_connect(&c, name, NULL, &err);
    blind_reads = 0;
    snprintf(want, sizeof want,
             "shm server '%s': cannot read this process's start time (/proc/%d/stat): %s; no channel claimed", name,
             (int)getpid(), strerror(EMFILE));
    CHECK(st == FDN_SERVER_UNAVAILABLE && strcmp(err.message, want) == 0,
          "a connect that cannot read its own start time: %s '%s'; want '%s'", fdn_strerror(st), err.message, want);
    if (c) fdn_close(c), c = NULL;
    CHECK(r != NULL, "map the region");
    if (r) {
        struct fdn_channel *chs = (struct fdn_channel *)((uint8_t *)r + r->channels_offset);
        for (uint32_t i = 0; i < r->channel_count; i++)
            CHECK(__atomic_load_n(&chs[i].owner_pid, __ATOMIC_ACQUIRE) == 0 &&
                      __atomic_load_n(&chs[i].owner_start_time, __ATOMIC_ACQUIRE) == 0,
                  "the failed connect claimed channel %u", i);
        munmap(r, size);
    }
    st = fdn_connect(&c, name, NULL, &err);
    CHECK(st == FDN_OK, "the connect after: %s", err.message);
    if (st == FDN_OK) echo(c, "a call once the start time can be read");
    if (c) fdn_close(c);
    kill_server(server);
    remove_objects(name);
}

/* malloc, wrapped in this binary (-Wl,--wrap=malloc, the Makefile's test-live rule): while
 * malloc_fails is set, the mallocs of this thread (the library's included) fail ENOMEM. */
void *__real_malloc(size_t size);
static __thread int malloc_fails;

void *__wrap_malloc(size_t size) {
    if (malloc_fails) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_malloc(size);
}

/* A request its killed server never dispatched whose copy for sending it again cannot be made
 * (malloc fails) fails gone with the reason appended, as every other "not sent again" does (spec
 * 10.3); it said only "... is gone", as if it had not been tried. */
static void copy_failure_checks(const char *python) {
    char name[64], want[256];
    snprintf(name, sizeof name, "fdncopy%d", (int)getpid());
    pid_t server = echo_server(python, name);
    CHECK(server > 0, "start");
    if (server < 0) return;
    fdn_client *c = NULL;
    struct fdn_error err = {0};
    struct fdn_result res;
    struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    enum fdn_status st = fdn_connect(&c, name, NULL, &err);
    CHECK(st == FDN_OK, "connect: %s", err.message);
    if (st) goto out;
    echo(c, "the first call");
    kill_server(server);
    malloc_fails = 1;
    st = fdn_infer(c, "echo", &in, 1, 5000, &res, &err);
    malloc_fails = 0;
    snprintf(want, sizeof want, "shm server '%s' (pid %d) is gone; not sent again: no memory for the copy of the request",
             name, (int)server);
    CHECK(st == FDN_SERVER_UNAVAILABLE && strcmp(err.message, want) == 0,
          "a request never dispatched whose copy cannot be made: %s '%s'; want '%s'", fdn_strerror(st), err.message,
          want);
    server = echo_server(python, name);
    CHECK(server > 0, "restart");
    if (server > 0) echo(c, "the call after a request not sent again for want of memory");
out:
    if (c) fdn_close(c);
    if (server > 0) kill_server(server);
    remove_objects(name);
}

/* A server hidden from the client's liveness checks (hidden_pid, its /proc/PID/stat as it read
 * while alive: a pipe gives it back), so that a test kills it and starts the next one before a
 * waiting call looks; hidden_looks counts the looks. */
static uint32_t hidden_pid;
static char hidden_stat[1024];
static int hidden_looks;

static int hiding_open_stat(uint32_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    int fds[2];
    if (pid != __atomic_load_n(&hidden_pid, __ATOMIC_ACQUIRE) || pipe(fds) < 0) return open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = write(fds[1], hidden_stat, strlen(hidden_stat));
    close(fds[1]);
    if (n < 0) close(fds[0]);
    __atomic_add_fetch(&hidden_looks, 1, __ATOMIC_ACQ_REL);
    return n < 0 ? -1 : fds[0];
}

/* Hide `pid` (its stat read now) until unhide(). */
static int hide(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, hidden_stat, sizeof hidden_stat - 1) : -1;
    if (fd >= 0) close(fd);
    if (n <= 0) return 0;
    hidden_stat[n] = 0;
    __atomic_store_n(&hidden_looks, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&hidden_pid, (uint32_t)pid, __ATOMIC_RELEASE);
    return 1;
}

static void unhide(void) { __atomic_store_n(&hidden_pid, 0, __ATOMIC_RELEASE); }

/* A call to `model` with a timeout, on a thread of its own (abandoned_case). */
struct timed_call {
    fdn_client *c;
    const char *model;
    int64_t timeout_ms;
    int loan; /* fdn_loan_begin of x instead (it waits up to connect_timeout_ms) */
    struct fdn_result res;
    struct fdn_error err;
    enum fdn_status st;
};

static void *timed_call(void *arg) {
    struct timed_call *k = arg;
    struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    struct fdn_tensor spec = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = {2}};
    if (k->loan) k->st = fdn_loan_begin(k->c, k->model, &spec, 1, &k->err);
    else k->st = fdn_infer(k->c, k->model, &in, 1, k->timeout_ms, &k->res, &k->err);
    return NULL;
}

static double seconds_since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Spec 7.5: the call after an abandoned one (past its deadline, its request with the handler of
 * clients/tests/gate_server.py, never answered) waits for that late answer; the server is killed
 * meanwhile. Its own request was never written, so it is sent once, within the call's deadline,
 * to a server restarted under the name (RESTARTED): answered by it, run once there (count_b's
 * runs), the abandoned request not sent again (no gate_a.with-server from the new server). It
 * failed "(pid N) is gone". With no new server (NONE) it fails "...is gone; not sent: no server
 * has started under that name since"; with a new one that is hung (HUNG), at its deadline (6 s),
 * not connect_timeout_ms (30 s), "...; not sent: ... is hung ... before the call's deadline". That
 * reconnect is the call's one extra attempt (10.3): its request queued on the new server (behind
 * clients/tests/hold_client.py's), which dies before dispatching it (TWICE), it fails gone, not
 * sent to a third server. A loan begun meanwhile (LOAN) has written nothing either: it is lent the
 * restarted server's channel, which answers its call (it failed gone). */
enum abandoned_case { RESTARTED, NONE, HUNG, TWICE, LOAN };

static void abandoned_case(const char *python, enum abandoned_case mode) {
    char name[64], dir[] = "/tmp/fdnabXXXXXX", path[512], want[256];
    snprintf(name, sizeof name, "fdnab%d_%d", (int)getpid(), (int)mode);
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char *const argv[] = {(char *)python, "../tests/gate_server.py", name, dir, "--channels", "2", NULL};
    pid_t server = ready_server(argv), dead = server, holder = -1;
    CHECK(server > 0, "start clients/tests/gate_server.py (run from clients/c)");
    if (server < 0) return;
    struct fdn_options opts = FDN_DEFAULT_OPTIONS;
    opts.connect_timeout_ms = 30000;
    fdn_client *c = NULL;
    struct fdn_error err = {0};
    struct fdn_result res;
    struct fdn_region_header *r = NULL;
    size_t size = 0;
    pthread_t t;
    struct timed_call k = {.model = "count_b", .timeout_ms = mode == HUNG ? 6000 : 30000, .loan = mode == LOAN};
    int (*real)(uint32_t) = fdn_open_stat;
    enum fdn_status st = fdn_connect(&c, name, &opts, &err);
    CHECK(st == FDN_OK, "connect: %s", err.message);
    if (st) goto out;
    k.c = c;
    struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
    st = fdn_infer(c, "gate_a", &in, 1, 300, &res, &err);
    uint64_t abandoned = err.request_id;
    CHECK(st == FDN_DEADLINE_EXCEEDED && file_in(dir, "gate_a", "with-server"),
          "a call abandoned at its deadline, its request with the handler: %s %s", fdn_strerror(st), err.message);
    snprintf(path, sizeof path, "%s/gate_a.with-server", dir);
    unlink(path);
    CHECK(hide(server), "read the server's stat");
    fdn_open_stat = hiding_open_stat;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(pthread_create(&t, NULL, timed_call, &k) == 0, "start a thread");
    for (int i = 0; i < 60000 && !__atomic_load_n(&hidden_looks, __ATOMIC_ACQUIRE); i++) usleep(1000);
    CHECK(__atomic_load_n(&hidden_looks, __ATOMIC_ACQUIRE), "the next call never waited for the late answer");
    kill_server(server);
    server = -1;
    if (mode != NONE) {
        server = ready_server(argv);
        CHECK(server > 0, "restart");
    }
    if (mode == HUNG && server > 0) {
        r = map_region(name, &size);
        CHECK(r && hang(server, r), "the new server did not hang");
    }
    if (mode == TWICE && server > 0) { /* the call's request is queued there, never dispatched */
        holder = fork();
        if (holder == 0) {
            execl(python, python, "../tests/hold_client.py", name, "hold_c", (char *)NULL);
            _exit(127);
        }
        for (int i = 0; i < 60000 && !file_in(dir, "hold_c", "with-server"); i++) usleep(1000);
        CHECK(file_in(dir, "hold_c", "with-server"), "the hold never reached the server");
        r = map_region(name, &size);
        CHECK(r && hide(server), "map and hide the new server");
        dead = server; /* the first one is seen dead now: the call reconnects and sends */
        struct fdn_channel *ch = NULL;
        for (int i = 0; i < 60000; i++) {
            if ((ch = own_channel(r, NULL)) && __atomic_load_n(&ch->client_seq, __ATOMIC_ACQUIRE) !=
                                                     __atomic_load_n(&ch->server_seq, __ATOMIC_ACQUIRE))
                break;
            usleep(1000);
        }
        CHECK(ch && !__atomic_load_n(&ch->server_busy, __ATOMIC_ACQUIRE), "the call's request is not queued there");
        kill_server(server);
        server = ready_server(argv);
        CHECK(server > 0, "restart a second time");
    }
    unhide();
    pthread_join(t, NULL);
    double took = seconds_since(&t0);
    fdn_open_stat = real;
    if (mode == HUNG && server > 0) kill(server, SIGCONT);
    char gone[128];
    snprintf(gone, sizeof gone, "shm server '%s' (pid %d) is gone", name, (int)dead);
    if (mode == HUNG) {
        snprintf(want, sizeof want, "%s; not sent: shm server '%s' (pid %d) is hung: no heartbeat for ", gone, name,
                 (int)server);
        CHECK(k.st == FDN_SERVER_UNAVAILABLE && strncmp(k.err.message, want, strlen(want)) == 0 &&
                  strstr(k.err.message, "no beat came before the call's deadline") && took < 6 + 2,
              "a call waiting for a late answer whose server died, restarted hung: %s '%s' after %.1f s; want '%s...' "
              "at its deadline (6 s)",
              fdn_strerror(k.st), k.err.message, took, want);
    } else if (mode == NONE) {
        snprintf(want, sizeof want, "%s; not sent: no server has started under that name since", gone);
        CHECK(k.st == FDN_SERVER_UNAVAILABLE && strcmp(k.err.message, want) == 0 && took < 5,
              "a call waiting for a late answer whose server died, none since: %s '%s' after %.1f s; want '%s'",
              fdn_strerror(k.st), k.err.message, took, want);
    } else if (mode == TWICE) {
        CHECK(k.st == FDN_SERVER_UNAVAILABLE && strcmp(k.err.message, gone) == 0,
              "a call sent to a restarted server that died before dispatching it: %s '%s'; want '%s' (sent once)",
              fdn_strerror(k.st), k.err.message, gone);
    } else {
        if (mode == LOAN) {
            CHECK(k.st == FDN_OK, "a loan begun while waiting for a late answer whose server died, restarted: %s '%s'",
                  fdn_strerror(k.st), k.err.message);
            int32_t *lent = k.st == FDN_OK ? fdn_loan_data(c, 0) : NULL;
            if (lent) memcpy(lent, x, sizeof x);
            k.st = lent ? fdn_loan_infer(c, 30000, &k.res, &k.err) : k.st;
        }
        const struct fdn_tensor *y = k.st == FDN_OK ? fdn_result_output(&k.res, "x") : NULL;
        CHECK(y && k.res.request_id == abandoned + 1 && strcmp(k.res.model, "count_b") == 0 &&
                  memcmp(y->data, x, sizeof x) == 0,
              "a call waiting for a late answer whose server died, restarted: %s '%s'", fdn_strerror(k.st),
              k.err.message);
    }
    char runs[512];
    snprintf(runs, sizeof runs, "%s/count_b.runs", dir);
    struct stat sb = {0};
    usleep(200000); /* a second run, or the abandoned request sent again, would be in by now */
    stat(runs, &sb);
    int ran = mode == RESTARTED || mode == LOAN;
    CHECK(sb.st_size == ran && !file_in(dir, "gate_a", "with-server"),
          "the new server ran the call %lld times (want %d), the abandoned request %s", (long long)sb.st_size, ran,
          file_in(dir, "gate_a", "with-server") ? "sent again" : "not sent again");
out:
    fdn_open_stat = real;
    unhide();
    if (c) fdn_close(c);
    if (r) munmap(r, size);
    if (server > 0) kill_server(server);
    if (holder > 0) kill_server(holder);
    remove_objects(name);
    const char *left[] = {"gate_a.with-server", "count_b.runs", "hold_c.with-server"};
    for (size_t i = 0; i < sizeof left / sizeof *left; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, left[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void abandoned_checks(const char *python) {
    abandoned_case(python, RESTARTED);
    abandoned_case(python, NONE);
    abandoned_case(python, HUNG);
    abandoned_case(python, TWICE);
    abandoned_case(python, LOAN);
}

static void proof_checks(const char *python) {
    fdn_open_stat = blind_open_stat;
    proof_case(python, 1, 0);
    proof_case(python, 2, 0);
    proof_case(python, 1000000, 0);
    proof_case(python, 0, 1);
    unreadable_pid_checks();
    no_proc_checks();
    killed_unreadable_checks(python);
    own_start_checks(python);
    copy_failure_checks(python);
}

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
        mutex_checks(python);
        restart_checks(python);
        dying_checks(python);
        abandoned_checks(python);
        sent_again_once_checks(python);
        proof_checks(python);

        struct fdn_input in = {.name = "x", .dtype = FDN_INT32, .ndim = 1, .shape = shape, .data = x};
        struct fdn_call slow = {.params = "{\"ms\": 300}"};
        struct fdn_result res;
        st = fdn_infer_call(c, "sleep", &in, 1, 20, &slow, &res, &err);
        CHECK(st == FDN_DEADLINE_EXCEEDED, "a 20 ms deadline on a 300 ms call: %s", fdn_strerror(st));
        echo(c, "the call after a deadline (waits for the late answer, then reads its own)");

        kill_server(server);
        st = fdn_infer(c, "echo", &in, 1, 5000, &res, &err);
        CHECK(st == FDN_SERVER_UNAVAILABLE, "a killed server: %s", fdn_strerror(st));
        server = echo_server(python, name);
        CHECK(server > 0, "restart");
        if (server > 0) echo(c, "the call after the server restarted");

        if (server > 0) { /* a graceful stop: the region says STOPPED */
            kill(server, SIGTERM);
            waitpid(server, NULL, 0);
        }
        server = echo_server(python, name);
        CHECK(server > 0, "restart");
        if (server > 0) echo(c, "the first call after a graceful restart");
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
