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

static inline uint64_t fdn_align64(uint64_t n) { return (n + FDN_DATA_ALIGN - 1) / FDN_DATA_ALIGN * FDN_DATA_ALIGN; }

/* Shared words (section 7.1): single aligned accesses with acquire/release, and a full fence. */
#define FDN_LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define FDN_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define FDN_FENCE() __atomic_thread_fence(__ATOMIC_SEQ_CST)

#endif
