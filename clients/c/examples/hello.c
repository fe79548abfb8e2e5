/* hello: call the demo model by copy, then by loan (docs/clients.md shows this file; the tests run it).
 * Usage: hello SERVER */
#include <stdio.h>

#include "fdn_client.h"

int main(int argc, char **argv) {
    const char *server = argc > 1 ? argv[1] : "demo_srv";
    struct fdn_error err;
    struct fdn_result res;
    fdn_client *c;
    if (fdn_connect(&c, server, NULL, &err) != FDN_OK) { /* NULL: default options */
        fprintf(stderr, "%s: %s\n", fdn_strerror(err.code), err.message);
        return 1;
    }
    float x[784];
    for (int i = 0; i < 784; i++) x[i] = (float)i / 784;
    uint64_t shape[2] = {1, 784};
    struct fdn_input in = {.name = "x", .dtype = FDN_FP32, .ndim = 2, .shape = shape, .data = x};
    if (fdn_infer(c, "demo", &in, 1, 500 /* ms; -1: no deadline */, &res, &err) == FDN_OK) {
        const struct fdn_tensor *y = fdn_result_output(&res, "y"); /* a view: valid until the next call */
        printf("copy: y[0] = %.6f of %llu\n", ((const float *)y->data)[0], (unsigned long long)y->shape[1]);
    } else {
        printf("copy failed: %s: %s\n", fdn_strerror(err.code), err.message);
    }

    /* A loan: the input is written straight into the shared request area. */
    struct fdn_tensor spec = {.name = "x", .dtype = FDN_FP32, .ndim = 2, .shape = {1, 784}};
    enum fdn_status st = fdn_loan_begin(c, "demo", &spec, 1, &err);
    if (st == FDN_OK) {
        float *slot = fdn_loan_data(c, 0); /* fetch it again after each call: the area may move */
        for (int i = 0; i < 784; i++) slot[i] = (float)i / 784;
        st = fdn_loan_infer(c, 500, &res, &err);
    }
    if (st == FDN_OK) printf("loan: y[0] = %.6f\n", ((const float *)fdn_result_output(&res, "y")->data)[0]);
    else printf("loan failed: %s: %s\n", fdn_strerror(err.code), err.message);

    st = fdn_infer(c, "no_such_model", &in, 1, 500, &res, &err); /* errors: a code and the server's message */
    printf("unknown model: %s\n", fdn_strerror(st));
    fdn_close(c);
    return 0;
}
