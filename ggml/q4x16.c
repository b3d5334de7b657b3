// q4x16 matrix multiplication (q4x16.h): a scalar path, AVX2 paths (with and without AVX-VNNI), an AVX-512 VNNI
// path and, on AArch64, NEON paths with the dot-product extension (and with the int8 matrix multiply), chosen at run
// time. The SIMD functions are compiled with target attributes, so the file builds for the baseline architecture
// and their instructions only run after the CPU was found to have them.
//
// One VNNI instruction (vpdpbusd) multiplies 64 unsigned codes by 64 signed activation bytes and
// adds groups of 4 into 16 int32 lanes. With 16 rows interleaved, each lane is one row: a sub-block
// of codes (16 rows × 8 columns) takes an AND, a shift and two vpdpbusd against one broadcast
// 4-byte group of the activations, and the 16 row sums come out without horizontal additions.

#include "q4x16.h"
#include "isacap.h"
#include "x16.h"

#include <math.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define Q4X16_HAVE_X86 1
#include <immintrin.h>
#endif

#define Q4X16_GROUP X16_GROUP
#define Q4X16_BLOCK 288 // bytes per group and block of 32 columns
#define Q4X16_TILE X16_TILE

static inline int32_t q4x16_load_i32(const uint8_t * p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline float q4x16_load_f32(const uint8_t * p) {
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline int q4_code(const uint8_t * qs, int c) { return c < 16 ? (qs[c] & 0x0F) : (qs[c - 16] >> 4); }

void idefics2_q4x16_repack(const uint8_t * src, uint8_t * dst, int64_t rows, int64_t cols) {
    const int64_t nb = cols / 32;
    for (int64_t g = 0; g < rows / Q4X16_GROUP; g++) {
        for (int64_t b = 0; b < nb; b++) {
            uint8_t * out = dst + (g * nb + b) * Q4X16_BLOCK;
            for (int r = 0; r < Q4X16_GROUP; r++) {
                const uint8_t * blk = src + ((g * Q4X16_GROUP + r) * nb + b) * 18;
                memcpy(out + 2 * r, blk, 2);
                const uint8_t * qs = blk + 2;
                for (int k = 0; k < 4; k++) {
                    for (int i = 0; i < 4; i++) {
                        const int lo = q4_code(qs, 8 * k + i), hi = q4_code(qs, 8 * k + 4 + i);
                        out[32 + 64 * k + 4 * r + i] = (uint8_t) (lo | (hi << 4));
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Activations

static void q8x32_quantize_scalar(const float * x, uint8_t * dst, int64_t n) {
    for (int64_t b = 0; b < n / 32; b++) {
        const float * xb = x + 32 * b;
        uint8_t * rec = dst + IDEFICS2_Q8X32_RECORD * b;
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(xb[i]));
        const float d = ggml_fp16_to_fp32(ggml_fp32_to_fp16(amax / 127.0f));
        const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        int32_t sum = 0;
        for (int i = 0; i < 32; i++) {
            int32_t q = (int32_t) nearbyintf(xb[i] * id);
            q = q > 127 ? 127 : (q < -127 ? -127 : q);
            rec[i] = (uint8_t) (int8_t) q;
            sum += q;
        }
        const int32_t bias = 8 * sum;
        memcpy(rec + 32, &d, 4);
        memcpy(rec + 36, &bias, 4);
    }
}

#ifdef Q4X16_HAVE_X86
__attribute__((target("avx512f,avx512bw,f16c")))
static void q8x32_quantize_avx512(const float * x, uint8_t * dst, int64_t n) {
    for (int64_t b = 0; b < n / 32; b++) {
        const __m512 x0 = _mm512_loadu_ps(x + 32 * b);
        const __m512 x1 = _mm512_loadu_ps(x + 32 * b + 16);
        // max(v, a) keeps a where v is NaN, as fmaxf skips NaN.
        const __m512 a = _mm512_max_ps(_mm512_abs_ps(x1), _mm512_max_ps(_mm512_abs_ps(x0), _mm512_setzero_ps()));
        const float amax = _mm512_reduce_max_ps(a);
        const float d = _cvtsh_ss(_cvtss_sh(amax / 127.0f, _MM_FROUND_TO_NEAREST_INT));
        const __m512 id = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
        const __m512i lim = _mm512_set1_epi32(127), nlim = _mm512_set1_epi32(-127);
        __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, id));
        __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, id));
        q0 = _mm512_max_epi32(_mm512_min_epi32(q0, lim), nlim);
        q1 = _mm512_max_epi32(_mm512_min_epi32(q1, lim), nlim);
        uint8_t * rec = dst + IDEFICS2_Q8X32_RECORD * b;
        _mm_storeu_si128((__m128i *) rec, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *) (rec + 16), _mm512_cvtepi32_epi8(q1));
        const int32_t bias = 8 * _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        memcpy(rec + 32, &d, 4);
        memcpy(rec + 36, &bias, 4);
    }
}

// The AVX-512 quantizer's operations on four 8-lane registers: the maximum is exact in any order (max(v, a) keeps a
// where v is NaN, as fmaxf skips NaN), vcvtps2dq rounds half to even as nearbyintf does, and the clamped integers
// pack to int8 unchanged.
__attribute__((target("avx2,f16c")))
static void q8x32_quantize_avx2(const float * x, uint8_t * dst, int64_t n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i lim = _mm256_set1_epi32(127), nlim = _mm256_set1_epi32(-127);
    for (int64_t b = 0; b < n / 32; b++) {
        __m256 v[4];
        __m256 a = _mm256_setzero_ps();
        for (int i = 0; i < 4; i++) {
            v[i] = _mm256_loadu_ps(x + 32 * b + 8 * i);
            a = _mm256_max_ps(_mm256_andnot_ps(sign, v[i]), a);
        }
        const float amax = x16_avx2_hmax(a);
        const float d = _cvtsh_ss(_cvtss_sh(amax / 127.0f, _MM_FROUND_TO_NEAREST_INT));
        const __m256 id = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
        __m256i q[4];
        for (int i = 0; i < 4; i++) {
            q[i] = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v[i], id)), lim), nlim);
        }
        uint8_t * rec = dst + IDEFICS2_Q8X32_RECORD * b;
        _mm256_storeu_si256((__m256i *) rec, x16_avx2_pack_i8(q));
        const int32_t bias = 8 * x16_avx2_hsum_epi32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
        memcpy(rec + 32, &d, 4);
        memcpy(rec + 36, &bias, 4);
    }
}
#endif

