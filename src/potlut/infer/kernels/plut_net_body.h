/* One instruction set's copy of the whole-network runner (included by plut_net.c once per
 * ISA, under that ISA's target pragma, with SFX naming the copy and ISA_AVX2 / ISA_AVX512 /
 * ISA_NEON saying which table-lookup kernels exist).  Everything here is per image. */

#define FN(name) CAT(name, SFX)

static inline int64_t FN(count_le)(const int64_t *thr, int64_t n, int64_t mag) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = (lo + hi) >> 1;
        if (thr[mid] <= mag) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* per lane, how many of the n thresholds t lie below v (strict: t < v) or at most v (t <= v);
 * under AVX-512 with at most 15 ascending thresholds (asc): a binary search in one register
 * (padded with INT32_MAX, which no value exceeds; t <= v as t - 1 < v, so a non-strict t
 * must exceed INT32_MIN): for steps 2^k .. 1 (2^k the largest power of two <= n), c +=
 * step where t[c + step - 1] is counted, one vpermd and one compare a step (7 thresholds:
 * 3 steps instead of 7 compares); else a compare into a mask and a masked subtract of -1
 * per threshold (GCC makes three instructions of the generic vector form) */
static inline VI32 FN(count_thr)(VI32 v, const int32_t *t, int64_t n, int strict, int asc) {
#if ISA_AVX512
    const __m512i vv = (__m512i)v, m1 = _mm512_set1_epi32(-1);
    __m512i c = _mm512_setzero_si512();
    if (asc && n > 0 && n <= 15 && (strict || t[0] != INT32_MIN)) {
        const __mmask16 real = (__mmask16)((1u << n) - 1);
        __m512i tab = _mm512_mask_loadu_epi32(_mm512_set1_epi32(INT32_MAX), real, t);
        if (!strict) tab = _mm512_mask_add_epi32(tab, real, tab, m1);
        for (int step = n >= 8 ? 8 : n >= 4 ? 4 : n >= 2 ? 2 : 1; step; step >>= 1) {
            const __m512i at = _mm512_permutexvar_epi32(
                _mm512_add_epi32(c, _mm512_set1_epi32(step - 1)), tab);
            c = _mm512_mask_add_epi32(c, _mm512_cmplt_epi32_mask(at, vv), c,
                                      _mm512_set1_epi32(step));
        }
        return (VI32)c;
    }
    if (strict)
        for (int64_t j = 0; j < n; j++)
            c = _mm512_mask_sub_epi32(c, _mm512_cmpgt_epi32_mask(vv, _mm512_set1_epi32(t[j])), c, m1);
    else
        for (int64_t j = 0; j < n; j++)
            c = _mm512_mask_sub_epi32(c, _mm512_cmpge_epi32_mask(vv, _mm512_set1_epi32(t[j])), c, m1);
    return (VI32)c;
#else
    VI32 c = {0};
    (void)asc;
    if (strict)
        for (int64_t j = 0; j < n; j++) c -= v > VB(t[j]);
    else
        for (int64_t j = 0; j < n; j++) c -= VB(t[j]) <= v;
    return c;
#endif
}

/* per lane, the code of fixed value v: #{thresholds <= |v|} (T: thr32_of), signed as the
 * format wants (0: sign-magnitude with sign bit sb, 1: signed int16 value) */
static inline VI32 FN(code_lanes)(VI32 v, const Thr32 *T, int64_t fmt, int64_t sb, int64_t sgn) {
    const VI32 low = v < VB(-I32MAX);
    v = (low & VB(-I32MAX)) | (~low & v);
    const VI32 neg = sgn ? v < VB(0) : VB(0);
    const VI32 mag = (neg & -v) | (~neg & v & ~(v < VB(0)));
    const VI32 c = FN(count_thr)(mag, T->t, T->n, 0, T->asc);
    return fmt == 0 ? (c | (neg & (c > VB(0)) & VB(sb))) : ((neg & -c) | (~neg & c));
}

/* the first m (<= VL) lanes of codes to out (uint8 or int16 by the format) */
static inline void FN(store_codes)(void *out, VI32 code, int64_t m, int64_t fmt) {
    if (fmt == 0) {
        const VU8 c8 = __builtin_convertvector(code, VU8);
        if (m == VL) memcpy(out, &c8, sizeof c8); /* a constant size: one store */
        else memcpy(out, &c8, (size_t)m);
    } else {
        const VI16 c16 = __builtin_convertvector(code, VI16);
        if (m == VL) memcpy(out, &c16, sizeof c16);
        else memcpy(out, &c16, (size_t)(2 * m));
    }
}

/* VL lanes of n - i0 values from p + i0 (zeros past the end) */
static inline VI32 FN(load_lanes)(const int32_t *p, int64_t i0, int64_t n) {
    VI32 v = {0};
    if (n - i0 >= VL) {
        memcpy(&v, p + i0, sizeof v);
    } else {
        int32_t b[VL] = {0};
        for (int64_t i = 0; i < n - i0; i++) b[i] = p[i0 + i];
        memcpy(&v, b, sizeof v);
    }
    return v;
}

/* codes of n fixed values y: #{thresholds <= |y|} (sign as the format wants).  Up to 32
 * thresholds (256 with 16 lanes): counted by VL-lane compares in int32; more: a binary
 * search per value */
static void FN(codes_of)(const int32_t *y, int64_t n, void *out, int64_t fmt, const int64_t *thr,
                         int64_t n_thr, int64_t kbits, int64_t sgn) {
    const int64_t sb = 1 << kbits, es = fmt == 0 ? 1 : 2;
    /* wide vectors count up to 256 thresholds faster than a branchy search per value */
    if (n_thr <= 32 || (VL >= 16 && n_thr <= 256)) {
        Thr32 T;
        thr32_of(&T, thr, n_thr);
        for (int64_t i0 = 0; i0 < n; i0 += VL)
            FN(store_codes)((uint8_t *)out + es * i0,
                            FN(code_lanes)(FN(load_lanes)(y, i0, n), &T, fmt, sb, sgn),
                            n - i0 < VL ? n - i0 : VL, fmt);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        const int64_t v = y[i];
        const int64_t mag = sgn ? (v < 0 ? -v : v) : (v > 0 ? v : 0);
        const int32_t cnt = (int32_t)FN(count_le)(thr, n_thr, mag);
        if (fmt == 0)
            ((uint8_t *)out)[i] = (uint8_t)(cnt | ((sgn && v < 0 && cnt > 0) ? sb : 0));
        else
            ((int16_t *)out)[i] = (int16_t)((sgn && v < 0) ? -cnt : cnt);
    }
}

static void FN(op_inputq)(const int64_t *f, const int64_t *plan, const float *x, uint8_t *arena) {
    void *dst = BUF(arena, plan, f[0]);
    const int64_t n = f[1], nm = f[3], fmt = f[4], kbits = f[5], sgn = f[6];
    const double *mids = (const double *)(plan + f[2]);
    /* guess from the mean spacing of the thresholds, then step to the exact count */
    const double m0 = nm ? mids[0] : 0.0;
    const double inv = nm > 1 && mids[nm - 1] > m0 ? (double)(nm - 1) / (mids[nm - 1] - m0) : 0.0;
    int64_t i = 0;
#if ISA_AVX512
    /* eight values at a time: the same guess, then masked steps (gathers of mids) down and
     * up until every lane holds the exact count */
    if (nm > 0) {
        const __m512d vm0 = _mm512_set1_pd(m0), vinv = _mm512_set1_pd(inv);
        const __m512d one = _mm512_set1_pd(1.0), vnm = _mm512_set1_pd((double)nm);
        const __m512i inm = _mm512_set1_epi64(nm), i1 = _mm512_set1_epi64(1);
        for (; i + 8 <= n; i += 8) {
            const __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(x + i));
            const __m512d mag = sgn ? _mm512_abs_pd(v) : _mm512_max_pd(v, _mm512_setzero_pd());
            __m512d g = _mm512_add_pd(_mm512_mul_pd(_mm512_sub_pd(mag, vm0), vinv), one);
            g = _mm512_min_pd(_mm512_max_pd(g, _mm512_setzero_pd()), vnm);
            __m512i lo = _mm512_cvttpd_epi64(g);
            for (;;) { /* while lo > 0 and mids[lo - 1] > mag: lo-- */
                __mmask8 k = _mm512_cmpgt_epi64_mask(lo, _mm512_setzero_si512());
                const __m512i lm1 = _mm512_sub_epi64(lo, i1);
                const __m512d mv = _mm512_mask_i64gather_pd(mag, k, lm1, mids, 8);
                k = _mm512_mask_cmp_pd_mask(k, mv, mag, _CMP_GT_OQ);
                if (!k) break;
                lo = _mm512_mask_mov_epi64(lo, k, lm1);
            }
            for (;;) { /* while lo < nm and mids[lo] <= mag: lo++ */
                __mmask8 k = _mm512_cmplt_epi64_mask(lo, inm);
                const __m512d mv = _mm512_mask_i64gather_pd(mag, k, lo, mids, 8);
                k = _mm512_mask_cmp_pd_mask(k, mv, mag, _CMP_LE_OQ);
                if (!k) break;
                lo = _mm512_mask_add_epi64(lo, k, lo, i1);
            }
            const __mmask8 neg = sgn ? _mm512_mask_cmp_pd_mask(
                _mm512_cmpgt_epi64_mask(lo, _mm512_setzero_si512()), v, _mm512_setzero_pd(),
                _CMP_LT_OQ) : 0;
            if (fmt == 0) {
                const __m512i c = _mm512_mask_or_epi64(lo, neg, lo,
                                                       _mm512_set1_epi64(1LL << kbits));
                _mm512_mask_cvtepi64_storeu_epi8((uint8_t *)dst + i, 0xFF, c);
            } else {
                const __m512i c = _mm512_mask_sub_epi64(lo, neg, _mm512_setzero_si512(), lo);
                _mm512_mask_cvtepi64_storeu_epi16((int16_t *)dst + i, 0xFF, c);
            }
        }
    }
#endif
    for (; i < n; i++) {
        const double v = x[i];
        const double mag = sgn ? (v < 0 ? -v : v) : (v > 0 ? v : 0);
        double g = (mag - m0) * inv + 1.0;
        int64_t lo = g <= 0.0 ? 0 : (g >= (double)nm ? nm : (int64_t)g);
        while (lo > 0 && mids[lo - 1] > mag) lo--;      /* searchsorted right: */
        while (lo < nm && mids[lo] <= mag) lo++;        /* #mids <= mag, exactly */
        const int neg = sgn && v < 0 && lo > 0;
        if (fmt == 0) ((uint8_t *)dst)[i] = (uint8_t)(lo | (neg ? (1LL << kbits) : 0));
        else ((int16_t *)dst)[i] = (int16_t)(neg ? -lo : lo);
    }
}

static inline int64_t FN(sat)(int64_t v) {
    return v > I32MAX ? I32MAX : (v < -I32MAX ? -I32MAX : v);
}

static inline int64_t FN(floordiv)(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* ---------------------------------------------------------------- layer: input planes */

/* a layer's activation-value table (shift-add planes) in the form lut_row loads: 64
 * int8 (es 1) or 32 int16 (es 2) entries for AVX-512, low and high bytes of 16 entries
 * for AVX2; built once per layer, not once per row */
#ifndef POTLUT_LUTTAB
#define POTLUT_LUTTAB
typedef struct {
    union { int8_t b[64]; int16_t w[32]; uint8_t lohi[32]; } t __attribute__((aligned(64)));
    const int16_t *lut;
    int64_t A, es, vec;
} LutTab;
#endif

static void FN(lut_tab)(LutTab *tb, const int16_t *lut, int64_t A, int64_t es) {
    memset(&tb->t, 0, sizeof tb->t);
    tb->lut = lut;
    tb->A = A;
    tb->es = es;
    tb->vec = 0;
#if ISA_AVX512
    if (es == 1 && A <= 64) {
        for (int64_t k = 0; k < A; k++) tb->t.b[k] = (int8_t)lut[k];
        tb->vec = 1;
    } else if (es == 2 && A <= 32) {
        for (int64_t k = 0; k < A; k++) tb->t.w[k] = lut[k];
        tb->vec = 1;
    }
#elif ISA_AVX2
    if (A <= 16) {
        for (int64_t k = 0; k < A; k++) {
            tb->t.lohi[k] = (uint8_t)((uint16_t)lut[k] & 0xFF);
            tb->t.lohi[16 + k] = (uint8_t)((uint16_t)lut[k] >> 8);
        }
        tb->vec = 1;
    }
#endif
}

/* signed activation values of n codes (shift-add planes): one table permute per vector */
static inline void FN(lut_row)(void *dst, const uint8_t *src, int64_t n, const LutTab *tb) {
    int64_t x = 0;
    const int64_t es = tb->es;
#if ISA_AVX512
    if (tb->vec && es == 1) {
        const __m512i tab = _mm512_load_si512((const void *)tb->t.b);
        for (; x < n; x += 64) {
            const __mmask64 m = n - x >= 64 ? ~0ULL : ((1ULL << (n - x)) - 1);
            const __m512i c = _mm512_maskz_loadu_epi8(m, src + x);
            _mm512_mask_storeu_epi8((int8_t *)dst + x, m, _mm512_permutexvar_epi8(c, tab));
        }
        return;
    }
    if (tb->vec) {
        const __m512i tab = _mm512_load_si512((const void *)tb->t.w);
        for (; x < n; x += 32) {
            const __mmask32 m = n - x >= 32 ? ~0U : ((1U << (n - x)) - 1);
            const __m512i c = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(m, src + x));
            _mm512_mask_storeu_epi16((int16_t *)dst + x, m, _mm512_permutexvar_epi16(c, tab));
        }
        return;
    }
#elif ISA_AVX2
    if (tb->vec) {
        const __m128i tl = _mm_load_si128((const __m128i *)tb->t.lohi);
        const __m128i th = _mm_load_si128((const __m128i *)(tb->t.lohi + 16));
        for (; x + 16 <= n; x += 16) {
            const __m128i c = _mm_loadu_si128((const __m128i *)(src + x));
            const __m128i l = _mm_shuffle_epi8(tl, c);
            if (es == 1) {
                _mm_storeu_si128((__m128i *)((int8_t *)dst + x), l);
            } else {
                const __m128i h = _mm_shuffle_epi8(th, c);
                _mm_storeu_si128((__m128i *)((int16_t *)dst + x), _mm_unpacklo_epi8(l, h));
                _mm_storeu_si128((__m128i *)((int16_t *)dst + x + 8), _mm_unpackhi_epi8(l, h));
            }
        }
    }
#endif
    const int16_t *lut = tb->lut;
    if (es == 1)
        for (; x < n; x++) ((int8_t *)dst)[x] = (int8_t)lut[src[x]];
    else
        for (; x < n; x++) ((int16_t *)dst)[x] = lut[src[x]];
}

