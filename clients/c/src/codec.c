/* codec.c: encoding and checked decoding of shm messages (docs/protocol/shm.md, sections 5, 8, 15). */
#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* --- fixed fields ---------------------------------------------------------------------------- */
/* 1 if the fixed field holds a NUL-terminated UTF-8 string; copies it to dst. */
static int fixed_text(char *dst, const char *src, size_t size) {
    size_t n = strnlen(src, size);
    if (n == size || !fdn_utf8_valid((const uint8_t *)src, n)) return 0;
    memcpy(dst, src, n);
    dst[n] = 0;
    return 1;
}

/* 0 unless text fits in a fixed field of size bytes with its NUL. */
static int fixed_write(char *dst, const char *text, size_t size) {
    size_t n = strlen(text);
    if (n >= size) return 0;
    memcpy(dst, text, n);
    memset(dst + n, 0, size - n);
    return 1;
}

/* --- sizes and placement --------------------------------------------------------------------- */
uint64_t fdn_request_payload_size(uint32_t inputs, uint32_t outputs, uint32_t params_size) {
    return FDN_BODY_SIZE + (uint64_t)FDN_DESC_SIZE * inputs + (uint64_t)FDN_NAME_SIZE * outputs +
           params_size;
}

uint64_t fdn_response_payload_size(uint32_t outputs, uint32_t text_size, uint32_t params_size) {
    return FDN_BODY_SIZE + (uint64_t)FDN_DESC_SIZE * outputs + (uint64_t)text_size + params_size;
}

/* product(shape) * itemsize into *out; 0 on overflow (then *out is meaningless: a data_size field
 * equal to any sentinel must not pass for a product that does not exist). */
static int tensor_bytes_ok(const uint64_t *shape, uint32_t ndim, size_t itemsize, uint64_t *out) {
    uint64_t n = itemsize;
    for (uint32_t i = 0; i < ndim; i++) {
        if (shape[i] && n > UINT64_MAX / shape[i]) return 0;
        n *= shape[i];
    }
    *out = n;
    return 1;
}

/* 1 if itemsize * the nonzero dimensions <= 2^63 - 1 (section 8 step 7, HOST): a tensor with a 0
 * has no bytes, but array libraries (their sizes signed 64-bit) still cannot hold a wider shape. */
static int host_shape_ok(const uint64_t *shape, uint32_t ndim, size_t itemsize) {
    uint64_t n = itemsize;
    for (uint32_t i = 0; i < ndim; i++) {
        if (!shape[i]) continue;
        if (n > (uint64_t)INT64_MAX / shape[i]) return 0;
        n *= shape[i];
    }
    return 1;
}

/* product(shape) * itemsize, or UINT64_MAX on overflow (the encoder's check). */
static uint64_t tensor_bytes(const uint64_t *shape, uint32_t ndim, size_t itemsize) {
    uint64_t n;
    return tensor_bytes_ok(shape, ndim, itemsize, &n) ? n : UINT64_MAX;
}

uint64_t fdn_layout(struct fdn_tensor *tensors, uint32_t count, uint64_t payload_size) {
    uint64_t offset = fdn_align64(FDN_HEADER_SIZE + payload_size);
    for (uint32_t i = 0; i < count; i++) {
        size_t itemsize = fdn_dtype_itemsize(tensors[i].dtype);
        if (!itemsize || tensors[i].ndim > FDN_MAX_NDIM) return 0;
        tensors[i].data_size = tensor_bytes(tensors[i].shape, tensors[i].ndim, itemsize);
        if (tensors[i].data_size == UINT64_MAX) return 0;
        if (tensors[i].location == FDN_CUDA_IPC) { /* section 15.2: no room in the area */
            tensors[i].data_offset = 0;
            continue;
        }
        /* the end must not wrap: a wrapped end is small, passes every room check, and the
         * tensors' offsets then point far past the area */
        if (tensors[i].data_size > UINT64_MAX - (FDN_DATA_ALIGN - 1) - offset) return 0;
        tensors[i].data_offset = offset;
        offset = fdn_align64(offset + tensors[i].data_size);
    }
    return offset;
}

