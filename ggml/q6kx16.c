// q6kx16 matrix multiplication (q6kx16.h): a scalar path, AVX2 paths (with and without AVX-VNNI), an AVX-512
// VNNI path and NEON paths (dot products; i8mm), chosen by the q4x16 path selection (q4x16.h). The SIMD functions are
// compiled with target attributes, so the file builds for the baseline architecture and their instructions only
// run after the CPU was found to have them.
//
// One vpdpbusd multiplies 64 unsigned codes (16 rows × 4 columns, 0…63) by a broadcast group of 4
// activation bytes into 16 int32 lanes, one per row. A sub-block of 16 columns takes 3 loads (two of
// low nibbles, one of high bits), 4 code vectors and 4 vpdpbusd per token; its 16 row sums are
// multiplied by the rows' scales (vpmulld) and added to the super-block's sums. The −32 offset needs
// the activations' sums over sub-blocks of 16 only: they are computed once per call and token, and one
// vpdpwssd per pair of sub-blocks multiplies 16 rows × 2 scales·(−32) (int16) by the broadcast pair of
// sums, into the same int32 sums.
//
// The AVX2 path works on 8 rows (32 bytes) at a time with the same codes: vpmaddubsw multiplies them by
// activation bytes into int16 pairs; two such products fit int16 (2 × 2 × 63 × 127 = 32004 < 2^15) and
// vpmaddwd with ones widens them to each row's int32 sum; with AVX-VNNI, vpdpbusd sums into int32 directly
// (x16.h). The rest is the AVX-512 path's, lane for lane.

#include "q6kx16.h"
#include "x16.h"
#include "q4kx16.h"
#include "q4x16.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define Q6KX16_HAVE_X86 1
#include <immintrin.h>
#endif

#define Q6KX16_GROUP 16      // rows per group
#define Q6KX16_TILE 8        // tokens per kernel call
#define Q6KX16_TOKEN_SPAN 64 // tokens whose activations are reused across all row groups of a thread

// Offsets in a group's super-block (q6kx16.h).
#define Q6KX16_OFF_SC 32
#define Q6KX16_OFF_QS 288
#define Q6KX16_SUB 192 // bytes of codes per sub-block of 16 columns

// Offset of the float scale in a q8x256 record (q4kx16.h).
#define Q8X256_OFF_D 272

#define Q6K_BLOCK 210 // sizeof(block_q6_K): ql[128], qh[64], int8 scales[16], f16 d

