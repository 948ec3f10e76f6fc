/* potlut whole-network runner: one native call runs every step of an integer program on a
 * batch (no Python between layers).  The plan is the int64 array written by
 * potlut/infer/kernels/netplan.py:
 *
 *   header[16]: magic, version, n_bufs, n_ops, arena bytes per image, scratch offset,
 *               input floats per image, n_outputs, buffer table, outputs, ops, words
 *   buffers:    [dtype (0 u8, 1 i16, 2 i32), elements, byte offset in the arena, 0]
 *   ops:        [type, words, fields...]; array fields are word offsets into the plan
 *
 * Convolutions are direct (no im2col): each input channel is copied once per kernel column
 * and row phase, shifted and strided so that column kx of output row oy sits at [r][ox]
 * (zero where the padding is), so every non-zero weight tap reads one contiguous run of
 * output positions at a whole number of rows (aligned loads on wide maps), and the kernels
 * compute exactly the OH x OW outputs (rows of OW, no padding columns).  P-LUT products
 * are table reads, never multiplications:
 *   AVX-512 (F, BW, VBMI): vpermb (64 int8 products per instruction: 3-bit IOS-PoT) and
 *            vpermw (32 int16 products: 4-bit)
 *   AVX2:    vpshufb on 16-entry rows (8-bit products directly; 16-bit as low/high bytes)
 *   NEON:    vqtbl1q on 16-entry rows (the same two forms)
 *   scalar:  one int32 table read per product (any table)
 * Partial sums stay int8 / int16 for runs of taps whose worst case cannot overflow
 * (flags computed offline) and widen to int32 there.  The 8-bit fixed-point first/last
 * layers multiply (int16 x int16 -> int32).  Semantics: potlut/infer/reference.py.
 * Each instruction set is a separate copy of plut_net_body.h compiled under its target
 * pragma, chosen at run time, so one library serves every x86-64 CPU. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#ifndef POTLUT_NO_THREADS
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define POTLUT_X86 1
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#define POTLUT_ARM64 1
#endif

#define I32MAX 2147483647LL
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define AL64(n) (((n) + 63) / 64 * 64)
#define BUF(arena, plan, id) ((void *)((arena) + (plan)[(plan)[8] + 4 * (id) + 2]))
#define L_PTR(T, i) ((const T *)(plan + f[i]))
#define L_C f[4]
#define L_H f[5]
#define L_W f[6]
#define L_O f[7]
#define L_SH f[11]
#define L_SW f[12]
#define L_PH f[13]
#define L_PW f[14]
#define L_OH f[17]
#define L_OW f[18]
#define L_MODE f[19]
#define L_KFMT f[20]
#define L_A f[21]
#define L_HPH f[43]
#define L_WPH f[44]
#define L_ILV f[65] /* sub-batches of f[52] images interleave their rows */
#define L_CCH f[66] /* input channels per chunk of interleaved sub-batches (groups: f[67], f[68]) */
#define L_RPL f[69] /* single images: phased rows, this many output rows a line (0: plain) */
#define L_P (g->P)
#define PST(f) (g->pst)

/* elements from one input copy of nb images to the next (netplan.copy_stride): a multiple
 * of 64, so vector loads at whole rows of a 32- or 64-wide map are aligned */
static inline int64_t copy_stride(int64_t nb, int64_t plane) {
    const int64_t n = nb * plane;
    return n < 32 ? n : (n + 63) / 64 * 64;
}

/* a layer's sub-batch: images, accumulator positions, tap offsets in its planes */
typedef struct {
    int64_t B, P, pst, istride;
    int64_t slots; /* images the input copies have room for (B, or f[52] when interleaved) */
    int ilv;       /* rows of the slots' images interleaved (netplan: interleaved layers) */
    int64_t rpl;   /* one image in phased rows (netplan._phased_rows): output rows a line */
    const int32_t *pix, *spix;
    const int32_t *g_off, *groups; /* shift-add groups, nch per output channel */
    int64_t nch, cch;              /* chunks of input channels, channels per chunk */
} Grp;

/* the row that row d of a phased copy (or accumulator) holds: rows d = v * rpl + j hold
 * v + V * j, V = OH / rpl (netplan._phased_rows); d itself where the image is not phased */