/* --- encoding -------------------------------------------------------------------------------- */
/* A known location and dtype, a shape array libraries can hold (HOST), and a data_size equal to
 * the shape's bytes (CUDA_IPC: and not 0), as decode_tensor and decode_cuda_tensor check. */
static enum fdn_status check_desc(const struct fdn_tensor *t, uint64_t rid, struct fdn_error *err) {
    if (t->location != FDN_HOST && t->location != FDN_CUDA_IPC)
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "tensor '%s': unknown location %u (HOST 0, CUDA_IPC 1)",
                        t->name, t->location);
    size_t itemsize = fdn_dtype_itemsize(t->dtype);
    if (!itemsize)
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "tensor '%s': unknown dtype code %u (known: 1..14)",
                        t->name, t->dtype);
    if (t->location == FDN_HOST && !host_shape_ok(t->shape, t->ndim, itemsize))
        return fdn_fail(err, FDN_INVALID_INPUT, rid,
                        "tensor '%s': shape beyond 2^63 - 1 bytes over its nonzero dimensions", t->name);
    uint64_t want;
    if (!tensor_bytes_ok(t->shape, t->ndim, itemsize, &want) || want != t->data_size ||
        (t->location == FDN_CUDA_IPC && want == 0))
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "tensor '%s': data_size %llu is not its shape x %zu bytes%s",
                        t->name, (unsigned long long)t->data_size, itemsize,
                        t->location == FDN_CUDA_IPC ? " (> 0 for CUDA_IPC)" : "");
    return FDN_OK;
}

static enum fdn_status write_descs(uint8_t *at, const struct fdn_tensor *t, uint32_t count,
                                   uint64_t area_size, uint64_t rid, struct fdn_error *err) {
    for (uint32_t i = 0; i < count; i++, at += FDN_DESC_SIZE) {
        struct fdn_tensor_desc d;
        memset(&d, 0, sizeof d);
        if (!fixed_write(d.name, t[i].name, sizeof d.name))
            return fdn_fail(err, FDN_INVALID_INPUT, rid, "tensor name '%.64s' is over 63 bytes", t[i].name);
        if (t[i].ndim > FDN_MAX_NDIM)
            return fdn_fail(err, FDN_INVALID_INPUT, rid, "tensor '%s' has %u dimensions (at most 8)",
                            t[i].name, t[i].ndim);
        /* a descriptor filled in by hand is held to what every decoder checks (section 8 step 7,
         * 15.3), so that nothing is sent for the peer to refuse */
        enum fdn_status bad = check_desc(&t[i], rid, err);
        if (bad) return bad;
        if (t[i].location == FDN_CUDA_IPC) {
            d.device = t[i].device;
            memcpy(d.ipc_handle, t[i].ipc_handle, sizeof d.ipc_handle);
            d.ipc_offset = t[i].ipc_offset;
        } else if (t[i].data_offset > area_size || t[i].data_size > area_size - t[i].data_offset) {
            return fdn_fail(err, FDN_TOO_LARGE, rid, "tensor '%s' does not fit the area", t[i].name);
        }
        d.dtype = t[i].dtype;
        d.ndim = t[i].ndim;
        memcpy(d.shape, t[i].shape, t[i].ndim * sizeof(uint64_t));
        d.data_offset = t[i].location == FDN_CUDA_IPC ? 0 : t[i].data_offset;
        d.data_size = t[i].data_size;
        d.location = t[i].location;
        memcpy(at, &d, sizeof d);
    }
    return FDN_OK;
}

static void seal(uint8_t *area, uint64_t payload, uint32_t flags, const struct fdn_tensor *t,
                 uint32_t count) {
    uint32_t crc = fdn_crc32(0, area, 28);
    crc = fdn_crc32(crc, area + FDN_HEADER_SIZE, payload);
    if (flags & FDN_FLAG_DATA_CRC)
        for (uint32_t i = 0; i < count; i++) /* device data is never checksummed (15.2) */
            if (t[i].location != FDN_CUDA_IPC) crc = fdn_crc32(crc, area + t[i].data_offset, t[i].data_size);
    memcpy(area + 28, &crc, 4);
}

