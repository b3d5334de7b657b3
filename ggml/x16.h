// Shared pieces of the 16-row interleaved layouts' kernels (q4x16.c, q4kx16.c, q6kx16.c, nf4x16.c; nf4.c takes the
// CPU checks): the loop that walks a thread's row groups over spans of tokens, the custom-op body that quantizes
// activations row by row, the one-token kernels' weight requests, and the CPU checks and byte products of the
// AVX-VNNI, NEON dot-product and NEON int8 matrix-multiply paths. Private to those files.
#ifndef IDEFICS2_X16_H
#define IDEFICS2_X16_H

#include <stdint.h>

#include "ggml.h"

#define X16_GROUP 16      // rows per group
#define X16_TILE 8        // tokens per tile call
#define X16_TOKEN_SPAN 64 // tokens whose activations are reused across all row groups of a thread

// How far ahead of the weights being multiplied the AVX2 kernels request them (bytes) when they multiply one
// token. On an AVX2 core a one-token kernel takes about as long per byte as the memory needs to deliver it, and
// without the requests the two hardly overlap: the hardware prefetcher does not run far enough ahead. The
// q4kx16 and q6kx16 kernels also take both halves of a group in one pass for one token (their multi-token
// paths take rows 0-7, then rows 8-15, each from the cache after the first pass).
#define X16_PREFETCH_AHEAD 2304

// How the AVX2 kernels multiply unsigned code bytes by signed activation bytes (their `dot` argument, a
// constant after inlining):
//   X16_DOT_MADDUBS: vpmaddubsw into int16 pairs, widened by vpmaddwd (every AVX2 CPU);
//   X16_DOT_VNNI: AVX-VNNI's vpdpbusd, which adds the four products of each 32-bit lane to an int32 at once;
//   X16_DOT_VNNI_EMULATED: the same int32 sums as vpdpbusd from AVX2 instructions, so that a CPU without
//     AVX-VNNI checks the VNNI kernels' arithmetic (tests only; it is slower than either).
// The kernels' int16 sums never saturate (each file states its bound), so all three give the same integers.
#define X16_DOT_MADDUBS 0
#define X16_DOT_VNNI 1
#define X16_DOT_VNNI_EMULATED 2

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "isacap.h"

// x16_avxvnni reports whether the kernels may run AVX-VNNI's instructions: the CPU (and OS) have them and the
// instruction-set cap allows them.
static inline int x16_avxvnni(void) {
    return idefics2_isa_allows(IDEFICS2_ISA_AVX2_VNNI) && __builtin_cpu_supports("avxvnni");
}

// x16_avx2_hmax is the largest of a's 8 lanes (none of them NaN).
__attribute__((target("avx2"), always_inline))
static inline float x16_avx2_hmax(__m256 a) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}

// x16_avx2_hsum_epi32 is the sum of s's 8 int32 lanes.
__attribute__((target("avx2"), always_inline))
static inline int32_t x16_avx2_hsum_epi32(__m256i s) {
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(1, 0, 3, 2)));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s4);
}

// x16_avx2_pack_i8 packs 32 int32 in −127…127 (q[0] first) into 32 int8 in the same order. The saturating packs are
// exact on that range; they interleave 128-bit lanes (bytes come out as q0[0:4] q1[0:4] q2[0:4] q3[0:4] q0[4:8] …),
// which the permutation undoes.
__attribute__((target("avx2"), always_inline))
static inline __m256i x16_avx2_pack_i8(const __m256i q[4]) {
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// acc + Σ u·s over each 32-bit lane's 4 bytes (u unsigned, s signed), without saturation: vpdpbusd. The VEX
// instruction is written as assembly so that this function, and the kernels that inline it, keep the AVX2
// target; it only runs where the caller checked that the CPU has AVX-VNNI.
__attribute__((target("avx2"), always_inline))
static inline __m256i x16_dpbusd(__m256i acc, __m256i u, __m256i s, const int dot) {
    if (dot == X16_DOT_VNNI) {
        __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u), "x"(s));
        return acc;
    }
    // Even and odd bytes as int16 (u zero-extended, s sign-extended): vpmaddwd's int32 sums are exact.
    const __m256i ue = _mm256_and_si256(u, _mm256_set1_epi16(0x00FF)), uo = _mm256_srli_epi16(u, 8);
    const __m256i se = _mm256_srai_epi16(_mm256_slli_epi16(s, 8), 8), so = _mm256_srai_epi16(s, 8);
    return _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(ue, se), _mm256_madd_epi16(uo, so)));
}
#endif

#if defined(__aarch64__) && defined(__ARM_NEON) && (defined(__GNUC__) || defined(__clang__))
#define X16_HAVE_NEON 1
#include <arm_neon.h>
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1 << 13)
#endif
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif

