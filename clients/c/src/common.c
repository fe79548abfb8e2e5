/* common.c: status names, datatypes, CRC-32, UTF-8 and parameter checks (sections 5, 6, 8, 9). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "json.h"

static const char *const status_names[] = {
    "OK", "BAD_MAGIC", "BAD_VERSION", "BAD_CHECKSUM", "MODEL_NOT_FOUND", "INVALID_INPUT",
    "TOO_LARGE", "DEADLINE_EXCEEDED", "OVERLOADED", "HANDLER_ERROR", "SERVER_UNAVAILABLE",
    "SHUTTING_DOWN", "CUDA_UNAVAILABLE", "INTERNAL"};

const char *fdn_strerror(enum fdn_status code) {
    unsigned c = (unsigned)code;
    return c < sizeof status_names / sizeof *status_names ? status_names[c] : "INTERNAL";
}

enum fdn_status fdn_fail(struct fdn_error *err, enum fdn_status code, uint64_t request_id,
                         const char *fmt, ...) {
    if (err) {
        va_list ap;
        err->code = code;
        err->request_id = request_id;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* --- datatypes (section 6) ------------------------------------------------------------------- */
static const struct {
    const char *name;
    size_t itemsize;
} dtypes[] = {{NULL, 0},     {"BOOL", 1},  {"UINT8", 1}, {"UINT16", 2}, {"UINT32", 4},
              {"UINT64", 8}, {"INT8", 1},  {"INT16", 2}, {"INT32", 4},  {"INT64", 8},
              {"FP16", 2},   {"BF16", 2},  {"FP32", 4},  {"FP64", 8},   {"BYTES", 1}};
#define N_DTYPES (sizeof dtypes / sizeof *dtypes)

size_t fdn_dtype_itemsize(uint32_t dtype) { return dtype < N_DTYPES ? dtypes[dtype].itemsize : 0; }
const char *fdn_dtype_name(uint32_t dtype) { return dtype < N_DTYPES ? dtypes[dtype].name : NULL; }
uint32_t fdn_dtype_from_name(const char *name) {
    for (uint32_t i = 1; i < N_DTYPES; i++)
        if (strcmp(dtypes[i].name, name) == 0) return i;
    return 0;
}

/* --- CRC-32 (zlib/IEEE), table-driven -------------------------------------------------------- */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
}

uint32_t fdn_crc32(uint32_t crc, const void *data, size_t size) {
    const uint8_t *p = data;
    pthread_once(&crc_once, crc_init);
    crc = ~crc;
    while (size >= 8) { /* slicing-by-8 */
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        lo ^= crc;
        crc = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^
              crc_table[5][(lo >> 16) & 0xFF] ^ crc_table[4][lo >> 24] ^
              crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF] ^
              crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
        p += 8;
        size -= 8;
    }
    while (size--) crc = crc_table[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* --- text ------------------------------------------------------------------------------------ */
int fdn_utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min = 0x80;
        else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
        else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min = 0x10000;
        else return 0;
        if (i + len > n) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) return 0;
        i += len;
    }
    return 1;
}

int fdn_params_valid(const char *s, size_t n) {
    struct fdn_jdoc doc;
    if (!fdn_utf8_valid((const uint8_t *)s, n) || fdn_json_parse(&doc, s, n) < 0) return 0;
    int ok = doc.nodes[0].type == FDN_JOBJECT;
    for (int i = doc.nodes[0].child; ok && i >= 0; i = doc.nodes[i].next) {
        enum fdn_json_type t = doc.nodes[i].type;
        ok = t == FDN_JSTRING || t == FDN_JNUMBER || t == FDN_JBOOL;
        if (t == FDN_JNUMBER) { /* the reader takes Python's NaN/Infinity; parameters are strict JSON */
            const char *v = doc.nodes[i].raw;
            ok = doc.nodes[i].raw_len && v[0] != 'N' && v[0] != 'I' && !(v[0] == '-' && doc.nodes[i].raw_len > 1 && v[1] == 'I');
        }
    }
    fdn_json_free(&doc);
    return ok;
}