static void write_header(uint8_t *area, uint16_t kind, uint64_t rid, uint64_t payload, uint32_t flags) {
    struct fdn_msg_header h = {FDN_MSG_MAGIC, FDN_PROTOCOL_VERSION, kind, rid, (uint32_t)payload,
                               flags, 0, 0};
    memcpy(area, &h, sizeof h);
}

enum fdn_status fdn_encode_request(uint8_t *area, uint64_t area_size,
                                   const struct fdn_request_fields *f, struct fdn_error *err) {
    uint64_t rid = f->request_id;
    uint32_t params_size = f->params ? f->params_size : 0;
    if (f->input_count > FDN_MAX_TENSORS || f->output_count > FDN_MAX_TENSORS)
        return fdn_fail(err, FDN_TOO_LARGE, rid, "%u inputs / %u outputs (at most %d)", f->input_count,
                        f->output_count, FDN_MAX_TENSORS);
    uint64_t payload = fdn_request_payload_size(f->input_count, f->output_count, params_size);
    if (FDN_HEADER_SIZE + payload > area_size || payload > UINT32_MAX)
        return fdn_fail(err, FDN_TOO_LARGE, rid, "a request payload of %llu bytes does not fit the area",
                        (unsigned long long)payload);
    struct fdn_infer_request body;
    memset(&body, 0, sizeof body);
    if (!fixed_write(body.model, f->model, sizeof body.model))
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "model name is over 63 bytes");
    if (!fixed_write(body.version, f->version, sizeof body.version))
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "model version is over 15 bytes");
    body.deadline_ns = f->deadline_ns;
    body.input_count = f->input_count;
    body.output_count = f->output_count;
    body.params_size = params_size;
    uint8_t *at = area + FDN_HEADER_SIZE + FDN_BODY_SIZE;
    enum fdn_status st = write_descs(at, f->inputs, f->input_count, area_size, rid, err);
    if (st) return st;
    at += (size_t)FDN_DESC_SIZE * f->input_count;
    for (uint32_t i = 0; i < f->output_count; i++, at += FDN_NAME_SIZE)
        if (!fixed_write((char *)at, f->outputs[i], FDN_NAME_SIZE))
            return fdn_fail(err, FDN_INVALID_INPUT, rid, "output name is over 63 bytes");
    if (params_size) memcpy(at, f->params, params_size);
    memcpy(area + FDN_HEADER_SIZE, &body, sizeof body);
    write_header(area, f->kind ? f->kind : FDN_INFER_REQUEST, rid, payload, f->flags);
    seal(area, payload, f->flags, f->inputs, f->input_count);
    return FDN_OK;
}

enum fdn_status fdn_encode_response(uint8_t *area, uint64_t area_size,
                                    const struct fdn_response_fields *f, struct fdn_error *err) {
    uint64_t rid = f->request_id;
    uint32_t text_size = f->text ? f->text_size : 0, params_size = f->params ? f->params_size : 0;
    if (f->output_count > FDN_MAX_TENSORS)
        return fdn_fail(err, FDN_TOO_LARGE, rid, "%u outputs (at most %d)", f->output_count, FDN_MAX_TENSORS);
    uint64_t payload = fdn_response_payload_size(f->output_count, text_size, params_size);
    if (FDN_HEADER_SIZE + payload > area_size || payload > UINT32_MAX)
        return fdn_fail(err, FDN_TOO_LARGE, rid, "a response payload of %llu bytes does not fit the area",
                        (unsigned long long)payload);
    struct fdn_infer_response body;
    memset(&body, 0, sizeof body);
    if (!fixed_write(body.model, f->model, sizeof body.model) ||
        !fixed_write(body.version, f->version, sizeof body.version))
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "model name or version too long");
    body.status = f->status;
    body.output_count = f->output_count;
    body.text_size = text_size;
    body.params_size = params_size;
    body.required_bytes = f->required_bytes;
    uint8_t *at = area + FDN_HEADER_SIZE + FDN_BODY_SIZE;
    enum fdn_status st = write_descs(at, f->outputs, f->output_count, area_size, rid, err);
    if (st) return st;
    at += (size_t)FDN_DESC_SIZE * f->output_count;
    if (text_size) memcpy(at, f->text, text_size);
    if (params_size) memcpy(at + text_size, f->params, params_size);
    memcpy(area + FDN_HEADER_SIZE, &body, sizeof body);
    write_header(area, FDN_RESPONSE, rid, payload, f->flags);
    seal(area, payload, f->flags, f->outputs, f->output_count);
    return FDN_OK;
}