#ifdef X16_HAVE_NEON
// The scalar quantizer's operations on eight 4-lane registers: fmaxnm ignores a NaN as fmaxf does, fcvtns rounds
// half to even as nearbyintf does (and, like the scalar path's conversion, gives 0 for a NaN), and the clamped
// integers narrow to int8 unchanged.
static void q8x32_quantize_neon(const float * x, uint8_t * dst, int64_t n) {
    const int32x4_t lim = vdupq_n_s32(127), nlim = vdupq_n_s32(-127);
    for (int64_t b = 0; b < n / 32; b++) {
        float32x4_t v[8];
        float32x4_t a = vdupq_n_f32(0.0f);
        for (int i = 0; i < 8; i++) {
            v[i] = vld1q_f32(x + 32 * b + 4 * i);
            a = vmaxnmq_f32(a, vabsq_f32(v[i]));
        }
        const float amax = vmaxnmvq_f32(a);
        const float d = ggml_fp16_to_fp32(ggml_fp32_to_fp16(amax / 127.0f));
        const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        int32x4_t sum = vdupq_n_s32(0);
        int16x8_t h[4];
        for (int i = 0; i < 4; i++) {
            int32x4_t q[2];
            for (int k = 0; k < 2; k++) {
                q[k] = vmaxq_s32(vminq_s32(vcvtnq_s32_f32(vmulq_n_f32(v[2 * i + k], id)), lim), nlim);
                sum = vaddq_s32(sum, q[k]);
            }
            h[i] = vcombine_s16(vmovn_s32(q[0]), vmovn_s32(q[1]));
        }
        uint8_t * rec = dst + IDEFICS2_Q8X32_RECORD * b;
        vst1q_s8((int8_t *) rec, vcombine_s8(vmovn_s16(h[0]), vmovn_s16(h[1])));
        vst1q_s8((int8_t *) (rec + 16), vcombine_s8(vmovn_s16(h[2]), vmovn_s16(h[3])));
        const int32_t bias = 8 * vaddvq_s32(sum);
        memcpy(rec + 32, &d, 4);
        memcpy(rec + 36, &bias, 4);
    }
}
#endif

