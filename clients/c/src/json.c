/* json.c: a small JSON reader for parameters and the test vectors' expected decodings. */
#include "json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct parser {
    const char *s, *end;
    struct fdn_jdoc *doc;
    int depth;
};

static void ws(struct parser *p) {
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r')) p->s++;
}

static int add(struct parser *p, enum fdn_json_type t, const char *raw) {
    struct fdn_jdoc *d = p->doc;
    if (d->len == d->cap) {
        int cap = d->cap ? d->cap * 2 : 32;
        struct fdn_jnode *nodes = realloc(d->nodes, (size_t)cap * sizeof *nodes);
        if (!nodes) return -1;
        d->nodes = nodes;
        d->cap = cap;
    }
    struct fdn_jnode *n = &d->nodes[d->len];
    memset(n, 0, sizeof *n);
    n->type = t;
    n->raw = raw;
    n->child = n->next = -1;
    return d->len++;
}

static int literal(struct parser *p, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(p->end - p->s) < n || memcmp(p->s, word, n) != 0) return 0;
    p->s += n;
    return 1;
}

static int hex4(const char *s) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return -1;
    }
    return v;
}

static int string(struct parser *p) {
    if (p->s >= p->end || *p->s != '"') return -1;
    p->s++;
    while (p->s < p->end) {
        unsigned char c = (unsigned char)*p->s;
        if (c == '"') {
            p->s++;
            return 0;
        }
        if (c < 0x20) return -1;
        if (c == '\\') {
            if (p->end - p->s < 2) return -1;
            char e = p->s[1];
            if (e == 'u') { /* strings are Unicode scalar values: a surrogate only in a pair, high then low */
                int v = p->end - p->s < 6 ? -1 : hex4(p->s + 2);
                if (v < 0 || (v >= 0xDC00 && v < 0xE000)) return -1;
                p->s += 6;
                if (v >= 0xD800 && v < 0xDC00) {
                    int lo = p->end - p->s < 6 || p->s[0] != '\\' || p->s[1] != 'u' ? -1 : hex4(p->s + 2);
                    if (lo < 0xDC00 || lo >= 0xE000) return -1;
                    p->s += 6;
                }
                continue;
            }
            if (!e || !strchr("\"\\/bfnrt", e)) return -1; /* strchr finds a NUL byte too */
            p->s += 2;
            continue;
        }
        p->s++;
    }
    return -1;
}

static int number(struct parser *p) {
    const char *s = p->s;
    if (s < p->end && *s == '-') s++;
    if (literal(&(struct parser){s, p->end, 0, 0}, "Infinity")) {
        p->s = s + 8;
        return 0;
    }
    if (s >= p->end) return -1;
    if (*s == '0') s++;
    else if (*s >= '1' && *s <= '9') while (s < p->end && *s >= '0' && *s <= '9') s++;
    else return -1;
    if (s < p->end && *s == '.') {
        s++;
        if (s >= p->end || *s < '0' || *s > '9') return -1;
        while (s < p->end && *s >= '0' && *s <= '9') s++;
    }
    if (s < p->end && (*s == 'e' || *s == 'E')) {
        s++;
        if (s < p->end && (*s == '+' || *s == '-')) s++;
        if (s >= p->end || *s < '0' || *s > '9') return -1;
        while (s < p->end && *s >= '0' && *s <= '9') s++;
    }
    p->s = s;
    return 0;
}

static int value(struct parser *p);

static int container(struct parser *p, int self, char close, int object) {
    struct fdn_jnode *nodes;
    int last = -1;
    p->s++;
    ws(p);
    if (p->s < p->end && *p->s == close) {
        p->s++;
        return 0;
    }
    for (;;) {
        const char *key = NULL;
        size_t key_len = 0;
        ws(p);
        if (object) {
            key = p->s;
            if (string(p) < 0) return -1;
            key_len = (size_t)(p->s - key);
            ws(p);
            if (p->s >= p->end || *p->s != ':') return -1;
            p->s++;
            ws(p);
        }
        int child = value(p);
        if (child < 0) return -1;
        nodes = p->doc->nodes;
        nodes[child].key = key;
        nodes[child].key_len = key_len;
        if (last < 0) nodes[self].child = child;
        else nodes[last].next = child;
        nodes[self].count++;
        last = child;
        ws(p);
        if (p->s < p->end && *p->s == ',') {
            p->s++;
            continue;
        }
        if (p->s < p->end && *p->s == close) {
            p->s++;
            return 0;
        }
        return -1;
    }
}