#if ISA_AVX512
/* prep for one image whose channels' codes fit one vector (H * W <= 64: 8x8 maps): the
 * channel's signed values are one or two table permutes, and every 64-byte chunk of a
 * copy is one permute of them by an index (and a zero mask for the padding) made once per
 * call: 12 permutes and stores a channel of a 3x3 layer, against one masked load, permute
 * and store per copy row (30 rows plain, 48 phased) */
#define SMALL_CHUNKS 32
static void FN(prep_small)(const int64_t *f, const Grp *g, const uint8_t *src,
                           uint8_t *planes, int64_t es, const LutTab *tb, int64_t c0,
                           int64_t c1, int64_t used, int64_t cs) {
    const int64_t H = L_H, W = L_W, SH = L_SH, SW = L_SW, PH = L_PH, PW = L_PW, R = L_HPH;
    const int64_t KW = f[10], DW = f[16], OW = L_WPH, nq = KW * SH, ce = 64 / es;
    const int64_t nck = (used + ce - 1) / ce;
    uint8_t idx[SMALL_CHUNKS][64] __attribute__((aligned(64)));
    __mmask64 msk[SMALL_CHUNKS];
    const int lg = es == 1 ? 6 : 5; /* log2(ce) */
    memset(idx, 0, (size_t)(64 * nq * nck));
    memset(msk, 0, sizeof(__mmask64) * (size_t)(nq * nck));
    for (int64_t q = 0; q < nq; q++) {
        const int64_t kx = q / SH, ph = q % SH;
        for (int64_t d = 0; d < used / OW; d++) {
            const int64_t r = phased_row(f, g, d), iy = r * SH + ph - PH;
            if (r >= R || iy < 0 || iy >= H) continue;
            for (int64_t ox = 0; ox < OW; ox++) {
                const int64_t ix = ox * SW + kx * DW - PW, e = d * OW + ox;
                const int64_t k = q * nck + (e >> lg), l = e & (ce - 1);
                if (ix < 0 || ix >= W) continue;
                msk[k] |= 1ULL << l;
                if (es == 1) idx[k][l] = (uint8_t)(iy * W + ix);
                else ((uint16_t *)idx[k])[l] = (uint16_t)(iy * W + ix);
            }
        }
    }
    const __m512i tab = _mm512_load_si512((const void *)tb->t.b);
    const __mmask64 mcd = H * W == 64 ? ~0ULL : ((1ULL << (H * W)) - 1);
    for (int64_t c = c0; c < c1; c++) {
        const __m512i cd = _mm512_maskz_loadu_epi8(mcd, src + c * H * W);
        __m512i lo, hi = _mm512_setzero_si512();
        if (es == 1) {
            lo = _mm512_permutexvar_epi8(cd, tab);
        } else {
            lo = _mm512_permutexvar_epi16(_mm512_cvtepu8_epi16(_mm512_castsi512_si256(cd)), tab);
            hi = _mm512_permutexvar_epi16(
                _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(cd, 1)), tab);
        }
        for (int64_t q = 0, k = 0; q < nq; q++) {
            uint8_t *cp = planes + es * ((c - c0) * nq + q) * cs;
            for (int64_t i = 0; i < nck; i++, k++) {
                const __m512i ix = _mm512_load_si512((const void *)idx[k]);
                const __m512i v = es == 1 ? _mm512_maskz_permutexvar_epi8(msk[k], ix, lo)
                                          : _mm512_maskz_permutex2var_epi16(
                                                (__mmask32)msk[k], lo, ix, hi);
                const int64_t left = es * (cs - i * ce); /* bytes of the copy from here */
                _mm512_mask_storeu_epi8(cp + 64 * i, left >= 64 ? ~0ULL : ((1ULL << left) - 1),
                                        v);
            }
            if (nck * ce < cs) memset(cp + es * nck * ce, 0, (size_t)(es * (cs - nck * ce)));
        }
    }
}
#endif

/* codes of channels c0..c1 of [C][H][W] -> input copies [c1 - c0][KW*SH][NS][R][OW] (copy
 * q = kx * SH + row phase, R = L_HPH rows of OW = L_WPH, NS image slots a copy_stride
 * apart; zero where the padding is, and zero slack), element es bytes (1: u8 codes or int8
 * values, 2: u16 codes or int16 values): copy (kx, ph) holds input (r * SH + ph - PH,
 * ox * SW + kx * DW - PW) at [r][ox], so tap (ky, kx) of output position p = oy * OW + ox
 * reads copy + pix[t] + p. An interleaved sub-batch (g->ilv) stores [R][NS][OW] instead: a
 * row of every slot's image, then the next, so that on 8-wide maps a tap's row offset is a
 * whole 64-byte line. lut (shift-add): codes become their signed values. */
__attribute__((noinline)) static void FN(prep)(const int64_t *f, const Grp *g, const void *src,
                                               uint8_t *planes, int64_t es,
                                               const int16_t *lut, int64_t c0, int64_t c1) {
    const int64_t H = L_H, W = L_W, SH = L_SH, SW = L_SW, PH = L_PH, PW = L_PW, C = c1 - c0;
    const int64_t KW = f[10], DW = f[16], R = L_HPH, OW = L_WPH, NB = g->B, NS = g->slots;
    const int64_t plane = R * OW, used = copy_len(f, g), cs = copy_stride(1, used), nq = KW * SH;
    /* interleaved sub-batch: row r of image b at r * RS + b * OW, else at b * plane + r * OW */
    const int64_t RS = g->ilv ? NS * OW : OW, IS = g->ilv ? OW : plane;
    /* phased rows (one image): row d of the copy holds input row phased_row(d) */
    const int64_t ND = g->rpl ? used / OW : R;
    const int64_t total = C * nq * cs + PST(f) + 64;
    const int in16 = L_MODE == 1;
    LutTab tb;
    if (lut) FN(lut_tab)(&tb, lut, L_A, es);
#if ISA_AVX512
    uint8_t si[64] __attribute__((aligned(64)));
    for (int i = 0; i < 64; i++) si[i] = (uint8_t)((2 * i) & 63);
    const __m512i sidx2 = _mm512_load_si512((const void *)si);
#endif
    /* zeros only where no input lands: padding rows and columns, gaps, the slack */
    memset(planes + es * C * nq * cs, 0, (size_t)((total - C * nq * cs) * es));
#if ISA_AVX512
    if (lut && tb.vec && NB == 1 && !g->ilv && H * W <= 64 &&
        KW * SH * ((es * used + 63) / 64) <= SMALL_CHUNKS) {
        FN(prep_small)(f, g, (const uint8_t *)src, planes, es, &tb, c0, c1, used, cs);
        return;
    }
#endif
    for (int64_t cl = 0; cl < C; cl++)
    for (int64_t kx = 0; kx < KW; kx++) {
        const int64_t c = c0 + cl, dc = kx * DW - PW; /* input column of ox: ox * SW + dc */
        const int64_t lo = dc >= 0 ? 0 : (-dc + SW - 1) / SW;
        const int64_t hi0 = W - 1 - dc < 0 ? 0 : (W - 1 - dc) / SW + 1;
        const int64_t hi = hi0 < OW ? hi0 : OW, n = hi - lo;
#if ISA_AVX512
        /* shift-add rows (stride 1 or 2) of at most 64 bytes: one masked load of the codes
         * (lanes outside the run neither read nor kept), for stride 2 one byte permute
         * picking every other code, one table permute, one store of the whole row */
        const __mmask64 mx = n <= 0 ? 0 : n >= 64 ? ~0ULL : (((1ULL << n) - 1) << lo);
        __mmask64 mld = mx;
        if (SW == 2) {
            mld = 0;
            for (int64_t x = lo; x < hi; x++) mld |= 1ULL << (2 * x);
        }
        const int fast_lut = lut && tb.vec && (SW == 1 || SW == 2) && SW * OW <= 64 &&
                             es * OW <= 64;
#endif
        for (int64_t ph = 0; ph < SH; ph++)
        for (int64_t b = 0; b < NB; b++) {
            const uint8_t *sb = (const uint8_t *)src + b * g->istride;
            const int64_t cb = (cl * nq + kx * SH + ph) * cs, q0 = cb + b * IS;
            if (b == NB - 1 && cs > used) /* the gap up to the next copy */
                memset(planes + es * (cb + used), 0, (size_t)(es * (cs - used)));
#if ISA_AVX512
            if (fast_lut) {
                const __mmask64 mrow = es * OW == 64 ? ~0ULL : ((1ULL << (es * OW)) - 1);
                const __m512i tab = _mm512_load_si512((const void *)tb.t.b);
                for (int64_t d = 0; d < ND; d++) {
                    const int64_t r = phased_row(f, g, d), iy = r < R ? r * SH + ph - PH : -1;
                    uint8_t *row = planes + es * (q0 + d * RS);
                    __m512i v = _mm512_setzero_si512();
                    if (iy >= 0 && iy < H && n > 0) {
                        __m512i cd = _mm512_maskz_loadu_epi8(mld, sb + (c * H + iy) * W + dc);
                        if (SW == 2) cd = _mm512_permutexvar_epi8(sidx2, cd);
                        if (es == 1)
                            v = _mm512_maskz_permutexvar_epi8(mx, cd, tab);
                        else
                            v = _mm512_maskz_permutexvar_epi16(
                                (__mmask32)mx, _mm512_cvtepu8_epi16(_mm512_castsi512_si256(cd)),
                                tab);
                    }
                    _mm512_mask_storeu_epi8(row, mrow, v);
                }
                continue;
            }
            /* short rows of plain copies: each row (zeros, the input run, zeros) is one
             * masked load (lanes outside the run neither read nor kept) and one store */
            if (SW == 1 && !lut && (in16 || es == 1) && es * OW <= 64) {
                const __mmask64 mrow = es * OW == 64 ? ~0ULL : ((1ULL << (es * OW)) - 1);
                const __mmask64 mrun = n <= 0 ? 0 : es * n >= 64 ? ~0ULL
                                       : (((1ULL << (es * n)) - 1) << (es * lo));
                for (int64_t d = 0; d < ND; d++) {
                    const int64_t r = phased_row(f, g, d), iy = r < R ? r * SH + ph - PH : -1;
                    uint8_t *row = planes + es * (q0 + d * RS);
                    __m512i v = _mm512_setzero_si512();
                    if (iy >= 0 && iy < H && n > 0)
                        v = _mm512_maskz_loadu_epi8(mrun, sb + es * ((c * H + iy) * W + dc));
                    _mm512_mask_storeu_epi8(row, mrow, v);
                }
                continue;
            }
#endif
            for (int64_t d = 0; d < ND; d++) {
                const int64_t r = phased_row(f, g, d), iy = r < R ? r * SH + ph - PH : -1;
                uint8_t *row = planes + es * (q0 + d * RS);
                if (iy < 0 || iy >= H || n <= 0) {
                    memset(row, 0, (size_t)(es * OW));
                    continue;
                }
                if (lo > 0) memset(row, 0, (size_t)(es * lo));
                if (hi < OW) memset(row + es * hi, 0, (size_t)(es * (OW - hi)));
                const int64_t d0 = q0 + d * RS + lo, ib = (c * H + iy) * W + lo * SW + dc;
                if (SW == 1) {
                    if (lut) {
                        FN(lut_row)(planes + es * d0, sb + ib, n, &tb);
                    } else if (in16) {
                        memcpy(planes + 2 * d0, (const int16_t *)sb + ib, (size_t)(2 * n));
                    } else if (es == 1) {
                        memcpy(planes + d0, sb + ib, (size_t)n);
                    } else {
                        uint16_t *dd = (uint16_t *)planes + d0;
                        const uint8_t *s = sb + ib;
                        for (int64_t x = 0; x < n; x++) dd[x] = s[x];
                    }
                    continue;
                }
                for (int64_t x = 0; x < n; x++) {
                    const int64_t i = ib + x * SW, dx = d0 + x;
                    if (lut && es == 1) ((int8_t *)planes)[dx] = (int8_t)lut[sb[i]];
                    else if (lut) ((int16_t *)planes)[dx] = lut[sb[i]];
                    else if (in16) ((int16_t *)planes)[dx] = ((const int16_t *)sb)[i];
                    else if (es == 1) planes[dx] = sb[i];
                    else ((uint16_t *)planes)[dx] = sb[i];
                }
            }
        }
    }
}