// ---------------------------------------------------------------------------------------------
// Products

// Scalar: the same integer sums and the same float operations (fmaf) as the AVX-512 path, so both
// give identical results.
static void q4x16_tile_scalar(const uint8_t * wg, int64_t nb, const uint8_t * const * xs, float * const * ys, int nt) {
    float acc[Q4X16_TILE][Q4X16_GROUP] = { { 0 } };
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t * blk = wg + b * Q4X16_BLOCK;
        float dw[Q4X16_GROUP];
        for (int r = 0; r < Q4X16_GROUP; r++) {
            uint16_t h;
            memcpy(&h, blk + 2 * r, 2);
            dw[r] = ggml_fp16_to_fp32(h);
        }
        for (int t = 0; t < nt; t++) {
            const uint8_t * xb = xs[t] + b * IDEFICS2_Q8X32_RECORD;
            const int8_t * q = (const int8_t *) xb;
            const float dx = q4x16_load_f32(xb + 32);
            const int32_t bias = q4x16_load_i32(xb + 36);
            for (int r = 0; r < Q4X16_GROUP; r++) {
                int32_t s = 0;
                for (int k = 0; k < 4; k++) {
                    for (int i = 0; i < 4; i++) {
                        const uint8_t c = blk[32 + 64 * k + 4 * r + i];
                        s += (c & 0x0F) * q[8 * k + i] + (c >> 4) * q[8 * k + 4 + i];
                    }
                }
                acc[t][r] = fmaf((float) (s - bias), dw[r] * dx, acc[t][r]);
            }
        }
    }
    for (int t = 0; t < nt; t++) memcpy(ys[t], acc[t], sizeof acc[t]);
}

#ifdef Q4X16_HAVE_X86
__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline))
static inline void q4x16_tile_avx512(const uint8_t * wg, int64_t nb, const uint8_t * const * xs, float * const * ys, const int nt) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512 acc[Q4X16_TILE];
#pragma GCC unroll 8
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t * blk = wg + b * Q4X16_BLOCK;
        // Two integer sums per token (low and high nibbles) halve the dependency chains of one token.
        __m512i lo[Q4X16_TILE], hi[Q4X16_TILE];
#pragma GCC unroll 8
        for (int t = 0; t < nt; t++) {
            lo[t] = _mm512_setzero_si512();
            hi[t] = _mm512_setzero_si512();
        }
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            const __m512i c = _mm512_loadu_si512((const void *) (blk + 32 + 64 * k));
            const __m512i cl = _mm512_and_si512(c, m4);
            const __m512i ch = _mm512_and_si512(_mm512_srli_epi16(c, 4), m4);