// The NEON kernels use the dot-product extension (sdot, Armv8.2 and later: Apple M1 on, Cortex-A55/A75 on,
// Neoverse). Where the compiler's target already has it no attribute is needed; otherwise the functions carry it
// and only run after x16_arm_dotprod said the CPU has it.
#if defined(__ARM_FEATURE_DOTPROD)
#define X16_DOTPROD_TARGET
#elif defined(__clang__)
#define X16_DOTPROD_TARGET __attribute__((target("dotprod")))
#else
#define X16_DOTPROD_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

// The int8 matrix-multiply extension (smmla, Armv8.6 and later: Apple M2 on, Cortex-A510/A710/X2 on, Neoverse
// V1/N2): its kernels carry this target, a superset of the dot-product one, so they inline the dot-product helpers,
// and only run after x16_arm_i8mm said the CPU has it.
#if defined(__ARM_FEATURE_MATMUL_INT8) && defined(__ARM_FEATURE_DOTPROD)
#define X16_I8MM_TARGET
#elif defined(__clang__)
#define X16_I8MM_TARGET __attribute__((target("dotprod,i8mm")))
#else
#define X16_I8MM_TARGET __attribute__((target("arch=armv8.2-a+dotprod+i8mm")))
#endif

// x16_arm_dotprod reports whether the CPU (and OS) run sdot: the kernel's hardware capabilities on Linux, the
// system's feature report on macOS.
static inline int x16_arm_dotprod(void) {
#if defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
    int v = 0;
    size_t n = sizeof v;
    return sysctlbyname("hw.optional.arm.FEAT_DotProd", &v, &n, NULL, 0) == 0 && v != 0;
#else
    return 0;
#endif
}

// x16_arm_i8mm reports whether the CPU (and OS) run smmla as well as sdot (every CPU with the first has the
// second; the i8mm kernels use both).
static inline int x16_arm_i8mm(void) {
    if (!x16_arm_dotprod()) return 0;
#if defined(__linux__)
    return (getauxval(AT_HWCAP2) & HWCAP2_I8MM) != 0;
#elif defined(__APPLE__)
    int v = 0;
    size_t n = sizeof v;
    return sysctlbyname("hw.optional.arm.FEAT_I8MM", &v, &n, NULL, 0) == 0 && v != 0;
#else
    return 0;
#endif
}

// x16_neon_group4 broadcasts the 4 activation bytes at p to every 32-bit lane.
static inline int8x16_t x16_neon_group4(const uint8_t * p) {
    int32_t v;
    __builtin_memcpy(&v, p, sizeof v);
    return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

// x16_neon_f16x4 widens the 4 float16 values at p to float32 (exactly).
static inline float32x4_t x16_neon_f16x4(const uint8_t * p) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *) (const void *) p)));
}

// The i8mm kernels multiply two tokens at a time with smmla (vmmlaq_s32), which takes a 2 × 8 matrix of int8 in each
// operand and adds their 2 × 2 product (row·row) to an int32 register: [a0·b0, a0·b1, a1·b0, a1·b1]. The left
// operand is two weight rows × 8 columns, the right one the same 8 columns of two tokens, so each sum holds the
// same integers as the sdot path's, in the "pair" order [r0 t0, r0 t1, r1 t0, r1 t1].

// x16_neon_pair8 holds the 8 activation bytes at p0 (token 0) and at p1 (token 1): smmla's right operand.
static inline int8x16_t x16_neon_pair8(const uint8_t * p0, const uint8_t * p1) {
    return vcombine_s8(vld1_s8((const int8_t *) p0), vld1_s8((const int8_t *) p1));
}

// x16_neon_rows2: a and b hold rows 0…3 (row r in 32-bit lane r) × 4 columns each, b the 4 columns after a's; the
// result holds rows 2h and 2h + 1 × those 8 columns, smmla's left operand.
static inline int8x16_t x16_neon_rows2(int8x16_t a, int8x16_t b, const int h) {
    const int32x4_t a32 = vreinterpretq_s32_s8(a), b32 = vreinterpretq_s32_s8(b);
    return vreinterpretq_s8_s32(h == 0 ? vzip1q_s32(a32, b32) : vzip2q_s32(a32, b32));
}

// x16_neon_token takes token t's sums of rows 0…3 out of the pair-order sums of rows 0, 1 (p01) and 2, 3 (p23).
static inline int32x4_t x16_neon_token(int32x4_t p01, int32x4_t p23, const int t) {
    return t == 0 ? vuzp1q_s32(p01, p23) : vuzp2q_s32(p01, p23);
}