static inline int32_t q6kx16_load_i32(const void * p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline float q6kx16_load_f32(const uint8_t * p) {
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}

void idefics2_q6kx16_repack(const uint8_t * src, uint8_t * dst, int64_t rows, int64_t cols) {
    const int64_t ns = cols / 256;
    for (int64_t g = 0; g < rows / Q6KX16_GROUP; g++) {
        for (int64_t s = 0; s < ns; s++) {
            uint8_t * out = dst + (g * ns + s) * IDEFICS2_Q6KX16_BLOCK;
            memset(out, 0, IDEFICS2_Q6KX16_BLOCK);
            for (int r = 0; r < Q6KX16_GROUP; r++) {
                const uint8_t * blk = src + ((g * Q6KX16_GROUP + r) * ns + s) * Q6K_BLOCK;
                const uint8_t * ql = blk;
                const uint8_t * qh = blk + 128;
                const uint8_t * sc = blk + 192;
                memcpy(out + 2 * r, blk + 208, 2);
                for (int j = 0; j < 16; j++) out[Q6KX16_OFF_SC + 32 * (j / 2) + 2 * r + j % 2] = sc[j];
                // The codes in column order (ggml's dequantize_row_q6_K): each half of 128 columns keeps 64
                // bytes of low nibbles and 32 bytes of high bits.
                uint8_t code[256];
                for (int n = 0; n < 2; n++) {
                    const uint8_t * l = ql + 64 * n;
                    const uint8_t * h = qh + 32 * n;
                    for (int i = 0; i < 32; i++) {
                        code[128 * n + i] = (uint8_t) ((l[i] & 0x0F) | ((h[i] & 3) << 4));
                        code[128 * n + 32 + i] = (uint8_t) ((l[i + 32] & 0x0F) | (((h[i] >> 2) & 3) << 4));
                        code[128 * n + 64 + i] = (uint8_t) ((l[i] >> 4) | (((h[i] >> 4) & 3) << 4));
                        code[128 * n + 96 + i] = (uint8_t) ((l[i + 32] >> 4) | (((h[i] >> 6) & 3) << 4));
                    }
                }
                for (int j = 0; j < 16; j++) {
                    const uint8_t * c = code + 16 * j;
                    uint8_t * o = out + Q6KX16_OFF_QS + Q6KX16_SUB * j;
                    for (int i = 0; i < 4; i++) {
                        for (int h = 0; h < 2; h++) {
                            o[64 * h + 4 * r + i] = (uint8_t) ((c[8 * h + i] & 0x0F) | ((c[8 * h + 4 + i] & 0x0F) << 4));
                        }
                        uint8_t hb = 0;
                        for (int k = 0; k < 4; k++) hb |= (uint8_t) ((c[4 * k + i] >> 4) << (2 * k));
                        o[128 + 4 * r + i] = hb;
                    }
                }
            }
        }
    }
}

// The code of row r, column 16j + c (c < 16) of a group's super-block blk.
static inline int q6kx16_code(const uint8_t * blk, int j, int r, int c) {
    const uint8_t * o = blk + Q6KX16_OFF_QS + Q6KX16_SUB * j;
    const int h = c / 8, hi = (c / 4) % 2, i = c % 4, k = c / 4;
    const int lo = (o[64 * h + 4 * r + i] >> (4 * hi)) & 0x0F;
    return lo | (((o[128 + 4 * r + i] >> (2 * k)) & 3) << 4);
}

// ---------------------------------------------------------------------------------------------
// Products. xs[t] are token t's q8x256 records, bs[t] its 16 sums per super-block (sub-blocks of 16).

// Scalar: the same integer sums and the same float operations (fmaf) as the AVX-512 path, so both
// give identical results.
static void q6kx16_tile_scalar(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, const int16_t * const * bs,
                               float * const * ys, int nt) {
    float acc[Q6KX16_TILE][Q6KX16_GROUP] = { { 0 } };
    for (int64_t s = 0; s < ns; s++) {
        const uint8_t * blk = wg + s * IDEFICS2_Q6KX16_BLOCK;
        float dw[Q6KX16_GROUP];
        for (int r = 0; r < Q6KX16_GROUP; r++) {
            uint16_t h;
            memcpy(&h, blk + 2 * r, 2);
            dw[r] = ggml_fp16_to_fp32(h);
        }
        for (int t = 0; t < nt; t++) {
            const uint8_t * xr = xs[t] + s * IDEFICS2_Q8X256_RECORD;
            const int8_t * q = (const int8_t *) xr;
            const int16_t * b = bs[t] + 16 * s;
            const float dx = q6kx16_load_f32(xr + Q8X256_OFF_D);
            for (int r = 0; r < Q6KX16_GROUP; r++) {
                int32_t isum = 0;
                for (int j = 0; j < 16; j++) {
                    int32_t dot = 0;
                    for (int c = 0; c < 16; c++) dot += q6kx16_code(blk, j, r, c) * q[16 * j + c];
                    const int32_t sc = (int8_t) blk[Q6KX16_OFF_SC + 32 * (j / 2) + 2 * r + j % 2];
                    isum += sc * dot - 32 * sc * b[j];
                }
                acc[t][r] = fmaf((float) isum, dw[r] * dx, acc[t][r]);
            }
        }
    }
    for (int t = 0; t < nt; t++) memcpy(ys[t], acc[t], sizeof acc[t]);
}

#ifdef Q6KX16_HAVE_X86
__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline))
static inline void q6kx16_tile_avx512(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, const int16_t * const * bs,
                                      float * const * ys, const int nt) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i m30 = _mm512_set1_epi8(0x30);
    const __m512i neg32 = _mm512_set1_epi16(-32);
    __m512 acc[Q6KX16_TILE];
