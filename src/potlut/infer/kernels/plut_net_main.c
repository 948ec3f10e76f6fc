/* Stand-alone runner of a potlut plan (netplan.py) for boards and emulators:
 *   plut_net PLAN X N ISA OUT
 * PLAN: the plan's int64 words; X: N images of float32; ISA: 0 scalar, 1 avx2, 2 avx512,
 * 3 neon; OUT receives every output buffer of every image (image-major, outputs in order).
 * The tests run it under qemu-aarch64 to check the NEON kernels bit for bit. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int64_t potlut_net_run(const int64_t *plan, const float *x, int64_t N, void **outs,
                       uint8_t *arena, int64_t stride, int64_t keep, int64_t isa,
                       int64_t threads, int64_t *prof);

static void *slurp(const char *path, long *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = aligned_alloc(64, (size_t)((*size + 63) / 64 * 64 + 64));
    if (buf && fread(buf, 1, (size_t)*size, f) != (size_t)*size) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s PLAN X N ISA OUT\n", argv[0]);
        return 2;
    }
    long psize, xsize;
    const int64_t *plan = slurp(argv[1], &psize);
    const float *x = slurp(argv[2], &xsize);
    const int64_t N = atoll(argv[3]), isa = atoll(argv[4]);
    if (!plan || !x || N < 1 || xsize < (long)(N * plan[6] * 4)) {
        fprintf(stderr, "cannot read the plan or the inputs\n");
        return 2;
    }
    const int64_t n_out = plan[7], *outs_id = plan + plan[9];
    void *outs[64];
    int64_t bytes[64];
    for (int64_t k = 0; k < n_out && k < 64; k++) {
        const int64_t *b = plan + plan[8] + 4 * outs_id[k];
        bytes[k] = b[1] * (b[0] == 0 ? 1 : (b[0] == 1 ? 2 : 4));
        outs[k] = malloc((size_t)(bytes[k] * N));
    }
    uint8_t *arena = aligned_alloc(64, (size_t)((plan[4] + 63) / 64 * 64));
    if (potlut_net_run(plan, x, N, outs, arena, (plan[4] + 63) / 64 * 64, 0, isa, 1, NULL)) {
        fprintf(stderr, "the runner refused the plan or the instruction set\n");
        return 1;
    }
    FILE *f = fopen(argv[5], "wb");
    if (!f) return 2;
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < n_out; k++)
            fwrite((uint8_t *)outs[k] + n * bytes[k], 1, (size_t)bytes[k], f);
    fclose(f);
    return 0;
}
