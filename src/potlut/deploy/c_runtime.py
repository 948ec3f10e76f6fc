"""The fixed part of every generated C file: bit reader, S-Huff decoder, requantization,
threshold counting, floor division. Printed once at the top of ``NAME.c`` (all static).

Only the requantization helper multiplies (once per output value, BatchNorm folded into
an integer multiplier, METHODS §4); it is kept out of line so that the low-bit layer
functions themselves hold no multiply instruction.
"""

RUNTIME = r"""
#if defined(__GNUC__)
#define POTLUT_NOINLINE __attribute__((noinline))
#define POTLUT_MAYBE_UNUSED __attribute__((unused))
#else
#define POTLUT_NOINLINE
#define POTLUT_MAYBE_UNUSED
#endif
#define POTLUT_STATIC static POTLUT_MAYBE_UNUSED
#define POTLUT_I32MAX 2147483647

/* the code relies on arithmetic right shifts of negative integers (floor division) */
typedef char potlut_asr_check[((-1) >> 1) == -1 ? 1 : -1];

typedef struct {
    const uint8_t *p;
    uint32_t acc, n;
} potlut_bits;

POTLUT_STATIC uint32_t potlut_get(potlut_bits *b, uint32_t w) {
    while (b->n < w) {
        b->acc = (b->acc << 8) | *b->p++;
        b->n += 8u;
    }
    b->n -= w;
    return (b->acc >> b->n) & ((1u << w) - 1u);
}

/* K signed codes (sign bit, then code) of `width` bits each, MSB first */
POTLUT_STATIC void potlut_row_packed(potlut_bits *b, uint8_t *row, int32_t K, uint32_t width) {
    int32_t k;
    for (k = 0; k < K; k++) row[k] = (uint8_t)potlut_get(b, width);
}

/* S-Huff: canonical Huffman magnitude codes + sign bits of non-zero weights (puff-style) */
POTLUT_STATIC void potlut_row_shuff(potlut_bits *c, potlut_bits *s, const uint16_t *count,
                             const uint8_t *sym, uint32_t maxlen, const uint8_t *nz,
                             uint32_t kb, uint8_t *row, int32_t K) {
    int32_t k;
    for (k = 0; k < K; k++) {
        int32_t code = 0, first = 0, index = 0;
        uint32_t len, v = 0;
        for (len = 1; len <= maxlen; len++) {
            int32_t cnt;
            code |= (int32_t)potlut_get(c, 1);
            cnt = count[len];
            if (code - first < cnt) {
                v = sym[index + code - first];
                break;
            }
            index += cnt;
            first += cnt;
            first <<= 1;
            code <<= 1;
        }
        if (nz[v]) v |= potlut_get(s, 1) << kb;
        row[k] = (uint8_t)v;
    }
}

POTLUT_STATIC int32_t potlut_sat(int64_t v) {
    return (int32_t)(v > POTLUT_I32MAX ? POTLUT_I32MAX
                     : (v < -POTLUT_I32MAX ? -POTLUT_I32MAX : v));
}

/* y = sat(floor((x * M + B) / 2^r)): the one multiply per output value */
POTLUT_STATIC POTLUT_NOINLINE int32_t potlut_requant(int32_t x, int64_t M, int64_t B,
                                                  uint32_t r) {
    return potlut_sat(((int64_t)x * M + B) >> r);
}

/* #{j : thr[j] <= mag} over increasing thresholds */
POTLUT_STATIC uint32_t potlut_count(const uint32_t *thr, uint32_t n, uint32_t mag) {
    uint32_t lo = 0, hi = n;
    if (n <= 16u) {
        for (; lo < n; lo++)
            if (thr[lo] > mag) break;
        return lo;
    }
    while (lo < hi) {
        uint32_t mid = (lo + hi) >> 1;
        if (thr[mid] <= mag) lo = mid + 1u;
        else hi = mid;
    }
    return lo;
}

POTLUT_STATIC int64_t potlut_floordiv(int64_t n, int64_t d) {
    int64_t q = n / d;
    if (n % d != 0 && n < 0) q -= 1;
    return q;
}
"""