#pragma GCC unroll 8
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t s = 0; s < ns; s++) {
        const uint8_t * blk = wg + s * IDEFICS2_Q6KX16_BLOCK;
        __m512i isum[Q6KX16_TILE];
#pragma GCC unroll 8
        for (int t = 0; t < nt; t++) isum[t] = _mm512_setzero_si512();
        for (int m = 0; m < 8; m++) {
            // Lane r: row r's scales of sub-blocks 2m (low int16) and 2m + 1 (high int16).
            const __m512i scp = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *) (blk + Q6KX16_OFF_SC + 32 * m)));
#pragma GCC unroll 2
            for (int i = 0; i < 2; i++) {
                const int j = 2 * m + i;
                const uint8_t * o = blk + Q6KX16_OFF_QS + Q6KX16_SUB * j;
                const __m512i l0 = _mm512_loadu_si512((const void *) o);
                const __m512i l1 = _mm512_loadu_si512((const void *) (o + 64));
                const __m512i hb = _mm512_loadu_si512((const void *) (o + 128));
                __m512i c[4];
                c[0] = _mm512_or_si512(_mm512_and_si512(l0, m4), _mm512_and_si512(_mm512_slli_epi16(hb, 4), m30));
                c[1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l0, 4), m4), _mm512_and_si512(_mm512_slli_epi16(hb, 2), m30));
                c[2] = _mm512_or_si512(_mm512_and_si512(l1, m4), _mm512_and_si512(hb, m30));
                c[3] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l1, 4), m4), _mm512_and_si512(_mm512_srli_epi16(hb, 2), m30));
                const __m512i sc = i == 0 ? _mm512_srai_epi32(_mm512_slli_epi32(scp, 16), 16) : _mm512_srai_epi32(scp, 16);
#pragma GCC unroll 8
                for (int t = 0; t < nt; t++) {
                    const uint8_t * xb = xs[t] + s * IDEFICS2_Q8X256_RECORD + 16 * j;
                    __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c[0], _mm512_set1_epi32(q6kx16_load_i32(xb)));
                    dot = _mm512_dpbusd_epi32(dot, c[1], _mm512_set1_epi32(q6kx16_load_i32(xb + 4)));
                    dot = _mm512_dpbusd_epi32(dot, c[2], _mm512_set1_epi32(q6kx16_load_i32(xb + 8)));
                    dot = _mm512_dpbusd_epi32(dot, c[3], _mm512_set1_epi32(q6kx16_load_i32(xb + 12)));
                    isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(dot, sc));
                }
            }
            const __m512i scn = _mm512_mullo_epi16(scp, neg32);
#pragma GCC unroll 8
            for (int t = 0; t < nt; t++) {
                isum[t] = _mm512_dpwssd_epi32(isum[t], scn, _mm512_set1_epi32(q6kx16_load_i32(bs[t] + 16 * s + 2 * m)));
            }
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) blk));
#pragma GCC unroll 8
        for (int t = 0; t < nt; t++) {
            const __m512 dx = _mm512_set1_ps(q6kx16_load_f32(xs[t] + s * IDEFICS2_Q8X256_RECORD + Q8X256_OFF_D));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(dw, dx), acc[t]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < nt; t++) _mm512_storeu_ps(ys[t], acc[t]);
}

#define Q6KX16_CASE(N) \
    case N: q6kx16_tile_avx512(wg, ns, xs, bs, ys, N); break;

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void q6kx16_tile_avx512_n(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, const int16_t * const * bs,
                                 float * const * ys, int nt) {
    switch (nt) {
        Q6KX16_CASE(1)
        Q6KX16_CASE(2)
        Q6KX16_CASE(3)
        Q6KX16_CASE(4)
        Q6KX16_CASE(5)
        Q6KX16_CASE(6)
        Q6KX16_CASE(7)
        Q6KX16_CASE(8)
    }
}
// Rows 8h…8h+7 of a group for h in [h0, h0 + nh) and nt ≤ 4 tokens (nh·nt ≤ 4). Each sub-block's codes hold rows
// 0-7 in the first 32 bytes of each 64 and rows 8-15 in the second. With one token both halves take one pass
// (nh = 2), which streams the weights through once and requests them X16_PREFETCH_AHEAD bytes ahead; with more
// tokens each half takes its own pass (nh = 1). A row's integer sums and float operations are the same either
// way, so the results are identical.
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void q6kx16_rows_avx2(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, const int16_t * const * bs,
                                    float * const * ys, const int nt, const int h0, const int nh, const int dot) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i m30 = _mm256_set1_epi8(0x30);
    const __m256i neg32 = _mm256_set1_epi16(-32);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[2][4];