/* --- decoding (section 8, checks in its order) ---------------------------------------------- */
static enum fdn_status check_header(const struct fdn_msg_header *h, uint64_t size, struct fdn_error *err) {
    if (h->magic != FDN_MSG_MAGIC)
        return fdn_fail(err, FDN_BAD_MAGIC, h->request_id, "bad magic 0x%08X (want 0x%08X)", h->magic,
                        FDN_MSG_MAGIC);
    if (h->version != FDN_PROTOCOL_VERSION)
        return fdn_fail(err, FDN_BAD_VERSION, h->request_id, "protocol version %u (this side speaks %d)",
                        h->version, FDN_PROTOCOL_VERSION);
    if (h->payload_size < FDN_BODY_SIZE || FDN_HEADER_SIZE + (uint64_t)h->payload_size > size)
        return fdn_fail(err, FDN_INVALID_INPUT, h->request_id,
                        "payload_size %u outside the area of %llu bytes", h->payload_size,
                        (unsigned long long)size);
    return FDN_OK;
}

static enum fdn_status check_crc(const uint8_t *area, const struct fdn_msg_header *h,
                                 const struct fdn_tensor *t, uint32_t count, struct fdn_error *err) {
    uint32_t crc = fdn_crc32(fdn_crc32(0, area, 28), area + FDN_HEADER_SIZE, h->payload_size);
    for (uint32_t i = 0; i < count; i++)
        if (t[i].location != FDN_CUDA_IPC) crc = fdn_crc32(crc, t[i].data, t[i].data_size);
    if (crc != h->crc32)
        return fdn_fail(err, FDN_BAD_CHECKSUM, h->request_id, "CRC32 0x%08X != 0x%08X in the header", crc,
                        h->crc32);
    return FDN_OK;
}

static void copy_shape(struct fdn_tensor *t, const struct fdn_tensor_desc *d) {
    t->dtype = d->dtype;
    t->ndim = d->ndim;
    memset(t->shape, 0, sizeof t->shape);
    memcpy(t->shape, d->shape, d->ndim * sizeof(uint64_t));
}

/* Section 15.3, in its order (the handle is not opened: that is the CUDA variant's business). */
static enum fdn_status decode_cuda_tensor(const struct fdn_tensor_desc *d, struct fdn_tensor *t, uint64_t rid,
                                          struct fdn_error *err) {
    size_t itemsize = fdn_dtype_itemsize(d->dtype);
    static const uint8_t zeros[64];
    if (!itemsize)
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "tensor '%s': unknown dtype code %u", t->name, d->dtype);
    uint64_t want;
    if (!tensor_bytes_ok(d->shape, d->ndim, itemsize, &want) || want != d->data_size || d->data_size == 0)
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "tensor '%s': CUDA_IPC data_size %llu is not shape x %zu (> 0)",
                        t->name, (unsigned long long)d->data_size, itemsize);
    if (d->data_offset != 0)
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "tensor '%s': CUDA_IPC data_offset must be 0", t->name);
    if (d->device < 0) return fdn_fail(err, FDN_INVALID_INPUT, rid, "tensor '%s': device %d < 0", t->name, d->device);
    if (memcmp(d->ipc_handle, zeros, sizeof zeros) == 0)
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "tensor '%s': the IPC handle is all zeros", t->name);
    if (d->ipc_offset % itemsize || d->ipc_offset > UINT64_MAX - d->data_size)
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "tensor '%s': bad ipc_offset %llu", t->name,
                        (unsigned long long)d->ipc_offset);
    copy_shape(t, d);
    t->data_offset = 0;
    t->data_size = d->data_size;
    t->data = NULL;
    t->location = FDN_CUDA_IPC;
    t->device = d->device;
    memcpy(t->ipc_handle, d->ipc_handle, sizeof t->ipc_handle);
    t->ipc_offset = d->ipc_offset;
    return FDN_OK;
}