static inline int64_t phased_row(const int64_t *f, const Grp *g, int64_t d) {
    return g->rpl ? d / g->rpl + L_OH / g->rpl * (d % g->rpl) : d;
}

/* elements of one input copy before copy_stride's rounding: the slots' images, or one
 * image's phased lines (one per row offset a tap can have, plus V - 1: netplan) */
static inline int64_t copy_len(const int64_t *f, const Grp *g) {
    if (g->rpl) return (L_HPH - L_OH + L_OH / g->rpl) * g->rpl * L_WPH;
    return g->slots * L_HPH * L_WPH;
}

/* thread CPU time (the per-op profile), ns */
static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* int32 lanes as GCC vectors, as wide as each copy's registers (VL lanes: 16 under AVX-512,
 * 8 under AVX2, 4 for SSE2 / NEON), for the threshold counting written once for all */
#define LANE_TYPES(n)                                                   \
    typedef int32_t vi32x##n __attribute__((vector_size(4 * (n))));    \
    typedef uint32_t vu32x##n __attribute__((vector_size(4 * (n))));   \
    typedef int16_t vi16x##n __attribute__((vector_size(2 * (n))));    \
    typedef uint8_t vu8x##n __attribute__((vector_size(n)));
LANE_TYPES(16)
LANE_TYPES(8)
LANE_TYPES(4)
#undef LANE_TYPES
#define VB(x) ((VI32){0} + (int32_t)(x))

enum { OP_INPUTQ = 1, OP_QUANT, OP_LAYER, OP_AFFINE, OP_RELU, OP_ADD, OP_POOL, OP_SHORTCUT,
       OP_COPY };
enum { K_GATHER, K_INT8, K_SHIFTADD, K_SHUF16, K_SHUF8, K_PERMW, K_PERMB, K_TBL16, K_TBL8, K_SHIFTADD8,
       K_CHAN, K_SHIFTADD32 };
/* a one-image layer with at most this many accumulator positions runs with output channels
 * across the lanes (K_CHAN), where the pixel-vector kernels would leave most lanes empty */
#define CHAN_MAX_P 24
#define ILV_MAX_P 4096 /* accumulator positions of an interleaved sub-batch (netplan) */
#define PHASED_MAX_P 256 /* accumulator positions of a phased image (netplan._phased_rows) */
enum { ISA_ID_SCALAR, ISA_ID_AVX2, ISA_ID_AVX512, ISA_ID_NEON };

/* code thresholds as int32 for the lane-wise count (a threshold above 2^31 - 1 is never
 * reached, one below 0 always: |y| <= 2^31 - 1), and whether they ascend (count_thr) */
typedef struct {
    int32_t t[256];
    int64_t n;
    int asc;
} Thr32;

/* whether t[0..n) never decrease (thresholds of increasing levels do; the table search
 * of count_thr relies on it and callers check once per channel) */
static inline int ascending(const int32_t *t, int64_t n) {
    for (int64_t j = 1; j < n; j++)
        if (t[j] < t[j - 1]) return 0;
    return 1;
}

static void thr32_of(Thr32 *T, const int64_t *thr, int64_t n_thr) {
    T->n = 0;
    for (int64_t j = 0; j < n_thr && T->n < 256; j++)
        if (thr[j] <= I32MAX) T->t[T->n++] = (int32_t)(thr[j] > 0 ? thr[j] : 0);
    T->asc = ascending(T->t, T->n);
}

#define SFX _scalar
#define VL 4
#define VI32 vi32x4
#define VU32 vu32x4
#define VI16 vi16x4
#define VU8 vu8x4
#define ISA_AVX2 0
#define ISA_AVX512 0
#define ISA_NEON 0
#include "plut_net_body.h"
#undef SFX
#undef VL
#undef VI32
#undef VU32
#undef VI16
#undef VU8
#undef ISA_AVX2
#undef ISA_AVX512
#undef ISA_NEON

