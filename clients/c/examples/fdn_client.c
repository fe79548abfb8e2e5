/* fdn-client: the example program of the C client, and the driver the tests and benchmark run.
 *
 *   fdn-client infer --name SERVER --model MODEL [--input NAME:DTYPE:DIM,DIM,...:FILE]...
 *                    [--timeout-ms T] [--loan] [--hold connected|answered|again|loaned]
 *   fdn-client bench --name SERVER --model MODEL --input ... [--iterations N] [--warmup W]
 *   fdn-client vectors DIR
 *
 * infer prints one JSON line: {"ok": true, "outputs": {...}} or {"ok": false, "code": C, ...};
 * exit status 0 ok, 2 usage, 3 an error response, 4 no live server (docs/clients.md).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fdn_client.h"

#define MAX_INPUTS 16

struct args {
    const char *name, *model;
    int n_inputs, loan, iterations, warmup;
    int64_t timeout_ms;
    uint32_t spin_us;
    const char *params; /* --params JSON (an extension of the driver contract) */
    const char *hold;   /* --hold STAGE: stop there until stdin closes (the crash tests kill it) */
    struct fdn_tensor specs[MAX_INPUTS]; /* name, dtype, shape */
    void *data[MAX_INPUTS];
};

/* A whole decimal integer in [lo, hi] ("50x", "abc" and "" are not). */
static int integer_arg(const char *v, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) return 0;
    *out = x;
    return 1;
}

static int usage(const char *why) {
    fprintf(stderr, "fdn-client: %s\nusage: fdn-client infer|bench --name SERVER --model MODEL "
                    "[--input NAME:DTYPE:DIMS:FILE]... [--timeout-ms T] [--loan] [--iterations N] "
                    "[--warmup W] [--spin-us US] [--params JSON] [--hold connected|answered|again|loaned]\n"
                    "       fdn-client vectors DIR\n", why);
    return 2;
}

static void json_string(const char *s, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

/* NAME:DTYPE:DIM,DIM,...:FILE (DIMS empty for a scalar); reads FILE's raw bytes. */
static int parse_input(struct args *a, char *spec) {
    if (a->n_inputs == MAX_INPUTS) return usage("too many --input");
    struct fdn_tensor *t = &a->specs[a->n_inputs];
    char *name = spec, *dtype = strchr(name, ':'), *dims = dtype ? strchr(dtype + 1, ':') : NULL;
    char *file = dims ? strchr(dims + 1, ':') : NULL;
    if (!file) return usage("--input wants NAME:DTYPE:DIMS:FILE");
    *dtype++ = 0, *dims++ = 0, *file++ = 0;
    if (strlen(name) >= FDN_NAME_SIZE || !(t->dtype = fdn_dtype_from_name(dtype))) return usage("bad --input name or dtype");
    strcpy(t->name, name);
    for (char *d = dims; *d;) {
        if (t->ndim == FDN_MAX_NDIM) return usage("more than 8 dimensions");
        char *end;
        t->shape[t->ndim++] = strtoull(d, &end, 10);
        if (end == d || (*end && *end != ',')) return usage("bad --input dims");
        d = *end ? end + 1 : end;
    }
    char why[512], shape[8 * 22 + 3] = "[";
    uint64_t size = fdn_dtype_itemsize(t->dtype);
    int overflow = 0, empty = 0;
    for (uint32_t i = 0; i < t->ndim; i++) {
        empty |= !t->shape[i];
        /* a shape past 2^64 bytes wrapped around (to 0, which an empty file matched) */
        if (t->shape[i] && size > UINT64_MAX / t->shape[i]) overflow = 1;
        size *= t->shape[i];
        snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%llu", i ? ", " : "",
                 (unsigned long long)t->shape[i]);
    }
    strcat(shape, "]");
    if (overflow && !empty) {
        snprintf(why, sizeof why, "--input %s: %s%s takes more than 2^64 bytes", name, dtype, shape);
        return usage(why);
    }
    FILE *f = fopen(file, "rb");
    if (!f) {
        snprintf(why, sizeof why, "--input %s: cannot open %s: %s", name, file, strerror(errno));
        return usage(why);
    }
    if (size > SIZE_MAX || !(a->data[a->n_inputs] = malloc(size ? (size_t)size : 1))) {
        fclose(f);
        snprintf(why, sizeof why, "--input %s: cannot allocate the %llu bytes of %s%s", name,
                 (unsigned long long)size, dtype, shape);
        return usage(why);
    }
    size_t got = fread(a->data[a->n_inputs], 1, (size_t)size, f);
    int extra = fgetc(f) != EOF, read_errno = ferror(f) ? errno : 0;
    fclose(f);
    if (read_errno) {
        /* fopen opens a directory; its read fails (EISDIR), which is no file of 0 bytes */
        free(a->data[a->n_inputs]);
        snprintf(why, sizeof why, "--input %s: cannot read %s: %s", name, file, strerror(read_errno));
        return usage(why);
    }
    if (got != size || extra) {
        free(a->data[a->n_inputs]);
        snprintf(why, sizeof why, "--input %s: %s holds %s%zu bytes, %s%s takes %llu", name, file,
                 extra ? "more than " : "", got, dtype, shape, (unsigned long long)size);
        return usage(why);
    }
    a->n_inputs++;
    return 0;
}

