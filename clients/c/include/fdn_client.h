/* fdn_client.h: a C11 client of Foundation's shm protocol (docs/protocol/shm.md, version 1.0).
 *
 * The protocol's layout (section 3-5) is defined once, here, with its sizes and offsets asserted.
 * Three layers:
 *   - codec:  fdn_layout / fdn_encode_request / fdn_decode_response ... (pure, no I/O)
 *   - client: fdn_connect / fdn_infer / fdn_loan_* / fdn_close
 *   - vectors: fdn_vectors_check runs docs/protocol/vectors/ through the codec
 *
 * Thread-safety: one fdn_client owns one channel and serves one call at a time, and the library
 * does not guard it: calls on one client from two threads at once are undefined behaviour (they
 * write one request area and read one response area). Use one client per thread, or guard a
 * shared client with a mutex. fdn_close too: it unmaps the segments and frees the client, so it
 * must not run while another thread is in a call on that client (that thread would touch unmapped
 * memory: SIGSEGV). A call cannot be interrupted; bound it with its timeout_ms, and close once it
 * returned. Outputs are views on the channel's response area, and fdn_loan_data's pointers views
 * on its request area: valid until the next call on the same client, never after fdn_close.
 * After fork(), a client is still its parent's: the child's copy never touches the parent's channel
 * or data segment (its fdn_close frees the copy only; its first call connects a channel of its own,
 * a reconnect; a loan made before the fork is not lent out there).
 *
 * Arguments and memory: every function that returns an fdn_status takes err == NULL (then only the
 * code says what went wrong); err->message is always NUL-terminated (cut at 255 bytes). The client
 * functions refuse a NULL client, name, model, output pointer, result, or a NULL array, shape or
 * data that has entries or bytes, with FDN_INVALID_INPUT naming it; strings must be NUL-terminated.
 * Everything passed in is copied before the call returns (names, shapes, data, params): the caller
 * keeps it. The library owns the client (fdn_connect allocates it, fdn_close frees it) and the
 * memory results point to. The codec functions are pure and take valid pointers only: NULL there is
 * undefined behaviour, as is any use of a client after fdn_close.
 */
#ifndef FDN_CLIENT_H
#define FDN_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* --- constants (sections 3, 5, 11) ----------------------------------------------------------- */
#define FDN_REGION_MAGIC 0xF0C05E6Du
#define FDN_MSG_MAGIC 0xF0C01234u
#define FDN_PROTOCOL_VERSION 1
#define FDN_MAX_NDIM 8
#define FDN_MAX_TENSORS 64
#define FDN_NAME_SIZE 64
/* The longest server name: with it every data name "/fdn-N-d{i}-{pid}-{gen}" fits data_name with its
 * NUL (spec section 2): 5 + 32 + 2 + 4 (index < 4096) + 1 + 7 (pid <= 4194304) + 1 + 11 (gen) = 63. */
#define FDN_SERVER_NAME_MAX 32
#define FDN_VERSION_SIZE 16
#define FDN_DATA_ALIGN 64
#define FDN_MAX_TEXT (1u << 20)
#define FDN_PAGE 4096u
#define FDN_WAIT_SLICE_MS 50
#define FDN_YIELD_AFTER_NS 2000u /* spin this long flat out, then yield the CPU between polls */

enum fdn_region_state { FDN_STARTING = 0, FDN_READY = 1, FDN_STOPPING = 2, FDN_STOPPED = 3 };
enum fdn_feature { FDN_FEATURE_DATA_CRC = 1u << 0, FDN_FEATURE_CUDA_IPC = 1u << 1 };
enum fdn_kind {
    FDN_INFER_REQUEST = 1,
    FDN_RESPONSE = 2,
    FDN_METADATA_REQUEST = 3,
    FDN_STATS_REQUEST = 4
};
enum fdn_msg_flags { FDN_FLAG_DATA_CRC = 1u << 0, FDN_FLAG_CUDA_IPC = 1u << 1 /* section 15 */ };
enum fdn_location { FDN_HOST = 0, FDN_CUDA_IPC = 1 };

/* Section 6. */
enum fdn_dtype {
    FDN_BOOL = 1, FDN_UINT8 = 2, FDN_UINT16 = 3, FDN_UINT32 = 4, FDN_UINT64 = 5,
    FDN_INT8 = 6, FDN_INT16 = 7, FDN_INT32 = 8, FDN_INT64 = 9,
    FDN_FP16 = 10, FDN_BF16 = 11, FDN_FP32 = 12, FDN_FP64 = 13, FDN_BYTES = 14
};