#pragma GCC unroll 2
    for (int e = 0; e < nh; e++) {
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) acc[e][t] = _mm256_setzero_ps();
    }
    for (int64_t s = 0; s < ns; s++) {
        const uint8_t * blk = wg + s * IDEFICS2_Q6KX16_BLOCK;
        __m256i isum[2][4];
#pragma GCC unroll 2
        for (int e = 0; e < nh; e++) {
#pragma GCC unroll 4
            for (int t = 0; t < nt; t++) isum[e][t] = _mm256_setzero_si256();
        }
        for (int m = 0; m < 8; m++) {
            if (nh == 2) x16_prefetch(blk + X16_PREFETCH_AHEAD + IDEFICS2_Q6KX16_BLOCK / 8 * m, IDEFICS2_Q6KX16_BLOCK / 8);
#pragma GCC unroll 2
            for (int e = 0; e < nh; e++) {
                const int h = h0 + e;
                // Lane r: row 8h + r's scales of sub-blocks 2m (low int16) and 2m + 1 (high int16).
                const __m256i scp = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *) (blk + Q6KX16_OFF_SC + 32 * m + 16 * h)));
#pragma GCC unroll 2
                for (int i = 0; i < 2; i++) {
                    const int j = 2 * m + i;
                    const uint8_t * o = blk + Q6KX16_OFF_QS + Q6KX16_SUB * j + 32 * h;
                    const __m256i l0 = _mm256_loadu_si256((const __m256i *) o);
                    const __m256i l1 = _mm256_loadu_si256((const __m256i *) (o + 64));
                    const __m256i hb = _mm256_loadu_si256((const __m256i *) (o + 128));
                    const __m256i c0 = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m30));
                    const __m256i c1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m30));
                    const __m256i c2 = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(hb, m30));
                    const __m256i c3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), _mm256_and_si256(_mm256_srli_epi16(hb, 2), m30));
                    const __m256i sc = i == 0 ? _mm256_srai_epi32(_mm256_slli_epi32(scp, 16), 16) : _mm256_srai_epi32(scp, 16);
#pragma GCC unroll 4
                    for (int t = 0; t < nt; t++) {
                        const uint8_t * xb = xs[t] + s * IDEFICS2_Q8X256_RECORD + 16 * j;
                        const __m256i x0 = _mm256_set1_epi32(q6kx16_load_i32(xb)), x1 = _mm256_set1_epi32(q6kx16_load_i32(xb + 4));
                        const __m256i x2 = _mm256_set1_epi32(q6kx16_load_i32(xb + 8)), x3 = _mm256_set1_epi32(q6kx16_load_i32(xb + 12));
                        __m256i d;
                        if (dot == X16_DOT_MADDUBS) {
                            const __m256i p01 = _mm256_add_epi16(_mm256_maddubs_epi16(c0, x0), _mm256_maddubs_epi16(c1, x1));
                            const __m256i p23 = _mm256_add_epi16(_mm256_maddubs_epi16(c2, x2), _mm256_maddubs_epi16(c3, x3));
                            d = _mm256_add_epi32(_mm256_madd_epi16(p01, ones), _mm256_madd_epi16(p23, ones));
                        } else {
                            d = x16_dpbusd(x16_dpbusd(_mm256_setzero_si256(), c0, x0, dot), c1, x1, dot);
                            d = x16_dpbusd(x16_dpbusd(d, c2, x2, dot), c3, x3, dot);
                        }
                        isum[e][t] = _mm256_add_epi32(isum[e][t], _mm256_mullo_epi32(d, sc));
                    }
                }
                const __m256i scn = _mm256_mullo_epi16(scp, neg32);
