/* check.c: a call's arguments (model name, tensors, version, outputs, parameters), checked before
 * anything is written: a bad one is INVALID_INPUT (or TOO_LARGE) naming it. */
#include <string.h>

#include "client.h"

/* A model name the request's fixed field holds with its NUL. */
enum fdn_status fdn_check_model(const char *model, struct fdn_error *err) {
    if (!model) return fdn_fail(err, FDN_INVALID_INPUT, 0, "model name is NULL");
    if (strlen(model) >= FDN_NAME_SIZE)
        return fdn_fail(err, FDN_INVALID_INPUT, 0, "model name '%.64s' is over 63 bytes", model);
    return FDN_OK;
}

/* A tensor's dtype and ndim, and its bytes in *bytes: the codec's rules, named for `what` and i. */
enum fdn_status fdn_check_tensor(const char *what, uint32_t i, const char *name, uint32_t dtype, uint32_t ndim,
                                 const uint64_t *shape, uint64_t *bytes, struct fdn_error *err) {
    size_t itemsize = fdn_dtype_itemsize(dtype);
    if (!itemsize)
        return fdn_fail(err, FDN_INVALID_INPUT, 0, "%s %u ('%s'): dtype %u is not a datatype of section 6", what, i,
                        name, dtype);
    if (ndim > FDN_MAX_NDIM)
        return fdn_fail(err, FDN_INVALID_INPUT, 0, "%s %u ('%s'): %u dimensions (at most %d)", what, i, name, ndim,
                        FDN_MAX_NDIM);
    if (ndim && !shape)
        return fdn_fail(err, FDN_INVALID_INPUT, 0, "%s %u ('%s'): shape is NULL with %u dimensions", what, i, name,
                        ndim);
    uint64_t n = itemsize;
    for (uint32_t d = 0; d < ndim; d++) {
        if (shape[d] && n > UINT64_MAX / shape[d])
            return fdn_fail(err, FDN_INVALID_INPUT, 0, "%s %u ('%s'): shape times itemsize passes 2^64 bytes", what,
                            i, name);
        n *= shape[d];
    }
    /* an empty tensor ([0, 2^63] UINT8) that every decoder refuses (section 8 step 7): it was sent,
     * and a loan of it granted, for the server to refuse every call */
    uint64_t nonzero = itemsize;
    for (uint32_t d = 0; d < ndim; d++) {
        if (!shape[d]) continue;
        if (nonzero > (uint64_t)INT64_MAX / shape[d])
            return fdn_fail(err, FDN_INVALID_INPUT, 0,
                            "%s %u ('%s'): shape beyond 2^63 - 1 bytes over its nonzero dimensions", what, i, name);
        nonzero *= shape[d];
    }
    *bytes = n;
    return FDN_OK;
}

/* The arguments of fdn_infer_call, checked before anything is written. */
enum fdn_status fdn_check_inputs(const struct fdn_input *inputs, uint32_t input_count, struct fdn_error *err) {
    if (input_count > FDN_MAX_TENSORS)
        return fdn_fail(err, FDN_TOO_LARGE, 0, "%u inputs (at most %d)", input_count, FDN_MAX_TENSORS);
    if (input_count && !inputs)
        return fdn_fail(err, FDN_INVALID_INPUT, 0, "inputs is NULL with input_count %u", input_count);
    for (uint32_t i = 0; i < input_count; i++) {
        const struct fdn_input *in = &inputs[i];
        if (!in->name) return fdn_fail(err, FDN_INVALID_INPUT, 0, "input %u: name is NULL", i);
        if (strlen(in->name) >= FDN_NAME_SIZE)
            return fdn_fail(err, FDN_INVALID_INPUT, 0, "input %u: name '%.64s' is over 63 bytes", i, in->name);
        uint64_t bytes;
        enum fdn_status st = fdn_check_tensor("input", i, in->name, in->dtype, in->ndim, in->shape, &bytes, err);
        if (st) return st;
        if (bytes && !in->data)
            return fdn_fail(err, FDN_INVALID_INPUT, 0, "input %u ('%s'): data is NULL for %llu bytes", i, in->name,
                            (unsigned long long)bytes);
    }
    return FDN_OK;
}

/* The call's version, requested outputs and parameters into the request fields. */
enum fdn_status fdn_set_call(struct fdn_client *c, const struct fdn_call *call, struct fdn_error *err) {
    struct fdn_request_fields *f = &c->req;
    const char *version = call && call->version ? call->version : "";
    const char *params = call && call->params ? call->params : "";
    uint32_t outputs = call && call->outputs ? call->output_count : 0;
    if (strlen(version) >= sizeof f->version)
        return fdn_fail(err, FDN_INVALID_INPUT, 0, "model version '%.16s' is over 15 bytes", version);
    if (outputs > FDN_MAX_TENSORS)
        return fdn_fail(err, FDN_TOO_LARGE, 0, "%u requested outputs (at most %d)", outputs, FDN_MAX_TENSORS);
    for (uint32_t i = 0; i < outputs; i++) {
        if (!call->outputs[i]) return fdn_fail(err, FDN_INVALID_INPUT, 0, "requested output %u is NULL", i);
        if (strlen(call->outputs[i]) >= FDN_NAME_SIZE)
            return fdn_fail(err, FDN_INVALID_INPUT, 0, "output name '%.64s' is over 63 bytes", call->outputs[i]);
        strcpy(f->outputs[i], call->outputs[i]);
    }
    size_t n = strlen(params);
    if (n > FDN_MAX_PARAMS) /* the server's step 3 refuses them too, after the whole copy */
        return fdn_fail(err, FDN_TOO_LARGE, 0, "params of %zu bytes (at most %u)", n, FDN_MAX_PARAMS);
    if (n && !fdn_params_valid(params, n))
        return fdn_fail(err, FDN_INVALID_INPUT, 0, "params must be a JSON object of strings, numbers and booleans");
    strcpy(f->version, version);
    f->output_count = outputs;
    f->params = n ? params : NULL;
    f->params_size = (uint32_t)n;
    return FDN_OK;
}