static enum fdn_status decode_tensor(const uint8_t *area, uint64_t size, const uint8_t *at,
                                     struct fdn_tensor *t, uint64_t rid, struct fdn_error *err) {
    struct fdn_tensor_desc d;
    memcpy(&d, at, sizeof d);
    if (!fixed_text(t->name, d.name, sizeof d.name))
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "tensor name is not valid NUL-terminated UTF-8");
    if (d.ndim > FDN_MAX_NDIM)
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "tensor '%s': ndim %u > %d", t->name, d.ndim, FDN_MAX_NDIM);
    if (d.location != FDN_HOST && d.location != FDN_CUDA_IPC)
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "tensor '%s': unsupported location %u", t->name, d.location);
    if (d.location == FDN_CUDA_IPC) return decode_cuda_tensor(&d, t, rid, err);
    size_t itemsize = fdn_dtype_itemsize(d.dtype);
    if (!itemsize)
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "tensor '%s': unknown dtype code %u (known: 1..14)",
                        t->name, d.dtype);
    uint64_t want;
    if (!host_shape_ok(d.shape, d.ndim, itemsize))
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "tensor '%s': shape beyond 2^63 - 1 bytes over its nonzero dimensions",
                        t->name);
    if (!tensor_bytes_ok(d.shape, d.ndim, itemsize, &want) || want != d.data_size)
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "tensor '%s': data_size %llu != shape x %zu bytes",
                        t->name, (unsigned long long)d.data_size, itemsize);
    if (d.data_offset < FDN_HEADER_SIZE || d.data_offset > size || d.data_size > size - d.data_offset)
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "tensor '%s': bytes at %llu outside the area of %llu bytes",
                        t->name, (unsigned long long)d.data_offset, (unsigned long long)size);
    if (d.data_offset % itemsize)
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "tensor '%s': data_offset %llu not aligned to %zu",
                        t->name, (unsigned long long)d.data_offset, itemsize);
    copy_shape(t, &d);
    t->data_offset = d.data_offset;
    t->data_size = d.data_size;
    t->data = area + d.data_offset;
    t->location = FDN_HOST;
    t->device = 0;
    memset(t->ipc_handle, 0, sizeof t->ipc_handle);
    t->ipc_offset = 0;
    return FDN_OK;
}