/* ---------------------------------------------------------------- layer: kernels */

/* portable: acc[p] = sum_t rows[code[t]][x[pix[t] + p]] (one table read per product) */
static void FN(k_gather)(const int64_t *f, const Grp *g, const int64_t *plan, int64_t o0, int64_t o1,
                         const uint8_t *x, int32_t *acc) {
    const int32_t *nz_off = L_PTR(int32_t, 22), *pix = g->pix;
    const int32_t *code = L_PTR(int32_t, 24), *rows = L_PTR(int32_t, 26);
    const int64_t P = L_P, A = L_A, pst = PST(f);
    for (int64_t o = o0; o < o1; o++) {
        int32_t *a = acc + o * pst;
        for (int64_t p = 0; p < P; p++) a[p] = 0;
        for (int32_t t = nz_off[o]; t < nz_off[o + 1]; t++) {
            const int32_t *row = rows + (int64_t)code[t] * A;
            const uint8_t *xp = x + pix[t];
            for (int64_t p = 0; p < P; p++) a[p] += row[xp[p]];
        }
    }
}

/* 8-bit fixed-point layers (first/last): int16 values times int16 weights, int32 sums */
static void FN(k_int8)(const int64_t *f, const Grp *g, const int64_t *plan, int64_t o0, int64_t o1,
                       const int16_t *x, int32_t *acc) {
    const int32_t *nz_off = L_PTR(int32_t, 22), *pix = g->pix;
    const int32_t *code = L_PTR(int32_t, 24);
    const int64_t P = L_P, pst = PST(f);
    if (P == 1) { /* linear layers: dot products in registers (four partial sums) */
        for (int64_t o = o0; o < o1; o++) {
            int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, t = nz_off[o];
            const int32_t t1 = nz_off[o + 1];
            for (; t + 4 <= t1; t += 4) {
                s0 += code[t] * (int32_t)x[pix[t]];
                s1 += code[t + 1] * (int32_t)x[pix[t + 1]];
                s2 += code[t + 2] * (int32_t)x[pix[t + 2]];
                s3 += code[t + 3] * (int32_t)x[pix[t + 3]];
            }
            for (; t < t1; t++) s0 += code[t] * (int32_t)x[pix[t]];
            /* int32 wrap-around as the loop below (sums of products fit: offline bounds) */
            acc[o * pst] = (int32_t)((uint32_t)s0 + (uint32_t)s1 + (uint32_t)s2 + (uint32_t)s3);
        }
        return;
    }
#if ISA_AVX512
    /* 64 positions in four int32 registers across a channel's taps, two taps at a time:
     * their int16 inputs interleaved (vpunpck{l,h}wd: pairs in the int32 lanes, positions
     * 0-3 | 4-7 of each 128-bit lane in the low | high register) and vpmaddwd by the pair
     * of weights, exact int16 products summed in int32; an odd last tap pairs with weight
     * 0. The lanes' positions are put back in order once per block. Blocks may run past P
     * (the planes have zero slack, the accumulator rows room up to pst) */
    static const int32_t lo_idx[16] = {0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23};
    static const int32_t hi_idx[16] = {8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31};
    const __m512i ilo = _mm512_loadu_si512((const void *)lo_idx);
    const __m512i ihi = _mm512_loadu_si512((const void *)hi_idx);
    for (int64_t p0 = 0; p0 < P; p0 += 64)
        for (int64_t o = o0; o < o1; o++) {
            __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
            const int32_t t1 = nz_off[o + 1];
            for (int32_t t = nz_off[o]; t < t1; t += 2) {
                const int last = t + 1 == t1;
                const __m512i w = _mm512_set1_epi32(
                    (int32_t)((uint32_t)(code[t] & 0xFFFF) |
                              (last ? 0u : (uint32_t)code[t + 1] << 16)));
                const int16_t *xa = x + pix[t] + p0, *xb = x + pix[last ? t : t + 1] + p0;
                const __m512i a0 = _mm512_loadu_si512((const void *)xa);
                const __m512i a1 = _mm512_loadu_si512((const void *)(xa + 32));
                const __m512i b0 = _mm512_loadu_si512((const void *)xb);
                const __m512i b1 = _mm512_loadu_si512((const void *)(xb + 32));
                s0 = _mm512_add_epi32(s0, _mm512_madd_epi16(_mm512_unpacklo_epi16(a0, b0), w));
                s1 = _mm512_add_epi32(s1, _mm512_madd_epi16(_mm512_unpackhi_epi16(a0, b0), w));
                s2 = _mm512_add_epi32(s2, _mm512_madd_epi16(_mm512_unpacklo_epi16(a1, b1), w));
                s3 = _mm512_add_epi32(s3, _mm512_madd_epi16(_mm512_unpackhi_epi16(a1, b1), w));
            }
            int32_t *a = acc + o * pst + p0;
            _mm512_storeu_si512((void *)a, _mm512_permutex2var_epi32(s0, ilo, s1));
            _mm512_storeu_si512((void *)(a + 16), _mm512_permutex2var_epi32(s0, ihi, s1));
            _mm512_storeu_si512((void *)(a + 32), _mm512_permutex2var_epi32(s2, ilo, s3));
            _mm512_storeu_si512((void *)(a + 48), _mm512_permutex2var_epi32(s2, ihi, s3));
        }
    return;
#endif
    for (int64_t o = o0; o < o1; o++) {
        int32_t *a = acc + o * pst;
        for (int64_t p = 0; p < P; p++) a[p] = 0;
        for (int32_t t = nz_off[o]; t < nz_off[o + 1]; t++) {
            const int32_t w = code[t];
            const int16_t *xp = x + pix[t];
            for (int64_t p = 0; p < P; p++) a[p] += w * (int32_t)xp[p];
        }
    }
}

#if ISA_AVX2
/* 16-bit products, 32 pixels per vector: byte shuffles of the row's low and high bytes */
static inline __attribute__((always_inline)) void FN(shuf16_block)(
    const int32_t *pix, const int32_t *code, const uint8_t *flags, int32_t t0, int32_t t1,
    const uint8_t *rows16, const uint8_t *x, int32_t *acc, const int V) {
    __m256i c32[8], s[4];
    for (int q = 0; q < 4 * V; q++) c32[q] = _mm256_setzero_si256();
    for (int v = 0; v < 2 * V; v++) s[v] = _mm256_setzero_si256();
    for (int32_t t = t0; t < t1; t++) {
        const __m256i *rp = (const __m256i *)(rows16 + (int64_t)code[t] * 64);
        const __m256i lo = _mm256_loadu_si256(rp), hi = _mm256_loadu_si256(rp + 1);
        const uint8_t *ap = x + pix[t];
        for (int v = 0; v < V; v++) {
            const __m256i a = _mm256_loadu_si256((const __m256i *)(ap + 32 * v));
            const __m256i l = _mm256_shuffle_epi8(lo, a), h = _mm256_shuffle_epi8(hi, a);
            s[2 * v] = _mm256_add_epi16(s[2 * v], _mm256_unpacklo_epi8(l, h));
            s[2 * v + 1] = _mm256_add_epi16(s[2 * v + 1], _mm256_unpackhi_epi8(l, h));
        }
        if (flags[t] & 2) {
            /* s[2v]: pixels 0-7 | 16-23 of vector v, s[2v+1]: 8-15 | 24-31 */
            for (int v = 0; v < V; v++) {
                __m256i *c = c32 + 4 * v;
                c[0] = _mm256_add_epi32(c[0], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(s[2 * v])));
                c[2] = _mm256_add_epi32(c[2], _mm256_cvtepi16_epi32(_mm256_extracti128_si256(s[2 * v], 1)));
                c[1] = _mm256_add_epi32(c[1], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(s[2 * v + 1])));
                c[3] = _mm256_add_epi32(c[3], _mm256_cvtepi16_epi32(_mm256_extracti128_si256(s[2 * v + 1], 1)));
                s[2 * v] = s[2 * v + 1] = _mm256_setzero_si256();
            }
        }
    }
    for (int q = 0; q < 4 * V; q++) _mm256_storeu_si256((__m256i *)(acc + 8 * q), c32[q]);
}

/* 8-bit products (3-bit IOS-PoT): one shuffle reads 32 products; int8 sums widen to int16
 * and int16 to int32 exactly where the worst case needs it (flags) */
static inline __attribute__((always_inline)) void FN(shuf8_block)(
    const int32_t *pix, const int32_t *code, const uint8_t *flags, int32_t t0, int32_t t1,
    const int8_t *rows8, const uint8_t *x, int32_t *acc, const int V) {
    __m256i c32[8], h[4], b[2];
    for (int q = 0; q < 4 * V; q++) c32[q] = _mm256_setzero_si256();
    for (int q = 0; q < 2 * V; q++) h[q] = _mm256_setzero_si256();
    for (int v = 0; v < V; v++) b[v] = _mm256_setzero_si256();
    for (int32_t t = t0; t < t1; t++) {
        const __m256i row = _mm256_loadu_si256((const __m256i *)(rows8 + (int64_t)code[t] * 64));
        const uint8_t *ap = x + pix[t];
        for (int v = 0; v < V; v++)
            b[v] = _mm256_add_epi8(b[v], _mm256_shuffle_epi8(
                row, _mm256_loadu_si256((const __m256i *)(ap + 32 * v))));
        const int fl = flags[t];
        if (fl) {
            for (int v = 0; v < V; v++) {
                h[2 * v] = _mm256_add_epi16(h[2 * v], _mm256_cvtepi8_epi16(_mm256_castsi256_si128(b[v])));
                h[2 * v + 1] = _mm256_add_epi16(h[2 * v + 1], _mm256_cvtepi8_epi16(_mm256_extracti128_si256(b[v], 1)));
                b[v] = _mm256_setzero_si256();
            }
            if (fl & 2) {
                for (int q = 0; q < 2 * V; q++) {
                    c32[2 * q] = _mm256_add_epi32(c32[2 * q], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(h[q])));
                    c32[2 * q + 1] = _mm256_add_epi32(c32[2 * q + 1], _mm256_cvtepi16_epi32(_mm256_extracti128_si256(h[q], 1)));
                    h[q] = _mm256_setzero_si256();
                }
            }
        }
    }
    for (int q = 0; q < 4 * V; q++) _mm256_storeu_si256((__m256i *)(acc + 8 * q), c32[q]);
}
#endif

#if ISA_AVX512
/* 16-bit products: vpermw reads 32 int16 products (32-entry word table) per instruction */
static inline __attribute__((always_inline)) void FN(permw_block)(
    const int32_t *pix, const int32_t *code, const uint8_t *flags, int32_t t0, int32_t t1,
    const int16_t *roww, const uint16_t *x, int32_t *acc, const int V) {
    __m512i c32[16], s[8];
    for (int q = 0; q < 2 * V; q++) c32[q] = _mm512_setzero_si512();
    for (int v = 0; v < V; v++) s[v] = _mm512_setzero_si512();
    for (int v = 0; v < V; v++) s[v] = _mm512_setzero_si512();
    for (int32_t t = t0; t < t1; t++) {
        const __m512i row = _mm512_loadu_si512((const void *)(roww + (int64_t)code[t] * 32));
        const uint16_t *ap = x + pix[t];
        for (int v = 0; v < V; v++)
            s[v] = _mm512_add_epi16(s[v], _mm512_permutexvar_epi16(
                _mm512_loadu_si512((const void *)(ap + 32 * v)), row));
        if (flags[t] & 2) {
            for (int v = 0; v < V; v++) {
                c32[2 * v] = _mm512_add_epi32(c32[2 * v], _mm512_cvtepi16_epi32(_mm512_castsi512_si256(s[v])));
                c32[2 * v + 1] = _mm512_add_epi32(c32[2 * v + 1], _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(s[v], 1)));
                s[v] = _mm512_setzero_si512();
            }
        }
    }
    for (int q = 0; q < 2 * V; q++) _mm512_storeu_si512((void *)(acc + 16 * q), c32[q]);
}