#pragma GCC unroll 8
            for (int t = 0; t < nt; t++) {
                const uint8_t * xb = xs[t] + b * IDEFICS2_Q8X32_RECORD + 8 * k;
                lo[t] = _mm512_dpbusd_epi32(lo[t], cl, _mm512_set1_epi32(q4x16_load_i32(xb)));
                hi[t] = _mm512_dpbusd_epi32(hi[t], ch, _mm512_set1_epi32(q4x16_load_i32(xb + 4)));
            }
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) blk));
#pragma GCC unroll 8
        for (int t = 0; t < nt; t++) {
            const uint8_t * xb = xs[t] + b * IDEFICS2_Q8X32_RECORD;
            const __m512i s = _mm512_sub_epi32(_mm512_add_epi32(lo[t], hi[t]), _mm512_set1_epi32(q4x16_load_i32(xb + 36)));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_set1_ps(q4x16_load_f32(xb + 32))), acc[t]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < nt; t++) _mm512_storeu_ps(ys[t], acc[t]);
}

#define Q4X16_CASE(N) \
    case N: q4x16_tile_avx512(wg, nb, xs, ys, N); break;

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void q4x16_tile_avx512_n(const uint8_t * wg, int64_t nb, const uint8_t * const * xs, float * const * ys, int nt) {
    switch (nt) {
        Q4X16_CASE(1)
        Q4X16_CASE(2)
        Q4X16_CASE(3)
        Q4X16_CASE(4)
        Q4X16_CASE(5)
        Q4X16_CASE(6)
        Q4X16_CASE(7)
        Q4X16_CASE(8)
    }
}
#endif

// AVX2: vpmaddubsw multiplies 32 unsigned codes by 32 signed activation bytes and adds adjacent pairs into
// 16 int16 lanes; with 16 rows interleaved, a 64-byte chunk of codes is two registers (rows 0-7 and 8-15),
// each row two lanes. A block's 8 products per lane stay within int16 (|sum| ≤ 4·2·2·15·127 = 30480), so
// the block is summed in int16 and widened once by vpmaddwd. Tokens go in pairs to keep the sums and
// accumulators in registers. With AVX-VNNI (dot, x16.h) vpdpbusd adds each row's products to its int32 sums
// directly. The integer sums and the float operations are the scalar path's, so the results are identical.
#ifdef Q4X16_HAVE_X86
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void q4x16_tile_avx2(const uint8_t * wg, int64_t nb, const uint8_t * const * xs, float * const * ys, const int nt,
                                   const int dot) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc0[2], acc1[2];
    for (int t = 0; t < nt; t++) {
        acc0[t] = _mm256_setzero_ps();
        acc1[t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t * blk = wg + b * Q4X16_BLOCK;
        if (nt == 1) x16_prefetch(blk + X16_PREFETCH_AHEAD, Q4X16_BLOCK);
        __m256i s0[2], s1[2];
        for (int t = 0; t < nt; t++) {
            s0[t] = _mm256_setzero_si256();
            s1[t] = _mm256_setzero_si256();
        }
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            const __m256i c0 = _mm256_loadu_si256((const __m256i *) (blk + 32 + 64 * k));
            const __m256i c1 = _mm256_loadu_si256((const __m256i *) (blk + 64 + 64 * k));
            const __m256i l0 = _mm256_and_si256(c0, m4), h0 = _mm256_and_si256(_mm256_srli_epi16(c0, 4), m4);
            const __m256i l1 = _mm256_and_si256(c1, m4), h1 = _mm256_and_si256(_mm256_srli_epi16(c1, 4), m4);
            for (int t = 0; t < nt; t++) {
                const uint8_t * xb = xs[t] + b * IDEFICS2_Q8X32_RECORD + 8 * k;
                const __m256i xl = _mm256_set1_epi32(q4x16_load_i32(xb)), xh = _mm256_set1_epi32(q4x16_load_i32(xb + 4));
                if (dot == X16_DOT_MADDUBS) {
                    s0[t] = _mm256_add_epi16(s0[t], _mm256_add_epi16(_mm256_maddubs_epi16(l0, xl), _mm256_maddubs_epi16(h0, xh)));
                    s1[t] = _mm256_add_epi16(s1[t], _mm256_add_epi16(_mm256_maddubs_epi16(l1, xl), _mm256_maddubs_epi16(h1, xh)));
                } else {
                    s0[t] = x16_dpbusd(x16_dpbusd(s0[t], l0, xl, dot), h0, xh, dot);
                    s1[t] = x16_dpbusd(x16_dpbusd(s1[t], l1, xl, dot), h1, xh, dot);
                }
            }
        }
        const __m256 dw0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) blk));
        const __m256 dw1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (blk + 16)));
        for (int t = 0; t < nt; t++) {
            const uint8_t * xb = xs[t] + b * IDEFICS2_Q8X32_RECORD;
            const __m256i bias = _mm256_set1_epi32(q4x16_load_i32(xb + 36));
            const __m256 dx = _mm256_set1_ps(q4x16_load_f32(xb + 32));
            const __m256i i0 = _mm256_sub_epi32(dot == X16_DOT_MADDUBS ? _mm256_madd_epi16(s0[t], ones) : s0[t], bias);
            const __m256i i1 = _mm256_sub_epi32(dot == X16_DOT_MADDUBS ? _mm256_madd_epi16(s1[t], ones) : s1[t], bias);
            acc0[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0), _mm256_mul_ps(dw0, dx), acc0[t]);
            acc1[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i1), _mm256_mul_ps(dw1, dx), acc1[t]);
        }
    }
    for (int t = 0; t < nt; t++) {
        _mm256_storeu_ps(ys[t], acc0[t]);
        _mm256_storeu_ps(ys[t] + 8, acc1[t]);
    }
}