static int value(struct parser *p) {
    if (++p->depth > 64) return -1;
    ws(p);
    if (p->s >= p->end) return -1;
    const char *start = p->s;
    int self, rc = 0;
    char c = *p->s;
    if (c == '{' || c == '[') {
        self = add(p, c == '{' ? FDN_JOBJECT : FDN_JARRAY, start);
        if (self < 0) return -1;
        rc = container(p, self, c == '{' ? '}' : ']', c == '{');
    } else if (c == '"') {
        self = add(p, FDN_JSTRING, start);
        if (self < 0) return -1;
        rc = string(p);
    } else if (literal(p, "true") || literal(p, "false")) {
        self = add(p, FDN_JBOOL, start);
    } else if (literal(p, "null")) {
        self = add(p, FDN_JNULL, start);
    } else if (literal(p, "NaN")) {
        self = add(p, FDN_JNUMBER, start);
    } else {
        self = add(p, FDN_JNUMBER, start);
        if (self < 0) return -1;
        rc = number(p);
    }
    if (self < 0 || rc < 0) return -1;
    p->doc->nodes[self].raw_len = (size_t)(p->s - start);
    p->depth--;
    return self;
}

int fdn_json_parse(struct fdn_jdoc *doc, const char *s, size_t n) {
    struct parser p = {s, s + n, doc, 0};
    doc->nodes = NULL;
    doc->len = doc->cap = 0;
    if (value(&p) < 0) {
        fdn_json_free(doc);
        return -1;
    }
    ws(&p);
    if (p.s != p.end) {
        fdn_json_free(doc);
        return -1;
    }
    return 0;
}

void fdn_json_free(struct fdn_jdoc *doc) {
    free(doc->nodes);
    doc->nodes = NULL;
    doc->len = doc->cap = 0;
}

const struct fdn_jnode *fdn_json_at(const struct fdn_jdoc *doc, int index) {
    return index < 0 || index >= doc->len ? NULL : &doc->nodes[index];
}

const struct fdn_jnode *fdn_json_get(const struct fdn_jdoc *doc, const struct fdn_jnode *obj,
                                     const char *key) {
    if (!obj || obj->type != FDN_JOBJECT) return NULL;
    size_t n = strlen(key);
    for (int i = obj->child; i >= 0; i = doc->nodes[i].next) {
        const struct fdn_jnode *m = &doc->nodes[i];
        if (m->key_len == n + 2 && memcmp(m->key + 1, key, n) == 0) return m;
    }
    return NULL;
}

static size_t put_utf8(char *dst, uint32_t cp) {
    if (cp < 0x80) {
        dst[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        dst[0] = (char)(0xC0 | (cp >> 6));
        dst[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        dst[0] = (char)(0xE0 | (cp >> 12));
        dst[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        dst[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    dst[0] = (char)(0xF0 | (cp >> 18));
    dst[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    dst[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    dst[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

long fdn_json_unescape(const char *raw, size_t raw_len, char *dst, size_t cap) {
    if (raw_len < 2 || raw[0] != '"') return -1;
    const char *s = raw + 1, *end = raw + raw_len - 1;
    size_t n = 0;
    while (s < end) {
        char tmp[4];
        size_t k;
        if (*s != '\\') {
            tmp[0] = *s++;
            k = 1;
        } else {
            char e = s[1];
            s += 2;
            if (e == 'u') {
                uint32_t cp = (uint32_t)hex4(s);
                s += 4;
                if (cp >= 0xD800 && cp < 0xDC00 && end - s >= 6 && s[0] == '\\' && s[1] == 'u') {
                    uint32_t lo = (uint32_t)hex4(s + 2);
                    if (lo >= 0xDC00 && lo < 0xE000) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        s += 6;
                    }
                }
                k = put_utf8(tmp, cp);
            } else {
                const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
                const char *at = e ? strchr(from, e) : NULL;
                if (!at) return -1;
                tmp[0] = to[at - from];
                k = 1;
            }
        }
        if (n + k >= cap) return -1;
        memcpy(dst + n, tmp, k);
        n += k;
    }
    dst[n] = 0;
    return (long)n;
}