/* 8-bit products: vpermb reads 64 int8 products (64-entry byte table) per instruction */
static inline __attribute__((always_inline)) void FN(permb_block)(
    const int32_t *pix, const int32_t *code, const uint8_t *flags, int32_t t0, int32_t t1,
    const int8_t *rows8, const uint8_t *x, int32_t *acc, const int V) {
    __m512i c32[16], h[8], b[4];
    for (int q = 0; q < 4 * V; q++) c32[q] = _mm512_setzero_si512();
    for (int q = 0; q < 2 * V; q++) h[q] = _mm512_setzero_si512();
    for (int v = 0; v < V; v++) b[v] = _mm512_setzero_si512();
    for (int32_t t = t0; t < t1; t++) {
        const __m512i row = _mm512_loadu_si512((const void *)(rows8 + (int64_t)code[t] * 64));
        const uint8_t *ap = x + pix[t];
        for (int v = 0; v < V; v++)
            b[v] = _mm512_add_epi8(b[v], _mm512_permutexvar_epi8(
                _mm512_loadu_si512((const void *)(ap + 64 * v)), row));
        const int fl = flags[t];
        if (fl) {
            for (int v = 0; v < V; v++) {
                h[2 * v] = _mm512_add_epi16(h[2 * v], _mm512_cvtepi8_epi16(_mm512_castsi512_si256(b[v])));
                h[2 * v + 1] = _mm512_add_epi16(h[2 * v + 1], _mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64(b[v], 1)));
                b[v] = _mm512_setzero_si512();
            }
            if (fl & 2) {
                for (int q = 0; q < 2 * V; q++) {
                    c32[2 * q] = _mm512_add_epi32(c32[2 * q], _mm512_cvtepi16_epi32(_mm512_castsi512_si256(h[q])));
                    c32[2 * q + 1] = _mm512_add_epi32(c32[2 * q + 1], _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(h[q], 1)));
                    h[q] = _mm512_setzero_si512();
                }
            }
        }
    }
    for (int q = 0; q < 4 * V; q++) _mm512_storeu_si512((void *)(acc + 16 * q), c32[q]);
}
#endif

#if ISA_NEON
/* 16-bit products: vqtbl1q_u8 on the row's low and high bytes, zipped to int16 */
static inline __attribute__((always_inline)) void FN(tbl16_block)(
    const int32_t *pix, const int32_t *code, const uint8_t *flags, int32_t t0, int32_t t1,
    const uint8_t *rows16, const uint8_t *x, int32_t *acc, const int V) {
    int32x4_t c32[8];
    int16x8_t s[4];
    for (int q = 0; q < 4 * V; q++) c32[q] = vdupq_n_s32(0);
    for (int q = 0; q < 2 * V; q++) s[q] = vdupq_n_s16(0);
    for (int32_t t = t0; t < t1; t++) {
        const uint8_t *rp = rows16 + (int64_t)code[t] * 64;
        const uint8x16_t lo = vld1q_u8(rp), hi = vld1q_u8(rp + 32);
        const uint8_t *ap = x + pix[t];
        for (int v = 0; v < V; v++) {
            const uint8x16_t a = vld1q_u8(ap + 16 * v);
            const uint8x16_t l = vqtbl1q_u8(lo, a), h = vqtbl1q_u8(hi, a);
            s[2 * v] = vaddq_s16(s[2 * v], vreinterpretq_s16_u8(vzip1q_u8(l, h)));
            s[2 * v + 1] = vaddq_s16(s[2 * v + 1], vreinterpretq_s16_u8(vzip2q_u8(l, h)));
        }
        if (flags[t] & 2) {
            for (int q = 0; q < 2 * V; q++) {
                c32[2 * q] = vaddq_s32(c32[2 * q], vmovl_s16(vget_low_s16(s[q])));
                c32[2 * q + 1] = vaddq_s32(c32[2 * q + 1], vmovl_high_s16(s[q]));
                s[q] = vdupq_n_s16(0);
            }
        }
    }
    for (int q = 0; q < 4 * V; q++) vst1q_s32(acc + 4 * q, c32[q]);
}

/* 8-bit products: one vqtbl1q_s8 reads 16 products */
static inline __attribute__((always_inline)) void FN(tbl8_block)(
    const int32_t *pix, const int32_t *code, const uint8_t *flags, int32_t t0, int32_t t1,
    const int8_t *rows8, const uint8_t *x, int32_t *acc, const int V) {
    int32x4_t c32[8];
    int16x8_t h[4];
    int8x16_t b[2];
    for (int q = 0; q < 4 * V; q++) c32[q] = vdupq_n_s32(0);
    for (int q = 0; q < 2 * V; q++) h[q] = vdupq_n_s16(0);
    for (int v = 0; v < V; v++) b[v] = vdupq_n_s8(0);
    for (int32_t t = t0; t < t1; t++) {
        const int8x16_t row = vld1q_s8(rows8 + (int64_t)code[t] * 64);
        const uint8_t *ap = x + pix[t];
        for (int v = 0; v < V; v++) b[v] = vaddq_s8(b[v], vqtbl1q_s8(row, vld1q_u8(ap + 16 * v)));
        const int fl = flags[t];
        if (fl) {
            for (int v = 0; v < V; v++) {
                h[2 * v] = vaddq_s16(h[2 * v], vmovl_s8(vget_low_s8(b[v])));
                h[2 * v + 1] = vaddq_s16(h[2 * v + 1], vmovl_high_s8(b[v]));
                b[v] = vdupq_n_s8(0);
            }
            if (fl & 2) {
                for (int q = 0; q < 2 * V; q++) {
                    c32[2 * q] = vaddq_s32(c32[2 * q], vmovl_s16(vget_low_s16(h[q])));
                    c32[2 * q + 1] = vaddq_s32(c32[2 * q + 1], vmovl_high_s16(h[q]));
                    h[q] = vdupq_n_s16(0);
                }
            }
        }
    }
    for (int q = 0; q < 4 * V; q++) vst1q_s32(acc + 4 * q, c32[q]);
}
#endif

/* run a block kernel over channels o0..o1: pixel blocks outermost (the block's input runs
 * stay in L1 across channels), VM vectors per block, then 2, then 1 for the tail */
#define BLOCKED(KFN, ROWS, XT, W1, VM)                                                     \
    do {                                                                                   \
        int64_t p0 = 0;                                                                    \
        for (; P - p0 >= (VM) * (W1); p0 += (VM) * (W1))                                   \
            for (int64_t o = o0; o < o1; o++)                                              \
                KFN(pix, code, flags, nz_off[o], nz_off[o + 1], ROWS, (const XT *)x + p0,  \
                    acc + o * pst + p0, VM);                                               \
        for (; P - p0 > (W1); p0 += 2 * (W1))                                              \
            for (int64_t o = o0; o < o1; o++)                                              \
                KFN(pix, code, flags, nz_off[o], nz_off[o + 1], ROWS, (const XT *)x + p0,  \
                    acc + o * pst + p0, 2);                                                \
        for (; p0 < P; p0 += (W1))                                                         \
            for (int64_t o = o0; o < o1; o++)                                              \
                KFN(pix, code, flags, nz_off[o], nz_off[o + 1], ROWS, (const XT *)x + p0,  \
                    acc + o * pst + p0, 1);                                                \
    } while (0)

/* ------------------------------------------------ shift-add (exponent-grouped) kernels */
#if ISA_AVX512
/* s[v] += (sub: -=) the V vectors at x + spix[t] for taps t..end; returns end. With one
 * vector, odd taps go to a second partial sum first (added at the end): one serial chain
 * of 1-cycle adds bounds the loop at one add per cycle (3-bit 8x8 layers: 28 -> 24 us; two
 * vectors already make two chains, and splitting them further measured slower). Sums wrap,
 * so the partial sums' sum is exact wherever the whole sum fits (netplan bounds it). */
#define SA_TAPS(NAME, T, W, ADD, SUB)                                                       \
    static inline __attribute__((always_inline)) int32_t FN(NAME)(                       \
        __m512i *s, const int V, const T *x, const int32_t *spix, int32_t t, int32_t end,  \
        const int sub) {                                                                   \
        if (V == 1) {                                                                      \
            __m512i u = _mm512_setzero_si512();                                            \
            for (; t + 1 < end; t += 2) {                                                  \
                const __m512i va = _mm512_loadu_si512((const void *)(x + spix[t]));       \
                const __m512i vb = _mm512_loadu_si512((const void *)(x + spix[t + 1]));   \
                s[0] = sub ? SUB(s[0], va) : ADD(s[0], va);                                \
                u = sub ? SUB(u, vb) : ADD(u, vb);                                         \
            }                                                                              \
            s[0] = ADD(s[0], u);                                                           \
        }                                                                                  \
        for (; t < end; t++) {                                                             \
            const T *a = x + spix[t];                                                      \
            for (int v = 0; v < V; v++) {                                                  \
                const __m512i va = _mm512_loadu_si512((const void *)(a + W * v));         \
                s[v] = sub ? SUB(s[v], va) : ADD(s[v], va);                                \
            }                                                                              \
        }                                                                                  \
        return t;                                                                          \
    }
SA_TAPS(sa_taps16, int16_t, 32, _mm512_add_epi16, _mm512_sub_epi16)
SA_TAPS(sa_taps8, int8_t, 64, _mm512_add_epi8, _mm512_sub_epi8)
#undef SA_TAPS
#endif

/* the first tap (in shift-add order) of the groups from ga on: the taps follow the groups
 * in one sequence, so it is where the previous group's subtractions end */
static inline int32_t FN(first_tap)(const int32_t *groups, int32_t ga) {
    return ga > 0 ? groups[3 * ga - 2] : 0;
}

/* a shift-add block kernel over channels o0..o1 (their groups of input chunk ch): the
 * fewest blocks of at most VM vectors of W1 lanes, all of one width V (little padding
 * waste), V a compile-time constant of each always-inline call (SA_V caps the cases above
 * VM, which never run) */
#define SA_V(v, VM) ((v) < (VM) ? (v) : (VM))
#define SA_BLOCKS(BLOCK, XT, W1, VM)                                                        \
    do {                                                                                    \
        const int32_t *g_off_ = g->g_off, *groups_ = g->groups, *spix_ = g->spix;         \
        const int64_t nch_ = g->nch, P_ = L_P, pst_ = PST(f);                              \
        const int add_ = ch > 0;                                                            \
        const int64_t nb_ = (P_ + (VM) * (W1) - 1) / ((VM) * (W1));                         \
        const int V_ = (int)((P_ + nb_ * (W1) - 1) / (nb_ * (W1)));                         \
        for (int64_t p0 = 0; p0 < P_; p0 += V_ * (W1))                                      \
            for (int64_t o = o0; o < o1; o++) {                                             \
                const int32_t ga = g_off_[o * nch_ + ch], gb = g_off_[o * nch_ + ch + 1];   \
                const int32_t t = FN(first_tap)(groups_, ga);                               \
                int32_t *a = acc + o * pst_ + p0;                                           \
                const XT *xp = x + p0;                                                      \
                switch (V_) {                                                               \
                case 1: BLOCK(groups_, ga, gb, t, spix_, xp, a, 1, add_); break;            \
                case 2: BLOCK(groups_, ga, gb, t, spix_, xp, a, SA_V(2, VM), add_); break;  \
                case 3: BLOCK(groups_, ga, gb, t, spix_, xp, a, SA_V(3, VM), add_); break;  \
                case 4: BLOCK(groups_, ga, gb, t, spix_, xp, a, SA_V(4, VM), add_); break;  \
                case 5: BLOCK(groups_, ga, gb, t, spix_, xp, a, SA_V(5, VM), add_); break;  \
                case 6: BLOCK(groups_, ga, gb, t, spix_, xp, a, SA_V(6, VM), add_); break;  \
                case 7: BLOCK(groups_, ga, gb, t, spix_, xp, a, SA_V(7, VM), add_); break;  \
                default: BLOCK(groups_, ga, gb, t, spix_, xp, a, VM, add_); break;          \
                }                                                                           \
            }                                                                               \
    } while (0)

/* taps of one channel sorted by weight exponent e and sign; x holds signed activation
 * values (int16); a group adds (then subtracts) its taps' runs in int16 and is widened
 * and shifted left by e once: acc = sum_e 2^e (sum a+ - sum a-), no table, no multiply */
__attribute__((unused)) static void FN(sa_generic)(const int32_t *groups, int32_t g0, int32_t g1, int32_t t,
                           const int32_t *spix, const int16_t *x, int32_t *acc, int64_t n,
                           int add) {
    int16_t s[64] = {0};
    if (!add)
        for (int64_t p = 0; p < n; p++) acc[p] = 0;
    for (int32_t g = g0; g < g1; g++) {
        const int32_t ep = groups[3 * g], en = groups[3 * g + 1], info = groups[3 * g + 2];
        const int32_t e = info & 255, d = (info >> 16) & 255;
        if (info >> 24)
            for (int64_t p = 0; p < n; p++) s[p] = 0;
        else
            for (int64_t p = 0; p < n; p++) s[p] = (int16_t)((uint16_t)s[p] << d);
        for (; t < ep; t++) {
            const int16_t *xp = x + spix[t];
            for (int64_t p = 0; p < n; p++) s[p] = (int16_t)(s[p] + xp[p]);
        }
        for (; t < en; t++) {
            const int16_t *xp = x + spix[t];
            for (int64_t p = 0; p < n; p++) s[p] = (int16_t)(s[p] - xp[p]);
        }
        if (info & 256)
            for (int64_t p = 0; p < n; p++) acc[p] += (int32_t)((uint32_t)(int32_t)s[p] << e);
    }
}