#pragma GCC unroll 4
                for (int t = 0; t < nt; t++) {
                    isum[e][t] = _mm256_add_epi32(isum[e][t], _mm256_madd_epi16(scn, _mm256_set1_epi32(q6kx16_load_i32(bs[t] + 16 * s + 2 * m))));
                }
            }
        }
#pragma GCC unroll 2
        for (int e = 0; e < nh; e++) {
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (blk + 16 * (h0 + e))));
#pragma GCC unroll 4
            for (int t = 0; t < nt; t++) {
                const __m256 dx = _mm256_set1_ps(q6kx16_load_f32(xs[t] + s * IDEFICS2_Q8X256_RECORD + Q8X256_OFF_D));
                acc[e][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[e][t]), _mm256_mul_ps(dw, dx), acc[e][t]);
            }
        }
    }
#pragma GCC unroll 2
    for (int e = 0; e < nh; e++) {
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) _mm256_storeu_ps(ys[t] + 8 * (h0 + e), acc[e][t]);
    }
}

#define Q6KX16_AVX2_CASE(N) \
    case N: \
        q6kx16_rows_avx2(wg, ns, xs + t0, bs + t0, ys + t0, N, 0, 1, dot); \
        q6kx16_rows_avx2(wg, ns, xs + t0, bs + t0, ys + t0, N, 1, 1, dot); \
        break;

__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void q6kx16_tiles_avx2(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, const int16_t * const * bs,
                                     float * const * ys, int nt, const int dot) {
    if (nt == 1) {
        q6kx16_rows_avx2(wg, ns, xs, bs, ys, 1, 0, 2, dot);
        return;
    }
    for (int t0 = 0; t0 < nt; t0 += 4) {
        switch (nt - t0 < 4 ? nt - t0 : 4) {
            Q6KX16_AVX2_CASE(1)
            Q6KX16_AVX2_CASE(2)
            Q6KX16_AVX2_CASE(3)
            Q6KX16_AVX2_CASE(4)
        }
    }
}

// One tile function per way of multiplying (x16.h), each with its constant inlined.
__attribute__((target("avx2,fma,f16c")))
static void q6kx16_tile_avx2_n(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, const int16_t * const * bs,
                               float * const * ys, int nt) {
    q6kx16_tiles_avx2(wg, ns, xs, bs, ys, nt, X16_DOT_MADDUBS);
}

__attribute__((target("avx2,fma,f16c")))
static void q6kx16_tile_avxvnni_n(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, const int16_t * const * bs,
                                  float * const * ys, int nt) {
    q6kx16_tiles_avx2(wg, ns, xs, bs, ys, nt, X16_DOT_VNNI);
}

__attribute__((target("avx2,fma,f16c")))
static void q6kx16_tile_vnni_emulated_n(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, const int16_t * const * bs,
                                        float * const * ys, int nt) {
    q6kx16_tiles_avx2(wg, ns, xs, bs, ys, nt, X16_DOT_VNNI_EMULATED);
}
#endif

// NEON with the dot-product extension (q4x16.c): per sub-block of 16 columns, each register of 16 rows' bytes
// (4 rows) is rebuilt into 4 code vectors (0…63) as on AVX2, which take 4 sdot per token into each row's int32
// lane; the sums are multiplied by the rows' scales (vld2q splits the two sub-blocks of each pair) and the −32
// offset adds scale·(−32)·Σq. The i8mm path takes a sub-block's sums for two tokens from smmla (x16.h), code
// vectors 0, 1 and 2, 3 each making the left operands of 8 columns. Integers and float operations are the scalar
// path's, lane for lane.
#ifdef X16_HAVE_NEON
X16_DOTPROD_TARGET __attribute__((always_inline))
static inline int32x4_t q6kx16_neon_widen(int8x16_t v, const int r) {
    const int16x8_t h = r < 2 ? vmovl_s8(vget_low_s8(v)) : vmovl_s8(vget_high_s8(v));
    return r % 2 == 0 ? vmovl_s16(vget_low_s16(h)) : vmovl_s16(vget_high_s16(h));
}

