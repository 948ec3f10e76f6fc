/* Bitwise dot products of LS-1/LS-2/LS-T layers (potlut/infer/bitwise.py): per output
 * channel o and position l, acc = (sum_kj cw[k] ca[j] (|M| - 2 |(s_k ^ t_j) & M|)) / 4 with
 * M = wmask[o] & amask[n, l], popcounts by __builtin_popcountll (the CPU's POPCNT). */
#include <stdint.h>

void bitwise_dot(int64_t N, int64_t O, int64_t L, int64_t W, int64_t Pw, int64_t Pa,
                 const uint64_t *wmask, const uint64_t *wsign, const int64_t *cw,
                 const uint64_t *amask, const uint64_t *asign, const int64_t *ca,
                 int64_t *acc) {
    for (int64_t n = 0; n < N; n++) {
        for (int64_t o = 0; o < O; o++) {
            const uint64_t *wm = wmask + o * W;
            for (int64_t l = 0; l < L; l++) {
                const uint64_t *am = amask + (n * L + l) * W;
                int64_t total = 0;
                for (int64_t w = 0; w < W; w++) total += __builtin_popcountll(wm[w] & am[w]);
                int64_t sum = 0;
                for (int64_t k = 0; k < Pw; k++) {
                    const uint64_t *ws = wsign + (k * O + o) * W;
                    for (int64_t j = 0; j < Pa; j++) {
                        const uint64_t *as = asign + ((j * N + n) * L + l) * W;
                        int64_t differ = 0;
                        for (int64_t w = 0; w < W; w++)
                            differ += __builtin_popcountll((ws[w] ^ as[w]) & wm[w] & am[w]);
                        sum += cw[k] * ca[j] * (total - 2 * differ);
                    }
                }
                acc[(n * O + o) * L + l] = sum / 4;
            }
        }
    }
}
