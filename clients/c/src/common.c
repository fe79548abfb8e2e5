/* common.c: status names, datatypes, CRC-32, UTF-8 and parameter checks (sections 5, 6, 8, 9). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Drop a UTF-8 sequence cut short at the end of s (a message cut to its buffer): a caller that
 * prints or decodes the message as UTF-8 then never meets half a character. */
static void drop_partial_char(char *s) {
    size_t len = strlen(s), lead = len;
    while (lead > 0 && len - lead < 4 && ((unsigned char)s[lead - 1] & 0xC0) == 0x80) lead--;
    if (lead == 0) return;
    unsigned char b = (unsigned char)s[lead - 1];
    size_t need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
    if (lead - 1 + need > len) s[lead - 1] = 0;
}

enum fdn_status fdn_fail(struct fdn_error *err, enum fdn_status code, uint64_t request_id,
                         const char *fmt, ...) {
    if (err) {
        va_list ap;
        err->code = code;
        err->request_id = request_id;
        err->model[0] = 0; /* a call names its model over this (call.c, with_call) */
        va_start(ap, fmt);
        int n = vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        if (n >= (int)sizeof err->message) drop_partial_char(err->message); /* cut: 255 bytes */
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
    if (!name) return 0;
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

/* Parameters are read as I-JSON (section 8 step 10): the reader refuses lone surrogates and
 * bad escapes; here, each number and the names. */

#define FDN_MAX_PARAM_INT 9007199254740991ull /* 2^53 - 1: every double holds the integers up to it */

/* The digits of (2^54 - 1) * 2^970, halfway between the largest double and 2^1024: a decimal
 * at or above it rounds to infinity (ties go to 2^1024, the even mantissa), below it it does not. */
static const char DOUBLE_OVERFLOW[] =
    "1797693134862315807937289714053034150799341327100378269361737789804449682927647509466490179775872070"
    "9633028641669288791094655554785194040263065748867150582068190890200070838367627385484581771153176447"
    "5730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904"
    "174497792";

/* 1 if the JSON number [s, s+n) (valid grammar) is a parameter: an integer (no fraction, no
 * exponent) within +-(2^53 - 1), any other number finite once rounded to a double (one too
 * small rounds to 0 and passes). Exact, without strtod: no locale, no ERANGE on underflow. */
static int param_number_ok(const char *s, size_t n) {
    const char *end = s + n;
    if (s < end && *s == '-') s++;
    const char *mant = s, *mant_end = s;
    while (mant_end < end && *mant_end != 'e' && *mant_end != 'E') mant_end++;
    const char *dot = memchr(mant, '.', (size_t)(mant_end - mant));
    if (!dot && mant_end == end) { /* an integer */
        if (end - mant > 16) return 0;
        unsigned long long v = 0;
        for (; mant < end; mant++) v = v * 10 + (unsigned long long)(*mant - '0');
        return v <= FDN_MAX_PARAM_INT;
    }
    long long exp10 = 0; /* the exponent, saturated: beyond 10^9 either way the answer is known */
    if (mant_end < end) {
        const char *e = mant_end + 1;
        int neg = *e == '-';
        if (*e == '-' || *e == '+') e++;
        for (; e < end; e++)
            if (exp10 < 1000000000) exp10 = exp10 * 10 + (*e - '0');
        if (neg) exp10 = -exp10;
    }
    /* the value is 0.D x 10^E, D its significant digits (no leading zero) */
    long long point = (dot ? dot : mant_end) - mant, zeros = 0;
    const char *d = mant;
    for (; d < mant_end && (*d == '0' || *d == '.'); d++)
        if (*d == '0') zeros++;
    if (d == mant_end) return 1; /* zero */
    if (dot && d > dot) point = 0, zeros = d - dot - 1; /* 0.000ddd: the zeros after the point */
    long long e10 = point - zeros + exp10;
    if (e10 != 309) return e10 < 309; /* below 10^308 finite; 10^309 and above beyond 2^1024 */
    for (size_t i = 0; i < sizeof DOUBLE_OVERFLOW - 1; i++, d++) {
        if (d < mant_end && *d == '.') d++;
        if (d >= mant_end) return 1; /* a prefix of the threshold: below it */
        if (*d != DOUBLE_OVERFLOW[i]) return *d < DOUBLE_OVERFLOW[i];
    }
    return 0; /* the threshold, or above it */
}

/* The next code point of a JSON string's raw text (between its quotes); valid by now. */
static uint32_t next_code_point(const char **at) {
    const unsigned char *s = (const unsigned char *)*at;
    uint32_t cp;
    if (s[0] == '\\') {
        const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
        if (s[1] != 'u') {
            *at += 2;
            return (uint32_t)(unsigned char)to[strchr(from, s[1]) - from];
        }
        cp = 0;
        for (int i = 2; i < 6; i++) cp = cp * 16 + (uint32_t)(s[i] <= '9' ? s[i] - '0' : (s[i] | 0x20) - 'a' + 10);
        *at += 6;
        if (cp >= 0xD800 && cp < 0xDC00) {
            uint32_t lo = next_code_point(at);
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        return cp;
    }
    int len = s[0] < 0x80 ? 1 : s[0] < 0xE0 ? 2 : s[0] < 0xF0 ? 3 : 4;
    cp = len == 1 ? s[0] : (uint32_t)(s[0] & (0x7F >> len));
    for (int i = 1; i < len; i++) cp = (cp << 6) | (s[i] & 0x3F);
    *at += len;
    return cp;
}

struct param_name {
    const char *s, *end; /* the raw text between the quotes */
};

/* Names in code point order, escapes read: "a" and "\u0061" are the same name. */
static int compare_names(const void *pa, const void *pb) {
    const struct param_name *a = pa, *b = pb;
    const char *x = a->s, *y = b->s;
    while (x < a->end && y < b->end) {
        uint32_t p = next_code_point(&x), q = next_code_point(&y);
        if (p != q) return p < q ? -1 : 1;
    }
    return (x < a->end) - (y < b->end);
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
            size_t len = doc.nodes[i].raw_len;
            ok = len && v[0] != 'N' && v[0] != 'I' && !(v[0] == '-' && len > 1 && v[1] == 'I') &&
                 param_number_ok(v, len);
        }
    }
    int count = ok ? doc.nodes[0].count : 0;
    if (count > 1) { /* no name twice: sorted, equal names are neighbours */
        struct param_name *names = malloc((size_t)count * sizeof *names);
        ok = names != NULL;
        int k = 0;
        for (int i = doc.nodes[0].child; ok && i >= 0; i = doc.nodes[i].next, k++)
            names[k] = (struct param_name){doc.nodes[i].key + 1, doc.nodes[i].key + doc.nodes[i].key_len - 1};
        if (ok) qsort(names, (size_t)count, sizeof *names, compare_names);
        for (k = 1; ok && k < count; k++) ok = compare_names(&names[k - 1], &names[k]) != 0;
        free(names);
    }
    fdn_json_free(&doc);
    return ok;
}
