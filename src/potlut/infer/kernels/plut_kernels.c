/* potlut integer engine: one fused layer per call (P-LUT or int8), and the projection of
 * fixed tensors onto codes.  Built at first use by potlut.infer.kernels.cbackend with the
 * system C compiler; the AVX2 code is selected at run time (__builtin_cpu_supports).
 *
 * P-LUT products are table reads, never multiplications:
 *   mode 0  AVX2 byte shuffles (as in T-MAC): the row of the signed-code table for one
 *           weight code (<= 16 entries, int16) is held as its low and high bytes in two
 *           registers; _mm256_shuffle_epi8 with 32 activation codes as indices reads 32
 *           products per pair of shuffles; int16 partial sums are widened to int32 at the
 *           end of each segment of weights whose largest products cannot overflow int16.
 *   mode 1  scalar gather: acc += rows[w][a], any number of codes.
 * mode 2 is the int8 x int8 -> int32 multiply-accumulate of the 8-bit first/last layers.
 * Semantics: potlut/infer/reference.py (bit-exact). */
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define POTLUT_X86 1
#endif

#define I32MAX 2147483647LL

typedef struct {
    int64_t N, C, H, W, O, G, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW;
    int64_t mode;
    const void *x;          /* input codes, NCHW: uint8 (P-LUT) or int16 (int8 mode) */
    const void *wq;         /* [O][K]: uint8 signed weight codes or int16 weight values */
    const int32_t *nz_k;    /* non-zero weights of channel o: nz_k[nz_off[o] .. nz_off[o+1]) */
    const int32_t *nz_off;
    const int32_t *rows;    /* gather: rows[sw * n_act + sa] */
    int64_t n_act;
    const uint8_t *rows16;  /* shuffle: 64 bytes per weight code: lo, lo, hi, hi */
    const int32_t *seg_end; /* shuffle: segment ends (positions in nz_k) of channel o: */
    const int32_t *seg_off; /*   seg_end[seg_off[o] .. seg_off[o+1]) */
    const int64_t *M, *B, *R;
    const int32_t *res;     /* residual [N][O][OH*OW] or NULL */
    int64_t relu;
    int32_t *out_y;         /* [N][O][OH*OW] or NULL */
    void *out_c;            /* codes [N][O][OH*OW] or NULL */
    int64_t code_fmt;       /* -1 none, 0 uint8 sign-magnitude, 1 int16 value */
    const int64_t *thr;
    int64_t n_thr, kbits, code_signed;
    void *cols;             /* scratch [K][pstride] */
    int32_t *acc;           /* scratch [O/G][pstride] */
    int64_t pstride;        /* >= images per chunk * OH*OW, multiple of 64 */
    int64_t chunk;          /* images per chunk */
    /* accumulator thresholds (layers whose output only feeds the next layer's codes):
     * a = flip[o] ? -acc : acc; code = #{j: a > up[o][j]} + #{j: a <= wn[o][j]},
     * negative when the second count is > 0 (wn NULL: no negative side) */
    int64_t acc_thr;
    const int32_t *flip, *up, *wn;
    int32_t *cnt;           /* scratch [2][pstride] */
} LayerArgs;

int64_t potlut_has_avx2(void) {
#ifdef POTLUT_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? 1 : 0;
#else
    return 0;
#endif
}

static inline int64_t sat32(int64_t v) {
    return v > I32MAX ? I32MAX : (v < -I32MAX ? -I32MAX : v);
}

static inline int64_t count_le(const int64_t *thr, int64_t n, int64_t mag) {
    if (n <= 16) {
        int64_t c = 0;
        for (int64_t j = 0; j < n; j++) c += thr[j] <= mag;
        return c;
    }
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = (lo + hi) >> 1;
        if (thr[mid] <= mag) lo = mid + 1; else hi = mid;
    }
    return lo;
}

static inline void put_code(void *out, int64_t idx, int64_t y, int64_t fmt, const int64_t *thr,
                            int64_t n_thr, int64_t kbits, int64_t sgn) {
    int64_t mag = sgn ? (y < 0 ? -y : y) : (y > 0 ? y : 0);
    int64_t c = count_le(thr, n_thr, mag);
    int neg = sgn && y < 0 && c > 0;
    if (fmt == 0) ((uint8_t *)out)[idx] = (uint8_t)(c | (neg ? (1LL << kbits) : 0));
    else ((int16_t *)out)[idx] = (int16_t)(neg ? -c : c);
}