#ifdef POTLUT_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,popcnt")
#define SFX _avx2
#define VL 8
#define VI32 vi32x8
#define VU32 vu32x8
#define VI16 vi16x8
#define VU8 vu8x8
#define ISA_AVX2 1
#define ISA_AVX512 0
#define ISA_NEON 0
#include "plut_net_body.h"
#undef SFX
#undef VL
#undef VI32
#undef VU32
#undef VI16
#undef VU8
#undef ISA_AVX2
#undef ISA_AVX512
#undef ISA_NEON
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi")
#define SFX _avx512
#define VL 16
#define VI32 vi32x16
#define VU32 vu32x16
#define VI16 vi16x16
#define VU8 vu8x16
#define ISA_AVX2 1
#define ISA_AVX512 1
#define ISA_NEON 0
#include "plut_net_body.h"
#undef SFX
#undef VL
#undef VI32
#undef VU32
#undef VI16
#undef VU8
#undef ISA_AVX2
#undef ISA_AVX512
#undef ISA_NEON
#pragma GCC pop_options
#endif

#ifdef POTLUT_ARM64
#define SFX _neon
#define VL 4
#define VI32 vi32x4
#define VU32 vu32x4
#define VI16 vi16x4
#define VU8 vu8x4
#define ISA_AVX2 0
#define ISA_AVX512 0
#define ISA_NEON 1
#include "plut_net_body.h"
#undef SFX
#undef VL
#undef VI32
#undef VU32
#undef VI16
#undef VU8
#undef ISA_AVX2
#undef ISA_AVX512
#undef ISA_NEON
#endif

/* whether this CPU runs the given instruction set's copy */
int64_t potlut_net_isa_supported(int64_t isa) {
    switch (isa) {
    case ISA_ID_SCALAR: return 1;
#ifdef POTLUT_X86
    case ISA_ID_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("bmi2");
    case ISA_ID_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2") &&
               __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vbmi");
#endif
#ifdef POTLUT_ARM64
    case ISA_ID_NEON: return 1;
#endif
    default: return 0;
    }
}

typedef int (*pick_fn)(const int64_t *, int64_t);

static pick_fn pick_of(int64_t isa) {
    switch (isa) {
#ifdef POTLUT_X86
    case ISA_ID_AVX2: return pick_avx2;
    case ISA_ID_AVX512: return pick_avx512;
#endif
#ifdef POTLUT_ARM64
    case ISA_ID_NEON: return pick_neon;
#endif
    case ISA_ID_SCALAR: return pick_scalar;
    default: return NULL;
    }
}

/* the kernel each layer op of the plan runs with this instruction set (K_* ids), so the
 * tests can check which code ran; returns the number of layers, -1 if the ISA is absent */
int64_t potlut_net_kernels(const int64_t *plan, int64_t isa, int64_t *out) {
    pick_fn pick = pick_of(isa);
    if (!pick) return -1;
    const int64_t *op = plan + plan[10];
    int64_t n = 0;
    for (int64_t k = 0; k < plan[3]; k++, op += op[1])
        if (op[0] == OP_LAYER) out[n++] = pick(op + 2, plan[12]);
    return n;
}

/* the same for a call on one image (small maps may take K_CHAN there) */
int64_t potlut_net_kernels1(const int64_t *plan, int64_t isa, int64_t *out) {
    const int64_t n = potlut_net_kernels(plan, isa, out);
    const int64_t *op = plan + plan[10];
    for (int64_t k = 0, i = 0; n > 0 && k < plan[3]; k++, op += op[1])
        if (op[0] == OP_LAYER) {
            const int64_t *f = op + 2;
            if (isa == ISA_ID_AVX512 && f[60] > 0 && plan[12] != 1 && f[45] <= CHAN_MAX_P)
                out[i] = K_CHAN;
            i++;
        }
    return n;
}

typedef void (*image_fn)(const int64_t *, const float *, int64_t, uint8_t *, int64_t *);

static image_fn pick_isa(int64_t isa) {
    switch (isa) {
#ifdef POTLUT_X86
    case ISA_ID_AVX2: return run_group_avx2;
    case ISA_ID_AVX512: return run_group_avx512;
#endif
#ifdef POTLUT_ARM64
    case ISA_ID_NEON: return run_group_neon;
#endif
    case ISA_ID_SCALAR: return run_group_scalar;
    default: return NULL;
    }
}

typedef struct {
    const int64_t *plan;
    const float *x;
    int64_t n0, n1;
    void **outs;
    uint8_t *arena;
    int64_t stride, keep;
    image_fn fn;
    int64_t *prof;
} Job;

#define MAX_THREADS 64 /* per call */

/* images n0..n1 in groups of plan[13] (the last one ragged); keep: group g of the batch at
 * arena + g * stride (thread shares then start on a group) */
