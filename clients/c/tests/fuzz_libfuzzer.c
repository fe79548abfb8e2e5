/* fuzz_libfuzzer: the C decoders under libFuzzer (coverage-guided), for `make libfuzzer` only
 * (clang, ASan + UBSan). One input is one message area, in a buffer of exactly its size; the
 * harness decodes it as fuzz_decode.c does per message, twice: as it came, and re-sealed (the
 * header CRC, and with FLAG_DATA_CRC the tensors' data, recomputed as an honest peer would) so
 * that the checks past the CRC are reached. The header's reserved word (unchecked by the
 * decoders) picks the limits: 0 the defaults, else max_tensors = byte 24 % 34 and max_bytes =
 * 2^(byte 25 % 64) - 1 + byte 26.
 *
 * On each input:
 *   - fdn_decode_request and fdn_decode_response; a decoded view (tensor data, params, text)
 *     must lie inside the area, and every tensor's bytes are read;
 *   - the client's own path, fdn_snapshot_response then fdn_decode_response_msg, must answer as
 *     fdn_decode_response does on the area (same status; same fields when decoded);
 *   - a decoded message re-encoded into a copy of the area (tensor data left where it is) must
 *     encode, and decode again to the same fields (encode -> decode round trip);
 *   - fdn_params_valid and the JSON reader on the raw bytes as text.
 * ASan and UBSan judge memory and undefined behaviour; the properties above abort on a breach.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fdn_client.h"
#include "internal.h"
#include "json.h"

static volatile uint32_t sink;

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "fuzz_libfuzzer: " __VA_ARGS__);                                           \
        fputc('\n', stderr);                                                                       \
        abort();                                                                                   \
    } while (0)

static void inside(const uint8_t *area, size_t size, const void *p, uint64_t n, const char *what) {
    const uint8_t *q = p;
    if (!n) return;
    if (!q || q < area || q > area + size || n > (uint64_t)(area + size - q))
        FAIL("decoded %s [%p, +%llu) outside the area [%p, +%zu)", what, p, (unsigned long long)n,
             (const void *)area, size);
    sink ^= fdn_crc32(0, p, n);
}

static void walk(const uint8_t *area, size_t size, const struct fdn_tensor *t, uint32_t count) {
    for (uint32_t i = 0; i < count; i++) {
        if (strnlen(t[i].name, FDN_NAME_SIZE) == FDN_NAME_SIZE) FAIL("tensor %u name not terminated", i);
        if (t[i].location == FDN_CUDA_IPC) {
            if (t[i].data) FAIL("CUDA_IPC tensor %u has a data pointer", i);
            continue;
        }
        if (t[i].data != area + t[i].data_offset) FAIL("tensor %u data is not area + data_offset", i);
        inside(area, size, t[i].data, t[i].data_size, "tensor data");
    }
}

/* Re-seal as an honest peer would: CRC32 over header [0, 28), the payload (clipped to the area),
 * and with FLAG_DATA_CRC each HOST tensor's bytes whose descriptor lies in the area and whose
 * range does (the decoder refuses the others before it reads the CRC). */