// c[k] = the codes of rows 4r…4r+3, columns 4k…4k+3 of the sub-block at o.
X16_DOTPROD_TARGET __attribute__((always_inline))
static inline void q6kx16_neon_codes(const uint8_t * o, const int r, int8x16_t c[4]) {
    const uint8x16_t m4 = vdupq_n_u8(0x0F), m30 = vdupq_n_u8(0x30);
    const uint8x16_t l0 = vld1q_u8(o + 16 * r), l1 = vld1q_u8(o + 64 + 16 * r), hb = vld1q_u8(o + 128 + 16 * r);
    c[0] = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(l0, m4), vandq_u8(vshlq_n_u8(hb, 4), m30)));
    c[1] = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(l0, 4), vandq_u8(vshlq_n_u8(hb, 2), m30)));
    c[2] = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(l1, m4), vandq_u8(hb, m30)));
    c[3] = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(l1, 4), vandq_u8(vshrq_n_u8(hb, 2), m30)));
}

// acc[t] += super-block s's isum[t] times the rows' d and the token's scale.
X16_DOTPROD_TARGET __attribute__((always_inline))
static inline void q6kx16_neon_super_acc(const uint8_t * blk, const uint8_t * const * xs, int64_t s, int32x4_t isum[2][4],
                                         float32x4_t acc[2][4], const int nt) {
    for (int t = 0; t < nt; t++) {
        const float dx = q6kx16_load_f32(xs[t] + s * IDEFICS2_Q8X256_RECORD + Q8X256_OFF_D);
        for (int r = 0; r < 4; r++) {
            acc[t][r] = vfmaq_f32(acc[t][r], vcvtq_f32_s32(isum[t][r]), vmulq_n_f32(x16_neon_f16x4(blk + 8 * r), dx));
        }
    }
}

X16_DOTPROD_TARGET __attribute__((always_inline))
static inline void q6kx16_tile_neon(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, const int16_t * const * bs,
                                    float * const * ys, const int nt) {
    float32x4_t acc[2][4];
    x16_neon_zero_f32(acc, nt);
    for (int64_t s = 0; s < ns; s++) {
        const uint8_t * blk = wg + s * IDEFICS2_Q6KX16_BLOCK;
        int32x4_t isum[2][4];
        x16_neon_zero_s32(isum, nt);
        for (int m = 0; m < 8; m++) {
            const int8x16x2_t scp = vld2q_s8((const int8_t *) (blk + Q6KX16_OFF_SC + 32 * m)); // sub-blocks 2m, 2m + 1
            for (int i = 0; i < 2; i++) {
                const int j = 2 * m + i;
                const uint8_t * o = blk + Q6KX16_OFF_QS + Q6KX16_SUB * j;
                int8x16_t x[2][4];
                for (int t = 0; t < nt; t++) {
                    for (int k = 0; k < 4; k++) x[t][k] = x16_neon_group4(xs[t] + s * IDEFICS2_Q8X256_RECORD + 16 * j + 4 * k);
                }
                for (int r = 0; r < 4; r++) {
                    int8x16_t c[4];
                    q6kx16_neon_codes(o, r, c);
                    const int32x4_t sc = q6kx16_neon_widen(scp.val[i], r);
                    for (int t = 0; t < nt; t++) {
                        int32x4_t d = vdotq_s32(vdotq_s32(vdupq_n_s32(0), c[0], x[t][0]), c[1], x[t][1]);
                        d = vdotq_s32(vdotq_s32(d, c[2], x[t][2]), c[3], x[t][3]);
                        isum[t][r] = vmlaq_s32(isum[t][r], d, sc);
                        isum[t][r] = vmlaq_n_s32(isum[t][r], sc, -32 * (int32_t) bs[t][16 * s + j]);
                    }
                }
            }
        }
        q6kx16_neon_super_acc(blk, xs, s, isum, acc, nt);
    }
    x16_neon_store(ys, acc, nt);
}

