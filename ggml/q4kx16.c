// q4kx16 matrix multiplication (q4kx16.h): a scalar path, AVX2 paths (with and without AVX-VNNI), an AVX-512
// VNNI path and NEON paths (dot products; i8mm), chosen by the q4x16 path selection (q4x16.h). The SIMD functions are
// compiled with target attributes, so the file builds for the baseline architecture and their instructions only
// run after the CPU was found to have them.
//
// As in q4x16.c, one vpdpbusd multiplies 64 unsigned codes (16 rows × 4 columns) by a broadcast group
// of 4 activation bytes into 16 int32 lanes, one per row. A sub-block of 32 columns takes 4 loads and
// 8 vpdpbusd per token; its 16 row sums are multiplied by the rows' scales (vpmulld) and added to the
// super-block's sums. The mins term needs the activations' sub-block sums only: one vpdpwssd per pair
// of sub-blocks multiplies 16 rows × 2 mins (bytes widened to int16) by the broadcast pair of sums.
//
// The AVX2 path works on 8 rows (32 bytes) at a time: vpmaddubsw multiplies codes by activation bytes
// into int16 pairs, which sum a sub-block without overflow (8 × 2 × 15 × 127 = 30480 < 2^15), and
// vpmaddwd with ones widens each row's sum to int32; with AVX-VNNI, vpdpbusd sums into int32 directly (x16.h).
// The rest is the AVX-512 path's, lane for lane.

#include "q4kx16.h"
#include "x16.h"
#include "q4x16.h"

#include <math.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define Q4KX16_HAVE_X86 1
#include <immintrin.h>
#endif

#define Q4KX16_GROUP X16_GROUP
#define Q4KX16_TILE X16_TILE

// Offsets in a group's super-block (q4kx16.h).
#define Q4KX16_OFF_DMIN 32
#define Q4KX16_OFF_SC 64
#define Q4KX16_OFF_MIN 192
#define Q4KX16_OFF_QS 320

// Offsets in a q8x256 record.
#define Q8X256_OFF_SUMS 256
#define Q8X256_OFF_D 272

#define Q4K_BLOCK 144 // sizeof(block_q4_K): f16 d, f16 dmin, 12 bytes of scales and mins, 128 bytes of codes