static int parse(struct args *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->timeout_ms = -1;
    a->iterations = 1000;
    a->warmup = 100;
    a->spin_us = 100;
    for (int i = 2; i < argc; i++) {
        const char *k = argv[i];
        if (!strcmp(k, "--loan")) {
            a->loan = 1;
            continue;
        }
        static const char *const known[] = {"--name", "--model", "--timeout-ms", "--iterations",
                                            "--warmup", "--spin-us", "--params", "--input", "--hold"};
        int is_known = 0;
        for (size_t j = 0; j < sizeof known / sizeof *known; j++) is_known |= !strcmp(k, known[j]);
        if (!is_known) return usage("unknown option");
        if (i + 1 >= argc) return usage("an option lacks its value");
        char *v = argv[++i];
        long long n = 0;
        if (!strcmp(k, "--name")) a->name = v;
        else if (!strcmp(k, "--model")) a->model = v;
        else if (!strcmp(k, "--timeout-ms")) {
            if (!integer_arg(v, -1, INT64_MAX / 1000000, &n)) return usage("--timeout-ms takes an integer >= -1");
            a->timeout_ms = n;
        } else if (!strcmp(k, "--iterations")) {
            if (!integer_arg(v, 1, 1000000000, &n)) return usage("--iterations takes an integer >= 1");
            a->iterations = (int)n;
        } else if (!strcmp(k, "--warmup")) {
            if (!integer_arg(v, 0, 1000000000, &n)) return usage("--warmup takes an integer >= 0");
            a->warmup = (int)n;
        } else if (!strcmp(k, "--spin-us")) {
            if (!integer_arg(v, 0, 1000000, &n)) return usage("--spin-us takes an integer 0..1000000");
            a->spin_us = (uint32_t)n;
        } else if (!strcmp(k, "--params")) a->params = v;
        else if (!strcmp(k, "--hold")) {
            if (strcmp(v, "connected") && strcmp(v, "answered") && strcmp(v, "again") && strcmp(v, "loaned"))
                return usage("--hold takes connected, answered, again or loaned");
            a->hold = v;
        }
        else if (!strcmp(k, "--input")) {
            int rc = parse_input(a, v);
            if (rc) return rc;
        } else return usage("unknown option");
    }
    if (!a->name || !a->model) return usage("--name and --model are required");
    if (a->loan && a->params) return usage("--params cannot go with --loan (a loan carries no parameters)");
    if (a->iterations < 1 || a->warmup < 0) return usage("bad --iterations or --warmup");
    if (a->hold && !strcmp(a->hold, "loaned") && !a->loan) return usage("--hold loaned needs --loan");
    return 0;
}

static int fail(const struct fdn_error *err) {
    printf("{\"ok\": false, \"code\": %d, \"error\": \"%s\", \"message\": ", err->code, fdn_strerror(err->code));
    json_string(err->message, strlen(err->message));
    printf("}\n");
    return err->code == FDN_SERVER_UNAVAILABLE ? 4 : 3;
}

