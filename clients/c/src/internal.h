/* internal.h: helpers shared by the library's sources (not part of the API). */
#ifndef FDN_INTERNAL_H
#define FDN_INTERNAL_H

#include "fdn_client.h"

/* A request's parameters JSON: at most 1 MiB (spec sections 8 step 3 and 11), else TOO_LARGE. */
#define FDN_MAX_PARAMS (1u << 20)

/* Set *err (may be NULL) and return code. */
enum fdn_status fdn_fail(struct fdn_error *err, enum fdn_status code, uint64_t request_id,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* 1 if [s, s+n) is valid UTF-8 (strict: no overlongs, no surrogates). */
int fdn_utf8_valid(const uint8_t *s, size_t n);

/* Write the data segment name "/fdn-{server}-d{index}-{pid}-{gen}" into out; 0 (out empty) if it
 * would not fit the channel block's data_name with its NUL: it is refused, never cut. */
int fdn_data_name(char out[64], const char *server, uint32_t index, uint32_t pid, uint64_t gen);

/* Decode a response from `msg`, a copy of the first `msg_size` bytes of the response area of
 * `size` bytes at `area`: its header and payload (a server may rewrite the area while the client
 * reads it). Every field is read from `msg` only (its payload_size must fit both msg_size and
 * size); tensor ranges are checked against `size` and the outputs' data point into `area`; the
 * CRC is over `msg` (and with FDN_FLAG_DATA_CRC the data in `area`). text and params point into
 * `msg`. fdn_decode_response(area, size) is this with msg = area. */
/* Copy the header and body of the response area (`size` bytes at `area`) into *buf, then the rest
 * of the payload if the payload_size of that copy fits the area; *n: bytes copied. *buf (*cap
 * bytes, malloc'd, may be NULL) grows as needed and is kept for the next call. -1: no memory. */
int fdn_snapshot_response(const uint8_t *area, uint64_t size, uint8_t **buf, uint64_t *cap, uint64_t *n);
enum fdn_status fdn_decode_response_msg(const uint8_t *msg, uint64_t msg_size, const uint8_t *area, uint64_t size,
                                        const struct fdn_limits *limits, struct fdn_response_fields *out,
                                        struct fdn_error *err);

static inline uint64_t fdn_align64(uint64_t n) { return (n + FDN_DATA_ALIGN - 1) / FDN_DATA_ALIGN * FDN_DATA_ALIGN; }

/* Shared words (section 7.1): single aligned accesses with acquire/release, and a full fence. */
#define FDN_LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define FDN_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define FDN_FENCE() __atomic_thread_fence(__ATOMIC_SEQ_CST)

#endif