/* Section 9: every failure of this library is one of these codes plus a message. */
enum fdn_status {
    FDN_OK = 0,
    FDN_BAD_MAGIC = 1,
    FDN_BAD_VERSION = 2,
    FDN_BAD_CHECKSUM = 3,
    FDN_MODEL_NOT_FOUND = 4,
    FDN_INVALID_INPUT = 5,
    FDN_TOO_LARGE = 6,
    FDN_DEADLINE_EXCEEDED = 7,
    FDN_OVERLOADED = 8,
    FDN_HANDLER_ERROR = 9,
    FDN_SERVER_UNAVAILABLE = 10,
    FDN_SHUTTING_DOWN = 11,
    FDN_CUDA_UNAVAILABLE = 12,
    FDN_INTERNAL = 13
};

/* --- the layout (sections 3, 4, 5): naturally aligned, no packing needed --------------------- */
struct fdn_region_header {
    uint32_t magic;
    uint16_t version_major;
    uint16_t version_minor;
    uint32_t header_size;
    uint32_t feature_flags;
    uint32_t state;
    uint32_t server_pid;
    uint64_t server_start_time;
    uint64_t heartbeat;
    uint64_t heartbeat_ns;
    uint32_t heartbeat_interval_ms;
    uint32_t server_sleeping;
    uint32_t channel_count;
    uint32_t channel_size;
    uint64_t channels_offset;
    uint64_t max_request_bytes;
    uint32_t max_tensors;
    uint32_t max_ndim;
    uint64_t connect_epoch;
    uint32_t mutex_holder_pid;
    uint32_t spin_us;
    uint64_t instance_id;
    uint64_t default_capacity;
    uint64_t reserved0;
    char name[64];
    uint8_t reserved[64];
};

struct fdn_channel {
    uint64_t client_seq;
    uint32_t client_sleeping;
    uint32_t owner_pid;
    uint64_t owner_start_time;
    uint64_t request_capacity;
    uint64_t response_capacity;
    uint64_t data_gen;
    char data_name[64];
    uint8_t reserved_c[16];
    uint64_t server_seq;
    uint32_t server_busy;
    uint32_t reserved_s;
    uint64_t served;
    uint8_t reserved[104];
};

struct fdn_msg_header {
    uint32_t magic;
    uint16_t version;
    uint16_t kind;
    uint64_t request_id;
    uint32_t payload_size;
    uint32_t flags;
    uint32_t reserved;
    uint32_t crc32;
};

struct fdn_infer_request {
    char model[64];
    char version[16];
    uint64_t deadline_ns;
    uint32_t input_count;
    uint32_t output_count;
    uint32_t params_size;
    uint32_t reserved0;
    uint64_t reserved1;
};

struct fdn_infer_response {
    uint32_t status;
    uint32_t output_count;
    uint32_t text_size;
    uint32_t params_size;
    uint64_t required_bytes;
    char model[64];
    char version[16];
    uint64_t reserved;
};

struct fdn_tensor_desc {
    char name[64];
    uint32_t dtype;
    uint32_t ndim;
    uint64_t shape[8];
    uint64_t data_offset;
    uint64_t data_size;
    uint32_t location;
    uint32_t flags;
    int32_t device;
    uint32_t reserved0;
    uint8_t ipc_handle[64];
    uint64_t ipc_offset;
    uint8_t reserved[16];
};