static inline int32_t q4kx16_load_i32(const uint8_t * p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline float q4kx16_load_f32(const uint8_t * p) {
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}

// The 6-bit scale and min of sub-block j (0…7) from block_q4_K's 12 packed bytes: sub-blocks 0–3 keep
// them in the low 6 bits of bytes j and j+4; sub-blocks 4–7 in the nibbles of byte j+4 with the two
// high bits in the top bits of bytes j−4 and j.
static void q4k_scale_min(int j, const uint8_t * q, uint8_t * sc, uint8_t * m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

void idefics2_q4kx16_repack(const uint8_t * src, uint8_t * dst, int64_t rows, int64_t cols) {
    const int64_t ns = cols / 256;
    for (int64_t g = 0; g < rows / Q4KX16_GROUP; g++) {
        for (int64_t s = 0; s < ns; s++) {
            uint8_t * out = dst + (g * ns + s) * IDEFICS2_Q4KX16_BLOCK;
            for (int r = 0; r < Q4KX16_GROUP; r++) {
                const uint8_t * blk = src + ((g * Q4KX16_GROUP + r) * ns + s) * Q4K_BLOCK;
                memcpy(out + 2 * r, blk, 2);
                memcpy(out + Q4KX16_OFF_DMIN + 2 * r, blk + 2, 2);
                for (int j = 0; j < 8; j++) {
                    uint8_t sc, m;
                    q4k_scale_min(j, blk + 4, &sc, &m);
                    out[Q4KX16_OFF_SC + 16 * j + r] = sc;
                    out[Q4KX16_OFF_MIN + 32 * (j / 2) + 2 * r + j % 2] = m;
                }
                // The codes in column order: each half of 64 columns keeps 32 bytes, its first 32 columns in the
                // low nibbles and the next 32 in the high nibbles.
                uint8_t code[256];
                const uint8_t * qs = blk + 16;
                for (int h = 0; h < 4; h++) {
                    for (int i = 0; i < 32; i++) {
                        code[64 * h + i] = qs[32 * h + i] & 0x0F;
                        code[64 * h + 32 + i] = qs[32 * h + i] >> 4;
                    }
                }
                for (int j = 0; j < 8; j++) {
                    for (int k = 0; k < 4; k++) {
                        const uint8_t * c = code + 32 * j + 8 * k;
                        uint8_t * o = out + Q4KX16_OFF_QS + 256 * j + 64 * k + 4 * r;
                        for (int i = 0; i < 4; i++) o[i] = (uint8_t) (c[i] | (c[4 + i] << 4));
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Activations

// Follows quantize_row_q8_K_ref: the first value of largest magnitude sets the scale (with its sign),
// values round half to even (ggml's nearest_int), and the stored scale is 1/iscale, not −m/127.
static void q8x256_quantize_scalar(const float * x, uint8_t * dst, int64_t n) {
    for (int64_t b = 0; b < n / 256; b++) {
        const float * xb = x + 256 * b;
        uint8_t * rec = dst + IDEFICS2_Q8X256_RECORD * b;
        memset(rec, 0, IDEFICS2_Q8X256_RECORD);
        float amax = 0.0f, max = 0.0f;
        for (int i = 0; i < 256; i++) {
            const float ax = fabsf(xb[i]);
            if (ax > amax) {
                amax = ax;
                max = xb[i];
            }
        }
        if (amax == 0.0f) continue;
        const float iscale = -127.0f / max;
        for (int j = 0; j < 8; j++) {
            int32_t sum = 0;
            for (int i = 32 * j; i < 32 * j + 32; i++) {
                int32_t q = (int32_t) nearbyintf(iscale * xb[i]);
                q = q > 127 ? 127 : q;
                rec[i] = (uint8_t) (int8_t) q;
                sum += q;
            }
            const int16_t s16 = (int16_t) sum;
            memcpy(rec + Q8X256_OFF_SUMS + 2 * j, &s16, 2);
        }
        const float d = 1.0f / iscale;
        memcpy(rec + Q8X256_OFF_D, &d, 4);
    }
}

#ifdef Q4KX16_HAVE_X86
// q8x256_quantize_block is one record of q8x256_quantize_scalar.
static void q8x256_quantize_block(const float * xb, uint8_t * rec) {
    q8x256_quantize_scalar(xb, rec, 256);
}

__attribute__((target("avx512f,avx512bw")))
static void q8x256_quantize_avx512(const float * x, uint8_t * dst, int64_t n) {
    for (int64_t b = 0; b < n / 256; b++) {
        const float * xb = x + 256 * b;
        uint8_t * rec = dst + IDEFICS2_Q8X256_RECORD * b;
        // max(v, a) keeps a where v is NaN, as the reference's comparison skips NaN.
        __m512 a = _mm512_setzero_ps();
        __mmask16 nan = 0;
        for (int i = 0; i < 16; i++) {
            const __m512 v = _mm512_loadu_ps(xb + 16 * i);
            a = _mm512_max_ps(_mm512_abs_ps(v), a);
            nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        }
        const float amax = _mm512_reduce_max_ps(a);
        if (nan != 0 || !isfinite(amax)) {
            // NaN and infinite inputs convert to integers as C's casts do: the scalar code.
            q8x256_quantize_block(xb, rec);
            continue;
        }
        memset(rec, 0, IDEFICS2_Q8X256_RECORD);
        if (!(amax > 0.0f)) continue;
        // The first value of that magnitude, as the reference's strict comparison picks.
        float max = 0.0f;
        const __m512 va = _mm512_set1_ps(amax);
        for (int i = 0; i < 16; i++) {
            const __mmask16 m = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(xb + 16 * i)), va, _CMP_EQ_OQ);
            if (m) {
                max = xb[16 * i + __builtin_ctz((unsigned) m)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        if (!isfinite(iscale)) {
            // Subnormal blocks: the scale overflows, and so do the products.
            q8x256_quantize_block(xb, rec);
            continue;
        }
        const __m512 vs = _mm512_set1_ps(iscale);
        const __m512i lim = _mm512_set1_epi32(127);
        for (int j = 0; j < 8; j++) {
            __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + 32 * j), vs));
            __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + 32 * j + 16), vs));
            q0 = _mm512_min_epi32(q0, lim);
            q1 = _mm512_min_epi32(q1, lim);
            _mm_storeu_si128((__m128i *) (rec + 32 * j), _mm512_cvtepi32_epi8(q0));
            _mm_storeu_si128((__m128i *) (rec + 32 * j + 16), _mm512_cvtepi32_epi8(q1));
            const int16_t s16 = (int16_t) _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
            memcpy(rec + Q8X256_OFF_SUMS + 2 * j, &s16, 2);
        }
        const float d = 1.0f / iscale;
        memcpy(rec + Q8X256_OFF_D, &d, 4);
    }
}
__attribute__((target("avx2,fma,f16c")))
static void q8x256_quantize_avx2(const float * x, uint8_t * dst, int64_t n) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i lim = _mm256_set1_epi32(127);
    for (int64_t b = 0; b < n / 256; b++) {
        const float * xb = x + 256 * b;
        uint8_t * rec = dst + IDEFICS2_Q8X256_RECORD * b;
        // max(v, a) keeps a where v is NaN, as the reference's comparison skips NaN.
        __m256 a = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
        for (int i = 0; i < 32; i++) {
            const __m256 v = _mm256_loadu_ps(xb + 8 * i);
            a = _mm256_max_ps(_mm256_and_ps(v, absmask), a);
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        }
        const float amax = x16_avx2_hmax(a);
        if (_mm256_movemask_ps(nan) != 0 || !isfinite(amax)) {
            // NaN and infinite inputs convert to integers as C's casts do: the scalar code.
            q8x256_quantize_block(xb, rec);
            continue;
        }
        memset(rec, 0, IDEFICS2_Q8X256_RECORD);
        if (!(amax > 0.0f)) continue;
        // The first value of that magnitude, as the reference's strict comparison picks.
        float max = 0.0f;
        const __m256 va = _mm256_set1_ps(amax);
        for (int i = 0; i < 32; i++) {
            const int mk = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(_mm256_loadu_ps(xb + 8 * i), absmask), va, _CMP_EQ_OQ));
            if (mk) {
                max = xb[8 * i + __builtin_ctz((unsigned) mk)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        if (!isfinite(iscale)) {
            // Subnormal blocks: the scale overflows, and so do the products.
            q8x256_quantize_block(xb, rec);
            continue;
        }
        const __m256 vs = _mm256_set1_ps(iscale);
        for (int j = 0; j < 8; j++) {
            __m256i q[4];
            for (int i = 0; i < 4; i++) {
                q[i] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 32 * j + 8 * i), vs)), lim);
            }
            // Values lie in −127…127 (x16_avx2_pack_i8).
            _mm256_storeu_si256((__m256i *) (rec + 32 * j), x16_avx2_pack_i8(q));
            const int16_t s16 = (int16_t) x16_avx2_hsum_epi32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
            memcpy(rec + Q8X256_OFF_SUMS + 2 * j, &s16, 2);
        }
        const float d = 1.0f / iscale;
        memcpy(rec + Q8X256_OFF_D, &d, 4);
    }
}
#endif