void potlut_quantize(const int32_t *y, int64_t n, void *out, int64_t fmt, const int64_t *thr,
                     int64_t n_thr, int64_t kbits, int64_t sgn) {
    for (int64_t i = 0; i < n; i++) put_code(out, i, y[i], fmt, thr, n_thr, kbits, sgn);
}

/* im2col of group g for images n0 .. n0+nimg-1: cols[k][i*OHW + p], zero tail to pstride */
#define IM2COL(T)                                                                          \
    static void im2col_##T(const LayerArgs *a, int64_t g, int64_t n0, int64_t nimg,        \
                           T *cols, int64_t pend) {                                        \
        const T *x = (const T *)a->x;                                                      \
        const int64_t Cg = a->C / a->G, OHW = a->OH * a->OW, OW = a->OW, SW = a->SW;       \
        int64_t k = 0;                                                                     \
        for (int64_t c = g * Cg; c < (g + 1) * Cg; c++)                                    \
            for (int64_t i = 0; i < a->KH; i++)                                            \
                for (int64_t j = 0; j < a->KW; j++, k++) {                                 \
                    T *dst = cols + k * a->pstride;                                        \
                    /* output columns whose input column is inside the image */            \
                    const int64_t off = j * a->DW - a->PW;                                 \
                    int64_t lo = off >= 0 ? 0 : (-off + SW - 1) / SW;                      \
                    int64_t hi = a->W - 1 - off < 0 ? 0 : (a->W - 1 - off) / SW + 1;       \
                    if (lo > OW) lo = OW;                                                  \
                    if (hi > OW) hi = OW;                                                  \
                    if (hi < lo) hi = lo;                                                  \
                    for (int64_t m = 0; m < nimg; m++) {                                   \
                        const T *src = x + ((n0 + m) * a->C + c) * a->H * a->W;            \
                        for (int64_t oy = 0; oy < a->OH; oy++) {                           \
                            const int64_t iy = oy * a->SH - a->PH + i * a->DH;             \
                            T *d = dst + m * OHW + oy * OW;                                \
                            if (iy < 0 || iy >= a->H) {                                    \
                                memset(d, 0, sizeof(T) * OW);                              \
                                continue;                                                  \
                            }                                                              \
                            const T *s = src + iy * a->W + off;                            \
                            if (lo) memset(d, 0, sizeof(T) * lo);                          \
                            if (SW == 1) memcpy(d + lo, s + lo, sizeof(T) * (hi - lo));    \
                            else for (int64_t ox = lo; ox < hi; ox++) d[ox] = s[ox * SW];  \
                            if (hi < OW) memset(d + hi, 0, sizeof(T) * (OW - hi));         \
                        }                                                                  \
                    }                                                                      \
                    if (pend > nimg * OHW)                                                 \
                        memset(dst + nimg * OHW, 0, sizeof(T) * (pend - nimg * OHW));      \
                }                                                                          \
    }
IM2COL(uint8_t)
IM2COL(int16_t)

static void gemm_gather(const LayerArgs *a, int64_t g, int64_t Og, int64_t K, int64_t P,
                        const uint8_t *cols) {
    const uint8_t *wq = (const uint8_t *)a->wq;
    for (int64_t oo = 0; oo < Og; oo++) {
        int64_t o = g * Og + oo;
        int32_t *acc = a->acc + oo * a->pstride;
        memset(acc, 0, sizeof(int32_t) * P);
        for (int32_t t = a->nz_off[o]; t < a->nz_off[o + 1]; t++) {
            int64_t k = a->nz_k[t];
            const int32_t *row = a->rows + (int64_t)wq[o * K + k] * a->n_act;
            const uint8_t *col = cols + k * a->pstride;
            for (int64_t p = 0; p < P; p++) acc[p] += row[col[p]];
        }
    }
}

static void gemm_int8(const LayerArgs *a, int64_t g, int64_t Og, int64_t K, int64_t P,
                      const int16_t *cols) {
    const int16_t *wq = (const int16_t *)a->wq;
    for (int64_t oo = 0; oo < Og; oo++) {
        int64_t o = g * Og + oo;
        int32_t *acc = a->acc + oo * a->pstride;
        memset(acc, 0, sizeof(int32_t) * P);
        for (int32_t t = a->nz_off[o]; t < a->nz_off[o + 1]; t++) {
            int64_t k = a->nz_k[t];
            int32_t w = wq[o * K + k];
            const int16_t *col = cols + k * a->pstride;
            for (int64_t p = 0; p < P; p++) acc[p] += w * (int32_t)col[p];
        }
    }
}

