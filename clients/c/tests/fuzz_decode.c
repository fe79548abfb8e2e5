/* fuzz_decode: the C decoders against random and mutated messages, for the sanitizer build only
 * (make test-sanitize). Starts from every committed vector (docs/protocol/vectors and its
 * subdirectories), mutates it (byte flips, header and body field pokes, size changes,
 * truncation, splices), re-seals the CRC as _vector_messages._reseal does (CRC32 over header
 * bytes [0,28) then the payload) so the later checks are reached, and feeds the result, in a
 * buffer of exactly its size, to fdn_decode_request, fdn_decode_response and fdn_params_valid.
 * A decoded message is then walked (every tensor's bytes read) and re-encoded. ASan and UBSan do
 * the judging; the program itself only checks that a decoded view lies inside the buffer.
 *
 *   fuzz-decode VECTORS_DIR [ITERATIONS [SEED]]
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fdn_client.h"
#include "json.h"

#define MAX_SEEDS 512
#define MAX_MSG (1u << 20)

static uint8_t *seeds[MAX_SEEDS];
static size_t seed_sizes[MAX_SEEDS];
static int nseeds;
static uint64_t rng_state;

static uint64_t rnd(void) { /* xorshift64*: fixed seed, reproducible runs */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}
static size_t below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static void load_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) && nseeds < MAX_SEEDS) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 4, ".bin") != 0) {
            load_dir(path); /* a subdirectory (cuda_ipc); a plain file fails opendir */
            continue;
        }
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        if (n > 0 && n <= (long)MAX_MSG) {
            uint8_t *buf = malloc((size_t)n);
            if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n) {
                seeds[nseeds] = buf;
                seed_sizes[nseeds++] = (size_t)n;
            } else {
                free(buf);
            }
        }
        fclose(f);
    }
    closedir(d);
}

static void reseal(uint8_t *buf, size_t size) {
    if (size < FDN_HEADER_SIZE) return;
    uint32_t payload;
    memcpy(&payload, buf + 16, 4);
    size_t end = (uint64_t)FDN_HEADER_SIZE + payload < size ? FDN_HEADER_SIZE + payload : size;
    uint32_t crc = fdn_crc32(fdn_crc32(0, buf, 28), buf + FDN_HEADER_SIZE, end - FDN_HEADER_SIZE);
    memcpy(buf + 28, &crc, 4);
}

/* Values that sit on the decoders' edges. */
static uint64_t interesting(void) {
    static const uint64_t v[] = {0, 1, 2, 7, 8, 9, 14, 15, 31, 32, 63, 64, 65, 112, 144, 255, 256,
                                 4096, 65535, 65536, 1u << 20, (1u << 20) + 1, 0x7FFFFFFF, 0x80000000,
                                 0xFFFFFFFF, 0x100000000ULL, 0x7FFFFFFFFFFFFFFFULL,
                                 0x8000000000000000ULL, 0xFFFFFFFFFFFFFFFFULL, 1ULL << 62, 1ULL << 61};
    return rnd() & 1 ? v[below(sizeof v / sizeof v[0])] : rnd();
}

static void poke(uint8_t *buf, size_t size, size_t off, int width, uint64_t value) {
    if (off + (size_t)width > size) return;
    memcpy(buf + off, &value, (size_t)width); /* little-endian host */
}

/* Offsets worth poking: header and body fields, descriptor fields of the first descriptors. */
static void poke_field(uint8_t *buf, size_t size) {
    static const struct { unsigned off; int width; } fixed[] = {
        {0, 4}, {4, 2}, {6, 2}, {8, 8}, {16, 4}, {20, 4}, {24, 4}, /* header */
        {32 + 80, 8}, {32 + 88, 4}, {32 + 92, 4}, {32 + 96, 4},     /* request body */
        {32 + 0, 4}, {32 + 4, 4}, {32 + 8, 4}, {32 + 12, 4}, {32 + 16, 8}, /* response body */
    };
    static const struct { unsigned off; int width; } desc[] = {
        {64, 4}, {68, 4}, {72, 8}, {80, 8}, {88, 8}, {128, 8}, {136, 8}, {144, 8}, {152, 4}, {156, 4},
        {160, 4}, {168, 1}, {232, 8}, {0, 1}, {63, 1},
    };
    if (rnd() % 3) {
        size_t i = below(sizeof fixed / sizeof fixed[0]);
        poke(buf, size, fixed[i].off, fixed[i].width, interesting());
    } else {
        size_t i = below(sizeof desc / sizeof desc[0]);
        size_t base = FDN_HEADER_SIZE + FDN_BODY_SIZE + FDN_DESC_SIZE * below(4);
        poke(buf, size, base + desc[i].off, desc[i].width, interesting());
    }
}