// ---------------------------------------------------------------------------------------------
// Products

// Scalar: the same integer sums and the same float operations (fmaf) as the AVX-512 path, so both
// give identical results.
static void q4kx16_tile_scalar(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, float * const * ys, int nt) {
    float acc[Q4KX16_TILE][Q4KX16_GROUP] = { { 0 } };
    for (int64_t s = 0; s < ns; s++) {
        const uint8_t * blk = wg + s * IDEFICS2_Q4KX16_BLOCK;
        float dw[Q4KX16_GROUP], dm[Q4KX16_GROUP];
        for (int r = 0; r < Q4KX16_GROUP; r++) {
            uint16_t h;
            memcpy(&h, blk + 2 * r, 2);
            dw[r] = ggml_fp16_to_fp32(h);
            memcpy(&h, blk + Q4KX16_OFF_DMIN + 2 * r, 2);
            dm[r] = ggml_fp16_to_fp32(h);
        }
        for (int t = 0; t < nt; t++) {
            const uint8_t * xr = xs[t] + s * IDEFICS2_Q8X256_RECORD;
            const int8_t * q = (const int8_t *) xr;
            const float dx = q4kx16_load_f32(xr + Q8X256_OFF_D);
            for (int r = 0; r < Q4KX16_GROUP; r++) {
                int32_t isum = 0, msum = 0;
                for (int j = 0; j < 8; j++) {
                    int32_t dot = 0;
                    for (int k = 0; k < 4; k++) {
                        for (int i = 0; i < 4; i++) {
                            const uint8_t c = blk[Q4KX16_OFF_QS + 256 * j + 64 * k + 4 * r + i];
                            dot += (c & 0x0F) * q[32 * j + 8 * k + i] + (c >> 4) * q[32 * j + 8 * k + 4 + i];
                        }
                    }
                    isum += blk[Q4KX16_OFF_SC + 16 * j + r] * dot;
                    int16_t xsum;
                    memcpy(&xsum, xr + Q8X256_OFF_SUMS + 2 * j, 2);
                    msum += blk[Q4KX16_OFF_MIN + 32 * (j / 2) + 2 * r + j % 2] * xsum;
                }
                acc[t][r] = fmaf((float) isum, dw[r] * dx, acc[t][r]);
                acc[t][r] = fmaf(-(float) msum, dm[r] * dx, acc[t][r]);
            }
        }
    }
    for (int t = 0; t < nt; t++) memcpy(ys[t], acc[t], sizeof acc[t]);
}