#ifdef POTLUT_X86
#define WIDEN(c32, lo, hi, s, t)                                                           \
    do {                                                                                   \
        c32[lo] = _mm256_add_epi32(c32[lo], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(s))); \
        c32[hi] = _mm256_add_epi32(c32[hi], _mm256_cvtepi16_epi32(_mm256_extracti128_si256(s, 1))); \
        (void)t;                                                                           \
    } while (0)

/* 64 (or, at the tail, 32) pixels x one output channel at a time; see the file header */
__attribute__((target("avx2"))) static void gemm_shuffle(const LayerArgs *a, int64_t g,
                                                         int64_t Og, int64_t K, int64_t Pp,
                                                         const uint8_t *cols) {
    const uint8_t *wq = (const uint8_t *)a->wq;
    const int64_t ps = a->pstride;
    for (int64_t p0 = 0; p0 < Pp; p0 += 64) {
        const int full = Pp - p0 >= 64;
        for (int64_t oo = 0; oo < Og; oo++) {
            const int64_t o = g * Og + oo;
            const uint8_t *wrow = wq + o * K;
            __m256i c32[8];
            for (int q = 0; q < 8; q++) c32[q] = _mm256_setzero_si256();
            int32_t t = a->nz_off[o];
            for (int32_t sg = a->seg_off[o]; sg < a->seg_off[o + 1]; sg++) {
                const int32_t e = a->seg_end[sg];
                __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
                if (full) {
                    for (; t < e; t++) {
                        const int64_t k = a->nz_k[t];
                        const __m256i *rp = (const __m256i *)(a->rows16 + (int64_t)wrow[k] * 64);
                        const __m256i lo = _mm256_loadu_si256(rp), hi = _mm256_loadu_si256(rp + 1);
                        const uint8_t *ap = cols + k * ps + p0;
                        const __m256i a0 = _mm256_loadu_si256((const __m256i *)ap);
                        const __m256i a1 = _mm256_loadu_si256((const __m256i *)(ap + 32));
                        const __m256i l0 = _mm256_shuffle_epi8(lo, a0), h0 = _mm256_shuffle_epi8(hi, a0);
                        const __m256i l1 = _mm256_shuffle_epi8(lo, a1), h1 = _mm256_shuffle_epi8(hi, a1);
                        s0 = _mm256_add_epi16(s0, _mm256_unpacklo_epi8(l0, h0));
                        s1 = _mm256_add_epi16(s1, _mm256_unpackhi_epi8(l0, h0));
                        s2 = _mm256_add_epi16(s2, _mm256_unpacklo_epi8(l1, h1));
                        s3 = _mm256_add_epi16(s3, _mm256_unpackhi_epi8(l1, h1));
                    }
                } else {
                    for (; t < e; t++) {
                        const int64_t k = a->nz_k[t];
                        const __m256i *rp = (const __m256i *)(a->rows16 + (int64_t)wrow[k] * 64);
                        const __m256i lo = _mm256_loadu_si256(rp), hi = _mm256_loadu_si256(rp + 1);
                        const __m256i a0 = _mm256_loadu_si256((const __m256i *)(cols + k * ps + p0));
                        const __m256i l0 = _mm256_shuffle_epi8(lo, a0), h0 = _mm256_shuffle_epi8(hi, a0);
                        s0 = _mm256_add_epi16(s0, _mm256_unpacklo_epi8(l0, h0));
                        s1 = _mm256_add_epi16(s1, _mm256_unpackhi_epi8(l0, h0));
                    }
                }
                /* s0: pixels 0-7 | 16-23, s1: 8-15 | 24-31, s2: 32-39 | 48-55, s3: 40-47 | 56-63 */
                WIDEN(c32, 0, 2, s0, 0);
                WIDEN(c32, 1, 3, s1, 0);
                WIDEN(c32, 4, 6, s2, 0);
                WIDEN(c32, 5, 7, s3, 0);
            }
            int32_t *acc = a->acc + oo * ps + p0;
            for (int q = 0; q < (full ? 8 : 4); q++)
                _mm256_storeu_si256((__m256i *)(acc + 8 * q), c32[q]);
        }
    }
}
#endif