// Accumulators of a NEON tile: v[t][r] holds token t's rows 4r…4r+3 (t < nt ≤ 2).
static inline void x16_neon_zero_f32(float32x4_t v[2][4], const int nt) {
    for (int t = 0; t < nt; t++) {
        for (int r = 0; r < 4; r++) v[t][r] = vdupq_n_f32(0.0f);
    }
}

static inline void x16_neon_zero_s32(int32x4_t v[2][4], const int nt) {
    for (int t = 0; t < nt; t++) {
        for (int r = 0; r < 4; r++) v[t][r] = vdupq_n_s32(0);
    }
}

// x16_neon_store writes token t's 16 results to ys[t].
static inline void x16_neon_store(float * const * ys, float32x4_t acc[2][4], const int nt) {
    for (int t = 0; t < nt; t++) {
        for (int r = 0; r < 4; r++) vst1q_f32(ys[t] + 4 * r, acc[t][r]);
    }
}

// x16_mmla_rows4 adds the products of rows 0…3 × 8 columns (a: 4 columns per row, b: the next 4) with two tokens'
// 8 activations x2 to p[0] (rows 0, 1) and p[1] (rows 2, 3), in pair order.
X16_I8MM_TARGET __attribute__((always_inline))
static inline void x16_mmla_rows4(int32x4_t p[2], int8x16_t a, int8x16_t b, int8x16_t x2) {
    p[0] = vmmlaq_s32(p[0], x16_neon_rows2(a, b, 0), x2);
    p[1] = vmmlaq_s32(p[1], x16_neon_rows2(a, b, 1), x2);
}

// x16_mmla_nibbles is x16_mmla_rows4 for 16 code bytes of 4 rows whose low nibbles hold 4 columns and high nibbles
// the next 4 (the q4x16 and q4kx16 layouts).
X16_I8MM_TARGET __attribute__((always_inline))
static inline void x16_mmla_nibbles(int32x4_t p[2], uint8x16_t c, int8x16_t x2) {
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    x16_mmla_rows4(p, vreinterpretq_s8_u8(vandq_u8(c, m4)), vreinterpretq_s8_u8(vshrq_n_u8(c, 4)), x2);
}

// x16_neon_unpair turns pair-order sums of 16 rows (p[r]: rows 4r…4r+3) into the sdot paths' order: s[t][r] holds
// token t's rows 4r…4r+3.
static inline void x16_neon_unpair(int32x4_t p[4][2], int32x4_t s[2][4]) {
    for (int t = 0; t < 2; t++) {
        for (int r = 0; r < 4; r++) s[t][r] = x16_neon_token(p[r][0], p[r][1], t);
    }
}
#endif

// x16_prefetch requests the n bytes at p into the cache, one request per 64-byte line. A request never faults,
// so p may lie past the end of the weights.
static inline void x16_prefetch(const uint8_t * p, int n) {
    for (int o = 0; o < n; o += 64) {
        __builtin_prefetch(p + o, 0, 3);
    }
}

// A tile kernel: rows of group wg (nb column blocks) times up to X16_TILE tokens' activation
// records xs[t], 16 results to ys[t].
typedef void (*x16_tile_fn)(const uint8_t * wg, int64_t nb, const uint8_t * const * xs, float * const * ys, int nt);

// y[t·y_stride + r] for the rows of groups [g0, g1) and t < ntok: group g's weights start at
// w + g·nb·block_bytes; token t's records at xq + t·x_stride.
static inline void x16_matmul(x16_tile_fn tile, const uint8_t * w, int64_t nb, int64_t block_bytes,
                              const uint8_t * xq, int64_t ntok, int64_t x_stride, float * y, int64_t y_stride,
                              int64_t g0, int64_t g1) {
    const uint8_t * xs[X16_TILE];
    float * ys[X16_TILE];
    for (int64_t s0 = 0; s0 < ntok; s0 += X16_TOKEN_SPAN) {
        const int64_t s1 = s0 + X16_TOKEN_SPAN < ntok ? s0 + X16_TOKEN_SPAN : ntok;
        for (int64_t g = g0; g < g1; g++) {
            const uint8_t * wg = w + g * nb * block_bytes;
            for (int64_t t0 = s0; t0 < s1; t0 += X16_TILE) {
                const int nt = (int) (s1 - t0 < X16_TILE ? s1 - t0 : X16_TILE);
                for (int t = 0; t < nt; t++) {
                    xs[t] = xq + (t0 + t) * x_stride;
                    ys[t] = y + (t0 + t) * y_stride + g * X16_GROUP;
                }
                tile(wg, nb, xs, ys, nt);
            }
        }
    }
}