__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void q4x16_tiles_avx2(const uint8_t * wg, int64_t nb, const uint8_t * const * xs, float * const * ys, int nt,
                                    const int dot) {
    for (int t0 = 0; t0 < nt; t0 += 2) {
        if (nt - t0 >= 2) {
            q4x16_tile_avx2(wg, nb, xs + t0, ys + t0, 2, dot);
        } else {
            q4x16_tile_avx2(wg, nb, xs + t0, ys + t0, 1, dot);
        }
    }
}

// One tile function per way of multiplying (x16.h), each with its constant inlined.
__attribute__((target("avx2,fma,f16c")))
static void q4x16_tile_avx2_n(const uint8_t * wg, int64_t nb, const uint8_t * const * xs, float * const * ys, int nt) {
    q4x16_tiles_avx2(wg, nb, xs, ys, nt, X16_DOT_MADDUBS);
}

__attribute__((target("avx2,fma,f16c")))
static void q4x16_tile_avxvnni_n(const uint8_t * wg, int64_t nb, const uint8_t * const * xs, float * const * ys, int nt) {
    q4x16_tiles_avx2(wg, nb, xs, ys, nt, X16_DOT_VNNI);
}

__attribute__((target("avx2,fma,f16c")))
static void q4x16_tile_vnni_emulated_n(const uint8_t * wg, int64_t nb, const uint8_t * const * xs, float * const * ys, int nt) {
    q4x16_tiles_avx2(wg, nb, xs, ys, nt, X16_DOT_VNNI_EMULATED);
}
#endif

// NEON with the dot-product extension: one sdot (vdotq_s32) multiplies 16 code bytes, 4 rows × 4 columns, by a
// 4-byte group of a token's activations broadcast to every lane, and adds each row's 4 products to its int32 lane.
// A sub-block of 16 rows is 4 registers, each split into low and high nibbles (0…15, which the signed instructions
// take as they are): 8 sdot per token. The i8mm path multiplies two tokens at once: per register, the low and high
// nibbles of rows 0, 1 and of rows 2, 3 make two smmla operands of 2 rows × 8 columns (x16.h). The integer sums and
// the float operations are the scalar path's, so the results are identical.
#ifdef X16_HAVE_NEON
// acc[t] += the block's sums s[t] (rows 4j…4j+3 in s[t][j]) scaled as the scalar path scales them.
X16_DOTPROD_TARGET __attribute__((always_inline))
static inline void q4x16_neon_block_acc(const uint8_t * blk, const uint8_t * const * xs, int64_t b, int32x4_t s[2][4],
                                        float32x4_t acc[2][4], const int nt) {
    for (int t = 0; t < nt; t++) {
        const uint8_t * xb = xs[t] + b * IDEFICS2_Q8X32_RECORD;
        const int32x4_t bias = vdupq_n_s32(q4x16_load_i32(xb + 36));
        const float dx = q4x16_load_f32(xb + 32);
        for (int j = 0; j < 4; j++) {
            const float32x4_t d = vmulq_n_f32(x16_neon_f16x4(blk + 8 * j), dx);
            acc[t][j] = vfmaq_f32(acc[t][j], vcvtq_f32_s32(vsubq_s32(s[t][j], bias)), d);
        }
    }
}

