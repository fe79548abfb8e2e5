/* test_vectors: the C client's codec against docs/protocol/vectors, plus its building blocks. */
#include <stdio.h>
#include <string.h>

#include "fdn_client.h"
#include "internal.h" /* fdn_data_name */

static int failures;

#define CHECK(cond)                                                   \
    do {                                                              \
        if (!(cond)) {                                                \
            fprintf(stderr, "%s:%d: CHECK(%s)\n", __FILE__, __LINE__, #cond); \
            failures++;                                               \
        }                                                             \
    } while (0)

static void report(void *ctx, const char *vector, const char *why) {
    (void)ctx;
    fprintf(stderr, "vector %s: %s\n", vector, why);
}

static void test_crc32_matches_zlib(void) {
    CHECK(fdn_crc32(0, "123456789", 9) == 0xCBF43926u);
    CHECK(fdn_crc32(fdn_crc32(0, "1234", 4), "56789", 5) == 0xCBF43926u);
    CHECK(fdn_crc32(0, "", 0) == 0);
}

static void test_dtype_table(void) {
    CHECK(fdn_dtype_itemsize(FDN_FP32) == 4 && fdn_dtype_itemsize(FDN_BF16) == 2);
    CHECK(fdn_dtype_itemsize(0) == 0 && fdn_dtype_itemsize(15) == 0);
    CHECK(fdn_dtype_from_name("INT64") == FDN_INT64 && fdn_dtype_from_name("nope") == 0);
    CHECK(strcmp(fdn_strerror(FDN_MODEL_NOT_FOUND), "MODEL_NOT_FOUND") == 0);
    CHECK(strcmp(fdn_strerror((enum fdn_status)99), "INTERNAL") == 0);
}

static void test_params_are_flat_objects(void) {
    CHECK(fdn_params_valid("{\"a\":1,\"b\":\"x\",\"c\":true}", 24));
    CHECK(!fdn_params_valid("{\"a\":[1]}", 9));
    CHECK(!fdn_params_valid("{\"a\":null}", 10));
    CHECK(!fdn_params_valid("[1]", 3));
    CHECK(!fdn_params_valid("{\"a\":NaN}", 9)); /* strict JSON, as the Python, Rust and Go decoders */
    CHECK(!fdn_params_valid("{\"a\":Infinity}", 14));
    CHECK(!fdn_params_valid("{\"a\":-Infinity}", 15));
    CHECK(fdn_params_valid("{\"a\":-1.5e3}", 12));
}

#define VALID(lit) fdn_params_valid(lit, sizeof lit - 1)

/* Section 8 step 10 (I-JSON), beyond the vectors: the edges of the exact number check (no
 * strtod: an underflow is no error), and names compared once unescaped. */
static void test_params_are_i_json(void) {
    CHECK(VALID("{\"a\":9007199254740991,\"b\":-9007199254740991,\"c\":-0,\"d\":0}"));
    CHECK(!VALID("{\"a\":9007199254740992}"));
    CHECK(!VALID("{\"a\":10000000000000000}"));
    CHECK(VALID("{\"a\":9007199254740993.0,\"b\":1e16,\"c\":1E+5,\"d\":0.5e-3}"));
    CHECK(VALID("{\"a\":1e-400,\"b\":-1e-99999999999999999999,\"c\":0e99999999999999999999}"));
    CHECK(VALID("{\"a\":1.7976931348623157e308,\"b\":1.7976931348623158e308,\"c\":-1.79e308}"));
    CHECK(VALID("{\"a\":0.00017976931348623157e312,\"b\":17976931348623157e292}"));
    CHECK(!VALID("{\"a\":1.7976931348623159e308}"));
    CHECK(!VALID("{\"a\":0.00017976931348623159e312}"));
    CHECK(!VALID("{\"a\":1e309}"));
    CHECK(!VALID("{\"a\":-1e99999999999999999999}"));
    CHECK(!VALID("{\"a\":\"\\ud800\"}"));
    CHECK(!VALID("{\"a\":\"\\ud800\\u0041\"}"));
    CHECK(!VALID("{\"a\":\"\\udfff\"}"));
    CHECK(VALID("{\"a\":\"\\ud83d\\ude00\",\"\\u0000\":\"\\u0000\"}"));
    CHECK(!VALID("{\"a\":\"\\\0\"}"));
    CHECK(!VALID("{\"b\":1,\"a\":2,\"b\":3}"));
    CHECK(!VALID("{\"\\u00e9\":1,\"\xc3\xa9\":2}")); /* é escaped and as UTF-8 */
    CHECK(!VALID("{\"\\ud83d\\ude00\":1,\"\xf0\x9f\x98\x80\":2}"));
    CHECK(VALID("{\"\":1,\"\\u00e9\":2,\"\xc3\xa8\":3,\"e\":4}"));
    CHECK(VALID(" \t\r\n{ \"a\" : 1 }\n"));
    CHECK(!VALID("\xef\xbb\xbf{\"a\":1}"));
}

static void test_layout_places_tensors_at_64(void) {
    struct fdn_tensor t[2] = {{.name = "a", .dtype = FDN_FP32, .ndim = 2, .shape = {2, 3}},
                              {.name = "b", .dtype = FDN_UINT8, .ndim = 1, .shape = {5}}};
    uint64_t end = fdn_layout(t, 2, fdn_request_payload_size(2, 0, 0));
    CHECK(t[0].data_offset == 704 && t[0].data_size == 24);
    CHECK(t[1].data_offset == 768 && end == 832);
}

/* Two tensors of 2^63 bytes end past 2^64: the end wrapped to a few hundred bytes, so a loan
 * (fdn_loan_begin) fitted the area and fdn_loan_data pointed 2^63 bytes past it. */
static void test_layout_refuses_an_end_past_2_64(void) {
    struct fdn_tensor t[2] = {{.name = "a", .dtype = FDN_UINT8, .ndim = 1, .shape = {1ull << 63}},
                              {.name = "b", .dtype = FDN_UINT8, .ndim = 1, .shape = {1ull << 63}}};
    CHECK(fdn_layout(t, 2, fdn_request_payload_size(2, 0, 0)) == 0);
    struct fdn_tensor one[1] = {{.name = "a", .dtype = FDN_UINT8, .ndim = 1, .shape = {UINT64_MAX - 64}}};
    CHECK(fdn_layout(one, 1, fdn_request_payload_size(1, 0, 0)) == 0);
    one[0].shape[0] = 1ull << 62; /* large, but it fits: laid out as before */
    CHECK(fdn_layout(one, 1, fdn_request_payload_size(1, 0, 0)) == 448 + (1ull << 62));
}

static void test_decoder_rejects_a_short_area(void) {
    uint8_t area[64] = {0};
    struct fdn_response_fields r;
    struct fdn_error err;
    CHECK(fdn_decode_response(area, sizeof area, NULL, &r, &err) == FDN_INVALID_INPUT);
}

static void test_the_longest_data_name_fits_and_one_more_byte_is_refused(void) {
    /* the longest server name, the highest channel index, a 7-digit pid and an 11-digit gen */
    char server[FDN_SERVER_NAME_MAX + 2], name[64];
    memset(server, 'x', FDN_SERVER_NAME_MAX);
    server[FDN_SERVER_NAME_MAX] = 0;
    CHECK(fdn_data_name(name, server, 4095, 4194304, 99999999999ull));
    CHECK(strlen(name) == 63 && strcmp(name + 5 + FDN_SERVER_NAME_MAX, "-d4095-4194304-99999999999") == 0);
    CHECK(!fdn_data_name(name, server, 4095, 4194304, 100000000000ull) && name[0] == 0);
    memset(server, 'x', FDN_SERVER_NAME_MAX + 1); /* 33 characters: refused, never cut */
    server[FDN_SERVER_NAME_MAX + 1] = 0;
    CHECK(!fdn_data_name(name, server, 4095, 4194304, 99999999999ull) && name[0] == 0);
}

static void test_connect_refuses_a_server_name_one_past_the_limit(void) {
    char server[FDN_SERVER_NAME_MAX + 2];
    memset(server, 'x', FDN_SERVER_NAME_MAX + 1);
    server[FDN_SERVER_NAME_MAX + 1] = 0;
    fdn_client *c = NULL;
    struct fdn_error err = {0};
    CHECK(fdn_connect(&c, server, NULL, &err) == FDN_INVALID_INPUT && c == NULL);
    CHECK(strstr(err.message, "must be 1-32 characters of [A-Za-z0-9_]") != NULL);
}

/* NULL for a pointer the API needs is refused with INVALID_INPUT naming it (or NULL / 0 from a
 * lookup), never dereferenced: each of these was a SIGSEGV or a UBSan report. */
static void test_null_arguments_are_refused(void) {
    struct fdn_error err = {0};
    struct fdn_result res = {0};
    fdn_client *c = (fdn_client *)&err; /* never touched: every call here fails before */
    CHECK(fdn_connect(NULL, "x", NULL, &err) == FDN_INVALID_INPUT && strstr(err.message, "out is NULL"));
    CHECK(fdn_connect(&c, NULL, NULL, &err) == FDN_INVALID_INPUT && c == NULL &&
          strstr(err.message, "name is NULL"));
    CHECK(fdn_infer(NULL, "m", NULL, 0, -1, &res, &err) == FDN_INVALID_INPUT &&
          strstr(err.message, "client is NULL"));
    CHECK(fdn_infer_call(NULL, "m", NULL, 0, -1, NULL, &res, NULL) == FDN_INVALID_INPUT);
    CHECK(fdn_loan_begin(NULL, "m", NULL, 0, &err) == FDN_INVALID_INPUT && strstr(err.message, "client is NULL"));
    CHECK(fdn_loan_infer(NULL, -1, &res, &err) == FDN_INVALID_INPUT && strstr(err.message, "client is NULL"));
    CHECK(fdn_loan_data(NULL, 0) == NULL);
    fdn_close(NULL);
    CHECK(fdn_result_output(NULL, "y") == NULL && fdn_result_output(&res, NULL) == NULL);
    res.output_count = 1;
    CHECK(fdn_result_output(&res, NULL) == NULL);
    CHECK(fdn_dtype_from_name(NULL) == 0);
}

/* fdn_encode_request/response wrote any hand-filled descriptor: an unknown dtype or location, a
 * data_size its shape does not make, for the server to refuse (every library path lays tensors
 * out with fdn_layout first; the public encoders are for users who do not). */
static void test_encoders_refuse_a_descriptor_every_decoder_refuses(void) {
    static uint8_t area[4096];
    static struct fdn_request_fields f;
    struct fdn_error err = {0};
    memset(&f, 0, sizeof f);
    strcpy(f.model, "m");
    f.input_count = 1;
    struct fdn_tensor *t = &f.inputs[0];
    *t = (struct fdn_tensor){.name = "x", .dtype = FDN_FP32, .ndim = 1, .shape = {4}};
    CHECK(fdn_layout(f.inputs, 1, fdn_request_payload_size(1, 0, 0)) > 0);
    CHECK(fdn_encode_request(area, sizeof area, &f, &err) == FDN_OK); /* as laid out: fine */
    t->data_size = 12;
    CHECK(fdn_encode_request(area, sizeof area, &f, &err) == FDN_INVALID_INPUT &&
          strstr(err.message, "tensor 'x': data_size 12 is not its shape x 4 bytes"));
    t->data_size = 16;
    t->dtype = 99;
    CHECK(fdn_encode_request(area, sizeof area, &f, &err) == FDN_INVALID_INPUT &&
          strstr(err.message, "unknown dtype code 99"));
    t->dtype = FDN_FP32;
    t->location = 7;
    CHECK(fdn_encode_request(area, sizeof area, &f, &err) == FDN_INVALID_INPUT &&
          strstr(err.message, "unknown location 7"));
    t->location = FDN_HOST;
    *t = (struct fdn_tensor){.name = "e", .dtype = FDN_UINT8, .ndim = 2, .shape = {0, 1ull << 63}};
    t->data_offset = 448;
    CHECK(fdn_encode_request(area, sizeof area, &f, &err) == FDN_INVALID_INPUT &&
          strstr(err.message, "beyond 2^63 - 1 bytes"));
    static struct fdn_response_fields r;
    memset(&r, 0, sizeof r);
    r.output_count = 1;
    r.outputs[0] = (struct fdn_tensor){.name = "y", .dtype = FDN_FP32, .ndim = 1, .shape = {2},
                                       .location = FDN_CUDA_IPC, .ipc_handle = {1}};
    CHECK(fdn_encode_response(area, sizeof area, &r, &err) == FDN_INVALID_INPUT &&
          strstr(err.message, "(> 0 for CUDA_IPC)")); /* data_size 0: not the shape's 8 */
    r.outputs[0].data_size = 8;
    CHECK(fdn_encode_response(area, sizeof area, &r, &err) == FDN_OK);
}

/* A message longer than fdn_error.message (255 bytes) was cut mid-character: a server's error
 * text in a multi-byte script ended with half a character, which a UTF-8 decoder refuses. */
static void test_a_cut_message_ends_on_a_whole_character(void) {
    static const char *const chars[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x99\x82"}; /* é € 🙂 */
    for (size_t k = 0; k < 3; k++) {
        for (size_t pad = 240; pad < 256; pad++) { /* the character lands on every cut position */
            char text[600];
            memset(text, 'x', pad);
            text[pad] = 0;
            for (int i = 0; i < 20; i++) strcat(text, chars[k]);
            struct fdn_error err;
            fdn_fail(&err, FDN_HANDLER_ERROR, 1, "%s", text);
            size_t len = strlen(err.message), w = strlen(chars[k]);
            CHECK(len <= 255 && len > 255 - w);
            CHECK(len < pad || (len - pad) % w == 0); /* only whole characters after the x's */
            CHECK(strncmp(err.message, text, len) == 0);
        }
    }
    struct fdn_error err; /* not cut: left as it is */
    fdn_fail(&err, FDN_HANDLER_ERROR, 1, "short \xc3\xa9");
    CHECK(strcmp(err.message, "short \xc3\xa9") == 0);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "../../docs/protocol/vectors";
    test_crc32_matches_zlib();
    test_dtype_table();
    test_params_are_flat_objects();
    test_params_are_i_json();
    test_layout_places_tensors_at_64();
    test_layout_refuses_an_end_past_2_64();
    test_decoder_rejects_a_short_area();
    test_the_longest_data_name_fits_and_one_more_byte_is_refused();
    test_connect_refuses_a_server_name_one_past_the_limit();
    test_null_arguments_are_refused();
    test_encoders_refuse_a_descriptor_every_decoder_refuses();
    test_a_cut_message_ends_on_a_whole_character();
    char cuda_dir[4096];
    snprintf(cuda_dir, sizeof cuda_dir, "%s/cuda_ipc", dir); /* section 15's vectors */
    int passed = 0, cuda_passed = 0, failed = fdn_vectors_check(dir, &passed, report, NULL);
    int cuda_failed = fdn_vectors_check(cuda_dir, &cuda_passed, report, NULL);
    if (failed < 0 || cuda_failed < 0) {
        fprintf(stderr, "cannot read %s or %s\n", dir, cuda_dir);
        return 1;
    }
    CHECK(passed > 0 && cuda_passed > 0);
    failures += failed + cuda_failed;
    printf("test-vectors: %d + %d (cuda_ipc) vectors passed, %d failed; %s\n", passed, cuda_passed,
           failed + cuda_failed, failures ? "FAIL" : "ok");
    return failures ? 1 : 0;
}