// Custom-op body of an activation quantizer: threads split the rows of dst->src[0] (F32, contiguous
// rows of ne0 values) and quantize each with row into the matching row of dst.
static inline void x16_quantize_rows(struct ggml_tensor * dst, int ith, int nth,
                                     void (*row)(const float * x, uint8_t * out, int64_t n)) {
    const struct ggml_tensor * x = dst->src[0];
    const int64_t rows = x->ne[1] * x->ne[2] * x->ne[3];
    const int64_t i0 = rows * ith / nth, i1 = rows * (ith + 1) / nth;
    for (int64_t i = i0; i < i1; i++) {
        const int64_t i1d = i % x->ne[1], i2 = (i / x->ne[1]) % x->ne[2], i3 = i / (x->ne[1] * x->ne[2]);
        const float * xr = (const float *) ((const char *) x->data + i1d * x->nb[1] + i2 * x->nb[2] + i3 * x->nb[3]);
        uint8_t * out = (uint8_t *) dst->data + i1d * dst->nb[1] + i2 * dst->nb[2] + i3 * dst->nb[3];
        row(xr, out, x->ne[0]);
    }
}

// Dynamic scheduling of a custom op's row groups. The counters live in the node's op_params after
// the 24 bytes ggml_custom_4d stores there (words 12 and 13 of 16; zero when the node is created):
// word 12 is the next row group to hand out, word 13 counts the threads that are done, and the last one
// resets both, so the node starts from zero the next time the graph runs (after ggml's barrier).
//
// Guided self-scheduling: a thread takes a run of max(X16_CHUNK_GROUPS, remaining / (2·threads)) groups,
// so the first runs are long (each one contiguous stream of weights for the hardware prefetcher, which
// starts over at every jump) and the last ones short (the threads finish together). Measured on a 2-core
// Zen 4 against fixed runs of 8 groups: 4.8–6% more weight bytes per second for one token.
#define X16_CHUNK_GROUPS 8 // shortest run: 128 rows

static inline int32_t * x16_sched(struct ggml_tensor * dst) { return dst->op_params + 12; }

// Takes the next run of row groups [*g0, *g1) out of groups; returns 0 when none is left.
static inline int x16_sched_next(int32_t * sched, int64_t groups, int nth, int64_t * g0, int64_t * g1) {
    int32_t cur = __atomic_load_n(&sched[0], __ATOMIC_RELAXED);
    for (;;) {
        if (cur >= groups) return 0;
        const int64_t rem = groups - cur;
        int64_t take = rem / (2 * (int64_t) nth);
        if (take < X16_CHUNK_GROUPS) take = X16_CHUNK_GROUPS;
        if (take > rem) take = rem;
        if (__atomic_compare_exchange_n(&sched[0], &cur, (int32_t) (cur + take), 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
            *g0 = cur;
            *g1 = cur + take;
            return 1;
        }
    }
}

static inline void x16_sched_done(int32_t * sched, int nth) {
    if (__atomic_add_fetch(&sched[1], 1, __ATOMIC_ACQ_REL) == nth) {
        __atomic_store_n(&sched[0], 0, __ATOMIC_RELAXED);
        __atomic_store_n(&sched[1], 0, __ATOMIC_RELEASE);
    }
}

// Signature of a layout's matmul (idefics2_q4x16_matmul and the like): rows [r0, r1) of w times ntok
// tokens' activation records.
typedef void (*x16_matmul_fn)(const uint8_t * w, int64_t cols, const uint8_t * xq, int64_t ntok, int64_t x_stride,
                              float * y, int64_t y_stride, int64_t r0, int64_t r1);

// Custom-op body of a layout's product: dst->src[0] holds the weights, dst->src[1] the activation
// records (record_bytes per values_per_record columns). Threads take runs of row groups from the
// node's counters (x16_sched_next), so a thread slowed down by memory or by the OS does not keep the others
// waiting at the next barrier. xq and dst are contiguous (fresh op results), so the tokens of every
// batch dimension are one run.
static inline void x16_mul_mat_op(struct ggml_tensor * dst, int nth, int64_t record_bytes, int64_t values_per_record,
                                  x16_matmul_fn matmul) {
    const struct ggml_tensor * w = dst->src[0];
    const struct ggml_tensor * xq = dst->src[1];
    const int64_t cols = xq->ne[0] / record_bytes * values_per_record;
    const int64_t groups = dst->ne[0] / X16_GROUP;
    const int64_t ntok = xq->ne[1] * xq->ne[2] * xq->ne[3];
    int32_t * sched = x16_sched(dst);
    int64_t g0, g1;
    while (x16_sched_next(sched, groups, nth, &g0, &g1)) {
        matmul((const uint8_t *) w->data, cols, (const uint8_t *) xq->data, ntok, (int64_t) xq->nb[1], (float *) dst->data,
               (int64_t) (dst->nb[1] / sizeof(float)), g0 * X16_GROUP, g1 * X16_GROUP);
    }
    x16_sched_done(sched, nth);
}

#endif