static void run_images(const Job *j) {
    const int64_t *plan = j->plan, in = plan[6], G = plan[13], istride = plan[14];
    const int64_t *outs = plan + plan[9];
    for (int64_t n = j->n0; n < j->n1; n += G) {
        const int64_t B = j->n1 - n < G ? j->n1 - n : G;
        uint8_t *arena = j->keep ? j->arena + (n / G) * j->stride : j->arena;
        j->fn(plan, j->x + n * in, B, arena, j->prof);
        for (int64_t b = 0; b < B; b++)
            for (int64_t k = 0; k < plan[7]; k++) {
                const int64_t *d = plan + plan[8] + 4 * outs[k];
                const int64_t bytes = d[1] * (d[0] == 0 ? 1 : (d[0] == 1 ? 2 : 4));
                memcpy((uint8_t *)j->outs[k] + (n + b) * bytes, arena + b * istride + d[2],
                       (size_t)bytes);
            }
    }
}

#ifndef POTLUT_NO_THREADS
static void *thread_main(void *p) {
    run_images((const Job *)p);
    return NULL;
}

/* Worker threads kept between calls.  Starting and joining a thread per call cost 40-45 us,
 * a fifth of a 64-image digits batch per thread; a worker that sleeps on a condition
 * variable wakes in about 20 us.  So a worker spins on the call word for a while after its
 * last job (1 ms, or $POTLUT_SPIN_US microseconds; as OpenMP's block time and onnxruntime's
 * pool do) and only then sleeps: back-to-back calls find it awake.  One call uses the pool
 * at a time; a concurrent call starts threads of its own.  The call word packs the call
 * count (high bits) and how many workers take part (low byte), read in one load, so a
 * worker never mixes two calls. */