static float half_to_float(uint16_t h) {
    int e = (h >> 10) & 0x1F, m = h & 0x3FF;
    float v = e == 0 ? (float)m / 16777216.0f : e == 31 ? (m ? NAN : INFINITY) : (float)(m | 0x400) * (e >= 25 ? (float)(1u << (e - 25)) : 1.0f / (float)(1u << (25 - e)));
    return h & 0x8000 ? -v : v;
}

static void number(double x, int precision) {
    if (isnan(x)) printf("NaN");
    else if (isinf(x)) printf(x > 0 ? "Infinity" : "-Infinity");
    else printf("%.*g", precision, x);
}

static void print_value(const struct fdn_tensor *t, uint64_t i) {
    const uint8_t *p = (const uint8_t *)t->data + i * fdn_dtype_itemsize(t->dtype);
    union {
        uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
        uint64_t u64; int64_t i64; float f32; double f64;
    } v;
    memcpy(&v, p, fdn_dtype_itemsize(t->dtype));
    switch (t->dtype) {
    case FDN_BOOL: printf(v.u8 ? "true" : "false"); break;
    case FDN_UINT8: case FDN_BYTES: printf("%u", v.u8); break;
    case FDN_INT8: printf("%d", v.i8); break;
    case FDN_UINT16: printf("%u", v.u16); break;
    case FDN_INT16: printf("%d", v.i16); break;
    case FDN_UINT32: printf("%u", v.u32); break;
    case FDN_INT32: printf("%d", v.i32); break;
    case FDN_UINT64: printf("%llu", (unsigned long long)v.u64); break;
    case FDN_INT64: printf("%lld", (long long)v.i64); break;
    case FDN_FP16: number(half_to_float(v.u16), 9); break;
    case FDN_BF16: {
        uint32_t bits = (uint32_t)v.u16 << 16;
        float f;
        memcpy(&f, &bits, 4);
        number(f, 9);
        break;
    }
    case FDN_FP32: number(v.f32, 9); break;
    default: number(v.f64, 17); break;
    }
}

static void print_result(const struct fdn_result *res) {
    printf("{\"ok\": true, \"outputs\": {");
    for (uint32_t k = 0; k < res->output_count; k++) {
        const struct fdn_tensor *t = &res->outputs[k];
        uint64_t count = t->data_size / fdn_dtype_itemsize(t->dtype);
        printf("%s", k ? ", " : "");
        json_string(t->name, strlen(t->name));
        printf(": {\"datatype\": \"%s\", \"shape\": [", fdn_dtype_name(t->dtype));
        for (uint32_t d = 0; d < t->ndim; d++) printf("%s%llu", d ? ", " : "", (unsigned long long)t->shape[d]);
        printf("], \"data\": [");
        for (uint64_t i = 0; i < count; i++) {
            if (i) printf(", ");
            print_value(t, i);
        }
        printf("]}");
    }
    printf("}}\n");
}

/* --hold STAGE at STAGE: say so on stderr, then wait for stdin to close (a test kills the process
 * meanwhile: the client is then idle on its channel, or its loan written and not sent). again: once the
 * first call is answered; the same call is then made again, and its answer printed. */