X16_DOTPROD_TARGET __attribute__((always_inline))
static inline void q4x16_tile_neon(const uint8_t * wg, int64_t nb, const uint8_t * const * xs, float * const * ys, const int nt) {
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    float32x4_t acc[2][4];
    x16_neon_zero_f32(acc, nt);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t * blk = wg + b * Q4X16_BLOCK;
        int32x4_t s[2][4];
        x16_neon_zero_s32(s, nt);
        for (int k = 0; k < 4; k++) {
            int8x16_t xl[2], xh[2];
            for (int t = 0; t < nt; t++) {
                xl[t] = x16_neon_group4(xs[t] + b * IDEFICS2_Q8X32_RECORD + 8 * k);
                xh[t] = x16_neon_group4(xs[t] + b * IDEFICS2_Q8X32_RECORD + 8 * k + 4);
            }
            for (int j = 0; j < 4; j++) {
                const uint8x16_t c = vld1q_u8(blk + 32 + 64 * k + 16 * j);
                const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(c, m4)), hi = vreinterpretq_s8_u8(vshrq_n_u8(c, 4));
                for (int t = 0; t < nt; t++) s[t][j] = vdotq_s32(vdotq_s32(s[t][j], lo, xl[t]), hi, xh[t]);
            }
        }
        q4x16_neon_block_acc(blk, xs, b, s, acc, nt);
    }
    x16_neon_store(ys, acc, nt);
}

X16_DOTPROD_TARGET
static void q4x16_tile_neon_n(const uint8_t * wg, int64_t nb, const uint8_t * const * xs, float * const * ys, int nt) {
    for (int t0 = 0; t0 < nt; t0 += 2) {
        if (nt - t0 >= 2) {
            q4x16_tile_neon(wg, nb, xs + t0, ys + t0, 2);
        } else {
            q4x16_tile_neon(wg, nb, xs + t0, ys + t0, 1);
        }
    }
}

// Two tokens with smmla: p[j] holds rows 4j…4j+3 in pair order (x16.h).
X16_I8MM_TARGET __attribute__((always_inline))
static inline void q4x16_tile_i8mm(const uint8_t * wg, int64_t nb, const uint8_t * const * xs, float * const * ys) {
    float32x4_t acc[2][4];
    x16_neon_zero_f32(acc, 2);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t * blk = wg + b * Q4X16_BLOCK;
        int32x4_t p[4][2];
        for (int j = 0; j < 4; j++) p[j][0] = p[j][1] = vdupq_n_s32(0);
        for (int k = 0; k < 4; k++) {
            const int8x16_t x2 = x16_neon_pair8(xs[0] + b * IDEFICS2_Q8X32_RECORD + 8 * k, xs[1] + b * IDEFICS2_Q8X32_RECORD + 8 * k);
            for (int j = 0; j < 4; j++) {
                const uint8x16_t c = vld1q_u8(blk + 32 + 64 * k + 16 * j);
                x16_mmla_nibbles(p[j], c, x2);
            }
        }
        int32x4_t s[2][4];
        x16_neon_unpair(p, s);
        q4x16_neon_block_acc(blk, xs, b, s, acc, 2);
    }
    x16_neon_store(ys, acc, 2);
}