#define POOL_MAX (MAX_THREADS - 1) /* workers: every thread of a call but the caller */
#define SPIN_US 1000 /* default spin (POTLUT_SPIN_US overrides; 0: sleep at once) */
static struct {
    pthread_mutex_t busy, m;
    pthread_cond_t cv;
    atomic_llong call;   /* count << 8 | workers taking part */
    atomic_int pending;  /* workers of this call not done yet */
    int started;         /* workers running (worker i runs jobs[i], i >= 1) */
    const Job *jobs;
    long long first[POOL_MAX + 1]; /* the call word when worker i was started */
    int64_t spin_ns;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void cpu_relax(void) {
#if POTLUT_X86
    _mm_pause();
#elif POTLUT_ARM64
    __asm__ __volatile__("yield");
#endif
}

static void *pool_main(void *arg) {
    const long long me = (long long)(intptr_t)arg;
    long long seen = pool.first[me]; /* not the word now: a call may already be posted */
    for (;;) {
        long long c;
        int64_t t0 = mono_ns(), k = 0;
        while ((c = atomic_load_explicit(&pool.call, memory_order_acquire)) == seen) {
            cpu_relax();
            if (++k % 256 == 0 && mono_ns() - t0 > pool.spin_ns) {
                pthread_mutex_lock(&pool.m);
                while ((c = atomic_load(&pool.call)) == seen) pthread_cond_wait(&pool.cv, &pool.m);
                pthread_mutex_unlock(&pool.m);
                break;
            }
        }
        seen = c;
        if (me <= (c & 255)) {
            run_images(&pool.jobs[me]);
            atomic_fetch_sub_explicit(&pool.pending, 1, memory_order_release);
        }
    }
    return NULL;
}

/* a fork's child has none of the workers: start afresh */
static void pool_after_fork(void) {
    pthread_mutex_init(&pool.busy, NULL);
    pthread_mutex_init(&pool.m, NULL);
    pthread_cond_init(&pool.cv, NULL);
    pool.started = 0;
}

/* jobs[1..threads-1] on the pool's workers, jobs[0] here; 0 if the pool is busy or short
 * of workers (nothing run) */
static int pool_run(const Job *jobs, int64_t threads) {
    static int registered = 0; /* pthread_atfork, once (under pool.busy) */
    if (pthread_mutex_trylock(&pool.busy) != 0) return 0;
    if (!registered) {
        const char *env = getenv("POTLUT_SPIN_US");
        pool.spin_ns = 1000LL * (env && *env ? atoll(env) : SPIN_US);
        registered = pthread_atfork(NULL, NULL, pool_after_fork) == 0;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    while (pool.started < threads - 1) {
        pthread_t tid;
        pool.first[pool.started + 1] = atomic_load(&pool.call);
        if (pthread_create(&tid, &attr, pool_main, (void *)(intptr_t)(pool.started + 1)) != 0)
            break;
        pool.started++;
    }
    pthread_attr_destroy(&attr);
    if (pool.started < threads - 1) {
        pthread_mutex_unlock(&pool.busy);
        return 0;
    }
    pool.jobs = jobs;
    atomic_store(&pool.pending, (int)(threads - 1));
    pthread_mutex_lock(&pool.m);
    atomic_store_explicit(&pool.call, ((atomic_load(&pool.call) >> 8) + 1) << 8 | (threads - 1),
                          memory_order_release);
    pthread_cond_broadcast(&pool.cv);
    pthread_mutex_unlock(&pool.m);
    run_images(&jobs[0]);
    for (int64_t k = 0; atomic_load_explicit(&pool.pending, memory_order_acquire) > 0; k++)
        if (k < 4096) cpu_relax(); else sched_yield();
    pthread_mutex_unlock(&pool.busy);
    return 1;
}
#endif

/* Run N images x [N][in] through the plan; outputs to outs[k] ([N][elements of output k]).
 * arena: keep ? ceil(N / group) : threads arenas of `stride` bytes (one group of plan[13]
 * images each; keep: every buffer of every image stays for the caller).  Groups are split
 * between threads in contiguous runs.
 * prof (NULL: none): thread CPU ns spent in each op, summed (one thread only).
 * Returns 0, -1 (bad plan, misaligned arena or stride, ISA not available here) or -2 (a NaN
 * or infinite input). */
int64_t potlut_net_run(const int64_t *plan, const float *x, int64_t N, void **outs,
                       uint8_t *arena, int64_t stride, int64_t keep, int64_t isa,
                       int64_t threads, int64_t *prof) {
    if (plan[0] != 0x504C55544E4554LL || plan[1] != 1 || stride < plan[4]) return -1;
    /* every thread's (and kept group's) arena 64-byte aligned: the kernels' vector loads and
     * stores assume it, and a misaligned one splits every line (a 2nd thread ran 33 % slower) */
    if ((stride | (int64_t)(uintptr_t)arena) & 63) return -1;
    if (!potlut_net_isa_supported(isa)) return -1;
    if (N <= 0) return 0;
    int bad = 0; /* NaN or infinity anywhere in the input: refused (-2), nothing run */
    for (int64_t i = 0; i < N * plan[6]; i++) bad |= x[i] - x[i] != 0.0f;
    if (bad) return -2;
    image_fn fn = pick_isa(isa);
    if (!fn) return -1;
    if (threads < 1 || prof) threads = 1;
    if (threads > N) threads = N;
#ifdef POTLUT_NO_THREADS
    threads = 1;
#endif
    Job jobs[MAX_THREADS];
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    for (int64_t t = 0; t < threads; t++) {
        /* keep: whole groups of plan[13] (group g at arena + g * stride); else even shares */
        const int64_t G = plan[13], ng = (N + G - 1) / G;
        const int64_t a0 = keep ? ng * t / threads * G : N * t / threads;
        const int64_t a1 = keep ? ng * (t + 1) / threads * G : N * (t + 1) / threads;
        Job j = {plan, x, a0 < N ? a0 : N, a1 < N ? a1 : N, outs,
                 keep ? arena : arena + t * stride, stride, keep, fn, prof};
        jobs[t] = j;
    }
    if (threads == 1) {
        run_images(&jobs[0]);
        return 0;
    }
#ifndef POTLUT_NO_THREADS
    if (pool_run(jobs, threads)) return 0;
    pthread_t tid[MAX_THREADS];
    int64_t started = 0;
    for (int64_t t = 1; t < threads; t++, started++)
        if (pthread_create(&tid[t], NULL, thread_main, &jobs[t]) != 0) break;
    run_images(&jobs[0]);
    for (int64_t t = 1; t <= started; t++) pthread_join(tid[t], NULL);
    for (int64_t t = started + 1; t < threads; t++) run_images(&jobs[t]); /* not started */
#endif
    return 0;
}
