/* json.h: a small JSON reader (RFC 8259 plus Python's NaN/Infinity) into a flat node array. */
#ifndef FDN_JSON_H
#define FDN_JSON_H

#include <stddef.h>

enum fdn_json_type { FDN_JNULL, FDN_JBOOL, FDN_JNUMBER, FDN_JSTRING, FDN_JARRAY, FDN_JOBJECT };

struct fdn_jnode {
    enum fdn_json_type type;
    const char *raw; /* the value's text as written (strings with their quotes) */
    size_t raw_len;
    const char *key; /* member of an object: the key's raw text, quotes included */
    size_t key_len;
    int child; /* first child (array element or object member), -1 when none */
    int next;  /* next sibling, -1 when none */
    int count; /* children */
};

struct fdn_jdoc {
    struct fdn_jnode *nodes;
    int len, cap;
};

/* Parse [s, s+n); returns 0 and fills doc (root = nodes[0]), or -1. Free with fdn_json_free. */
int fdn_json_parse(struct fdn_jdoc *doc, const char *s, size_t n);
void fdn_json_free(struct fdn_jdoc *doc);
/* The member `key` of object node `obj`, or NULL. */
const struct fdn_jnode *fdn_json_get(const struct fdn_jdoc *doc, const struct fdn_jnode *obj,
                                     const char *key);
const struct fdn_jnode *fdn_json_at(const struct fdn_jdoc *doc, int index);
/* Decode a string node's (or raw key's) escapes into dst (NUL-terminated UTF-8); returns the
 * byte length, or -1 if it does not fit. */
long fdn_json_unescape(const char *raw, size_t raw_len, char *dst, size_t cap);

#endif