static void reseal(uint8_t *buf, size_t size) {
    if (size < FDN_HEADER_SIZE) return;
    struct fdn_msg_header h;
    memcpy(&h, buf, sizeof h);
    size_t end = (uint64_t)FDN_HEADER_SIZE + h.payload_size < size ? FDN_HEADER_SIZE + h.payload_size : size;
    uint32_t crc = fdn_crc32(fdn_crc32(0, buf, 28), buf + FDN_HEADER_SIZE, end - FDN_HEADER_SIZE);
    if ((h.flags & FDN_FLAG_DATA_CRC) && size >= FDN_HEADER_SIZE + FDN_BODY_SIZE) {
        uint32_t count;
        if (h.kind == FDN_RESPONSE) {
            struct fdn_infer_response b;
            memcpy(&b, buf + FDN_HEADER_SIZE, sizeof b);
            count = b.output_count;
        } else {
            struct fdn_infer_request b;
            memcpy(&b, buf + FDN_HEADER_SIZE, sizeof b);
            count = b.input_count;
        }
        if (count > FDN_MAX_TENSORS) count = FDN_MAX_TENSORS;
        for (uint32_t i = 0; i < count; i++) {
            size_t at = FDN_HEADER_SIZE + FDN_BODY_SIZE + (size_t)i * FDN_DESC_SIZE;
            if (at + FDN_DESC_SIZE > size) break;
            struct fdn_tensor_desc d;
            memcpy(&d, buf + at, sizeof d);
            if (d.location == FDN_CUDA_IPC) continue;
            if (d.data_offset > size || d.data_size > size - d.data_offset) continue;
            crc = fdn_crc32(crc, buf + d.data_offset, d.data_size);
        }
    }
    memcpy(buf + 28, &crc, 4);
}

static const struct fdn_limits *limits_of(const uint8_t *area, size_t size, struct fdn_limits *lim) {
    if (size < FDN_HEADER_SIZE) return NULL;
    uint32_t reserved;
    memcpy(&reserved, area + 24, 4);
    if (!reserved) return NULL;
    lim->max_tensors = area[24] % (FDN_MAX_TENSORS + 2);
    unsigned shift = area[25] % 64;
    lim->max_bytes = (((uint64_t)1 << shift) - 1) + area[26];
    return lim;
}

static int same_tensor(const struct fdn_tensor *a, const struct fdn_tensor *b) {
    return strcmp(a->name, b->name) == 0 && a->dtype == b->dtype && a->ndim == b->ndim &&
           memcmp(a->shape, b->shape, sizeof a->shape) == 0 && a->data_offset == b->data_offset &&
           a->data_size == b->data_size && a->location == b->location && a->device == b->device &&
           memcmp(a->ipc_handle, b->ipc_handle, sizeof a->ipc_handle) == 0 && a->ipc_offset == b->ipc_offset;
}

static int same_request(const struct fdn_request_fields *a, const struct fdn_request_fields *b) {
    if (a->kind != b->kind || a->request_id != b->request_id || a->flags != b->flags ||
        strcmp(a->model, b->model) || strcmp(a->version, b->version) || a->deadline_ns != b->deadline_ns ||
        a->input_count != b->input_count || a->output_count != b->output_count || a->params_size != b->params_size)
        return 0;
    for (uint32_t i = 0; i < a->input_count; i++)
        if (!same_tensor(&a->inputs[i], &b->inputs[i])) return 0;
    for (uint32_t i = 0; i < a->output_count; i++)
        if (strcmp(a->outputs[i], b->outputs[i])) return 0;
    return memcmp(a->params, b->params, a->params_size) == 0;
}

static int same_response(const struct fdn_response_fields *a, const struct fdn_response_fields *b) {
    if (a->request_id != b->request_id || a->flags != b->flags || a->status != b->status ||
        strcmp(a->model, b->model) || strcmp(a->version, b->version) || a->output_count != b->output_count ||
        a->text_size != b->text_size || a->params_size != b->params_size || a->required_bytes != b->required_bytes)
        return 0;
    for (uint32_t i = 0; i < a->output_count; i++)
        if (!same_tensor(&a->outputs[i], &b->outputs[i])) return 0;
    return memcmp(a->text, b->text, a->text_size) == 0 && memcmp(a->params, b->params, a->params_size) == 0;
}

static struct fdn_request_fields req, req2;
static struct fdn_response_fields resp, resp2, resp3;
static uint8_t *snap;
static uint64_t snap_cap;