// Pairs of tokens with smmla, a last odd one with sdot.
X16_I8MM_TARGET
static void q4x16_tile_i8mm_n(const uint8_t * wg, int64_t nb, const uint8_t * const * xs, float * const * ys, int nt) {
    int t0 = 0;
    for (; nt - t0 >= 2; t0 += 2) q4x16_tile_i8mm(wg, nb, xs + t0, ys + t0);
    if (t0 < nt) q4x16_tile_neon(wg, nb, xs + t0, ys + t0, 1);
}
#endif

// ---------------------------------------------------------------------------------------------
// Dispatch

static int q4x16_detect(void) {
#if defined(Q4X16_HAVE_X86)
    __builtin_cpu_init();
    if (idefics2_isa_allows(IDEFICS2_ISA_AVX512) && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni")) {
        return IDEFICS2_Q4X16_AVX512VNNI;
    }
    if (idefics2_isa_allows(IDEFICS2_ISA_AVX2) && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c")) {
        return x16_avxvnni() ? IDEFICS2_Q4X16_AVX2VNNI : IDEFICS2_Q4X16_AVX2;
    }
#elif defined(X16_HAVE_NEON)
    if (x16_arm_i8mm()) return IDEFICS2_Q4X16_NEON_I8MM;
    if (x16_arm_dotprod()) return IDEFICS2_Q4X16_NEON_DOTPROD;
#endif
    return IDEFICS2_Q4X16_SCALAR;
}

static int q4x16_has_fma_f16c(void) {
#if defined(Q4X16_HAVE_X86)
    return __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
    return 0;
#endif
}

static int q4x16_best = -1;    // detected once; racing first calls store the same value
static int q4x16_current = -1; // -1: use q4x16_best

int idefics2_q4x16_best_isa(void) {
    int b = __atomic_load_n(&q4x16_best, __ATOMIC_ACQUIRE);
    if (b < 0) {
        b = q4x16_detect();
        __atomic_store_n(&q4x16_best, b, __ATOMIC_RELEASE);
    }
    return b;
}

int idefics2_q4x16_isa(void) {
    const int c = __atomic_load_n(&q4x16_current, __ATOMIC_ACQUIRE);
    return c >= 0 ? c : idefics2_q4x16_best_isa();
}

int idefics2_q4x16_set_isa(int isa) {
    const int best = idefics2_q4x16_best_isa();
    // A CPU with the AVX-512 path also runs the AVX2 ones when it has FMA and F16C (and AVX-VNNI for that path);
    // every CPU with an AVX2 path runs the emulated AVX-VNNI one (tests compare them all with the scalar path).
    const int avx2 = best == IDEFICS2_Q4X16_AVX2 || best == IDEFICS2_Q4X16_AVX2VNNI ||
                     (best == IDEFICS2_Q4X16_AVX512VNNI && q4x16_has_fma_f16c());
    int ok = isa == -1 || isa == IDEFICS2_Q4X16_SCALAR || isa == best;
    ok |= isa == IDEFICS2_Q4X16_AVX2 && avx2;
#ifdef Q4X16_HAVE_X86
    ok |= isa == IDEFICS2_Q4X16_AVX2VNNI && avx2 && x16_avxvnni();
#endif
    ok |= isa == IDEFICS2_Q4X16_AVX2VNNI_EMULATED && avx2;
    // A CPU with the i8mm path has the dot products of the other NEON path.
    ok |= isa == IDEFICS2_Q4X16_NEON_DOTPROD && best == IDEFICS2_Q4X16_NEON_I8MM;
    if (!ok) {
        return -1;
    }
    __atomic_store_n(&q4x16_current, isa, __ATOMIC_RELEASE);
    return 0;
}