#if ISA_AVX512
static inline __attribute__((always_inline)) void FN(sa_block)(
    const int32_t *groups, int32_t g0, int32_t g1, int32_t t, const int32_t *spix,
    const int16_t *x, int32_t *acc, const int V, const int add) {
    __m512i c32[16], s[8];
    for (int q = 0; q < 2 * V; q++)
        c32[q] = add ? _mm512_loadu_si512((const void *)(acc + 16 * q)) : _mm512_setzero_si512();
    for (int v = 0; v < V; v++) s[v] = _mm512_setzero_si512();
    for (int32_t g = g0; g < g1; g++) {
        const int32_t ep = groups[3 * g], en = groups[3 * g + 1], info = groups[3 * g + 2];
        const __m128i sh = _mm_cvtsi32_si128(info & 255);
        if (info >> 24) {
            for (int v = 0; v < V; v++) s[v] = _mm512_setzero_si512();
        } else {
            const __m128i d = _mm_cvtsi32_si128((info >> 16) & 255);
            for (int v = 0; v < V; v++) s[v] = _mm512_sll_epi16(s[v], d);
        }
        t = FN(sa_taps16)(s, V, x, spix, t, ep, 0);
        t = FN(sa_taps16)(s, V, x, spix, t, en, 1);
        if (!(info & 256)) continue;
        for (int v = 0; v < V; v++) {
            c32[2 * v] = _mm512_add_epi32(c32[2 * v], _mm512_sll_epi32(
                _mm512_cvtepi16_epi32(_mm512_castsi512_si256(s[v])), sh));
            c32[2 * v + 1] = _mm512_add_epi32(c32[2 * v + 1], _mm512_sll_epi32(
                _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(s[v], 1)), sh));
        }
    }
    for (int q = 0; q < 2 * V; q++) _mm512_storeu_si512((void *)(acc + 16 * q), c32[q]);
}
#define SA_W1 32
#define SA_VM 8
#elif ISA_AVX2
static inline __attribute__((always_inline)) void FN(sa_block)(
    const int32_t *groups, int32_t g0, int32_t g1, int32_t t, const int32_t *spix,
    const int16_t *x, int32_t *acc, const int V, const int add) {
    __m256i c32[8], s[4];
    for (int q = 0; q < 2 * V; q++)
        c32[q] = add ? _mm256_loadu_si256((const __m256i *)(acc + 8 * q)) : _mm256_setzero_si256();
    for (int v = 0; v < V; v++) s[v] = _mm256_setzero_si256();
    for (int32_t g = g0; g < g1; g++) {
        const int32_t ep = groups[3 * g], en = groups[3 * g + 1], info = groups[3 * g + 2];
        const __m128i sh = _mm_cvtsi32_si128(info & 255);
        if (info >> 24) {
            for (int v = 0; v < V; v++) s[v] = _mm256_setzero_si256();
        } else {
            const __m128i d = _mm_cvtsi32_si128((info >> 16) & 255);
            for (int v = 0; v < V; v++) s[v] = _mm256_sll_epi16(s[v], d);
        }
        for (; t < ep; t++) {
            const int16_t *ap = x + spix[t];
            for (int v = 0; v < V; v++)
                s[v] = _mm256_add_epi16(s[v], _mm256_loadu_si256((const __m256i *)(ap + 16 * v)));
        }
        for (; t < en; t++) {
            const int16_t *ap = x + spix[t];
            for (int v = 0; v < V; v++)
                s[v] = _mm256_sub_epi16(s[v], _mm256_loadu_si256((const __m256i *)(ap + 16 * v)));
        }
        if (!(info & 256)) continue;
        for (int v = 0; v < V; v++) {
            c32[2 * v] = _mm256_add_epi32(c32[2 * v], _mm256_sll_epi32(
                _mm256_cvtepi16_epi32(_mm256_castsi256_si128(s[v])), sh));
            c32[2 * v + 1] = _mm256_add_epi32(c32[2 * v + 1], _mm256_sll_epi32(
                _mm256_cvtepi16_epi32(_mm256_extracti128_si256(s[v], 1)), sh));
        }
    }
    for (int q = 0; q < 2 * V; q++) _mm256_storeu_si256((__m256i *)(acc + 8 * q), c32[q]);
}
#define SA_W1 16
#define SA_VM 4
#elif ISA_NEON
static inline __attribute__((always_inline)) void FN(sa_block)(
    const int32_t *groups, int32_t g0, int32_t g1, int32_t t, const int32_t *spix,
    const int16_t *x, int32_t *acc, const int V, const int add) {
    int32x4_t c32[8];
    int16x8_t s[4];
    for (int q = 0; q < 2 * V; q++) c32[q] = add ? vld1q_s32(acc + 4 * q) : vdupq_n_s32(0);
    for (int v = 0; v < V; v++) s[v] = vdupq_n_s16(0);
    for (int32_t g = g0; g < g1; g++) {
        const int32_t ep = groups[3 * g], en = groups[3 * g + 1], info = groups[3 * g + 2];
        const int32x4_t sh = vdupq_n_s32(info & 255);
        if (info >> 24) {
            for (int v = 0; v < V; v++) s[v] = vdupq_n_s16(0);
        } else {
            const int16x8_t d = vdupq_n_s16((int16_t)((info >> 16) & 255));
            for (int v = 0; v < V; v++) s[v] = vshlq_s16(s[v], d);
        }
        for (; t < ep; t++) {
            const int16_t *ap = x + spix[t];
            for (int v = 0; v < V; v++) s[v] = vaddq_s16(s[v], vld1q_s16(ap + 8 * v));
        }
        for (; t < en; t++) {
            const int16_t *ap = x + spix[t];
            for (int v = 0; v < V; v++) s[v] = vsubq_s16(s[v], vld1q_s16(ap + 8 * v));
        }
        if (!(info & 256)) continue;
        for (int v = 0; v < V; v++) {
            c32[2 * v] = vaddq_s32(c32[2 * v], vshlq_s32(vmovl_s16(vget_low_s16(s[v])), sh));
            c32[2 * v + 1] = vaddq_s32(c32[2 * v + 1], vshlq_s32(vmovl_high_s16(s[v]), sh));
        }
    }
    for (int q = 0; q < 2 * V; q++) vst1q_s32(acc + 4 * q, c32[q]);
}
#define SA_W1 8
#define SA_VM 4
#endif

static void FN(k_shift_add)(const int64_t *f, const Grp *g, const int64_t *plan, int64_t o0, int64_t o1,
                            const int16_t *x, int32_t *acc, int64_t ch) {
#ifdef SA_W1
    SA_BLOCKS(FN(sa_block), int16_t, SA_W1, SA_VM);
#undef SA_W1
#undef SA_VM
#else
    const int32_t *g_off = g->g_off, *groups = g->groups, *spix = g->spix;
    const int64_t nch = g->nch, P = L_P, pst = PST(f);
    const int add = ch > 0;
    for (int64_t p0 = 0; p0 < P; p0 += 64)
        for (int64_t o = o0; o < o1; o++) {
            const int32_t ga = g_off[o * nch + ch];
            FN(sa_generic)(groups, ga, g_off[o * nch + ch + 1], FN(first_tap)(groups, ga),
                           spix, x + p0, acc + o * pst + p0, P - p0 < 64 ? P - p0 : 64, add);
        }
#endif
}

/* int8 variant (kind 2): int8 group sums (<= 127 / max|a| taps), shifted into an int16
 * accumulator (the channel's worst sum fits int16), widened to int32 once at the end */
__attribute__((unused)) static void FN(sa8_generic)(const int32_t *groups, int32_t g0, int32_t g1,
                                                    int32_t t, const int32_t *spix,
                                                    const int8_t *x, int32_t *acc, int64_t n,
                                                    int add) {
    int8_t s[64];
    int16_t a16[64];
    for (int64_t p = 0; p < n; p++) a16[p] = 0;
    for (int32_t g = g0; g < g1; g++) {
        const int32_t ep = groups[3 * g], en = groups[3 * g + 1], e = groups[3 * g + 2] & 255;
        for (int64_t p = 0; p < n; p++) s[p] = 0;
        for (; t < ep; t++) {
            const int8_t *xp = x + spix[t];
            for (int64_t p = 0; p < n; p++) s[p] = (int8_t)(s[p] + xp[p]);
        }
        for (; t < en; t++) {
            const int8_t *xp = x + spix[t];
            for (int64_t p = 0; p < n; p++) s[p] = (int8_t)(s[p] - xp[p]);
        }
        for (int64_t p = 0; p < n; p++)
            a16[p] = (int16_t)(a16[p] + (int16_t)((uint16_t)(int16_t)s[p] << e));
    }
    for (int64_t p = 0; p < n; p++) acc[p] = (add ? acc[p] : 0) + a16[p];
}

#if ISA_AVX512
static inline __attribute__((always_inline)) void FN(sa8_block)(
    const int32_t *groups, int32_t g0, int32_t g1, int32_t t, const int32_t *spix,
    const int8_t *x, int32_t *acc, const int V, const int add) {
    __m512i a16[8], s[4];
    for (int q = 0; q < 2 * V; q++) a16[q] = _mm512_setzero_si512();
    for (int32_t g = g0; g < g1; g++) {
        const int32_t ep = groups[3 * g], en = groups[3 * g + 1];
        const __m128i sh = _mm_cvtsi32_si128(groups[3 * g + 2] & 255);
        for (int v = 0; v < V; v++) s[v] = _mm512_setzero_si512();
        t = FN(sa_taps8)(s, V, x, spix, t, ep, 0);
        t = FN(sa_taps8)(s, V, x, spix, t, en, 1);
        for (int v = 0; v < V; v++) {
            a16[2 * v] = _mm512_add_epi16(a16[2 * v], _mm512_sll_epi16(
                _mm512_cvtepi8_epi16(_mm512_castsi512_si256(s[v])), sh));
            a16[2 * v + 1] = _mm512_add_epi16(a16[2 * v + 1], _mm512_sll_epi16(
                _mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64(s[v], 1)), sh));
        }
    }
    for (int q = 0; q < 2 * V; q++) {
        __m512i lo = _mm512_cvtepi16_epi32(_mm512_castsi512_si256(a16[q]));
        __m512i hi = _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(a16[q], 1));
        if (add) {
            lo = _mm512_add_epi32(lo, _mm512_loadu_si512((const void *)(acc + 32 * q)));
            hi = _mm512_add_epi32(hi, _mm512_loadu_si512((const void *)(acc + 32 * q + 16)));
        }
        _mm512_storeu_si512((void *)(acc + 32 * q), lo);
        _mm512_storeu_si512((void *)(acc + 32 * q + 16), hi);
    }
}
#define SA8_W1 64
#define SA8_VM 4
#elif ISA_AVX2
static inline __attribute__((always_inline)) void FN(sa8_block)(
    const int32_t *groups, int32_t g0, int32_t g1, int32_t t, const int32_t *spix,
    const int8_t *x, int32_t *acc, const int V, const int add) {
    __m256i a16[8], s[4];
    for (int q = 0; q < 2 * V; q++) a16[q] = _mm256_setzero_si256();
    for (int32_t g = g0; g < g1; g++) {
        const int32_t ep = groups[3 * g], en = groups[3 * g + 1];
        const __m128i sh = _mm_cvtsi32_si128(groups[3 * g + 2] & 255);
        for (int v = 0; v < V; v++) s[v] = _mm256_setzero_si256();
        for (; t < ep; t++) {
            const int8_t *ap = x + spix[t];
            for (int v = 0; v < V; v++)
                s[v] = _mm256_add_epi8(s[v], _mm256_loadu_si256((const __m256i *)(ap + 32 * v)));
        }
        for (; t < en; t++) {
            const int8_t *ap = x + spix[t];
            for (int v = 0; v < V; v++)
                s[v] = _mm256_sub_epi8(s[v], _mm256_loadu_si256((const __m256i *)(ap + 32 * v)));
        }
        for (int v = 0; v < V; v++) {
            a16[2 * v] = _mm256_add_epi16(a16[2 * v], _mm256_sll_epi16(
                _mm256_cvtepi8_epi16(_mm256_castsi256_si128(s[v])), sh));
            a16[2 * v + 1] = _mm256_add_epi16(a16[2 * v + 1], _mm256_sll_epi16(
                _mm256_cvtepi8_epi16(_mm256_extracti128_si256(s[v], 1)), sh));
        }
    }
    for (int q = 0; q < 2 * V; q++) {
        __m256i lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(a16[q]));
        __m256i hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(a16[q], 1));
        if (add) {
            lo = _mm256_add_epi32(lo, _mm256_loadu_si256((const __m256i *)(acc + 16 * q)));
            hi = _mm256_add_epi32(hi, _mm256_loadu_si256((const __m256i *)(acc + 16 * q + 8)));
        }
        _mm256_storeu_si256((__m256i *)(acc + 16 * q), lo);
        _mm256_storeu_si256((__m256i *)(acc + 16 * q + 8), hi);
    }
}
#define SA8_W1 32
#define SA8_VM 4
#elif ISA_NEON
static inline __attribute__((always_inline)) void FN(sa8_block)(
    const int32_t *groups, int32_t g0, int32_t g1, int32_t t, const int32_t *spix,
    const int8_t *x, int32_t *acc, const int V, const int add) {
    int16x8_t a16[8];
    int8x16_t s[4];
    for (int q = 0; q < 2 * V; q++) a16[q] = vdupq_n_s16(0);
    for (int32_t g = g0; g < g1; g++) {
        const int32_t ep = groups[3 * g], en = groups[3 * g + 1];
        const int16x8_t sh = vdupq_n_s16((int16_t)(groups[3 * g + 2] & 255));
        for (int v = 0; v < V; v++) s[v] = vdupq_n_s8(0);
        for (; t < ep; t++) {
            const int8_t *ap = x + spix[t];
            for (int v = 0; v < V; v++) s[v] = vaddq_s8(s[v], vld1q_s8(ap + 16 * v));
        }
        for (; t < en; t++) {
            const int8_t *ap = x + spix[t];
            for (int v = 0; v < V; v++) s[v] = vsubq_s8(s[v], vld1q_s8(ap + 16 * v));
        }
        for (int v = 0; v < V; v++) {
            a16[2 * v] = vaddq_s16(a16[2 * v], vshlq_s16(vmovl_s8(vget_low_s8(s[v])), sh));
            a16[2 * v + 1] = vaddq_s16(a16[2 * v + 1], vshlq_s16(vmovl_high_s8(s[v]), sh));
        }
    }
    for (int q = 0; q < 2 * V; q++) {
        int32x4_t lo = vmovl_s16(vget_low_s16(a16[q])), hi = vmovl_high_s16(a16[q]);
        if (add) {
            lo = vaddq_s32(lo, vld1q_s32(acc + 8 * q));
            hi = vaddq_s32(hi, vld1q_s32(acc + 8 * q + 4));
        }
        vst1q_s32(acc + 8 * q, lo);
        vst1q_s32(acc + 8 * q + 4, hi);
    }
}
#define SA8_W1 16
#define SA8_VM 4
#endif