static void one(const uint8_t *area, size_t size) {
    struct fdn_error err;
    struct fdn_limits lim_buf;
    const struct fdn_limits *lim = limits_of(area, size, &lim_buf);

    if (fdn_decode_request(area, size, lim, &req, &err) == FDN_OK) {
        walk(area, size, req.inputs, req.input_count);
        inside(area, size, req.params, req.params_size, "params");
        for (uint32_t i = 0; i < req.output_count; i++)
            if (strnlen(req.outputs[i], FDN_NAME_SIZE) == FDN_NAME_SIZE) FAIL("output name %u not terminated", i);
        uint8_t *copy = malloc(size);
        memcpy(copy, area, size);
        enum fdn_status st = fdn_encode_request(copy, size, &req, &err);
        if (st != FDN_OK) FAIL("a decoded request does not encode again: %s", err.message);
        st = fdn_decode_request(copy, size, lim, &req2, &err);
        if (st != FDN_OK) FAIL("a re-encoded request does not decode: %s", err.message);
        if (!same_request(&req, &req2)) FAIL("re-encoded request decodes to other fields");
        free(copy);
    } else {
        sink ^= (uint32_t)strlen(err.message);
    }

    enum fdn_status direct = fdn_decode_response(area, size, lim, &resp, &err);
    if (direct == FDN_OK) {
        walk(area, size, resp.outputs, resp.output_count);
        inside(area, size, resp.text, resp.text_size, "text");
        inside(area, size, resp.params, resp.params_size, "params");
        uint8_t *copy = malloc(size);
        memcpy(copy, area, size);
        enum fdn_status st = fdn_encode_response(copy, size, &resp, &err);
        if (st != FDN_OK) FAIL("a decoded response does not encode again: %s", err.message);
        st = fdn_decode_response(copy, size, lim, &resp2, &err);
        if (st != FDN_OK) FAIL("a re-encoded response does not decode: %s", err.message);
        if (!same_response(&resp, &resp2)) FAIL("re-encoded response decodes to other fields");
        free(copy);
    }
    /* the client's path: copy header and payload, decode the copy against the area */
    uint64_t n = 0;
    if (fdn_snapshot_response(area, size, &snap, &snap_cap, &n)) FAIL("snapshot out of memory");
    if (n > size) FAIL("snapshot copied %llu bytes of an area of %zu", (unsigned long long)n, size);
    uint8_t *exact = malloc(n ? n : 1); /* the copy in a buffer of exactly n bytes: ASan sees overreads */
    if (n) memcpy(exact, snap, n);
    enum fdn_status via = fdn_decode_response_msg(exact, n, area, size, lim, &resp3, &err);
    if (via != direct) FAIL("snapshot decode says %d, direct decode %d (%s)", via, direct, err.message);
    if (via == FDN_OK) {
        inside(exact, n, resp3.text, resp3.text_size, "snapshot text");
        inside(exact, n, resp3.params, resp3.params_size, "snapshot params");
        walk(area, size, resp3.outputs, resp3.output_count);
        if (!same_response(&resp, &resp3)) FAIL("snapshot decode gives other fields than the direct decode");
    }
    free(exact);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *area = calloc(size ? size : 1, 1); /* (calloc: an empty input is one zero byte) */
    if (!area) FAIL("out of memory for a %zu-byte input", size);
    if (size) memcpy(area, data, size);
    one(area, size);
    reseal(area, size);
    if (memcmp(area, data, size)) one(area, size);
    free(area);

    if (size <= 4096) { /* the params checker and the JSON reader, over the bytes as text */
        sink ^= (uint32_t)fdn_params_valid((const char *)data, size);
        struct fdn_jdoc doc;
        if (fdn_json_parse(&doc, (const char *)data, size) == 0) {
            char out[256];
            for (int i = 0; i < doc.len; i++)
                if (doc.nodes[i].type == FDN_JSTRING)
                    sink ^= (uint32_t)fdn_json_unescape(doc.nodes[i].raw, doc.nodes[i].raw_len, out, sizeof out);
            fdn_json_free(&doc);
        }
    }
    return 0;
}