/* One mutated message into a fresh heap buffer of exactly its size (ASan sees any overread). */
static uint8_t *mutate(size_t *out_size) {
    size_t s = below((size_t)nseeds);
    size_t size = seed_sizes[s];
    static uint8_t work[MAX_MSG]; /* one scratch buffer: a fresh 1 MiB per iteration is all mmap */
    memcpy(work, seeds[s], size);
    int rounds = 1 + (int)below(4);
    int resealed = (rnd() % 8) != 0;
    for (int r = 0; r < rounds; r++) {
        switch (rnd() % 8) {
        case 0: /* flip bits */
            for (int k = 0, n = 1 + (int)below(8); k < n && size; k++) work[below(size)] ^= (uint8_t)(1u << below(8));
            break;
        case 1: /* random bytes */
            for (int k = 0, n = 1 + (int)below(16); k < n && size; k++) work[below(size)] = (uint8_t)rnd();
            break;
        case 2:
        case 3:
            poke_field(work, size);
            break;
        case 4: /* truncate */
            size = below(size + 1);
            break;
        case 5: /* grow (zeros or noise) */
        {
            size_t add = below(rnd() & 1 ? 64 : 4096);
            if (size + add > MAX_MSG) add = MAX_MSG - size;
            for (size_t k = 0; k < add; k++) work[size + k] = rnd() & 1 ? 0 : (uint8_t)rnd();
            size += add;
            break;
        }
        case 6: /* splice a piece of another vector */
        {
            size_t o = below((size_t)nseeds);
            if (!size || !seed_sizes[o]) break;
            size_t at = below(size), from = below(seed_sizes[o]);
            size_t n = below(seed_sizes[o] - from + 1);
            if (at + n > size) n = size - at;
            memcpy(work + at, seeds[o] + from, n);
            break;
        }
        case 7: /* payload_size to exactly the area, or to what the body counts say */
            if (size >= FDN_HEADER_SIZE && rnd() & 1) poke(work, size, 16, 4, size - FDN_HEADER_SIZE);
            else poke_field(work, size);
            break;
        }
    }
    if (resealed) reseal(work, size);
    uint8_t *exact = malloc(size ? size : 1);
    memcpy(exact, work, size);
    *out_size = size;
    return exact;
}

static volatile uint32_t sink;

static void inside(const uint8_t *area, size_t size, const void *p, uint64_t n) {
    const uint8_t *q = p;
    if (!n) return;
    if (q < area || q > area + size || n > (uint64_t)(area + size - q)) {
        fprintf(stderr, "decoded view [%p, +%llu) outside the area [%p, +%zu)\n", p, (unsigned long long)n,
                (const void *)area, size);
        abort();
    }
    sink ^= fdn_crc32(0, p, n);
}

static void walk_tensors(const uint8_t *area, size_t size, const struct fdn_tensor *t, uint32_t count) {
    for (uint32_t i = 0; i < count; i++) {
        if (t[i].location == FDN_CUDA_IPC) continue;
        inside(area, size, t[i].data, t[i].data_size);
        sink ^= (uint32_t)strlen(t[i].name);
    }
}

static struct fdn_request_fields req;
static struct fdn_response_fields resp;