#ifdef Q4KX16_HAVE_X86
__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline))
static inline void q4kx16_tile_avx512(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, float * const * ys, const int nt) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512 acc[Q4KX16_TILE];
#pragma GCC unroll 8
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t s = 0; s < ns; s++) {
        const uint8_t * blk = wg + s * IDEFICS2_Q4KX16_BLOCK;
        __m512i isum[Q4KX16_TILE];
#pragma GCC unroll 8
        for (int t = 0; t < nt; t++) isum[t] = _mm512_setzero_si512();
        for (int j = 0; j < 8; j++) {
            // One sum per token and sub-block; the sub-blocks' chains are independent of each other.
            __m512i dot[Q4KX16_TILE];
#pragma GCC unroll 8
            for (int t = 0; t < nt; t++) dot[t] = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                const __m512i c = _mm512_loadu_si512((const void *) (blk + Q4KX16_OFF_QS + 256 * j + 64 * k));
                const __m512i cl = _mm512_and_si512(c, m4);
                const __m512i ch = _mm512_and_si512(_mm512_srli_epi16(c, 4), m4);
#pragma GCC unroll 8
                for (int t = 0; t < nt; t++) {
                    const uint8_t * xb = xs[t] + s * IDEFICS2_Q8X256_RECORD + 32 * j + 8 * k;
                    dot[t] = _mm512_dpbusd_epi32(dot[t], cl, _mm512_set1_epi32(q4kx16_load_i32(xb)));
                    dot[t] = _mm512_dpbusd_epi32(dot[t], ch, _mm512_set1_epi32(q4kx16_load_i32(xb + 4)));
                }
            }
            const __m512i sc = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *) (blk + Q4KX16_OFF_SC + 16 * j)));
#pragma GCC unroll 8
            for (int t = 0; t < nt; t++) isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(dot[t], sc));
        }
        __m512i mins[4];
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            mins[k] = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *) (blk + Q4KX16_OFF_MIN + 32 * k)));
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) blk));
        const __m512 dm = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) (blk + Q4KX16_OFF_DMIN)));
#pragma GCC unroll 8
        for (int t = 0; t < nt; t++) {
            const uint8_t * xr = xs[t] + s * IDEFICS2_Q8X256_RECORD;
            __m512i msum = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                msum = _mm512_dpwssd_epi32(msum, mins[k], _mm512_set1_epi32(q4kx16_load_i32(xr + Q8X256_OFF_SUMS + 4 * k)));
            }
            const __m512 dx = _mm512_set1_ps(q4kx16_load_f32(xr + Q8X256_OFF_D));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(dw, dx), acc[t]);
            acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum), _mm512_mul_ps(dm, dx), acc[t]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < nt; t++) _mm512_storeu_ps(ys[t], acc[t]);
}

#define Q4KX16_CASE(N) \
    case N: q4kx16_tile_avx512(wg, ns, xs, ys, N); break;

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void q4kx16_tile_avx512_n(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, float * const * ys, int nt) {
    switch (nt) {
        Q4KX16_CASE(1)
        Q4KX16_CASE(2)
        Q4KX16_CASE(3)
        Q4KX16_CASE(4)
        Q4KX16_CASE(5)
        Q4KX16_CASE(6)
        Q4KX16_CASE(7)
        Q4KX16_CASE(8)
    }
}
// Rows 8h…8h+7 of a group for h in [h0, h0 + nh) and nt ≤ 4 tokens (nh·nt ≤ 4). Each 64-byte chunk of codes holds
// rows 0-7 in its first 32 bytes and rows 8-15 in its second. With one token both halves take one pass (nh = 2):
// the weights stream through once while the integer work runs, and the pass requests them X16_PREFETCH_AHEAD
// bytes ahead. With more tokens each half takes its own pass (nh = 1), the second reading the weights from the
// cache. A row's integer sums and float operations are the same either way, so the results are identical.
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void q4kx16_rows_avx2(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, float * const * ys, const int nt,
                                    const int h0, const int nh, const int dot) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[2][4];