static void FN(k_shift_add8)(const int64_t *f, const Grp *g, const int64_t *plan, int64_t o0, int64_t o1,
                             const int8_t *x, int32_t *acc, int64_t ch) {
#ifdef SA8_W1
    SA_BLOCKS(FN(sa8_block), int8_t, SA8_W1, SA8_VM);
#undef SA8_W1
#undef SA8_VM
#else
    const int32_t *g_off = g->g_off, *groups = g->groups, *spix = g->spix;
    const int64_t nch = g->nch, P = L_P, pst = PST(f);
    const int add = ch > 0;
    for (int64_t p0 = 0; p0 < P; p0 += 64)
        for (int64_t o = o0; o < o1; o++) {
            const int32_t ga = g_off[o * nch + ch];
            FN(sa8_generic)(groups, ga, g_off[o * nch + ch + 1], FN(first_tap)(groups, ga),
                            spix, x + p0, acc + o * pst + p0, P - p0 < 64 ? P - p0 : 64, add);
        }
#endif
}

/* int32 variant (kind 3): the int16 planes' values sign-extended as they are loaded and
 * summed in int32, for wide activation ranges (unsigned 4-bit IOS-PoT reaches 2^14, where
 * int16 group sums would close a group at every tap: netplan._shift_add); the groups as in
 * kind 1, written once for every instruction set in VL-lane vectors */
static inline VI32 FN(ld16)(const int16_t *p) {
#if ISA_AVX512 /* one vpmovsxwd from memory (GCC splits the generic form into halves) */
    return (VI32)_mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)p));
#elif ISA_AVX2
    return (VI32)_mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)p));
#else
    VI16 h;
    memcpy(&h, p, sizeof h);
    return __builtin_convertvector(h, VI32);
#endif
}

#define SA32_VM 8
static inline __attribute__((always_inline)) void FN(sa32_block)(
    const int32_t *groups, int32_t g0, int32_t g1, int32_t t, const int32_t *spix,
    const int16_t *x, int32_t *acc, const int V, const int add) {
    VI32 c[SA32_VM], s[SA32_VM];
    for (int v = 0; v < V; v++) {
        c[v] = VB(0);
        if (add) memcpy(&c[v], acc + VL * v, sizeof c[v]);
        s[v] = VB(0);
    }
    for (int32_t g = g0; g < g1; g++) {
        const int32_t ep = groups[3 * g], en = groups[3 * g + 1], info = groups[3 * g + 2];
        const int e = info & 255, d = (info >> 16) & 255;
        for (int v = 0; v < V; v++) s[v] = (info >> 24) ? VB(0) : s[v] << d;
        for (; t < ep; t++) {
            const int16_t *a = x + spix[t];
            for (int v = 0; v < V; v++) s[v] += FN(ld16)(a + VL * v);
        }
        for (; t < en; t++) {
            const int16_t *a = x + spix[t];
            for (int v = 0; v < V; v++) s[v] -= FN(ld16)(a + VL * v);
        }
        if (info & 256)
            for (int v = 0; v < V; v++) c[v] += s[v] << e;
    }
    for (int v = 0; v < V; v++) memcpy(acc + VL * v, &c[v], sizeof c[v]);
}

static void FN(k_shift_add32)(const int64_t *f, const Grp *g, const int64_t *plan, int64_t o0,
                              int64_t o1, const int16_t *x, int32_t *acc, int64_t ch) {
    SA_BLOCKS(FN(sa32_block), int16_t, VL, SA32_VM);
}

#if ISA_AVX512
/* the small-map kernel's input: one image's activation codes times 64 (the byte offset of
 * their row of the product table), uint16, zero-padded (code 0, as the input copies of the
 * table kernels) to [C][f[62]][f[63]] (input (iy, ix) at [iy + PH][ix + PW]) */
static void FN(prep_chan)(const int64_t *f, const uint8_t *src, uint16_t *xp) {
    const int64_t C = L_C, H = L_H, W = L_W, Hp = f[62], Wp = f[63];
    memset(xp, 0, (size_t)(2 * C * Hp * Wp));
    if (W <= 32) { /* short rows: one masked load and store each */
        const __mmask32 m = W == 32 ? ~0U : ((1U << W) - 1);
        for (int64_t c = 0; c < C; c++)
            for (int64_t iy = 0; iy < H; iy++)
                _mm512_mask_storeu_epi16(xp + (c * Hp + iy + L_PH) * Wp + L_PW, m,
                    _mm512_slli_epi16(_mm512_cvtepu8_epi16(
                        _mm256_maskz_loadu_epi8(m, src + (c * H + iy) * W)), 6));
        return;
    }
    for (int64_t c = 0; c < C; c++)
        for (int64_t iy = 0; iy < H; iy++)
            for (int64_t ix = 0; ix < W; ix++)
                xp[(c * Hp + iy + L_PH) * Wp + L_PW + ix] =
                    (uint16_t)(src[(c * H + iy) * W + ix] << 6);
}

/* Q positions of one block of 32 H output channels (see k_chan) */
static inline __attribute__((always_inline)) void FN(chan_block)(
    const int32_t *ent, int32_t t0, int32_t t1, const uint16_t *x, const int16_t *tab,
    const int32_t *pos, int32_t *acc, int64_t pst, int64_t lanes, int64_t np, const int Q,
    const int H) {
    __m512i s[8], a[16];
    const __m512i zero = _mm512_setzero_si512();
    const int64_t es = 4 + 16 * H; /* entry words */
    int64_t po[8];
    for (int q = 0; q < Q; q++) po[q] = pos[q];
    for (int q = 0; q < 2 * Q * H; q++) a[q] = zero;
    for (int32_t t = t0; t < t1;) {
        /* a run of entries whose int16 sums cannot overflow (it ends at a widen mark) */
        for (int q = 0; q < Q * H; q++) s[q] = zero;
        int32_t more;
        do {
            const int32_t *en = ent + es * t;
            __m512i idx[2];
            for (int h = 0; h < H; h++)
                idx[h] = _mm512_loadu_si512((const void *)(en + 4 + 16 * h));
            const char *xt = (const char *)tab;
            const uint16_t *xe = x + en[0];
            for (int q = 0; q < Q; q++) {
                /* the activation's row of products (x holds code * 64: the row's byte
                 * offset), read at each lane's weight code */
                const __m512i row = _mm512_load_si512((const void *)(xt + xe[po[q]]));
                for (int h = 0; h < H; h++)
                    s[H * q + h] = _mm512_add_epi16(s[H * q + h],
                                                    _mm512_permutexvar_epi16(idx[h], row));
            }
            more = !en[3];
            t++;
        } while (more && t < t1);
        for (int q = 0; q < Q * H; q++) {
            a[2 * q] = _mm512_add_epi32(a[2 * q], _mm512_cvtepi16_epi32(_mm512_castsi512_si256(s[q])));
            a[2 * q + 1] = _mm512_add_epi32(a[2 * q + 1], _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(s[q], 1)));
        }
    }
    int32_t out[8][64];
    for (int q = 0; q < Q; q++)
        for (int h = 0; h < H; h++) {
            _mm512_storeu_si512((void *)(out[q] + 32 * h), a[2 * (H * q + h)]);
            _mm512_storeu_si512((void *)(out[q] + 32 * h + 16), a[2 * (H * q + h) + 1]);
        }
    for (int64_t l = 0; l < lanes; l++)
        for (int64_t q = 0; q < np; q++) acc[l * pst + q] = out[q][l];
}

/* small maps, one image: 32 output channels across the int16 lanes of a vector (two
 * vectors per tap where there are more than 32: f[60] halves); each input tap's activation
 * code selects its row of the product table and one vpermw per half reads every lane's
 * product at the lane's weight code (no multiply); int16 sums widen to int32 after the
 * entries netplan._chan_taps marks (where the next one could overflow).  Eight positions
 * at a time (four for a short tail or with two halves), read from the padded codes image
 * (prep_chan) at the positions' offsets f[61]. */
static void FN(k_chan)(const int64_t *f, const Grp *g, const int64_t *plan, const uint16_t *x,
                       int32_t *acc) {
    const int32_t *boff = L_PTR(int32_t, 58), *ent = L_PTR(int32_t, 59);
    const int32_t *pos = L_PTR(int32_t, 61);
    const int64_t O = L_O, P = L_OH * L_OW, pst = g->pst, A = L_A, H = f[60], BW = 32 * H;
    /* the table rows cache-line aligned (the plan's arrays are 8-byte aligned: a row read
     * across two lines costs a split load in the innermost loop) */
    int16_t tab[256 * 32] __attribute__((aligned(64)));
    memcpy(tab, L_PTR(int16_t, 64), (size_t)(64 * A));
    for (int64_t bk = 0; bk * BW < O; bk++) {
        const int64_t lanes = O - BW * bk < BW ? O - BW * bk : BW;
        int32_t *ab = acc + BW * bk * pst;
        for (int64_t p0 = 0; p0 < P;) {
            const int64_t np = P - p0 < 8 ? P - p0 : 8;
            const int64_t n4 = np < 4 ? np : 4;
            if (H == 2) {
                FN(chan_block)(ent, boff[bk], boff[bk + 1], x, tab, pos + p0, ab + p0, pst,
                               lanes, n4, 4, 2);
                p0 += n4;
            } else if (np > 4) {
                FN(chan_block)(ent, boff[bk], boff[bk + 1], x, tab, pos + p0, ab + p0, pst,
                               lanes, np, 8, 1);
                p0 += np;
            } else {
                FN(chan_block)(ent, boff[bk], boff[bk + 1], x, tab, pos + p0, ab + p0, pst,
                               lanes, np, 4, 1);
                p0 += np;
            }
        }
    }
}
#endif

static int FN(pick)(const int64_t *f, int64_t policy) {
    if (L_MODE == 1) return K_INT8;
    if (f[47] && policy != 1)
        return f[47] == 2 ? K_SHIFTADD8 : f[47] == 3 ? K_SHIFTADD32 : K_SHIFTADD;
    const int64_t kfmt = L_KFMT, A = L_A;
    (void)kfmt; (void)A;
#if ISA_AVX512
    if (kfmt == 0 && A <= 64) return K_PERMB;
    if (kfmt <= 1 && A <= 32) return K_PERMW;
#endif
#if ISA_AVX2
    if (kfmt == 0 && A <= 16) return K_SHUF8;
    if (kfmt <= 1 && A <= 16) return K_SHUF16;
#endif
#if ISA_NEON
    if (kfmt == 0 && A <= 16) return K_TBL8;
    if (kfmt <= 1 && A <= 16) return K_TBL16;
#endif
    return K_GATHER;
}