static void one(const uint8_t *area, size_t size, uint64_t *ok_req, uint64_t *ok_resp) {
    struct fdn_error err;
    struct fdn_limits lim = {(uint32_t)(rnd() % 8 ? FDN_MAX_TENSORS : below(FDN_MAX_TENSORS + 2)),
                             rnd() % 8 ? (uint64_t)1 << 32 : rnd()};
    if (fdn_decode_request(area, size, rnd() & 1 ? NULL : &lim, &req, &err) == FDN_OK) {
        ++*ok_req;
        walk_tensors(area, size, req.inputs, req.input_count);
        inside(area, size, req.params, req.params_size);
        sink ^= (uint32_t)strlen(req.model) ^ (uint32_t)strlen(req.version);
        for (uint32_t i = 0; i < req.output_count; i++) sink ^= (uint32_t)strlen(req.outputs[i]);
        uint8_t *copy = malloc(size);
        memcpy(copy, area, size);
        (void)fdn_encode_request(copy, size, &req, &err);
        free(copy);
    } else {
        sink ^= (uint32_t)strlen(err.message);
    }
    if (fdn_decode_response(area, size, rnd() & 1 ? NULL : &lim, &resp, &err) == FDN_OK) {
        ++*ok_resp;
        walk_tensors(area, size, resp.outputs, resp.output_count);
        inside(area, size, resp.text, resp.text_size);
        inside(area, size, resp.params, resp.params_size);
        sink ^= (uint32_t)strlen(resp.model) ^ (uint32_t)strlen(resp.version);
        uint8_t *copy = malloc(size);
        memcpy(copy, area, size);
        (void)fdn_encode_response(copy, size, &resp, &err);
        free(copy);
    } else {
        sink ^= (uint32_t)strlen(err.message);
    }
}

/* The params checker and the JSON reader on their own, over short texts. */
static void one_json(void) {
    static const char alphabet[] = "{}[]\":,.-+eE0123456789 \t\ntrufalsnNIiyx\\/bfnrtu\x80\xc3\xa9\xff";
    static const char *const starts[] = {"{\"a\":1}", "{\"a\":\"x\",\"b\":true}", "{\"k\":-1.5e3}",
                                         "{\"s\":\"\\u00e9\\n\"}", "{}", "{\"a\":[1,{\"b\":null}]}"};
    char text[96];
    size_t n;
    if (rnd() & 1) {
        const char *s = starts[below(sizeof starts / sizeof starts[0])];
        n = strlen(s);
        memcpy(text, s, n);
        for (int k = 0, m = (int)below(4); k < m; k++) text[below(n)] = alphabet[below(sizeof alphabet - 1)];
        if (rnd() & 1) n = below(n + 1);
    } else {
        n = below(sizeof text);
        for (size_t k = 0; k < n; k++) text[k] = alphabet[below(sizeof alphabet - 1)];
    }
    char *exact = malloc(n ? n : 1); /* not NUL-terminated: the readers take a length */
    memcpy(exact, text, n);
    sink ^= (uint32_t)fdn_params_valid(exact, n);
    struct fdn_jdoc doc;
    if (fdn_json_parse(&doc, exact, n) == 0) {
        char out[256];
        for (int i = 0; i < doc.len; i++)
            if (doc.nodes[i].type == FDN_JSTRING)
                sink ^= (uint32_t)fdn_json_unescape(doc.nodes[i].raw, doc.nodes[i].raw_len, out, sizeof out);
        fdn_json_free(&doc);
    }
    free(exact);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s VECTORS_DIR [ITERATIONS [SEED]]\n", argv[0]);
        return 2;
    }
    uint64_t iterations = argc > 2 ? strtoull(argv[2], NULL, 10) : 100000;
    rng_state = argc > 3 ? strtoull(argv[3], NULL, 10) : 1;
    if (!rng_state) rng_state = 1;
    load_dir(argv[1]);
    if (!nseeds) {
        fprintf(stderr, "no vectors under %s\n", argv[1]);
        return 2;
    }
    uint64_t ok_req = 0, ok_resp = 0;
    for (int s = 0; s < nseeds; s++) one(seeds[s], seed_sizes[s], &ok_req, &ok_resp);
    for (uint64_t i = 0; i < iterations; i++) {
        size_t size;
        uint8_t *msg = mutate(&size);
        one(msg, size, &ok_req, &ok_resp);
        free(msg);
        if (i % 8 == 0) one_json();
        if (i && i % 1000000 == 0) {
            printf("fuzz-decode: %llu iterations\n", (unsigned long long)i);
            fflush(stdout);
        }
    }
    printf("fuzz-decode: %d seeds, %llu iterations, %llu requests and %llu responses decoded\n", nseeds,
           (unsigned long long)iterations, (unsigned long long)ok_req, (unsigned long long)ok_resp);
    return 0;
}