X16_DOTPROD_TARGET
static void q6kx16_tile_neon_n(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, const int16_t * const * bs,
                               float * const * ys, int nt) {
    for (int t0 = 0; t0 < nt; t0 += 2) {
        if (nt - t0 >= 2) {
            q6kx16_tile_neon(wg, ns, xs + t0, bs + t0, ys + t0, 2);
        } else {
            q6kx16_tile_neon(wg, ns, xs + t0, bs + t0, ys + t0, 1);
        }
    }
}

// Two tokens with smmla.
X16_I8MM_TARGET __attribute__((always_inline))
static inline void q6kx16_tile_i8mm(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, const int16_t * const * bs,
                                    float * const * ys) {
    float32x4_t acc[2][4];
    x16_neon_zero_f32(acc, 2);
    for (int64_t s = 0; s < ns; s++) {
        const uint8_t * blk = wg + s * IDEFICS2_Q6KX16_BLOCK;
        int32x4_t isum[2][4];
        x16_neon_zero_s32(isum, 2);
        for (int m = 0; m < 8; m++) {
            const int8x16x2_t scp = vld2q_s8((const int8_t *) (blk + Q6KX16_OFF_SC + 32 * m)); // sub-blocks 2m, 2m + 1
            for (int i = 0; i < 2; i++) {
                const int j = 2 * m + i;
                const uint8_t * o = blk + Q6KX16_OFF_QS + Q6KX16_SUB * j;
                const int64_t xo = s * IDEFICS2_Q8X256_RECORD + 16 * j;
                const int8x16_t xa = x16_neon_pair8(xs[0] + xo, xs[1] + xo), xb = x16_neon_pair8(xs[0] + xo + 8, xs[1] + xo + 8);
                for (int r = 0; r < 4; r++) {
                    int8x16_t c[4];
                    q6kx16_neon_codes(o, r, c);
                    const int32x4_t sc = q6kx16_neon_widen(scp.val[i], r);
                    int32x4_t p[2] = { vdupq_n_s32(0), vdupq_n_s32(0) };
                    x16_mmla_rows4(p, c[0], c[1], xa);
                    x16_mmla_rows4(p, c[2], c[3], xb);
                    for (int t = 0; t < 2; t++) {
                        isum[t][r] = vmlaq_s32(isum[t][r], x16_neon_token(p[0], p[1], t), sc);
                        isum[t][r] = vmlaq_n_s32(isum[t][r], sc, -32 * (int32_t) bs[t][16 * s + j]);
                    }
                }
            }
        }
        q6kx16_neon_super_acc(blk, xs, s, isum, acc, 2);
    }
    x16_neon_store(ys, acc, 2);
}

// Pairs of tokens with smmla, a last odd one with sdot.
X16_I8MM_TARGET
static void q6kx16_tile_i8mm_n(const uint8_t * wg, int64_t ns, const uint8_t * const * xs, const int16_t * const * bs,
                               float * const * ys, int nt) {
    int t0 = 0;
    for (; nt - t0 >= 2; t0 += 2) q6kx16_tile_i8mm(wg, ns, xs + t0, bs + t0, ys + t0);
    if (t0 < nt) q6kx16_tile_neon(wg, ns, xs + t0, bs + t0, ys + t0, 1);
}
#endif

// ---------------------------------------------------------------------------------------------
// Dispatch (the path is q4x16's: idefics2_q4x16_isa)