/* accumulators of output channels o0..o1 of one image: acc[o][p], p in padded coords */
static void FN(layer_acc)(const int64_t *f, const Grp *g, const int64_t *plan, int kern, int64_t o0,
                          int64_t o1, const uint8_t *x, int32_t *acc, int64_t ch) {
    const int32_t *nz_off = L_PTR(int32_t, 22), *pix = g->pix;
    const int32_t *code = L_PTR(int32_t, 24);
    const uint8_t *flags = L_PTR(uint8_t, 25);
    const int64_t P = L_P, pst = PST(f);
    (void)nz_off; (void)pix; (void)code; (void)flags; (void)P; (void)pst;
    switch (kern) {
    case K_INT8: FN(k_int8)(f, g, plan, o0, o1, (const int16_t *)x, acc); return;
    case K_SHIFTADD: FN(k_shift_add)(f, g, plan, o0, o1, (const int16_t *)x, acc, ch); return;
    case K_SHIFTADD8: FN(k_shift_add8)(f, g, plan, o0, o1, (const int8_t *)x, acc, ch); return;
    case K_SHIFTADD32:
        FN(k_shift_add32)(f, g, plan, o0, o1, (const int16_t *)x, acc, ch);
        return;
#if ISA_AVX512
    case K_CHAN: FN(k_chan)(f, g, plan, (const uint16_t *)x, acc); return;
#endif
#if ISA_AVX2
    case K_SHUF16: BLOCKED(FN(shuf16_block), L_PTR(uint8_t, 28), uint8_t, 32, 2); return;
    case K_SHUF8: BLOCKED(FN(shuf8_block), L_PTR(int8_t, 27), uint8_t, 32, 2); return;
#endif
#if ISA_AVX512
    case K_PERMW: BLOCKED(FN(permw_block), L_PTR(int16_t, 29), uint16_t, 32, 8); return;
    case K_PERMB: BLOCKED(FN(permb_block), L_PTR(int8_t, 27), uint8_t, 64, 4); return;
#endif
#if ISA_NEON
    case K_TBL16: BLOCKED(FN(tbl16_block), L_PTR(uint8_t, 28), uint8_t, 16, 2); return;
    case K_TBL8: BLOCKED(FN(tbl8_block), L_PTR(int8_t, 27), uint8_t, 16, 2); return;
#endif
    default: FN(k_gather)(f, g, plan, o0, o1, x, acc); return;
    }
}

#if ISA_AVX512
/* out = [relu](sat(sat((a * m + bb) >> r) + res)) of n contiguous positions (sat: clamp to
 * +-(2^31 - 1)), sixteen at a time in two halves of eight int64 lanes (m fits int32:
 * vpmuldq); the narrowing to int32 saturates (vpmovsqd) and a max lifts INT32_MIN to
 * -(2^31 - 1); the scalar loop below computes the same. Given outc, the codes come from
 * the same registers (code_lanes) */
static void FN(requant_run)(const int32_t *a, const int32_t *res, int64_t n, int64_t m,
                            int64_t bb, int64_t r, int relu, int32_t *out, void *outc,
                            const Thr32 *T, int64_t fmt, int64_t sb, int64_t sgn) {
    const int64_t es = fmt == 0 ? 1 : 2;
    const __m512i vm = _mm512_set1_epi64(m), vb = _mm512_set1_epi64(bb);
    const __m512i hi = _mm512_set1_epi64(I32MAX), lo = _mm512_set1_epi64(-I32MAX);
    const __m512i floor32 = _mm512_set1_epi32(relu ? 0 : -I32MAX);
    const __m128i vr = _mm_cvtsi64_si128(r);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512i a32 = _mm512_maskz_loadu_epi32(k, a + i);
        __m512i v0 = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(a32));
        __m512i v1 = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(a32, 1));
        v0 = _mm512_sra_epi64(_mm512_add_epi64(_mm512_mul_epi32(v0, vm), vb), vr);
        v1 = _mm512_sra_epi64(_mm512_add_epi64(_mm512_mul_epi32(v1, vm), vb), vr);
        if (res) {
            const __m512i r32 = _mm512_maskz_loadu_epi32(k, res + i);
            v0 = _mm512_add_epi64(_mm512_min_epi64(_mm512_max_epi64(v0, lo), hi),
                                  _mm512_cvtepi32_epi64(_mm512_castsi512_si256(r32)));
            v1 = _mm512_add_epi64(_mm512_min_epi64(_mm512_max_epi64(v1, lo), hi),
                                  _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(r32, 1)));
        }
        const __m512i y = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtsepi64_epi32(v0)),
                                             _mm512_cvtsepi64_epi32(v1), 1);
        const __m512i yc = _mm512_max_epi32(y, floor32);
        if (out) _mm512_mask_storeu_epi32(out + i, k, yc);
        if (outc) /* the codes from the same register (code_lanes, as codes_of) */
            FN(store_codes)((uint8_t *)outc + es * i, FN(code_lanes)((VI32)yc, T, fmt, sb, sgn),
                            n - i < 16 ? n - i : 16, fmt);
    }
}
#endif

/* out = [relu](a * k + c [+ res]) of n contiguous positions in int32 with nothing to
 * saturate (netplan._requant32 proved it), and its codes from the same registers */
static void FN(out32_run)(const int32_t *a, const int32_t *res, int64_t n, int32_t k,
                          int32_t c, int relu, int32_t *outy, void *outc, const Thr32 *T,
                          int64_t fmt, int64_t sb, int64_t sgn) {
    const int64_t es = fmt == 0 ? 1 : 2;
    for (int64_t i = 0; i < n; i += VL) {
        const int64_t m = n - i < VL ? n - i : VL;
        VI32 v = FN(load_lanes)(a, i, n) * VB(k) + VB(c);
        if (res) v += FN(load_lanes)(res, i, n);
        if (relu) v &= v > VB(0);
        if (outy && m == VL) memcpy(outy + i, &v, sizeof v);
        else if (outy) memcpy(outy + i, &v, (size_t)(4 * m));
        if (outc) FN(store_codes)((uint8_t *)outc + es * i, FN(code_lanes)(v, T, fmt, sb, sgn),
                                  m, fmt);
    }
}

/* requant / residual / ReLU / codes of channels o0..o1 from their accumulators */
__attribute__((noinline)) static void FN(layer_out)(const int64_t *f, const Grp *g, const int64_t *plan, uint8_t *arena, int64_t o0,
                          int64_t o1, int32_t *acc, int32_t *tmp) {
    const int64_t OH = L_OH, OW = L_OW, Wph = L_WPH, pst = PST(f), OHW = OH * OW;
    const int64_t pimg = L_HPH * Wph; /* accumulator positions per image */
    const int64_t fmt = f[34], n = f[36], kbits = f[37], sgn = f[38];
    const int64_t es = fmt == 1 ? 2 : 1;
    if (f[39]) { /* thresholds on the accumulator (program.AccThresholds) */
        const int32_t *flip = L_PTR(int32_t, 40), *up = L_PTR(int32_t, 41);
        const int32_t *wn = f[42] >= 0 ? L_PTR(int32_t, 42) : NULL;
        const int32_t sb = 1 << kbits;
        (void)tmp;
        /* rows of an image's accumulator are whole output rows (Wph == OW: the map is
         * contiguous), so each image's codes are VL-wide runs stored straight to the output
         * (loads may run past OH * OW within the padded accumulator; those codes are not
         * stored) */
        for (int64_t o = o0; o < o1; o++) {
            const int32_t *u = up + o * n, *w = wn ? wn + o * n : NULL;
            const int fl = flip[o] != 0, asc = ascending(u, n);
            for (int64_t b = 0; b < g->B; b++) {
                uint8_t *outc = (uint8_t *)BUF(arena + b * g->istride, plan, f[1]);
                const int32_t *a = acc + o * pst + b * pimg;
                for (int64_t p = 0; p < OHW; p += VL) {
                    VI32 v, code;
                    memcpy(&v, a + p, sizeof v);
                    if (fl) v = (VI32)(-(VU32)v);
                    if (w) {
                        const VI32 k0 = FN(count_thr)(v, u, n, 1, asc);
                        VI32 k1 = {0};
                        for (int64_t j = 0; j < n; j++) k1 -= v <= VB(w[j]);
                        code = fmt == 0 ? ((k0 + k1) | ((k1 > VB(0)) & VB(sb))) : k0 - k1;
                    } else {
                        code = FN(count_thr)(v, u, n, 1, asc);
                    }
                    FN(store_codes)((uint8_t *)outc + es * (o * OHW + p), code,
                                    OHW - p < VL ? OHW - p : VL, fmt);
                }
            }
        }
        return;
    }
    const int64_t *M = L_PTR(int64_t, 30), *Bq = L_PTR(int64_t, 31), *R = L_PTR(int64_t, 32);
    const int64_t *thr = L_PTR(int64_t, 35);
    const int64_t relu = f[33];
    /* the 32-bit epilogue (netplan._requant32) on whole rows */
    const int32_t *K32 = f[70] >= 0 && Wph == OW ? L_PTR(int32_t, 70) : NULL;
    const int32_t *C32 = K32 ? L_PTR(int32_t, 71) : NULL;
    Thr32 T; /* the epilogues count codes in their registers */
    thr32_of(&T, thr, n);
    for (int64_t b = 0; b < g->B; b++) {
        uint8_t *ar_ = arena + b * g->istride;
        uint8_t *outc = f[1] >= 0 ? (uint8_t *)BUF(ar_, plan, f[1]) : NULL;
        int32_t *outy = f[2] >= 0 ? (int32_t *)BUF(ar_, plan, f[2]) : NULL;
        const int32_t *res = f[3] >= 0 ? (const int32_t *)BUF(ar_, plan, f[3]) : NULL;
        for (int64_t o = o0; o < o1; o++) {
            const int32_t *a = acc + o * pst + b * pimg;
            const int64_t m = M[o], bb = Bq[o], r = R[o], base = o * OHW;
            if (K32 && n <= 256) {
                FN(out32_run)(a, res ? res + base : NULL, OHW, K32[o], C32[o], (int)relu,
                              outy ? outy + base : NULL, outc ? outc + es * base : NULL, &T,
                              fmt, 1 << kbits, sgn);
                continue;
            }
#if ISA_AVX512
            if (Wph == OW && m >= INT32_MIN && m <= INT32_MAX && r >= 0 && r < 64 &&
                n <= 256) {
                FN(requant_run)(a, res ? res + base : NULL, OHW, m, bb, r, (int)relu,
                                outy ? outy + base : NULL, outc ? outc + es * base : NULL, &T,
                                fmt, 1 << kbits, sgn);
                continue;
            }
#endif
            for (int64_t oy = 0; oy < OH; oy++) {
                const int32_t *ar = a + oy * Wph;
                int32_t *tr = tmp + oy * OW;
                for (int64_t p = 0; p < OW; p++) {
                    const int64_t y = ((int64_t)ar[p] * m + bb) >> r;
                    tr[p] = (int32_t)(y > I32MAX ? I32MAX : (y < -I32MAX ? -I32MAX : y));
                }
            }
            if (res)
                for (int64_t p = 0; p < OHW; p++) {
                    const int64_t y = (int64_t)tmp[p] + res[base + p];
                    tmp[p] = (int32_t)(y > I32MAX ? I32MAX : (y < -I32MAX ? -I32MAX : y));
                }
            if (relu)
                for (int64_t p = 0; p < OHW; p++) tmp[p] = tmp[p] > 0 ? tmp[p] : 0;
            if (outy) memcpy(outy + base, tmp, (size_t)(4 * OHW));
            if (outc) FN(codes_of)(tmp, OHW, outc + es * base, fmt, thr, n, kbits, sgn);
        }
    }
}

/* n int32 from s to d: short rows (8 on 8-wide maps) inline, where memcpy of a length
 * known only at run time is a libc call per row */
static inline void FN(copy_i32)(int32_t *d, const int32_t *s, int64_t n) {
#if ISA_AVX512
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_epi32(d + i, k, _mm512_maskz_loadu_epi32(k, s + i));
    }
#else
    for (int64_t i = 0; i < n; i++) d[i] = s[i];
#endif
}

/* accumulators of an interleaved sub-batch ([OH][slots][OW] per channel) back to one image
 * after the other ([b][L_HPH][OW], as layer_out reads them), channel by channel */
static void FN(deinterleave)(const int64_t *f, const Grp *g, int32_t *acc) {
    const int64_t OH = L_OH, OW = L_OW, RS = g->slots * OW, pimg = L_HPH * L_WPH;
    int32_t buf[ILV_MAX_P];
    for (int64_t o = 0; o < L_O; o++) {
        int32_t *a = acc + o * g->pst;
        memcpy(buf, a, (size_t)(4 * g->P));
        for (int64_t b = 0; b < g->B; b++)
            for (int64_t r = 0; r < OH; r++)
                FN(copy_i32)(a + b * pimg + r * OW, buf + r * RS + b * OW, OW);
    }
}