static void hold(const struct args *a, const char *stage) {
    if (!a->hold || strcmp(a->hold, stage)) return;
    fprintf(stderr, "held %s\n", stage);
    fflush(stderr);
    char buf[256];
    ssize_t n;
    while ((n = read(0, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    }
}

/* One call: a copy of the inputs (fdn_infer), or a loan written in place. */
static enum fdn_status call(fdn_client *c, struct args *a, int loaned, struct fdn_result *res, struct fdn_error *err) {
    if (a->loan) {
        if (!loaned) {
            enum fdn_status st = fdn_loan_begin(c, a->model, a->specs, (uint32_t)a->n_inputs, err);
            if (st) return st;
        }
        for (int i = 0; i < a->n_inputs; i++) /* write the inputs straight into shared memory */
            memcpy(fdn_loan_data(c, (uint32_t)i), a->data[i], (size_t)a->specs[i].data_size);
        hold(a, "loaned");
        return fdn_loan_infer(c, a->timeout_ms, res, err);
    }
    struct fdn_input in[MAX_INPUTS];
    for (int i = 0; i < a->n_inputs; i++)
        in[i] = (struct fdn_input){a->specs[i].name, a->specs[i].dtype, a->specs[i].ndim, a->specs[i].shape, a->data[i]};
    struct fdn_call extra = {.params = a->params};
    return fdn_infer_call(c, a->model, in, (uint32_t)a->n_inputs, a->timeout_ms, &extra, res, err);
}

static void sizes(struct args *a) {
    for (int i = 0; i < a->n_inputs; i++) {
        uint64_t n = fdn_dtype_itemsize(a->specs[i].dtype);
        for (uint32_t d = 0; d < a->specs[i].ndim; d++) n *= a->specs[i].shape[d];
        a->specs[i].data_size = n;
    }
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int by_value(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static int infer_or_bench(struct args *a, int bench) {
    struct fdn_options opts = FDN_DEFAULT_OPTIONS;
    struct fdn_error err = {0};
    struct fdn_result res;
    fdn_client *c;
    opts.spin_us = a->spin_us;
    sizes(a);
    if (fdn_connect(&c, a->name, &opts, &err)) return fail(&err);
    int rc = 0;
    if (!bench) {
        hold(a, "connected");
        if (call(c, a, 0, &res, &err)) rc = fail(&err);
        else {
            hold(a, "answered");
            hold(a, "again"); /* idle on its channel between two calls (the restart tests) */
            if (a->hold && !strcmp(a->hold, "again") && call(c, a, 1, &res, &err)) rc = fail(&err);
            else print_result(&res);
        }
        fdn_close(c);
        return rc;
    }
    double *lat = malloc((size_t)a->iterations * sizeof *lat);
    for (int i = 0; i < a->warmup && !rc; i++)
        if (call(c, a, i > 0, &res, &err)) rc = fail(&err);
    double start = now_us();
    for (int i = 0; i < a->iterations && !rc; i++) {
        double t0 = now_us();
        if (call(c, a, i > 0 || a->warmup > 0, &res, &err)) rc = fail(&err);
        lat[i] = now_us() - t0;
    }
    double total = now_us() - start;
    if (!rc) {
        qsort(lat, (size_t)a->iterations, sizeof *lat, by_value);
        int n = a->iterations;
        printf("{\"p50_us\": %.3f, \"p99_us\": %.3f, \"rps\": %.1f, \"iterations\": %d}\n",
               lat[(int)(0.50 * (n - 1) + 0.5)], lat[(int)(0.99 * (n - 1) + 0.5)], n / (total / 1e6), n);
    }
    free(lat);
    fdn_close(c);
    return rc;
}

static void report_failure(void *ctx, const char *vector, const char *why) {
    int *first = ctx;
    printf("%s{\"vector\": ", *first ? "" : ", ");
    json_string(vector, strlen(vector));
    printf(", \"why\": ");
    json_string(why, strlen(why));
    printf("}");
    *first = 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage("no command");
    if (!strcmp(argv[1], "vectors")) {
        if (argc != 3) return usage("vectors wants a directory");
        int passed = 0, first = 1;
        printf("{\"failures\": [");
        int failed = fdn_vectors_check(argv[2], &passed, report_failure, &first);
        if (failed < 0) {
            printf("]}\n");
            return usage("cannot read the vectors directory");
        }
        printf("], \"passed\": %d, \"failed\": %d}\n", passed, failed);
        return failed ? 1 : 0;
    }
    int bench = !strcmp(argv[1], "bench");
    if (!bench && strcmp(argv[1], "infer")) return usage("unknown command");
    struct args a;
    int rc = parse(&a, argc, argv);
    if (!rc && bench && a.hold) rc = usage("--hold goes with infer");
    if (!rc) rc = infer_or_bench(&a, bench);
    for (int i = 0; i < a.n_inputs; i++) free(a.data[i]);
    return rc;
}