int idefics2_q4x16_avx2_dot(int isa) {
    switch (isa) {
    case IDEFICS2_Q4X16_AVX2: return X16_DOT_MADDUBS;
    case IDEFICS2_Q4X16_AVX2VNNI: return X16_DOT_VNNI;
    case IDEFICS2_Q4X16_AVX2VNNI_EMULATED: return X16_DOT_VNNI_EMULATED;
    }
    return -1;
}

void idefics2_q8x32_quantize_row(const float * x, uint8_t * dst, int64_t n) {
    const int isa = idefics2_q4x16_isa();
    (void) isa;
#ifdef Q4X16_HAVE_X86
    if (isa == IDEFICS2_Q4X16_AVX512VNNI) {
        q8x32_quantize_avx512(x, dst, n);
        return;
    }
    if (idefics2_q4x16_avx2_dot(isa) >= 0) {
        q8x32_quantize_avx2(x, dst, n);
        return;
    }
#endif
#ifdef X16_HAVE_NEON
    if (isa == IDEFICS2_Q4X16_NEON_DOTPROD || isa == IDEFICS2_Q4X16_NEON_I8MM) {
        q8x32_quantize_neon(x, dst, n);
        return;
    }
#endif
    q8x32_quantize_scalar(x, dst, n);
}

void idefics2_q4x16_matmul(const uint8_t * w, int64_t cols, const uint8_t * xq, int64_t ntok,
                           int64_t x_stride, float * y, int64_t y_stride, int64_t r0, int64_t r1) {
    x16_tile_fn tile = q4x16_tile_scalar;
    const int isa = idefics2_q4x16_isa();
    (void) isa;
#ifdef Q4X16_HAVE_X86
    if (isa == IDEFICS2_Q4X16_AVX512VNNI) tile = q4x16_tile_avx512_n;
    if (isa == IDEFICS2_Q4X16_AVX2) tile = q4x16_tile_avx2_n;
    if (isa == IDEFICS2_Q4X16_AVX2VNNI) tile = q4x16_tile_avxvnni_n;
    if (isa == IDEFICS2_Q4X16_AVX2VNNI_EMULATED) tile = q4x16_tile_vnni_emulated_n;
#endif
#ifdef X16_HAVE_NEON
    if (isa == IDEFICS2_Q4X16_NEON_DOTPROD) tile = q4x16_tile_neon_n;
    if (isa == IDEFICS2_Q4X16_NEON_I8MM) tile = q4x16_tile_i8mm_n;
#endif
    x16_matmul(tile, w, cols / 32, Q4X16_BLOCK, xq, ntok, x_stride, y, y_stride, r0 / X16_GROUP, r1 / X16_GROUP);
}

// ---------------------------------------------------------------------------------------------
// Graph ops

static void q8x32_custom_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
    (void) userdata;
    x16_quantize_rows(dst, ith, nth, idefics2_q8x32_quantize_row);
}

static void q4x16_custom_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
    (void) ith;
    (void) userdata;
    x16_mul_mat_op(dst, nth, IDEFICS2_Q8X32_RECORD, 32, idefics2_q4x16_matmul);
}

struct ggml_tensor * idefics2_q8x32_quantize(struct ggml_context * ctx, struct ggml_tensor * x) {
    struct ggml_tensor * args[1] = { x };
    return ggml_custom_4d(ctx, GGML_TYPE_I8, x->ne[0] / 32 * IDEFICS2_Q8X32_RECORD, x->ne[1], x->ne[2], x->ne[3],
                          args, 1, q8x32_custom_op, GGML_N_TASKS_MAX, NULL);
}

struct ggml_tensor * idefics2_q4x16_mul_mat(struct ggml_context * ctx, struct ggml_tensor * w,
                                            struct ggml_tensor * xq, int64_t rows) {
    struct ggml_tensor * args[2] = { w, xq };
    return ggml_custom_4d(ctx, GGML_TYPE_F32, rows, xq->ne[1], xq->ne[2], xq->ne[3], args, 2,
                          q4x16_custom_op, GGML_N_TASKS_MAX, NULL);
}
