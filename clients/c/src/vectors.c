/* vectors.c: run docs/protocol/vectors/ through the codec (decode each .bin and compare with its
 * .json; encode the .json's fields and compare with the .bin byte for byte, for request_* and
 * response_* vectors). */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "json.h"

struct vec {
    const char *name;
    struct fdn_jdoc doc;
    const struct fdn_jnode *expect;
    uint8_t *bin;
    size_t bin_size;
    char why[512];
};

static char *read_all(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        *size = (size_t)n;
    }
    return buf;
}

__attribute__((format(printf, 2, 3))) static int FAIL(struct vec *v, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->why, sizeof v->why, fmt, ap);
    va_end(ap);
    return 0;
}

static const struct fdn_jnode *get(struct vec *v, const struct fdn_jnode *obj, const char *key) {
    return fdn_json_get(&v->doc, obj, key);
}

static int get_u64(struct vec *v, const struct fdn_jnode *obj, const char *key, uint64_t *out) {
    const struct fdn_jnode *n = get(v, obj, key);
    if (!n || n->type != FDN_JNUMBER) return FAIL(v, "expected field '%s' missing", key);
    *out = strtoull(n->raw, NULL, 10);
    return 1;
}

static int get_str(struct vec *v, const struct fdn_jnode *obj, const char *key, char *dst, size_t cap) {
    const struct fdn_jnode *n = get(v, obj, key);
    if (!n || n->type != FDN_JSTRING || fdn_json_unescape(n->raw, n->raw_len, dst, cap) < 0)
        return FAIL(v, "expected string '%s' missing or too long", key);
    return 1;
}

static int check_u64(struct vec *v, const struct fdn_jnode *obj, const char *key, uint64_t got) {
    uint64_t want;
    if (!get_u64(v, obj, key, &want)) return 0;
    return want == got ? 1 : FAIL(v, "%s: decoded %llu, expected %llu", key, (unsigned long long)got,
                                  (unsigned long long)want);
}

static int check_str(struct vec *v, const struct fdn_jnode *obj, const char *key, const char *got, size_t n) {
    char want[4096];
    if (!get_str(v, obj, key, want, sizeof want)) return 0;
    return strlen(want) == n && memcmp(want, got, n) == 0 ? 1 : FAIL(v, "%s: decoded '%.*s', expected '%s'", key,
                                                                      (int)n, got, want);
}