#pragma GCC unroll 2
    for (int e = 0; e < nh; e++) {
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) acc[e][t] = _mm256_setzero_ps();
    }
    for (int64_t s = 0; s < ns; s++) {
        const uint8_t * blk = wg + s * IDEFICS2_Q4KX16_BLOCK;
        __m256i isum[2][4];
#pragma GCC unroll 2
        for (int e = 0; e < nh; e++) {
#pragma GCC unroll 4
            for (int t = 0; t < nt; t++) isum[e][t] = _mm256_setzero_si256();
        }
        for (int j = 0; j < 8; j++) {
            if (nh == 2) x16_prefetch(blk + X16_PREFETCH_AHEAD + IDEFICS2_Q4KX16_BLOCK / 8 * j, IDEFICS2_Q4KX16_BLOCK / 8);
            __m256i sub[2][4];
#pragma GCC unroll 2
            for (int e = 0; e < nh; e++) {
#pragma GCC unroll 4
                for (int t = 0; t < nt; t++) sub[e][t] = _mm256_setzero_si256();
            }
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
#pragma GCC unroll 2
                for (int e = 0; e < nh; e++) {
                    const __m256i c = _mm256_loadu_si256((const __m256i *) (blk + Q4KX16_OFF_QS + 256 * j + 64 * k + 32 * (h0 + e)));
                    const __m256i cl = _mm256_and_si256(c, m4);
                    const __m256i ch = _mm256_and_si256(_mm256_srli_epi16(c, 4), m4);
#pragma GCC unroll 4
                    for (int t = 0; t < nt; t++) {
                        const uint8_t * xb = xs[t] + s * IDEFICS2_Q8X256_RECORD + 32 * j + 8 * k;
                        const __m256i xl = _mm256_set1_epi32(q4kx16_load_i32(xb)), xh = _mm256_set1_epi32(q4kx16_load_i32(xb + 4));
                        if (dot == X16_DOT_MADDUBS) {
                            sub[e][t] = _mm256_add_epi16(sub[e][t], _mm256_add_epi16(_mm256_maddubs_epi16(cl, xl), _mm256_maddubs_epi16(ch, xh)));
                        } else {
                            sub[e][t] = x16_dpbusd(x16_dpbusd(sub[e][t], cl, xl, dot), ch, xh, dot);
                        }
                    }
                }
            }
#pragma GCC unroll 2
            for (int e = 0; e < nh; e++) {
                const __m256i sc = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *) (blk + Q4KX16_OFF_SC + 16 * j + 8 * (h0 + e))));
#pragma GCC unroll 4
                for (int t = 0; t < nt; t++) {
                    const __m256i s32 = dot == X16_DOT_MADDUBS ? _mm256_madd_epi16(sub[e][t], ones) : sub[e][t];
                    isum[e][t] = _mm256_add_epi32(isum[e][t], _mm256_mullo_epi32(s32, sc));
                }
            }
        }
#pragma GCC unroll 2
        for (int e = 0; e < nh; e++) {
            const int h = h0 + e;
            __m256i mins[4];
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                mins[k] = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *) (blk + Q4KX16_OFF_MIN + 32 * k + 16 * h)));
            }
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (blk + 16 * h)));
            const __m256 dm = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (blk + Q4KX16_OFF_DMIN + 16 * h)));
#pragma GCC unroll 4
            for (int t = 0; t < nt; t++) {
                const uint8_t * xr = xs[t] + s * IDEFICS2_Q8X256_RECORD;
                __m256i msum = _mm256_setzero_si256();
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                    msum = _mm256_add_epi32(msum, _mm256_madd_epi16(mins[k], _mm256_set1_epi32(q4kx16_load_i32(xr + Q8X256_OFF_SUMS + 4 * k))));
                }
                const __m256 dx = _mm256_set1_ps(q4kx16_load_f32(xr + Q8X256_OFF_D));
                acc[e][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[e][t]), _mm256_mul_ps(dw, dx), acc[e][t]);
                acc[e][t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_mul_ps(dm, dx), acc[e][t]);
            }
        }
    }
#pragma GCC unroll 2
    for (int e = 0; e < nh; e++) {
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) _mm256_storeu_ps(ys[t] + 8 * (h0 + e), acc[e][t]);
    }
}

