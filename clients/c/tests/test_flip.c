/* The response decode against a server that rewrites the response area while the client reads it
 * (docs/protocol/shm.md section 13: a server process is not trusted to keep still): a thread
 * flips the area between two valid responses and a header whose payload_size points past the
 * area, while this thread copies (fdn_snapshot_response) and decodes (fdn_decode_response_msg)
 * it, as the client does. Every decode must be one of the two responses whole or a typed error;
 * under `make test-sanitize` an out-of-bounds read is an ASan report.
 *   test-flip [ITERATIONS] [direct]
 * "direct" decodes the area in place instead (fdn_decode_response, as the client did before it
 * copied): it shows the mixes the copy prevents, and is expected to fail.                      */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define AREA 16384
static uint8_t a[AREA], b[AREA], huge[AREA], area[AREA];
static atomic_int stop;

static void build(uint8_t *buf, const char *names[], uint32_t dtypes[], uint64_t dims[], uint32_t n,
                  const char *text, const char *params) {
    struct fdn_response_fields *f = calloc(1, sizeof *f);
    struct fdn_error err;
    f->request_id = 7;
    strcpy(f->model, "m");
    f->output_count = n;
    for (uint32_t i = 0; i < n; i++) {
        strcpy(f->outputs[i].name, names[i]);
        f->outputs[i].dtype = dtypes[i];
        f->outputs[i].ndim = 1;
        f->outputs[i].shape[0] = dims[i];
    }
    f->text = text;
    f->text_size = (uint32_t)strlen(text);
    f->params = params;
    f->params_size = (uint32_t)strlen(params);
    if (!fdn_layout(f->outputs, n, fdn_response_payload_size(n, f->text_size, f->params_size)) ||
        fdn_encode_response(buf, AREA, f, &err)) {
        fprintf(stderr, "test-flip: cannot build a response\n");
        exit(1);
    }
    free(f);
}

static void *flipper(void *arg) {
    (void)arg;
    for (unsigned k = 0; !atomic_load_explicit(&stop, memory_order_relaxed); k++) {
        const uint8_t *src = k % 3 == 0 ? a : k % 3 == 1 ? b : huge;
        for (size_t i = 0; i < 1024; i++) /* byte by byte: tears anywhere */
            ((volatile uint8_t *)area)[i] = src[i];
    }
    return NULL;
}

static int same(const struct fdn_response_fields *x, const struct fdn_response_fields *y) {
    if (x->output_count != y->output_count || x->text_size != y->text_size || x->params_size != y->params_size ||
        memcmp(x->text, y->text, x->text_size) || memcmp(x->params, y->params, x->params_size))
        return 0;
    for (uint32_t i = 0; i < x->output_count; i++) {
        const struct fdn_tensor *p = &x->outputs[i], *q = &y->outputs[i];
        if (strcmp(p->name, q->name) || p->dtype != q->dtype || p->ndim != q->ndim || p->shape[0] != q->shape[0] ||
            p->data_offset != q->data_offset || p->data_size != q->data_size)
            return 0;
    }
    return 1;
}

int main(int argc, char **argv) {
    long iters = argc > 1 ? atol(argv[1]) : 200000;
    int direct = argc > 2 && strcmp(argv[2], "direct") == 0;
    build(a, (const char *[]){"a"}, (uint32_t[]){12}, (uint64_t[]){4}, 1, "alpha", "");
    build(b, (const char *[]){"bb", "c"}, (uint32_t[]){2, 9}, (uint64_t[]){3000, 4}, 2, "", "{\"k\":1}");
    memcpy(huge, a, AREA);
    uint32_t big = UINT32_MAX;
    memcpy(huge + 16, &big, 4);
    static struct fdn_response_fields want_a, want_b, got;
    struct fdn_error err;
    if (fdn_decode_response(a, AREA, NULL, &want_a, &err) || fdn_decode_response(b, AREA, NULL, &want_b, &err)) {
        fprintf(stderr, "test-flip: %s\n", err.message);
        return 1;
    }
    /* the data of both, at their offsets, so that only the header and payload flip */
    memcpy(area, b, AREA);
    memcpy(area, a, 1024);
    pthread_t t;
    pthread_create(&t, NULL, flipper, NULL);
    uint8_t *snap = NULL;
    uint64_t cap = 0, n;
    long ok_a = 0, ok_b = 0, refused = 0, bad = 0;
    for (long i = 0; i < iters; i++) {
        if (fdn_snapshot_response(area, AREA, &snap, &cap, &n)) return 1;
        enum fdn_status st = direct ? fdn_decode_response(area, AREA, NULL, &got, &err)
                                    : fdn_decode_response_msg(snap, n, area, AREA, NULL, &got, &err);
        if (st == FDN_OK) {
            /* compare against the expected views' offsets; text/params pointers into snap */
            if (same(&got, &want_a)) ok_a++;
            else if (same(&got, &want_b)) ok_b++;
            else bad++;
            for (uint32_t k = 0; k < got.output_count; k++) /* the data view lies in the area */
                if ((const uint8_t *)got.outputs[k].data + got.outputs[k].data_size > area + AREA) bad++;
        } else if (st == FDN_BAD_CHECKSUM || st == FDN_INVALID_INPUT || st == FDN_TOO_LARGE || st == FDN_BAD_MAGIC) {
            refused++;
        } else {
            bad++;
        }
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    free(snap);
    printf("test-flip: %ld x A, %ld x B, %ld refused, %ld mixed or wrong\n", ok_a, ok_b, refused, bad);
    return bad ? 1 : 0;
}