enum fdn_status fdn_decode_request(const uint8_t *area, uint64_t size, const struct fdn_limits *limits,
                                   struct fdn_request_fields *out, struct fdn_error *err) {
    struct fdn_limits lim = limits ? *limits : FDN_DEFAULT_LIMITS;
    struct fdn_msg_header h;
    struct fdn_infer_request b;
    if (size < FDN_HEADER_SIZE + FDN_BODY_SIZE)
        return fdn_fail(err, FDN_INVALID_INPUT, 0, "area of %llu bytes is smaller than a request header",
                        (unsigned long long)size);
    memcpy(&h, area, sizeof h);
    memcpy(&b, area + FDN_HEADER_SIZE, sizeof b);
    uint64_t rid = h.request_id;
    enum fdn_status st = check_header(&h, size, err);
    if (st) return st;
    if (b.params_size > FDN_MAX_PARAMS) /* step 3: before the CRC reads them */
        return fdn_fail(err, FDN_TOO_LARGE, rid, "params_size %u bytes (at most %u)", b.params_size, FDN_MAX_PARAMS);
    if (h.payload_size != fdn_request_payload_size(b.input_count, b.output_count, b.params_size))
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "payload_size %u does not match the counts in the body",
                        h.payload_size);
    if (!(h.flags & FDN_FLAG_DATA_CRC) && (st = check_crc(area, &h, NULL, 0, err))) return st;
    if (h.kind != FDN_INFER_REQUEST && h.kind != FDN_METADATA_REQUEST && h.kind != FDN_STATS_REQUEST)
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "message kind %u is not a request", h.kind);
    if (b.input_count > lim.max_tensors || b.output_count > lim.max_tensors ||
        b.input_count > FDN_MAX_TENSORS || b.output_count > FDN_MAX_TENSORS)
        return fdn_fail(err, FDN_TOO_LARGE, rid, "%u inputs / %u outputs requested (at most %u)",
                        b.input_count, b.output_count, lim.max_tensors);
    if (!fixed_text(out->model, b.model, sizeof b.model))
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "model name is not valid UTF-8");
    const uint8_t *at = area + FDN_HEADER_SIZE + FDN_BODY_SIZE;
    uint64_t total = 0;
    for (uint32_t i = 0; i < b.input_count; i++, at += FDN_DESC_SIZE) {
        if ((st = decode_tensor(area, size, at, &out->inputs[i], rid, err))) return st;
        for (uint32_t k = 0; k < i; k++)
            if (strcmp(out->inputs[k].name, out->inputs[i].name) == 0)
                return fdn_fail(err, FDN_INVALID_INPUT, rid, "input '%s' appears twice", out->inputs[i].name);
        /* CUDA_IPC sizes are not bounded by the area: saturate, never wrap (a wrapped total passes) */
        total = out->inputs[i].data_size > UINT64_MAX - total ? UINT64_MAX : total + out->inputs[i].data_size;
    }
    if (total > lim.max_bytes)
        return fdn_fail(err, FDN_TOO_LARGE, rid, "%llu bytes of inputs (at most %llu)",
                        (unsigned long long)total, (unsigned long long)lim.max_bytes);
    if ((h.flags & FDN_FLAG_DATA_CRC) && (st = check_crc(area, &h, out->inputs, b.input_count, err)))
        return st;
    for (uint32_t i = 0; i < b.output_count; i++, at += FDN_NAME_SIZE)
        if (!fixed_text(out->outputs[i], (const char *)at, FDN_NAME_SIZE))
            return fdn_fail(err, FDN_INVALID_INPUT, rid, "output name is not valid UTF-8");
    if (!fixed_text(out->version, b.version, sizeof b.version))
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "model version is not valid UTF-8");
    if (b.params_size && !fdn_params_valid((const char *)at, b.params_size))
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "params must be a JSON object of strings, numbers and booleans");
    out->kind = h.kind;
    out->request_id = rid;
    out->flags = h.flags;
    out->deadline_ns = b.deadline_ns;
    out->input_count = b.input_count;
    out->output_count = b.output_count;
    out->params = (const char *)at;
    out->params_size = b.params_size;
    return FDN_OK;
}

enum fdn_status fdn_decode_response(const uint8_t *area, uint64_t size, const struct fdn_limits *limits,
                                    struct fdn_response_fields *out, struct fdn_error *err) {
    return fdn_decode_response_msg(area, size, area, size, limits, out, err);
}