#define Q4KX16_AVX2_CASE(N) \
    case N: \
        q4kx16_rows_avx2(wg, ns, xs + t0, ys + t0, N, 0, 1, dot); \
        q4kx16_rows_avx2(wg, ns, xs + t0, ys + t0, N, 1, 1, dot); \
        break;

__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void q4kx16_tiles_avx2(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, float * const * ys, int nt,
                                     const int dot) {
    if (nt == 1) {
        q4kx16_rows_avx2(wg, ns, xs, ys, 1, 0, 2, dot);
        return;
    }
    for (int t0 = 0; t0 < nt; t0 += 4) {
        switch (nt - t0 < 4 ? nt - t0 : 4) {
            Q4KX16_AVX2_CASE(1)
            Q4KX16_AVX2_CASE(2)
            Q4KX16_AVX2_CASE(3)
            Q4KX16_AVX2_CASE(4)
        }
    }
}

// One tile function per way of multiplying (x16.h), each with its constant inlined.
__attribute__((target("avx2,fma,f16c")))
static void q4kx16_tile_avx2_n(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, float * const * ys, int nt) {
    q4kx16_tiles_avx2(wg, ns, xs, ys, nt, X16_DOT_MADDUBS);
}

__attribute__((target("avx2,fma,f16c")))
static void q4kx16_tile_avxvnni_n(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, float * const * ys, int nt) {
    q4kx16_tiles_avx2(wg, ns, xs, ys, nt, X16_DOT_VNNI);
}

__attribute__((target("avx2,fma,f16c")))
static void q4kx16_tile_vnni_emulated_n(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, float * const * ys, int nt) {
    q4kx16_tiles_avx2(wg, ns, xs, ys, nt, X16_DOT_VNNI_EMULATED);
}
#endif

// NEON with the dot-product extension (q4x16.c): per sub-block of 32 columns, 4 registers of 16 code bytes (4 rows
// each) split into nibbles take 8 sdot per token into each row's int32 lane; the sub-block's sums are multiplied by
// the rows' scales (vmlaq) into the super-block's. The mins term multiplies the rows' mins (vld2q splits the two
// sub-blocks of each pair) by the activations' sub-block sums. The i8mm path takes a sub-block's sums for two tokens
// from smmla (x16.h) and the rest from the same code. Integers and float operations are the scalar path's, lane for
// lane.
#ifdef X16_HAVE_NEON
X16_DOTPROD_TARGET __attribute__((always_inline))
static inline int32x4_t q4kx16_neon_widen(uint8x16_t v, const int j) {
    const uint16x8_t h = j < 2 ? vmovl_u8(vget_low_u8(v)) : vmovl_u8(vget_high_u8(v));
    return vreinterpretq_s32_u32(j % 2 == 0 ? vmovl_u16(vget_low_u16(h)) : vmovl_u16(vget_high_u16(h)));
}

// isum[t] += sub-block j's sums dot[t] (rows 4r…4r+3 in dot[t][r]) times the rows' scales.
X16_DOTPROD_TARGET __attribute__((always_inline))
static inline void q4kx16_neon_scale(const uint8_t * blk, const int j, int32x4_t dot[2][4], int32x4_t isum[2][4], const int nt) {
    const uint8x16_t sc = vld1q_u8(blk + Q4KX16_OFF_SC + 16 * j);
    for (int r = 0; r < 4; r++) {
        const int32x4_t sc4 = q4kx16_neon_widen(sc, r);
        for (int t = 0; t < nt; t++) isum[t][r] = vmlaq_s32(isum[t][r], dot[t][r], sc4);
    }
}