void idefics2_q6kx16_matmul(const uint8_t * w, int64_t cols, const uint8_t * xq, int64_t ntok,
                            int64_t x_stride, float * y, int64_t y_stride, int64_t r0, int64_t r1) {
    const int isa = idefics2_q4x16_isa();
    const int64_t ns = cols / 256;
    const int64_t g0 = r0 / Q6KX16_GROUP, g1 = r1 / Q6KX16_GROUP;
    const int64_t span = ntok < Q6KX16_TOKEN_SPAN ? ntok : Q6KX16_TOKEN_SPAN;
    // The activations' sums over sub-blocks of 16 (|sum| ≤ 16·127), 16 per token and super-block.
    int16_t * sums = malloc((size_t) (span * ns * 16) * sizeof(int16_t));
    if (sums == NULL) GGML_ABORT("q6kx16: cannot allocate %lld bytes", (long long) (span * ns * 16 * 2));
    const uint8_t * xs[Q6KX16_TILE];
    const int16_t * bs[Q6KX16_TILE];
    float * ys[Q6KX16_TILE];
    (void) isa;
    for (int64_t s0 = 0; s0 < ntok; s0 += Q6KX16_TOKEN_SPAN) {
        const int64_t s1 = s0 + Q6KX16_TOKEN_SPAN < ntok ? s0 + Q6KX16_TOKEN_SPAN : ntok;
        for (int64_t t = s0; t < s1; t++) {
            for (int64_t s = 0; s < ns; s++) {
                const int8_t * q = (const int8_t *) (xq + t * x_stride + s * IDEFICS2_Q8X256_RECORD);
                int16_t * b = sums + ((t - s0) * ns + s) * 16;
                for (int j = 0; j < 16; j++) {
                    int32_t sum = 0;
                    for (int i = 0; i < 16; i++) sum += q[16 * j + i];
                    b[j] = (int16_t) sum;
                }
            }
        }
        for (int64_t g = g0; g < g1; g++) {
            const uint8_t * wg = w + g * ns * IDEFICS2_Q6KX16_BLOCK;
            for (int64_t t0 = s0; t0 < s1; t0 += Q6KX16_TILE) {
                const int nt = (int) (s1 - t0 < Q6KX16_TILE ? s1 - t0 : Q6KX16_TILE);
                for (int t = 0; t < nt; t++) {
                    xs[t] = xq + (t0 + t) * x_stride;
                    bs[t] = sums + (t0 + t - s0) * ns * 16;
                    ys[t] = y + (t0 + t) * y_stride + g * Q6KX16_GROUP;
                }
#ifdef Q6KX16_HAVE_X86
                if (isa == IDEFICS2_Q4X16_AVX512VNNI) {
                    q6kx16_tile_avx512_n(wg, ns, xs, bs, ys, nt);
                    continue;
                }
                if (isa == IDEFICS2_Q4X16_AVX2) {
                    q6kx16_tile_avx2_n(wg, ns, xs, bs, ys, nt);
                    continue;
                }
                if (isa == IDEFICS2_Q4X16_AVX2VNNI) {
                    q6kx16_tile_avxvnni_n(wg, ns, xs, bs, ys, nt);
                    continue;
                }
                if (isa == IDEFICS2_Q4X16_AVX2VNNI_EMULATED) {
                    q6kx16_tile_vnni_emulated_n(wg, ns, xs, bs, ys, nt);
                    continue;
                }
#endif
#ifdef X16_HAVE_NEON
                if (isa == IDEFICS2_Q4X16_NEON_DOTPROD) {
                    q6kx16_tile_neon_n(wg, ns, xs, bs, ys, nt);
                    continue;
                }
                if (isa == IDEFICS2_Q4X16_NEON_I8MM) {
                    q6kx16_tile_i8mm_n(wg, ns, xs, bs, ys, nt);
                    continue;
                }
#endif
                q6kx16_tile_scalar(wg, ns, xs, bs, ys, nt);
            }
        }
    }
    free(sums);
}

// ---------------------------------------------------------------------------------------------
// Graph op

// Threads split the row groups; xq and dst are contiguous (fresh op results), so tokens of every
// batch dimension are one run.
static void q6kx16_custom_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
    (void) ith;
    (void) userdata;
    x16_mul_mat_op(dst, nth, IDEFICS2_Q8X256_RECORD, 256, idefics2_q6kx16_matmul);
}

struct ggml_tensor * idefics2_q6kx16_mul_mat(struct ggml_context * ctx, struct ggml_tensor * w,
                                             struct ggml_tensor * xq, int64_t rows) {
    struct ggml_tensor * args[2] = { w, xq };
    return ggml_custom_4d(ctx, GGML_TYPE_F32, rows, xq->ne[1], xq->ne[2], xq->ne[3], args, 2,
                          q6kx16_custom_op, GGML_N_TASKS_MAX, NULL);
}