#ifdef __cplusplus
#define FDN_STATIC_ASSERT static_assert
#else
#define FDN_STATIC_ASSERT _Static_assert
#endif
#define FDN_ASSERT_OFFSET(type, field, off) \
    FDN_STATIC_ASSERT(offsetof(struct type, field) == (off), #type "." #field " at " #off)
FDN_STATIC_ASSERT(sizeof(struct fdn_region_header) == 256, "region header is 256 bytes");
FDN_ASSERT_OFFSET(fdn_region_header, server_start_time, 24);
FDN_ASSERT_OFFSET(fdn_region_header, server_sleeping, 52);
FDN_ASSERT_OFFSET(fdn_region_header, channels_offset, 64);
FDN_ASSERT_OFFSET(fdn_region_header, max_tensors, 80);
FDN_ASSERT_OFFSET(fdn_region_header, connect_epoch, 88);
FDN_ASSERT_OFFSET(fdn_region_header, mutex_holder_pid, 96);
FDN_ASSERT_OFFSET(fdn_region_header, instance_id, 104);
FDN_ASSERT_OFFSET(fdn_region_header, default_capacity, 112);
FDN_ASSERT_OFFSET(fdn_region_header, name, 128);
FDN_STATIC_ASSERT(sizeof(struct fdn_channel) == 256, "channel block is 256 bytes");
FDN_ASSERT_OFFSET(fdn_channel, owner_pid, 12);
FDN_ASSERT_OFFSET(fdn_channel, data_gen, 40);
FDN_ASSERT_OFFSET(fdn_channel, data_name, 48);
FDN_ASSERT_OFFSET(fdn_channel, server_seq, 128);
FDN_ASSERT_OFFSET(fdn_channel, served, 144);
FDN_STATIC_ASSERT(sizeof(struct fdn_msg_header) == 32, "message header is 32 bytes");
FDN_ASSERT_OFFSET(fdn_msg_header, request_id, 8);
FDN_ASSERT_OFFSET(fdn_msg_header, crc32, 28);
FDN_STATIC_ASSERT(sizeof(struct fdn_infer_request) == 112, "request body is 112 bytes");
FDN_ASSERT_OFFSET(fdn_infer_request, deadline_ns, 80);
FDN_ASSERT_OFFSET(fdn_infer_request, reserved1, 104);
FDN_STATIC_ASSERT(sizeof(struct fdn_infer_response) == 112, "response body is 112 bytes");
FDN_ASSERT_OFFSET(fdn_infer_response, required_bytes, 16);
FDN_ASSERT_OFFSET(fdn_infer_response, model, 24);
FDN_ASSERT_OFFSET(fdn_infer_response, version, 88);
FDN_STATIC_ASSERT(sizeof(struct fdn_tensor_desc) == 256, "tensor descriptor is 256 bytes");
FDN_ASSERT_OFFSET(fdn_tensor_desc, dtype, 64);
FDN_ASSERT_OFFSET(fdn_tensor_desc, shape, 72);
FDN_ASSERT_OFFSET(fdn_tensor_desc, data_offset, 136);
FDN_ASSERT_OFFSET(fdn_tensor_desc, location, 152);
FDN_ASSERT_OFFSET(fdn_tensor_desc, device, 160);
FDN_ASSERT_OFFSET(fdn_tensor_desc, ipc_handle, 168);
FDN_ASSERT_OFFSET(fdn_tensor_desc, ipc_offset, 232);

#define FDN_HEADER_SIZE 32u
#define FDN_BODY_SIZE 112u
#define FDN_DESC_SIZE 256u

/* --- errors ---------------------------------------------------------------------------------- */
/* Filled by a failing call (err != NULL), left as it was by one that succeeds. The errors of a
 * call (fdn_infer, fdn_infer_call, fdn_loan_begin, fdn_loan_infer) name the model it was made for
 * in `model` (but a name over its 63-byte field, which the message names; and fdn_loan_infer
 * without a loan: none), and its request in `request_id` once one was sent (0 for a call refused
 * before it sent anything); every other error leaves `model` empty.
 * ABI: `model` was added at the end (the struct grew from 272 to 336 bytes; the offsets of the
 * other fields are unchanged): rebuild code compiled against an older header. */
struct fdn_error {
    enum fdn_status code;
    uint64_t request_id; /* the request the error belongs to, 0 when none */
    char message[256];
    char model[FDN_NAME_SIZE]; /* the model of the call the error belongs to, "" when none */
};

/* "MODEL_NOT_FOUND" for FDN_MODEL_NOT_FOUND; unknown codes read as "INTERNAL". */
const char *fdn_strerror(enum fdn_status code);

/* --- datatypes ------------------------------------------------------------------------------- */
size_t fdn_dtype_itemsize(uint32_t dtype); /* 0 for an unknown code */
const char *fdn_dtype_name(uint32_t dtype); /* NULL for an unknown code */
uint32_t fdn_dtype_from_name(const char *name); /* 0 for an unknown name */

/* --- codec (pure) ---------------------------------------------------------------------------- */
/* One tensor as the codec sees it; data_offset/data_size are relative to the area. */
struct fdn_tensor {
    char name[FDN_NAME_SIZE];
    uint32_t dtype;
    uint32_t ndim;
    uint64_t shape[FDN_MAX_NDIM];
    uint64_t data_offset;
    uint64_t data_size;
    const void *data; /* decoded: a pointer into the area (NULL for CUDA_IPC) */
    /* location FDN_CUDA_IPC (section 15): the data is in a CUDA allocation, not in the area.
     * The codec reads and writes these descriptors; this client sends and opens none. */
    uint32_t location;
    int32_t device;
    uint8_t ipc_handle[64];
    uint64_t ipc_offset;
};

struct fdn_limits {
    uint32_t max_tensors;
    uint64_t max_bytes;
};
#define FDN_DEFAULT_LIMITS ((struct fdn_limits){FDN_MAX_TENSORS, (uint64_t)1 << 32})

/* A request's fields, for fdn_encode_request and from fdn_decode_request. */
struct fdn_request_fields {
    uint16_t kind;
    uint64_t request_id;
    uint32_t flags;
    char model[FDN_NAME_SIZE];
    char version[FDN_VERSION_SIZE];
    uint64_t deadline_ns;
    uint32_t input_count;
    struct fdn_tensor inputs[FDN_MAX_TENSORS];
    uint32_t output_count;
    char outputs[FDN_MAX_TENSORS][FDN_NAME_SIZE];
    const char *params; /* compact JSON object, or NULL/"" for none */
    uint32_t params_size;
};

struct fdn_response_fields {
    uint64_t request_id;
    uint32_t flags;
    uint32_t status;
    char model[FDN_NAME_SIZE];
    char version[FDN_VERSION_SIZE];
    uint32_t output_count;
    struct fdn_tensor outputs[FDN_MAX_TENSORS];
    const char *text; /* not NUL-terminated: text_size bytes */
    uint32_t text_size;
    const char *params;
    uint32_t params_size;
    uint64_t required_bytes;
};

uint32_t fdn_crc32(uint32_t crc, const void *data, size_t size); /* zlib.crc32(data, crc) */
uint64_t fdn_request_payload_size(uint32_t inputs, uint32_t outputs, uint32_t params_size);
uint64_t fdn_response_payload_size(uint32_t outputs, uint32_t text_size, uint32_t params_size);
/* Place tensors after header and payload (section 5, "Placement"): sets data_offset and
 * data_size of each (CUDA_IPC tensors take no room: data_offset 0); returns the end of the last
 * tensor (the bytes the area needs), or 0 if a tensor has an unknown dtype or over 8 dimensions,
 * or the tensors together pass 2^64 bytes. */
uint64_t fdn_layout(struct fdn_tensor *tensors, uint32_t count, uint64_t payload_size);
/* Write header, body, descriptors, names, params and CRC; tensor data must already be in place
 * at the offsets fdn_layout gave. Returns FDN_OK or FDN_INVALID_INPUT/FDN_TOO_LARGE (err set);
 * a descriptor a decoder would refuse (unknown dtype or location, a data_size its shape does not
 * make, a HOST shape beyond 2^63 - 1 bytes over its nonzero dimensions) is INVALID_INPUT naming
 * the tensor, before anything is written. fdn_encode_response likewise. */
enum fdn_status fdn_encode_request(uint8_t *area, uint64_t area_size,
                                   const struct fdn_request_fields *f, struct fdn_error *err);
enum fdn_status fdn_encode_response(uint8_t *area, uint64_t area_size,
                                    const struct fdn_response_fields *f, struct fdn_error *err);
/* Check (section 8, in its order) and decode; tensors' data point into the area. */
enum fdn_status fdn_decode_request(const uint8_t *area, uint64_t area_size,
                                   const struct fdn_limits *limits,
                                   struct fdn_request_fields *out, struct fdn_error *err);
enum fdn_status fdn_decode_response(const uint8_t *area, uint64_t area_size,
                                    const struct fdn_limits *limits,
                                    struct fdn_response_fields *out, struct fdn_error *err);
/* 1 if [s, s+n) is a JSON object whose values are strings, numbers or booleans, read as I-JSON
 * (section 8 step 10): no name twice, no escaped lone surrogate, integers within +-(2^53 - 1),
 * other numbers finite as doubles. fdn_infer_call refuses other params before sending them. */
int fdn_params_valid(const char *s, size_t n);

/* --- client ---------------------------------------------------------------------------------- */
typedef struct fdn_client fdn_client;

/* The largest response a client grows its response area for by default (4 GiB, the server's
 * default max_request_bytes), and the most max_response_bytes may be (2^48: beyond any machine's
 * shared memory). */
#define FDN_MAX_RESPONSE_BYTES ((uint64_t)1 << 32)
#define FDN_MAX_RESPONSE_BYTES_LIMIT ((uint64_t)1 << 48)

/* ABI: max_response_bytes was added at the end (on LP64 the struct grew from 24 to 32 bytes; the
 * offsets of the other fields are unchanged): rebuild code compiled against an older header. An
 * initializer that names the older fields only leaves it 0, the default. */
struct fdn_options {
    uint32_t spin_us;            /* spin window before blocking (default 100; 0 = do not spin) */
    uint64_t capacity;           /* request/response area bytes, rounded up to pages (0 = the
                                  * server's default_capacity, at most max_response_bytes; what
                                  * /dev/shm cannot hold: TOO_LARGE; over max_response_bytes:
                                  * INVALID_INPUT at connect) */
    uint32_t connect_timeout_ms; /* region mutex wait at connect and close, and for a hung server's
                                  * next beat at connect (0 = the default, 2000); a call that
                                  * reconnects waits for either no later than its deadline */
    uint32_t data_crc;           /* 1: the CRC also covers tensor data */
    uint64_t max_response_bytes; /* the largest response the response area is grown for (0 = the
                                  * default, FDN_MAX_RESPONSE_BYTES; else 4096..2^48, or
                                  * INVALID_INPUT at connect): a server's TOO_LARGE answer asking
                                  * more fails the call TOO_LARGE, the area not grown */
};
#define FDN_DEFAULT_OPTIONS ((struct fdn_options){100, 0, 2000, 0, FDN_MAX_RESPONSE_BYTES})

/* An input: shape has ndim entries (NULL when ndim is 0); data holds product(shape) * itemsize
 * bytes, row-major (NULL when that is 0). The library cannot check data's size: too few bytes
 * there is undefined behaviour (they are read). */
struct fdn_input {
    const char *name;
    uint32_t dtype;
    uint32_t ndim;
    const uint64_t *shape;
    const void *data;
};

/* The outputs of a call, filled only when it returns FDN_OK: the struct is the caller's, each
 * output's data a view on the response area, valid until the next call on the client (whatever
 * its outcome) and never after fdn_close; copy what must live longer. */
struct fdn_result {
    uint64_t request_id;
    char model[FDN_NAME_SIZE];
    char version[FDN_VERSION_SIZE];
    uint32_t output_count;
    struct fdn_tensor outputs[FDN_MAX_TENSORS];
};

/* Connect to the server named `name` ("shm://" before it is allowed; 1-32 characters of
 * [A-Za-z0-9_], else INVALID_INPUT) and claim one channel. opts may be NULL (defaults); it is
 * copied. FDN_OK: *out is the client, to be freed with fdn_close. Otherwise *out is NULL and the
 * code says why: SERVER_UNAVAILABLE (no such server, or it is gone), OVERLOADED (every channel in
 * use, or the region mutex busy), TOO_LARGE (a capacity /dev/shm cannot hold), INVALID_INPUT (a
 * max_response_bytes out of range, or a capacity over it, named), BAD_VERSION, or INTERNAL (a
 * system call failed: the message names it). */
enum fdn_status fdn_connect(fdn_client **out, const char *name, const struct fdn_options *opts,
                            struct fdn_error *err);
/* Release the channel and unlink this client's data segment, then free the client: c must not be
 * used again (a second fdn_close of it is a double free). A request still with the server (after a
 * DEADLINE_EXCEEDED) gets 100 ms; then the channel is given back with owner_start_time = 0 for the
 * server to reclaim when it is done (spec 10.1), as it is when the region mutex stays busy for
 * connect_timeout_ms. A client whose server died only unlinks and unmaps. Not while another thread
 * is in a call on c (see Thread-safety above). NULL is a no-op. */
void fdn_close(fdn_client *c);
/* What a client counts (spec 10.5; nothing of it is on the wire): from 0 at fdn_connect, only
 * growing. A reconnect and a request sent again are otherwise invisible to the caller: the call
 * is answered by the server restarted under the name. */
struct fdn_counters {
    uint64_t reconnects; /* connections made after fdn_connect's own: the one the client had was
                          * dropped (its server found dead or stopped; a hung server's is kept) and
                          * a call made a new one; a connect that failed is not counted */
    uint64_t resends;    /* calls whose request went to a new connection with no handler having
                          * seen it (spec 10.3, 7.5), counted as it is published there; a loan's
                          * call is never sent again */
};
/* c's counts into *out (zeros for a NULL c; nothing for a NULL out). It waits for nothing and takes
 * nothing, so it may run in another thread while c is in a call (relaxed atomic loads), never
 * after fdn_close. */
void fdn_client_counters(const fdn_client *c, struct fdn_counters *out);
/* Run `model` (at most 63 bytes) on input_count inputs (at most 64: TOO_LARGE; inputs may be NULL
 * when it is 0). timeout_ms < 0: no deadline; 0: the deadline is now (the request is sent, and the
 * call is DEADLINE_EXCEEDED unless it was answered already); a deadline past 2^64 ns is capped
 * at UINT64_MAX (no timeout_ms is an error). The arguments are checked before anything is sent (INVALID_INPUT,
 * TOO_LARGE, naming the input and what is wrong); errors of the server come back as their code
 * with its message. A response larger than the response area is answered TOO_LARGE with the bytes
 * it needs: the area is grown and the request sent once more, up to max_response_bytes (a larger
 * one fails the call TOO_LARGE naming the bytes and the option, the area not grown; the client
 * serves its next call). A call ends the client's loan, if any. A call on a client whose server died
 * reconnects first (a restarted server is found again). */
enum fdn_status fdn_infer(fdn_client *c, const char *model, const struct fdn_input *inputs,
                          uint32_t input_count, int64_t timeout_ms, struct fdn_result *res,
                          struct fdn_error *err);
/* The output named `name` of res (a pointer into *res), or NULL if there is none (or an argument
 * is NULL). */
const struct fdn_tensor *fdn_result_output(const struct fdn_result *res, const char *name);

/* What else a call may say (section 5): all optional, NULL/0 for none. */
struct fdn_call {
    const char *version;        /* model version (at most 15 bytes); NULL or "": the server's choice */
    const char *params;         /* a JSON object of strings, numbers and booleans, at most 1 MiB
                                 * (else TOO_LARGE), I-JSON as fdn_params_valid (else INVALID_INPUT) */
    const char *const *outputs; /* the outputs wanted (each non-NULL, at most 63 bytes); NULL
                                 * (output_count is then not read) or output_count 0: all */
    uint32_t output_count;
};
/* fdn_infer with a version, parameters or a choice of outputs. */
enum fdn_status fdn_infer_call(fdn_client *c, const char *model, const struct fdn_input *inputs,
                               uint32_t input_count, int64_t timeout_ms, const struct fdn_call *call,
                               struct fdn_result *res, struct fdn_error *err);

/* Loans: write inputs straight into the request area, then call fdn_loan_infer (repeatable).
 *   struct fdn_tensor specs[1] = {{.name = "x", .dtype = FDN_FP32, .ndim = 2, .shape = {1, 784}}};
 *   fdn_loan_begin(c, "demo", specs, 1, &err);
 *   float *x = fdn_loan_data(c, 0);  ... fill x ...
 *   fdn_loan_infer(c, -1, &res, &err);
 * The pointers of fdn_loan_data move when the area grows: fetch them again after each call.
 * fdn_loan_begin copies specs (each name NUL-terminated within its 64 bytes, host tensors only:
 * CUDA_UNAVAILABLE otherwise; data_offset and data_size are set by the layout) and claims the
 * request area: FDN_OK or a code with nothing loaned. A loan lasts until the next fdn_loan_begin
 * (whatever its outcome), fdn_infer or fdn_infer_call on the client, a reconnect, fdn_close, or
 * an fdn_loan_infer that fails with its request still with the server (it passed its deadline:
 * the server may still be reading the inputs, so they are lent out no more; do not write through
 * a pointer kept from before). fdn_loan_begin waits for such a request up to connect_timeout_ms,
 * then fails DEADLINE_EXCEEDED. fdn_loan_infer on no loan is INVALID_INPUT (saying why, when a
 * late request ended it). fdn_loan_data: the start of tensor `index`'s bytes in the area, NULL
 * when there is no loan or no such tensor. */
enum fdn_status fdn_loan_begin(fdn_client *c, const char *model, const struct fdn_tensor *specs,
                               uint32_t count, struct fdn_error *err);
void *fdn_loan_data(fdn_client *c, uint32_t index);
enum fdn_status fdn_loan_infer(fdn_client *c, int64_t timeout_ms, struct fdn_result *res,
                               struct fdn_error *err);

/* --- test vectors ---------------------------------------------------------------------------- */
/* Decode and re-encode every NAME.bin/NAME.json pair in dir. Returns the number of failures (or
 * -1 if dir cannot be read); *passed counts the rest. Each failure is reported to `failure`. */
int fdn_vectors_check(const char *dir, int *passed,
                      void (*failure)(void *ctx, const char *vector, const char *why), void *ctx);

#ifdef __cplusplus
}
#endif
#endif /* FDN_CLIENT_H */