// acc[t] += super-block s's isum[t] and mins term, scaled as the scalar path scales them.
X16_DOTPROD_TARGET __attribute__((always_inline))
static inline void q4kx16_neon_super_acc(const uint8_t * blk, const uint8_t * const * xs, int64_t s, int32x4_t isum[2][4],
                                         float32x4_t acc[2][4], const int nt) {
    int32x4_t msum[2][4];
    x16_neon_zero_s32(msum, nt);
    for (int k = 0; k < 4; k++) {
        const uint8x16x2_t mins = vld2q_u8(blk + Q4KX16_OFF_MIN + 32 * k); // sub-blocks 2k and 2k + 1
        for (int i = 0; i < 2; i++) {
            for (int t = 0; t < nt; t++) {
                int16_t xsum;
                memcpy(&xsum, xs[t] + s * IDEFICS2_Q8X256_RECORD + Q8X256_OFF_SUMS + 2 * (2 * k + i), 2);
                for (int r = 0; r < 4; r++) msum[t][r] = vmlaq_n_s32(msum[t][r], q4kx16_neon_widen(mins.val[i], r), xsum);
            }
        }
    }
    for (int t = 0; t < nt; t++) {
        const float dx = q4kx16_load_f32(xs[t] + s * IDEFICS2_Q8X256_RECORD + Q8X256_OFF_D);
        for (int r = 0; r < 4; r++) {
            const float32x4_t dw = vmulq_n_f32(x16_neon_f16x4(blk + 8 * r), dx);
            const float32x4_t dm = vmulq_n_f32(x16_neon_f16x4(blk + Q4KX16_OFF_DMIN + 8 * r), dx);
            acc[t][r] = vfmaq_f32(acc[t][r], vcvtq_f32_s32(isum[t][r]), dw);
            acc[t][r] = vfmsq_f32(acc[t][r], vcvtq_f32_s32(msum[t][r]), dm);
        }
    }
}

X16_DOTPROD_TARGET __attribute__((always_inline))
static inline void q4kx16_tile_neon(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, float * const * ys, const int nt) {
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    float32x4_t acc[2][4];
    x16_neon_zero_f32(acc, nt);
    for (int64_t s = 0; s < ns; s++) {
        const uint8_t * blk = wg + s * IDEFICS2_Q4KX16_BLOCK;
        int32x4_t isum[2][4];
        x16_neon_zero_s32(isum, nt);
        for (int j = 0; j < 8; j++) {
            int32x4_t dot[2][4];
            x16_neon_zero_s32(dot, nt);
            for (int k = 0; k < 4; k++) {
                int8x16_t xl[2], xh[2];
                for (int t = 0; t < nt; t++) {
                    const uint8_t * xb = xs[t] + s * IDEFICS2_Q8X256_RECORD + 32 * j + 8 * k;
                    xl[t] = x16_neon_group4(xb);
                    xh[t] = x16_neon_group4(xb + 4);
                }
                for (int r = 0; r < 4; r++) {
                    const uint8x16_t c = vld1q_u8(blk + Q4KX16_OFF_QS + 256 * j + 64 * k + 16 * r);
                    const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(c, m4)), hi = vreinterpretq_s8_u8(vshrq_n_u8(c, 4));
                    for (int t = 0; t < nt; t++) dot[t][r] = vdotq_s32(vdotq_s32(dot[t][r], lo, xl[t]), hi, xh[t]);
                }
            }
            q4kx16_neon_scale(blk, j, dot, isum, nt);
        }
        q4kx16_neon_super_acc(blk, xs, s, isum, acc, nt);
    }
    x16_neon_store(ys, acc, nt);
}

X16_DOTPROD_TARGET
static void q4kx16_tile_neon_n(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, float * const * ys, int nt) {
    for (int t0 = 0; t0 < nt; t0 += 2) {
        if (nt - t0 >= 2) {
            q4kx16_tile_neon(wg, ns, xs + t0, ys + t0, 2);
        } else {
            q4kx16_tile_neon(wg, ns, xs + t0, ys + t0, 1);
        }
    }
}

// Two tokens with smmla: per sub-block, p[r] holds rows 4r…4r+3 in pair order (x16.h).
X16_I8MM_TARGET __attribute__((always_inline))
static inline void q4kx16_tile_i8mm(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, float * const * ys) {
    float32x4_t acc[2][4];
    x16_neon_zero_f32(acc, 2);
    for (int64_t s = 0; s < ns; s++) {
        const uint8_t * blk = wg + s * IDEFICS2_Q4KX16_BLOCK;
        int32x4_t isum[2][4];
        x16_neon_zero_s32(isum, 2);
        for (int j = 0; j < 8; j++) {
            int32x4_t p[4][2];
            for (int r = 0; r < 4; r++) p[r][0] = p[r][1] = vdupq_n_s32(0);
            for (int k = 0; k < 4; k++) {
                const int64_t xo = s * IDEFICS2_Q8X256_RECORD + 32 * j + 8 * k;
                const int8x16_t x2 = x16_neon_pair8(xs[0] + xo, xs[1] + xo);
                for (int r = 0; r < 4; r++) {
                    const uint8x16_t c = vld1q_u8(blk + Q4KX16_OFF_QS + 256 * j + 64 * k + 16 * r);
                    x16_mmla_nibbles(p[r], c, x2);
                }
            }
            int32x4_t dot[2][4];
            x16_neon_unpair(p, dot);
            q4kx16_neon_scale(blk, j, dot, isum, 2);
        }
        q4kx16_neon_super_acc(blk, xs, s, isum, acc, 2);
    }
    x16_neon_store(ys, acc, 2);
}