static int hex_value(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The tensors of a JSON list into t[]; data bytes into *data (malloc'd, concatenated). */
static int tensors_from_json(struct vec *v, const struct fdn_jnode *list, struct fdn_tensor *t, uint32_t *count,
                             uint8_t **data) {
    *count = 0;
    size_t total = 0;
    *data = NULL;
    for (int i = list ? list->child : -1; i >= 0; i = v->doc.nodes[i].next) {
        const struct fdn_jnode *n = &v->doc.nodes[i];
        if (*count >= FDN_MAX_TENSORS) return FAIL(v, "too many tensors");
        struct fdn_tensor *x = &t[(*count)++];
        memset(x, 0, sizeof *x);
        char dtype[32];
        if (!get_str(v, n, "name", x->name, sizeof x->name) || !get_str(v, n, "datatype", dtype, sizeof dtype))
            return 0;
        x->dtype = fdn_dtype_from_name(dtype);
        const struct fdn_jnode *shape = get(v, n, "shape");
        for (int k = shape ? shape->child : -1; k >= 0; k = v->doc.nodes[k].next) {
            if (x->ndim >= FDN_MAX_NDIM) return FAIL(v, "shape too long");
            x->shape[x->ndim++] = strtoull(v->doc.nodes[k].raw, NULL, 10);
        }
        const struct fdn_jnode *location = get(v, n, "location");
        if (location) { /* section 15: {"location": "CUDA_IPC", "device", "ipc_handle_hex", "ipc_offset"} */
            const struct fdn_jnode *handle = get(v, n, "ipc_handle_hex"), *device = get(v, n, "device");
            if (location->raw_len != 10 || memcmp(location->raw, "\"CUDA_IPC\"", 10))
                return FAIL(v, "unknown location %.*s", (int)location->raw_len, location->raw);
            if (!handle || handle->raw_len != 2 + 128 || !device || !get_u64(v, n, "ipc_offset", &x->ipc_offset) ||
                !get_u64(v, n, "data_size", &x->data_size))
                return FAIL(v, "CUDA_IPC tensor '%s' lacks device, ipc_handle_hex, ipc_offset or data_size", x->name);
            x->location = FDN_CUDA_IPC;
            x->device = (int32_t)strtol(device->raw, NULL, 10);
            for (int b = 0; b < 64; b++)
                x->ipc_handle[b] = (uint8_t)(hex_value(handle->raw[1 + 2 * b]) << 4 | hex_value(handle->raw[2 + 2 * b]));
            x->data = (void *)(uintptr_t)total; /* no bytes */
            continue;
        }
        if (!get_u64(v, n, "data_offset", &x->data_offset) || !get_u64(v, n, "data_size", &x->data_size)) return 0;
        const struct fdn_jnode *hex = get(v, n, "data_hex");
        if (!hex || hex->raw_len - 2 != 2 * x->data_size) return FAIL(v, "data_hex of '%s' is not data_size bytes", x->name);
        uint8_t *grown = realloc(*data, total + x->data_size + 1);
        if (!grown) return FAIL(v, "out of memory");
        *data = grown;
        for (uint64_t b = 0; b < x->data_size; b++)
            (*data)[total + b] = (uint8_t)(hex_value(hex->raw[1 + 2 * b]) << 4 | hex_value(hex->raw[2 + 2 * b]));
        x->data = (void *)(uintptr_t)total; /* an offset into *data until fixed up */
        total += x->data_size;
    }
    return 1;
}

static int compare_tensors(struct vec *v, const struct fdn_jnode *list, const struct fdn_tensor *got, uint32_t n) {
    struct fdn_tensor want[FDN_MAX_TENSORS];
    uint32_t count;
    uint8_t *data;
    int ok = tensors_from_json(v, list, want, &count, &data);
    if (ok && count != n) ok = FAIL(v, "decoded %u tensors, expected %u", n, count);
    for (uint32_t i = 0; ok && i < n; i++) {
        const struct fdn_tensor *a = &got[i], *b = &want[i];
        int cuda = b->location == FDN_CUDA_IPC;
        /* a HOST tensor's device, ipc_handle and ipc_offset are 0 (b's are), whatever its
         * descriptor holds (spec 14's decode_* vectors); a CUDA_IPC tensor has no data pointer */
        if (strcmp(a->name, b->name) || a->dtype != b->dtype || a->ndim != b->ndim || a->location != b->location ||
            memcmp(a->shape, b->shape, a->ndim * sizeof(uint64_t)) || a->data_offset != b->data_offset ||
            a->data_size != b->data_size || (!cuda && memcmp(a->data, data + (uintptr_t)b->data, a->data_size)) ||
            (cuda && a->data != NULL) || a->device != b->device || a->ipc_offset != b->ipc_offset ||
            memcmp(a->ipc_handle, b->ipc_handle, sizeof a->ipc_handle))
            ok = FAIL(v, "tensor %u ('%s') differs from the expected decoding", i, a->name);
    }
    free(data);
    return ok;
}

/* Compact JSON with the keys in the (sorted) order of the expected object; "" for {}. */
static size_t params_json(struct vec *v, const struct fdn_jnode *obj, char *dst, size_t cap) {
    size_t n = 0;
    if (!obj || obj->type != FDN_JOBJECT || !obj->count) return 0;
    n += (size_t)snprintf(dst + n, cap - n, "{");
    for (int i = obj->child; i >= 0 && n < cap; i = v->doc.nodes[i].next) {
        const struct fdn_jnode *m = &v->doc.nodes[i];
        n += (size_t)snprintf(dst + n, cap - n, "%s%.*s:%.*s", i == obj->child ? "" : ",", (int)m->key_len, m->key,
                              (int)m->raw_len, m->raw);
    }
    if (n < cap) n += (size_t)snprintf(dst + n, cap - n, "}");
    return n < cap ? n : 0;
}

/* A character that continues a number or a literal (true, false, null): whitespace between two
 * of them separates two tokens, which compact JSON cannot write side by side. */
static int in_literal(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' || c == '+' ||
           c == '-';
}

/* Whether got is want once the whitespace between its tokens is left out (a decode_* vector's
 * parameters are followed by a MiB of it). Whitespace inside a token is no such whitespace:
 * {"a":1 2} is not {"a":12}, nor {"a":tr ue} {"a":true}. */
static int same_compact(const char *want, size_t n, const char *got, size_t got_size) {
    size_t j = 0;
    int in_string = 0, escaped = 0, gap = 0;
    for (size_t i = 0; i < got_size; i++) {
        char c = got[i];
        if (!in_string && (c == ' ' || c == '\t' || c == '\n' || c == '\r')) {
            gap = 1;
            continue;
        }
        if (gap && j > 0 && in_literal(want[j - 1]) && in_literal(c)) return 0; /* one token split in two */
        gap = 0;
        if (escaped) escaped = 0;
        else if (in_string && c == '\\') escaped = 1;
        else if (c == '"') in_string = !in_string;
        if (j >= n || want[j] != c) return 0;
        j++;
    }
    return j == n;
}

static int check_params(struct vec *v, const struct fdn_jnode *want, const char *got, uint32_t got_size) {
    char buf[4096];
    size_t n = params_json(v, want, buf, sizeof buf);
    if (!n && want && want->type == FDN_JOBJECT && want->count)
        return FAIL(v, "the expected params do not fit in %zu bytes", sizeof buf);
    if (same_compact(buf, n, got, got_size)) return 1;
    return FAIL(v, "params differ: %u bytes '%.*s%s', expected '%.*s'", got_size, got_size > 200 ? 200 : (int)got_size,
                got, got_size > 200 ? "..." : "", (int)n, buf);
}

static int check_error(struct vec *v, enum fdn_status st, const struct fdn_error *err) {
    const struct fdn_jnode *e = v->expect;
    if (!get(v, e, "error")) return FAIL(v, "decoding failed: %s: %s", fdn_strerror(st), err->message);
    if (!st) return FAIL(v, "decoded without error");
    char name[64];
    if (!get_str(v, e, "error", name, sizeof name)) return 0;
    if (strcmp(name, fdn_strerror(st))) return FAIL(v, "error %s (%s), expected %s", fdn_strerror(st), err->message, name);
    return check_u64(v, e, "error_code", (uint64_t)st) && check_u64(v, e, "request_id", err->request_id);
}

/* Encode fields, compare with the .bin. */
static int compare_bytes(struct vec *v, const uint8_t *mine, size_t size) {
    if (size != v->bin_size) return FAIL(v, "encoded %zu bytes, the file has %zu", size, v->bin_size);
    for (size_t i = 0; i < size; i++)
        if (mine[i] != v->bin[i]) return FAIL(v, "encoding differs at byte %zu", i);
    return 1;
}

/* Spec 14: the request_* and response_* vectors are re-encoded; decode_* ones set fields a
 * decoder ignores (section 5), which an encoder writes 0, so they are decoded only. */
static int reencodes(const struct vec *v) {
    return strncmp(v->name, "request_", 8) == 0 || strncmp(v->name, "response_", 9) == 0;
}

static int run_request(struct vec *v) {
    static struct fdn_request_fields got, f;
    struct fdn_error err = {0};
    enum fdn_status st = fdn_decode_request(v->bin, v->bin_size, NULL, &got, &err);
    const struct fdn_jnode *e = v->expect;
    if (st || get(v, e, "error")) return check_error(v, st, &err);
    if (!check_u64(v, e, "kind", got.kind) || !check_u64(v, e, "request_id", got.request_id) ||
        !check_u64(v, e, "flags", got.flags) || !check_u64(v, e, "deadline_ns", got.deadline_ns) ||
        !check_str(v, e, "model", got.model, strlen(got.model)) ||
        !check_str(v, e, "version", got.version, strlen(got.version)) ||
        !compare_tensors(v, get(v, e, "inputs"), got.inputs, got.input_count) ||
        !check_params(v, get(v, e, "params"), got.params, got.params_size))
        return 0;
    const struct fdn_jnode *outs = get(v, e, "outputs");
    if (!outs || outs->type != FDN_JARRAY) return FAIL(v, "expected field 'outputs' missing");
    if (got.output_count != (uint32_t)outs->count)
        return FAIL(v, "decoded %u output names, expected %d", got.output_count, outs->count);
    int k = 0;
    for (int i = outs->child; i >= 0; i = v->doc.nodes[i].next, k++) {
        char name[FDN_NAME_SIZE];
        if (fdn_json_unescape(v->doc.nodes[i].raw, v->doc.nodes[i].raw_len, name, sizeof name) < 0 ||
            strcmp(name, got.outputs[k]))
            return FAIL(v, "output name %d differs", k);
    }
    if (!reencodes(v)) return 1;
    /* encode */
    memset(&f, 0, sizeof f);
    uint64_t u;
    uint8_t *data;
    char params[4096];
    get_u64(v, e, "kind", &u), f.kind = (uint16_t)u;
    get_u64(v, e, "request_id", &f.request_id);
    get_u64(v, e, "flags", &u), f.flags = (uint32_t)u;
    get_u64(v, e, "deadline_ns", &f.deadline_ns);
    get_str(v, e, "model", f.model, sizeof f.model);
    get_str(v, e, "version", f.version, sizeof f.version);
    memcpy(f.outputs, got.outputs, sizeof f.outputs);
    f.output_count = got.output_count;
    f.params_size = (uint32_t)params_json(v, get(v, e, "params"), params, sizeof params);
    f.params = params;
    if (!tensors_from_json(v, get(v, e, "inputs"), f.inputs, &f.input_count, &data)) return 0;
    struct fdn_tensor placed[FDN_MAX_TENSORS];
    memcpy(placed, f.inputs, sizeof placed);
    uint64_t end = fdn_layout(placed, f.input_count, fdn_request_payload_size(f.input_count, f.output_count, f.params_size));
    int ok = 1;
    for (uint32_t i = 0; ok && i < f.input_count; i++)
        if (placed[i].data_offset != f.inputs[i].data_offset) ok = FAIL(v, "layout puts '%s' elsewhere", placed[i].name);
    uint8_t *buf = calloc(1, (size_t)end);
    for (uint32_t i = 0; ok && i < f.input_count; i++)
        if (placed[i].location == FDN_HOST)
            memcpy(buf + placed[i].data_offset, data + (uintptr_t)f.inputs[i].data, (size_t)placed[i].data_size);
    if (ok && fdn_encode_request(buf, end, &f, &err)) ok = FAIL(v, "encode failed: %s", err.message);
    if (ok) ok = compare_bytes(v, buf, (size_t)end);
    free(buf);
    free(data);
    return ok;
}

static int run_response(struct vec *v) {
    static struct fdn_response_fields got, f;
    struct fdn_error err = {0};
    enum fdn_status st = fdn_decode_response(v->bin, v->bin_size, NULL, &got, &err);
    const struct fdn_jnode *e = v->expect;
    if (st || get(v, e, "error")) return check_error(v, st, &err);
    if (!check_u64(v, e, "kind", FDN_RESPONSE) || !check_u64(v, e, "request_id", got.request_id) ||
        !check_u64(v, e, "flags", got.flags) || !check_u64(v, e, "status", got.status) ||
        !check_str(v, e, "status_name", fdn_strerror(got.status), strlen(fdn_strerror(got.status))) ||
        !check_u64(v, e, "required_bytes", got.required_bytes) ||
        !check_str(v, e, "model", got.model, strlen(got.model)) ||
        !check_str(v, e, "version", got.version, strlen(got.version)) ||
        !check_str(v, e, "text", got.text, got.text_size) ||
        !compare_tensors(v, get(v, e, "outputs"), got.outputs, got.output_count) ||
        !check_params(v, get(v, e, "params"), got.params, got.params_size))
        return 0;
    if (!reencodes(v)) return 1;
    memset(&f, 0, sizeof f);
    uint64_t u;
    uint8_t *data;
    static char text[FDN_MAX_TEXT], params[4096];
    get_u64(v, e, "request_id", &f.request_id);
    get_u64(v, e, "flags", &u), f.flags = (uint32_t)u;
    get_u64(v, e, "status", &u), f.status = (uint32_t)u;
    get_u64(v, e, "required_bytes", &f.required_bytes);
    get_str(v, e, "model", f.model, sizeof f.model);
    get_str(v, e, "version", f.version, sizeof f.version);
    const struct fdn_jnode *t = get(v, e, "text");
    long n = fdn_json_unescape(t->raw, t->raw_len, text, sizeof text);
    f.text = text;
    f.text_size = n > 0 ? (uint32_t)n : 0;
    f.params_size = (uint32_t)params_json(v, get(v, e, "params"), params, sizeof params);
    f.params = params;
    if (!tensors_from_json(v, get(v, e, "outputs"), f.outputs, &f.output_count, &data)) return 0;
    struct fdn_tensor placed[FDN_MAX_TENSORS];
    memcpy(placed, f.outputs, sizeof placed);
    uint64_t end = fdn_layout(placed, f.output_count, fdn_response_payload_size(f.output_count, f.text_size, f.params_size));
    int ok = 1;
    for (uint32_t i = 0; ok && i < f.output_count; i++)
        if (placed[i].data_offset != f.outputs[i].data_offset) ok = FAIL(v, "layout puts '%s' elsewhere", placed[i].name);
    uint8_t *buf = calloc(1, (size_t)end);
    for (uint32_t i = 0; ok && i < f.output_count; i++)
        if (placed[i].location == FDN_HOST)
            memcpy(buf + placed[i].data_offset, data + (uintptr_t)f.outputs[i].data, (size_t)placed[i].data_size);
    if (ok && fdn_encode_response(buf, end, &f, &err)) ok = FAIL(v, "encode failed: %s", err.message);
    if (ok) ok = compare_bytes(v, buf, (size_t)end);
    free(buf);
    free(data);
    return ok;
}

/* Spec 14: a file shorter than the area leaves out the spaces that end it, all of them, and only
 * for an area over 64 KiB; any other short file is a broken copy, not an area ending in spaces. */
static int pad_area(struct vec *v, uint64_t size) {
    if (size < v->bin_size) return FAIL(v, "size %llu, the file has %zu bytes", (unsigned long long)size, v->bin_size);
    if (size == v->bin_size) return 1;
    if (size <= 65536)
        return FAIL(v, "the file has %zu bytes of an area of %llu (only one over 64 KiB may leave out its spaces)",
                    v->bin_size, (unsigned long long)size);
    if (v->bin_size > 0 && v->bin[v->bin_size - 1] == ' ')
        return FAIL(v, "the file of %zu bytes ends in a space (it stops before all the spaces ending the area)",
                    v->bin_size);
    if (size > SIZE_MAX - 1) return FAIL(v, "an area of %llu bytes", (unsigned long long)size);
    uint8_t *grown = realloc(v->bin, (size_t)size + 1);
    if (!grown) return FAIL(v, "out of memory for an area of %llu bytes", (unsigned long long)size);
    memset(grown + v->bin_size, ' ', (size_t)size - v->bin_size);
    v->bin = grown;
    v->bin_size = (size_t)size;
    return 1;
}

static int run_one(const char *dir, const char *json_name, struct vec *v) {
    char path[4096];
    size_t size;
    snprintf(path, sizeof path, "%s/%s", dir, json_name);
    char *text = read_all(path, &size);
    if (!text) return FAIL(v, "cannot read %s", path);
    int ok = 0;
    if (fdn_json_parse(&v->doc, text, size) < 0) {
        FAIL(v, "%s is not JSON", path);
        free(text);
        return 0;
    }
    const struct fdn_jnode *root = &v->doc.nodes[0];
    char as[16];
    v->expect = get(v, root, "expect");
    snprintf(path, sizeof path, "%s/%.*s.bin", dir, (int)(strlen(json_name) - 5), json_name);
    v->bin = (uint8_t *)read_all(path, &v->bin_size);
    uint64_t area_size = 0;
    if (!v->bin) FAIL(v, "cannot read %s", path);
    else if (!v->expect || !get_str(v, root, "decode_as", as, sizeof as)) FAIL(v, "no 'expect' or 'decode_as'");
    else if (!get_u64(v, root, "size", &area_size)) {
    } else if (!pad_area(v, area_size)) {
    } else if (strcmp(as, "request") == 0) ok = run_request(v);
    else if (strcmp(as, "response") == 0) ok = run_response(v);
    else FAIL(v, "decode_as '%s' is neither request nor response", as);
    free(v->bin);
    fdn_json_free(&v->doc);
    free(text);
    return ok;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int fdn_vectors_check(const char *dir, int *passed, void (*failure)(void *, const char *, const char *), void *ctx) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    char *names[1024];
    int count = 0, failed = 0;
    struct dirent *ent;
    while ((ent = readdir(d)) && count < 1024) {
        size_t n = strlen(ent->d_name);
        if (n > 5 && strcmp(ent->d_name + n - 5, ".json") == 0) names[count++] = strdup(ent->d_name);
    }
    closedir(d);
    qsort(names, (size_t)count, sizeof *names, by_name);
    *passed = 0;
    for (int i = 0; i < count; i++) {
        struct vec v = {0};
        v.name = names[i];
        if (run_one(dir, names[i], &v)) {
            (*passed)++;
        } else {
            failed++;
            if (failure) {
                names[i][strlen(names[i]) - 5] = 0;
                failure(ctx, names[i], v.why);
            }
        }
        free(names[i]);
    }
    return failed;
}
