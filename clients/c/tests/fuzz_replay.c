/* fuzz_replay: runs tests/fuzz_libfuzzer.c's checks on the files named on the command line, one
 * input each, without libFuzzer (any compiler): `make test-sanitize` replays every test vector
 * through them under ASan and UBSan, so the harness's properties (views inside the area, the
 * snapshot path agreeing with in-place decoding, encode -> decode round trips) hold in CI, where
 * clang and `make libfuzzer` are not installed. A breach aborts, naming itself. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            perror(argv[i]);
            return 2;
        }
        uint8_t *data = NULL;
        size_t size = 0, cap = 0, got;
        do {
            if (size == cap) {
                cap = cap ? 2 * cap : 4096;
                uint8_t *grown = realloc(data, cap);
                if (!grown) {
                    fprintf(stderr, "fuzz-replay: out of memory reading %s\n", argv[i]);
                    return 2;
                }
                data = grown;
            }
            got = fread(data + size, 1, cap - size, f);
            size += got;
        } while (got);
        if (ferror(f)) {
            perror(argv[i]);
            return 2;
        }
        fclose(f);
        LLVMFuzzerTestOneInput(data, size);
        free(data);
    }
    printf("fuzz-replay: %d inputs, every check held\n", argc - 1);
    return 0;
}