// Pairs of tokens with smmla, a last odd one with sdot.
X16_I8MM_TARGET
static void q4kx16_tile_i8mm_n(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, float * const * ys, int nt) {
    int t0 = 0;
    for (; nt - t0 >= 2; t0 += 2) q4kx16_tile_i8mm(wg, ns, xs + t0, ys + t0);
    if (t0 < nt) q4kx16_tile_neon(wg, ns, xs + t0, ys + t0, 1);
}
#endif

// ---------------------------------------------------------------------------------------------
// Dispatch (the path is q4x16's: idefics2_q4x16_isa)

void idefics2_q8x256_quantize_row(const float * x, uint8_t * dst, int64_t n) {
#ifdef Q4KX16_HAVE_X86
    const int isa = idefics2_q4x16_isa();
    if (isa == IDEFICS2_Q4X16_AVX512VNNI) {
        q8x256_quantize_avx512(x, dst, n);
        return;
    }
    if (idefics2_q4x16_avx2_dot(isa) >= 0) {
        q8x256_quantize_avx2(x, dst, n);
        return;
    }
#endif
    q8x256_quantize_scalar(x, dst, n);
}

void idefics2_q4kx16_matmul(const uint8_t * w, int64_t cols, const uint8_t * xq, int64_t ntok,
                            int64_t x_stride, float * y, int64_t y_stride, int64_t r0, int64_t r1) {
    x16_tile_fn tile = q4kx16_tile_scalar;
    const int isa = idefics2_q4x16_isa();
    (void) isa;
#ifdef Q4KX16_HAVE_X86
    if (isa == IDEFICS2_Q4X16_AVX512VNNI) tile = q4kx16_tile_avx512_n;
    if (isa == IDEFICS2_Q4X16_AVX2) tile = q4kx16_tile_avx2_n;
    if (isa == IDEFICS2_Q4X16_AVX2VNNI) tile = q4kx16_tile_avxvnni_n;
    if (isa == IDEFICS2_Q4X16_AVX2VNNI_EMULATED) tile = q4kx16_tile_vnni_emulated_n;
#endif
#ifdef X16_HAVE_NEON
    if (isa == IDEFICS2_Q4X16_NEON_DOTPROD) tile = q4kx16_tile_neon_n;
    if (isa == IDEFICS2_Q4X16_NEON_I8MM) tile = q4kx16_tile_i8mm_n;
#endif
    x16_matmul(tile, w, cols / 256, IDEFICS2_Q4KX16_BLOCK, xq, ntok, x_stride, y, y_stride, r0 / X16_GROUP, r1 / X16_GROUP);
}

// ---------------------------------------------------------------------------------------------
// Graph ops

static void q8x256_custom_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
    (void) userdata;
    x16_quantize_rows(dst, ith, nth, idefics2_q8x256_quantize_row);
}

static void q4kx16_custom_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
    (void) ith;
    (void) userdata;
    x16_mul_mat_op(dst, nth, IDEFICS2_Q8X256_RECORD, 256, idefics2_q4kx16_matmul);
}

struct ggml_tensor * idefics2_q8x256_quantize(struct ggml_context * ctx, struct ggml_tensor * x) {
    struct ggml_tensor * args[1] = { x };
    return ggml_custom_4d(ctx, GGML_TYPE_I8, x->ne[0] / 256 * IDEFICS2_Q8X256_RECORD, x->ne[1], x->ne[2], x->ne[3],
                          args, 1, q8x256_custom_op, GGML_N_TASKS_MAX, NULL);
}

struct ggml_tensor * idefics2_q4kx16_mul_mat(struct ggml_context * ctx, struct ggml_tensor * w,
                                             struct ggml_tensor * xq, int64_t rows) {
    struct ggml_tensor * args[2] = { w, xq };
    return ggml_custom_4d(ctx, GGML_TYPE_F32, rows, xq->ne[1], xq->ne[2], xq->ne[3], args, 2,
                          q4kx16_custom_op, GGML_N_TASKS_MAX, NULL);
}