int fdn_snapshot_response(const uint8_t *area, uint64_t size, uint8_t **buf, uint64_t *cap, uint64_t *n) {
    const uint64_t head = FDN_HEADER_SIZE + FDN_BODY_SIZE;
    uint32_t payload = 0;
    *n = 0;
    if (size < head) return 0; /* the decoder refuses it */
    for (int pass = 0; pass < 2; pass++) {
        uint64_t want = pass ? FDN_HEADER_SIZE + (uint64_t)payload : head;
        if (pass && (want <= head || want > size)) break; /* the decoder refuses the latter */
        if (want > *cap) {
            uint64_t grown = (want + 4095) / 4096 * 4096;
            uint8_t *p = realloc(*buf, (size_t)grown);
            if (!p) return -1;
            *buf = p;
            *cap = grown;
        }
        memcpy(*buf + *n, area + *n, (size_t)(want - *n));
        *n = want;
        /* payload_size from the copy: the copy's own value is the one the decoder checks */
        memcpy(&payload, *buf + offsetof(struct fdn_msg_header, payload_size), sizeof payload);
    }
    return 0;
}

enum fdn_status fdn_decode_response_msg(const uint8_t *msg, uint64_t msg_size, const uint8_t *area, uint64_t size,
                                        const struct fdn_limits *limits, struct fdn_response_fields *out,
                                        struct fdn_error *err) {
    struct fdn_limits lim = limits ? *limits : FDN_DEFAULT_LIMITS;
    struct fdn_msg_header h;
    struct fdn_infer_response b;
    if (size < FDN_HEADER_SIZE + FDN_BODY_SIZE || msg_size < FDN_HEADER_SIZE + FDN_BODY_SIZE)
        return fdn_fail(err, FDN_INVALID_INPUT, 0, "area of %llu bytes is smaller than a response header",
                        (unsigned long long)size);
    memcpy(&h, msg, sizeof h);
    memcpy(&b, msg + FDN_HEADER_SIZE, sizeof b);
    uint64_t rid = h.request_id;
    enum fdn_status st = check_header(&h, size, err);
    if (st) return st;
    if (FDN_HEADER_SIZE + (uint64_t)h.payload_size > msg_size) /* the copy stopped short */
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "payload_size %u outside the area of %llu bytes",
                        h.payload_size, (unsigned long long)size);
    if (h.payload_size != fdn_response_payload_size(b.output_count, b.text_size, b.params_size) ||
        b.text_size > FDN_MAX_TEXT)
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "payload_size %u does not match the counts in the body",
                        h.payload_size);
    if (!(h.flags & FDN_FLAG_DATA_CRC) && (st = check_crc(msg, &h, NULL, 0, err))) return st;
    if (h.kind != FDN_RESPONSE) return fdn_fail(err, FDN_INVALID_INPUT, rid, "message kind %u is not a response", h.kind);
    if (b.output_count > lim.max_tensors || b.output_count > FDN_MAX_TENSORS)
        return fdn_fail(err, FDN_TOO_LARGE, rid, "%u outputs (at most %u)", b.output_count, lim.max_tensors);
    const uint8_t *at = msg + FDN_HEADER_SIZE + FDN_BODY_SIZE;
    for (uint32_t i = 0; i < b.output_count; i++, at += FDN_DESC_SIZE) {
        if ((st = decode_tensor(area, size, at, &out->outputs[i], rid, err))) return st;
        for (uint32_t k = 0; k < i; k++)
            if (strcmp(out->outputs[k].name, out->outputs[i].name) == 0)
                return fdn_fail(err, FDN_INVALID_INPUT, rid, "output '%s' appears twice", out->outputs[i].name);
    }
    if ((h.flags & FDN_FLAG_DATA_CRC) && (st = check_crc(msg, &h, out->outputs, b.output_count, err)))
        return st;
    if (!fixed_text(out->model, b.model, sizeof b.model) || !fixed_text(out->version, b.version, sizeof b.version))
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "model name or version is not valid UTF-8");
    if (b.params_size && !fdn_params_valid((const char *)at + b.text_size, b.params_size))
        return fdn_fail(err, FDN_INVALID_INPUT, rid, "response params are not a flat JSON object");
    out->request_id = rid;
    out->flags = h.flags;
    out->status = b.status;
    out->output_count = b.output_count;
    out->text = (const char *)at;
    out->text_size = b.text_size;
    out->params = (const char *)at + b.text_size;
    out->params_size = b.params_size;
    out->required_bytes = b.required_bytes;
    return FDN_OK;
}