/* accumulators of one image in phased rows (row d = v * rpl + j holds output row
 * v + V * j: netplan._phased_rows) back in row order, channel by channel */
static void FN(unphase)(const int64_t *f, const Grp *g, int32_t *acc) {
    const int64_t OH = L_OH, OW = L_OW;
    int32_t buf[PHASED_MAX_P];
    int64_t to[PHASED_MAX_P]; /* where row d goes: the same for every channel */
    for (int64_t d = 0; d < OH; d++) to[d] = phased_row(f, g, d) * OW;
    for (int64_t o = 0; o < L_O; o++) {
        int32_t *a = acc + o * g->pst;
        memcpy(buf, a, (size_t)(4 * OH * OW));
        for (int64_t d = 0; d < OH; d++) FN(copy_i32)(a + to[d], buf + d * OW, OW);
    }
}

/* one layer for B images (arena + b * istride): sub-batches of f[52] images share the
 * planes so that small feature maps still fill whole vectors */
static void FN(op_layer)(const int64_t *f, const int64_t *plan, uint8_t *arena, uint8_t *scr,
                         int64_t B, int64_t istride) {
    const int kern0 = FN(pick)(f, plan[12]);
    const int sa = kern0 == K_SHIFTADD || kern0 == K_SHIFTADD8 || kern0 == K_SHIFTADD32;
    const int64_t plane = L_HPH * L_WPH, T = L_PTR(int32_t, 22)[L_O];
    const int32_t *within = L_PTR(int32_t, 23), *cp = L_PTR(int32_t, 53);
    const int32_t *order = L_PTR(int32_t, 50);
    for (int64_t b0 = 0; b0 < B; b0 += f[52]) {
        Grp g;
        g.B = B - b0 < f[52] ? B - b0 : f[52];
        g.istride = istride;
        g.ilv = L_ILV && g.B > 1;
        g.slots = g.ilv ? f[52] : g.B;
        const int64_t p_plain = (g.B - 1) * plane + f[45];
        g.P = g.ilv ? g.slots * L_OH * L_OW : p_plain;
        g.pst = ((g.P > p_plain ? g.P : p_plain) + 255) / 256 * 256; /* room to de-interleave */
        /* shift-add groups: per (channel, chunk of input channels) when interleaved */
        const int chunked = g.ilv && sa && f[67] >= 0;
        g.cch = chunked ? L_CCH : L_C;
        g.nch = (L_C + g.cch - 1) / g.cch;
        g.g_off = L_PTR(int32_t, chunked ? 67 : 48);
        g.groups = L_PTR(int32_t, chunked ? 68 : 49);
        const int64_t pst = g.pst;
        /* one image on a small map: output channels across the lanes */
        const int kern = ISA_AVX512 && g.B == 1 && sa && f[60] > 0 && g.P <= CHAN_MAX_P ? K_CHAN
                                                                                    : kern0;
        const int64_t es =
            (kern == K_PERMW || kern == K_INT8 || kern == K_SHIFTADD || kern == K_SHIFTADD32 ||
             kern == K_CHAN) ? 2 : 1;
        g.rpl = g.B == 1 && kern != K_CHAN ? L_RPL : 0; /* the offsets of field 56 assume it */
        int64_t pel = L_C * f[10] * L_SH * copy_stride(1, copy_len(f, &g));
        /* the small-map kernel's padded codes image (uint16) in the copies' room */
        if (kern == K_CHAN && L_C * f[62] * f[63] > pel) pel = L_C * f[62] * f[63];
        const int64_t planes_b = AL64((pel + pst + 64) * 2);
        uint8_t *x = scr;
        int32_t *acc = (int32_t *)(scr + planes_b);
        int32_t *tmp = acc + AL64(L_O * pst * 4) / 4;
        if (g.B == f[52] || g.B == 1 || g.ilv) { /* precomputed: whole sub-batches (all the
                                                    slots when interleaved), single images */
            const int k = g.B == 1 ? 56 : 54;
            g.pix = L_PTR(int32_t, k);
            g.spix = sa ? L_PTR(int32_t, k + 1) : NULL;
        } else { /* the ragged last sub-batch */
            int32_t *pix = tmp + 2 * pst, *spix = pix + T;
            const int64_t cs = copy_stride(g.B, plane);
            for (int64_t t = 0; t < T; t++) pix[t] = (int32_t)(cp[t] * cs + within[t]);
            if (sa)
                for (int64_t t = 0; t < T; t++) spix[t] = pix[order[t]];
            g.pix = pix;
            g.spix = spix;
        }
        uint8_t *ab = arena + b0 * istride;
        /* a 1x1 int8 layer on one image's 1x1 map (linear): the copies would be the input */
        const int direct = kern == K_INT8 && g.B == 1 && L_H == 1 && L_W == 1 && L_HPH == 1 &&
                           L_WPH == 1 && f[10] == 1 && L_SH == 1 && L_PH == 0 && L_PW == 0;
#if ISA_AVX512
        if (kern == K_CHAN) {
            FN(prep_chan)(f, (const uint8_t *)BUF(ab, plan, f[0]), (uint16_t *)x);
            FN(layer_acc)(f, &g, plan, kern, 0, L_O, x, acc, 0);
        } else
#endif
        if (direct) {
            FN(layer_acc)(f, &g, plan, kern, 0, L_O, (const uint8_t *)BUF(ab, plan, f[0]), acc, 0);
        } else { /* input channels in chunks whose copies fit L1 (table kernels: one chunk) */
            for (int64_t c0 = 0, ch = 0; c0 < L_C; c0 += g.cch, ch++) {
                FN(prep)(f, &g, BUF(ab, plan, f[0]), x, es, sa ? L_PTR(int16_t, 51) : NULL, c0,
                         c0 + g.cch < L_C ? c0 + g.cch : L_C);
                FN(layer_acc)(f, &g, plan, kern, 0, L_O, x, acc, ch);
            }
        }
        if (g.ilv) FN(deinterleave)(f, &g, acc);
        if (g.rpl) FN(unphase)(f, &g, acc);
        FN(layer_out)(f, &g, plan, ab, 0, L_O, acc, tmp);
    }
}

/* ---------------------------------------------------------------- the other steps */

static void FN(op_affine)(const int64_t *f, const int64_t *plan, uint8_t *arena) {
    const int32_t *s = (const int32_t *)BUF(arena, plan, f[0]);
    int32_t *d = (int32_t *)BUF(arena, plan, f[1]);
    const int64_t C = f[2], HW = f[3];
    const int64_t *M = (const int64_t *)(plan + f[4]), *B = (const int64_t *)(plan + f[5]);
    const int64_t *R = (const int64_t *)(plan + f[6]);
    for (int64_t c = 0; c < C; c++)
        for (int64_t p = 0; p < HW; p++)
            d[c * HW + p] = (int32_t)FN(sat)(((int64_t)s[c * HW + p] * M[c] + B[c]) >> R[c]);
}

static void FN(op_pool)(const int64_t *f, const int64_t *plan, uint8_t *arena) {
    const int32_t *s = (const int32_t *)BUF(arena, plan, f[0]);
    int32_t *d = (int32_t *)BUF(arena, plan, f[1]);
    const int64_t C = f[2], H = f[3], W = f[4], mx = f[5], kh = f[6], kw = f[7], sh = f[8];
    const int64_t sw = f[9], ph = f[10], pw = f[11], dh = f[12], dw = f[13], OH = f[14];
    const int64_t OW = f[15], dv = f[16];
    /* non-overlapping windows inside the map (global pooling of small maps): no bounds
     * tests; a power-of-two divisor is an arithmetic shift (floor division, exactly) */
    if (!mx && ph == 0 && pw == 0 && dh == 1 && dw == 1 && (OH - 1) * sh + kh <= H &&
        (OW - 1) * sw + kw <= W && dv > 0 && (dv & (dv - 1)) == 0) {
        const int sh2 = __builtin_ctzll((unsigned long long)dv);
        if (OH == 1 && OW == 1 && kh == H && kw == W) { /* global: one contiguous run each */
            const int64_t n = H * W;
            for (int64_t c = 0; c < C; c++) {
                const int32_t *sp = s + c * n;
                int64_t acc = 0;
                for (int64_t i = 0; i < n; i++) acc += sp[i];
                d[c] = (int32_t)(acc >> sh2);
            }
            return;
        }
        for (int64_t c = 0; c < C; c++)
            for (int64_t oy = 0; oy < OH; oy++)
                for (int64_t ox = 0; ox < OW; ox++) {
                    const int32_t *sp = s + (c * H + oy * sh) * W + ox * sw;
                    int64_t acc = 0;
                    for (int64_t i = 0; i < kh; i++)
                        for (int64_t j = 0; j < kw; j++) acc += sp[i * W + j];
                    d[(c * OH + oy) * OW + ox] = (int32_t)(acc >> sh2);
                }
        return;
    }
    for (int64_t c = 0; c < C; c++)
        for (int64_t oy = 0; oy < OH; oy++)
            for (int64_t ox = 0; ox < OW; ox++) {
                int64_t acc = mx ? INT64_MIN : 0;
                for (int64_t i = 0; i < kh; i++)
                    for (int64_t j = 0; j < kw; j++) {
                        const int64_t y = oy * sh - ph + i * dh, x = ox * sw - pw + j * dw;
                        const int in = y >= 0 && y < H && x >= 0 && x < W;
                        const int64_t v = in ? s[(c * H + y) * W + x] : (mx ? INT64_MIN : 0);
                        if (mx) acc = v > acc ? v : acc;
                        else acc += v;
                    }
                d[(c * OH + oy) * OW + ox] =
                    (int32_t)(mx ? acc : FN(floordiv)(acc, dv));
            }
}

static void FN(op_shortcut)(const int64_t *f, const int64_t *plan, uint8_t *arena) {
    const int32_t *s = (const int32_t *)BUF(arena, plan, f[0]);
    int32_t *d = (int32_t *)BUF(arena, plan, f[1]);
    const int64_t C = f[2], H = f[3], W = f[4], st = f[5], pad = f[6], OH = f[7], OW = f[8];
    memset(d, 0, (size_t)(4 * (C + pad) * OH * OW));
    for (int64_t c = 0; c < C; c++)
        for (int64_t y = 0; y < OH; y++)
            for (int64_t x = 0; x < OW; x++)
                d[((c + pad / 2) * OH + y) * OW + x] = s[(c * H + y * st) * W + x * st];
}

/* B images x[b] (arena + b * istride each), scratch after them */
static void FN(run_group)(const int64_t *plan, const float *x, int64_t B, uint8_t *arena,
                          int64_t *prof) {
    const int64_t istride = plan[14];
    uint8_t *scr = arena + B * istride;
    const int64_t *op = plan + plan[10];
    for (int64_t k = 0; k < plan[3]; k++, op += op[1]) {
        const int64_t *f = op + 2;
        const int64_t t0 = prof ? now_ns() : 0;
        if (op[0] == OP_LAYER) {
            FN(op_layer)(f, plan, arena, scr, B, istride);
            if (prof) prof[k] += now_ns() - t0;
            continue;
        }
        for (int64_t b = 0; b < B; b++) {
            uint8_t *ab = arena + b * istride;
            switch (op[0]) {
            case OP_INPUTQ: FN(op_inputq)(f, plan, x + b * plan[6], ab); break;
            case OP_QUANT: {
                const int64_t *thr = (const int64_t *)(plan + f[3]);
                FN(codes_of)((const int32_t *)BUF(ab, plan, f[0]), f[2], BUF(ab, plan, f[1]),
                             f[5], thr, f[4], f[6], f[7]);
                break;
            }
            case OP_AFFINE: FN(op_affine)(f, plan, ab); break;
            case OP_RELU: {
                const int32_t *s = (const int32_t *)BUF(ab, plan, f[0]);
                int32_t *d = (int32_t *)BUF(ab, plan, f[1]);
                for (int64_t i = 0; i < f[2]; i++) d[i] = s[i] > 0 ? s[i] : 0;
                break;
            }
            case OP_ADD: {
                const int32_t *a = (const int32_t *)BUF(ab, plan, f[0]);
                const int32_t *c = (const int32_t *)BUF(ab, plan, f[1]);
                int32_t *d = (int32_t *)BUF(ab, plan, f[2]);
                for (int64_t i = 0; i < f[3]; i++) d[i] = (int32_t)FN(sat)((int64_t)a[i] + c[i]);
                break;
            }
            case OP_POOL: FN(op_pool)(f, plan, ab); break;
            case OP_SHORTCUT: FN(op_shortcut)(f, plan, ab); break;
            case OP_COPY: {
                const uint8_t *s = (const uint8_t *)BUF(ab, plan, f[0]);
                uint8_t *d = (uint8_t *)BUF(ab, plan, f[1]);
                for (int64_t i = 0; i < f[2]; i++)
                    memcpy(d + i * f[5] + f[6], s + i * f[4], (size_t)f[3]);
                break;
            }
            default: break;
            }
        }
        if (prof) prof[k] += now_ns() - t0;
    }
}

#undef FN