static void epilogue(const LayerArgs *a, int64_t g, int64_t Og, int64_t n0, int64_t nimg) {
    const int64_t OHW = a->OH * a->OW;
    for (int64_t oo = 0; oo < Og; oo++) {
        const int64_t o = g * Og + oo;
        const int64_t M = a->M[o], B = a->B[o], R = a->R[o];
        const int32_t *acc = a->acc + oo * a->pstride;
        for (int64_t m = 0; m < nimg; m++) {
            const int64_t base = ((n0 + m) * a->O + o) * OHW;
            for (int64_t p = 0; p < OHW; p++) {
                int64_t y = sat32(((int64_t)acc[m * OHW + p] * M + B) >> R);
                if (a->res) y = sat32(y + a->res[base + p]);
                if (a->relu && y < 0) y = 0;
                if (a->out_y) a->out_y[base + p] = (int32_t)y;
                if (a->code_fmt >= 0)
                    put_code(a->out_c, base + p, y, a->code_fmt, a->thr, a->n_thr, a->kbits,
                             a->code_signed);
            }
        }
    }
}

/* codes straight from the accumulator: exact per-channel thresholds (see engine.py) */
static void epilogue_acc_thr(const LayerArgs *a, int64_t g, int64_t Og, int64_t n0,
                             int64_t nimg) {
    const int64_t OHW = a->OH * a->OW, P = nimg * OHW, n = a->n_thr;
    int32_t *cp = a->cnt, *cn = a->cnt + a->pstride;
    for (int64_t oo = 0; oo < Og; oo++) {
        const int64_t o = g * Og + oo;
        int32_t *acc = a->acc + oo * a->pstride;
        if (a->flip[o])
            for (int64_t p = 0; p < P; p++) acc[p] = -acc[p];
        for (int64_t p = 0; p < P; p++) cp[p] = 0;
        for (int64_t j = 0; j < n; j++) {
            const int32_t u = a->up[o * n + j];
            for (int64_t p = 0; p < P; p++) cp[p] += acc[p] > u;
        }
        if (a->wn) {
            for (int64_t p = 0; p < P; p++) cn[p] = 0;
            for (int64_t j = 0; j < n; j++) {
                const int32_t w = a->wn[o * n + j];
                for (int64_t p = 0; p < P; p++) cn[p] += acc[p] <= w;
            }
        }
        for (int64_t m = 0; m < nimg; m++) {
            const int64_t base = ((n0 + m) * a->O + o) * OHW;
            const int32_t *c0 = cp + m * OHW, *c1 = cn + m * OHW;
            if (a->code_fmt == 0) {
                uint8_t *out = (uint8_t *)a->out_c + base;
                if (a->wn) {
                    const uint8_t sb = (uint8_t)(1u << a->kbits);
                    for (int64_t p = 0; p < OHW; p++)
                        out[p] = (uint8_t)(c0[p] + c1[p]) | (c1[p] > 0 ? sb : 0);
                } else {
                    for (int64_t p = 0; p < OHW; p++) out[p] = (uint8_t)c0[p];
                }
            } else {
                int16_t *out = (int16_t *)a->out_c + base;
                for (int64_t p = 0; p < OHW; p++)
                    out[p] = (int16_t)(a->wn ? c0[p] - c1[p] : c0[p]);
            }
        }
    }
}

int64_t potlut_layer(const LayerArgs *a) {
    const int64_t OHW = a->OH * a->OW, Og = a->O / a->G;
    const int64_t K = (a->C / a->G) * a->KH * a->KW;
    for (int64_t n0 = 0; n0 < a->N; n0 += a->chunk) {
        const int64_t nimg = a->N - n0 < a->chunk ? a->N - n0 : a->chunk;
        const int64_t P = nimg * OHW, Pp = (P + 31) / 32 * 32;
        for (int64_t g = 0; g < a->G; g++) {
            if (a->mode == 2) {
                im2col_int16_t(a, g, n0, nimg, (int16_t *)a->cols, P);
                gemm_int8(a, g, Og, K, P, (const int16_t *)a->cols);
            } else if (a->mode == 1) {
                im2col_uint8_t(a, g, n0, nimg, (uint8_t *)a->cols, P);
                gemm_gather(a, g, Og, K, P, (const uint8_t *)a->cols);
            } else {
#ifdef POTLUT_X86
                im2col_uint8_t(a, g, n0, nimg, (uint8_t *)a->cols, Pp);
                gemm_shuffle(a, g, Og, K, Pp, (const uint8_t *)a->cols);
#else
                return -1;
#endif
            }
            if (a->acc_thr) epilogue_acc_thr(a, g, Og, n0, nimg);
            else epilogue(a, g, Og, n0, nimg);
        }
    }
    return 0;
}
