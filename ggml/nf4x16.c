// Repacked NF4 ("nf4x16", see nf4x16.h) times int8 activations: a scalar path, an AVX2 path (with or without
// AVX-VNNI), an AVX-512 VNNI path and NEON paths (dot products; i8mm), chosen by idefics2_nf4_isa() (the stream kernel's
// switch, nf4.c; its AVX2, AVX-VNNI and AVX-512 levels take the AVX2 path). As in nf4.c, the SIMD functions carry target attributes and
// only run after __builtin_cpu_supports said the CPU has their instructions.
//
// The AVX2 path multiplies the codebook as signed levels (round(level·127), −127…127) by the int8
// activations: vpmaddubsw takes the levels' magnitudes and the activations with the levels' signs
// (vpsignb), and each pair (≤ 2·127·127) is widened by vpmaddwd at once. Σ level·x equals the
// VNNI path's Σ (level + 128)·x − 128·Σx, so the integers, and the floats after them, are the same.
//
// Both paths compute the same numbers: the integer sums of a chunk are exact, and each chunk is
// added to the row's float accumulator by one fused multiply-add of the same operands in the same
// (chunk) order, so the scalar path is the reference the SIMD path is compared with bit for bit.

#include "nf4.h"
#include "nf4x16.h"
#include "x16.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define NF4X16_HAVE_X86 1
#include <immintrin.h>
#endif

#define NF4X16_SUB 8 // sub-chunks of 8 columns per chunk

// round(level·127) + 128 for bitsandbytes' NF4 codebook (quant.NF4Codebook): no level·127 is
// within 0.06 of a tie, so the rounding is unambiguous. Levels −1 and 1 map to 1 and 255; the
// error of the rounded codebook is at most 0.5/127 of the block's absmax.
static const uint8_t nf4x16_lut_u8[16] = {
    1, 40, 61, 78, 92, 105, 116, 128, 138, 148, 159, 171, 184, 199, 220, 255,
};

void idefics2_nf4x16_lut(uint8_t out[16]) { memcpy(out, nf4x16_lut_u8, sizeof nf4x16_lut_u8); }

static inline float nf4x16_rd_f32(const uint8_t * p) {
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline int32_t nf4x16_rd_i32(const uint8_t * p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

// ---------------------------------------------------------------------------------------------
// Repacking

void idefics2_nf4x16_repack(const uint8_t * stream, uint8_t * dst, int64_t cols, int bs, int64_t g0, int64_t g1) {
    const int64_t nchunks = cols / IDEFICS2_NF4X16_COLS;
    const int64_t rec_bytes = 4 + bs / 2;
    for (int64_t g = g0; g < g1; g++) {
        for (int64_t j = 0; j < nchunks; j++) {
            uint8_t * out = dst + (g * nchunks + j) * IDEFICS2_NF4X16_CHUNK;
            for (int r = 0; r < IDEFICS2_NF4X16_ROWS; r++) {
                // Row r's first value of the chunk. cols % bs == 0, so the chunk lies in one block,
                // at an even offset o: its 64 codes are the 32 bytes from code byte o/2.
                const int64_t e = (g * IDEFICS2_NF4X16_ROWS + r) * cols + j * IDEFICS2_NF4X16_COLS;
                const int64_t b = e / bs;
                const uint8_t * rec = stream + b * rec_bytes;
                const uint8_t * p = rec + 4 + (e - b * bs) / 2;
                memcpy(out + 4 * r, rec, 4);
                // Stream bytes p[4k … 4k+3] hold values 8k … 8k+7, value 2m in the high nibble of
                // byte m; output byte i (0 … 3) takes value 8k+i low and 8k+4+i high.
                for (int k = 0; k < NF4X16_SUB; k++) {
                    const uint8_t * s = p + 4 * k;
                    uint8_t * o = out + 64 + 64 * k + 4 * r;
                    o[0] = (uint8_t) ((s[0] >> 4) | (s[2] & 0xF0));
                    o[1] = (uint8_t) ((s[0] & 0x0F) | (s[2] << 4));
                    o[2] = (uint8_t) ((s[1] >> 4) | (s[3] & 0xF0));
                    o[3] = (uint8_t) ((s[1] & 0x0F) | (s[3] << 4));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Activation records

// The per-record scalars, shared by both paths so that they round alike: id multiplies x before
// rounding to the nearest integer (ties to even, the default rounding mode that lrintf and
// vcvtps2dq use), dd = (max|x|/127)/127.
static inline void nf4x16_record_scales(float amax, float * id, float * dd) {
    *id = amax > 0.0f ? 127.0f / amax : 0.0f;
    *dd = amax / 127.0f / 127.0f;
}

// A record of a block holding Inf or NaN: zero codes and a NaN scale, so every output of the
// vector that reads it is NaN (the stream kernel propagates them too).
static void nf4x16_record_nonfinite(uint8_t * rec) {
    const float dd = NAN;
    const int32_t bias = 0;
    memset(rec, 0, 64);
    memcpy(rec + 64, &dd, 4);
    memcpy(rec + 68, &bias, 4);
}

#ifdef NF4X16_HAVE_X86
// How the AVX2 path multiplies (x16.h) at the stream kernel's level, or -1 where it does not run: the AVX2 and
// AVX-512 (without VNNI) levels take vpmaddubsw, the AVX-VNNI level vpdpbusd.
static int nf4x16_avx2_dot(void) {
    switch (idefics2_nf4_isa()) {
    case IDEFICS2_NF4_AVX2:
    case IDEFICS2_NF4_AVX512: return X16_DOT_MADDUBS;
    case IDEFICS2_NF4_AVX2VNNI: return X16_DOT_VNNI;
    case IDEFICS2_NF4_AVX2VNNI_EMULATED: return X16_DOT_VNNI_EMULATED;
    }
    return -1;
}
#endif

static void nf4x16_quantize_scalar(const float * x, uint8_t * rec) {
    float amax = 0.0f;
    int bad = 0;
    for (int i = 0; i < 64; i++) {
        const float a = fabsf(x[i]);
        bad |= !(a <= FLT_MAX);
        if (a > amax) amax = a;
    }
    if (bad) {
        nf4x16_record_nonfinite(rec);
        return;
    }
    float id, dd;
    nf4x16_record_scales(amax, &id, &dd);
    int32_t sum = 0;
    for (int i = 0; i < 64; i++) {
        long v = lrintf(x[i] * id);
        if (v > 127) v = 127;
        if (v < -127) v = -127;
        rec[i] = (uint8_t) (int8_t) v;
        sum += (int32_t) v;
    }
    const int32_t bias = 128 * sum;
    memcpy(rec + 64, &dd, 4);
    memcpy(rec + 68, &bias, 4);
}

#ifdef NF4X16_HAVE_X86

__attribute__((target("avx512f,avx512bw")))
static void nf4x16_quantize_avx512(const float * x, uint8_t * rec) {
    __m512 v[4];
    __m512 m = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int i = 0; i < 4; i++) {
        v[i] = _mm512_loadu_ps(x + 16 * i);
        const __m512 a = _mm512_abs_ps(v[i]);
        bad |= _mm512_cmp_ps_mask(a, _mm512_set1_ps(FLT_MAX), _CMP_NLE_UQ); // > FLT_MAX or NaN
        m = _mm512_max_ps(m, a);
    }
    if (bad) {
        nf4x16_record_nonfinite(rec);
        return;
    }
    float id, dd;
    nf4x16_record_scales(_mm512_reduce_max_ps(m), &id, &dd);
    const __m512 idv = _mm512_set1_ps(id);
    const __m512i lim = _mm512_set1_epi32(127);
    __m512i s = _mm512_setzero_si512();
    for (int i = 0; i < 4; i++) {
        __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(v[i], idv));
        q = _mm512_max_epi32(_mm512_min_epi32(q, lim), _mm512_sub_epi32(_mm512_setzero_si512(), lim));
        s = _mm512_add_epi32(s, q);
        _mm_storeu_si128((__m128i *) (rec + 16 * i), _mm512_cvtepi32_epi8(q));
    }
    const int32_t bias = 128 * _mm512_reduce_add_epi32(s);
    memcpy(rec + 64, &dd, 4);
    memcpy(rec + 68, &bias, 4);
}

__attribute__((target("avx2,fma")))
static void nf4x16_quantize_avx2(const float * x, uint8_t * rec) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 fmax = _mm256_set1_ps(FLT_MAX);
    __m256 v[8];
    __m256 m = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
    for (int i = 0; i < 8; i++) {
        v[i] = _mm256_loadu_ps(x + 8 * i);
        const __m256 a = _mm256_and_ps(v[i], absmask);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, fmax, _CMP_NLE_UQ)); // > FLT_MAX or NaN
        m = _mm256_max_ps(m, a);
    }
    if (_mm256_movemask_ps(bad)) {
        nf4x16_record_nonfinite(rec);
        return;
    }
    float id, dd;
    nf4x16_record_scales(x16_avx2_hmax(m), &id, &dd);
    const __m256 idv = _mm256_set1_ps(id);
    const __m256i lim = _mm256_set1_epi32(127), nlim = _mm256_set1_epi32(-127);
    __m256i s = _mm256_setzero_si256();
    for (int g = 0; g < 2; g++) {
        __m256i q[4];
        for (int i = 0; i < 4; i++) {
            q[i] = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v[4 * g + i], idv)), lim), nlim);
            s = _mm256_add_epi32(s, q[i]);
        }
        _mm256_storeu_si256((__m256i *) (rec + 32 * g), x16_avx2_pack_i8(q));
    }
    const int32_t bias = 128 * x16_avx2_hsum_epi32(s);
    memcpy(rec + 64, &dd, 4);
    memcpy(rec + 68, &bias, 4);
}

#endif // NF4X16_HAVE_X86

void idefics2_nf4x16_quantize(const float * x, uint8_t * q, int64_t nrec) {
#ifdef NF4X16_HAVE_X86
    if (idefics2_nf4_isa() == IDEFICS2_NF4_AVX512VNNI) {
        for (int64_t i = 0; i < nrec; i++) {
            nf4x16_quantize_avx512(x + i * IDEFICS2_NF4X16_COLS, q + i * IDEFICS2_NF4X16_QREC);
        }
        return;
    }
    if (nf4x16_avx2_dot() >= 0) {
        for (int64_t i = 0; i < nrec; i++) {
            nf4x16_quantize_avx2(x + i * IDEFICS2_NF4X16_COLS, q + i * IDEFICS2_NF4X16_QREC);
        }
        return;
    }
#endif
    for (int64_t i = 0; i < nrec; i++) {
        nf4x16_quantize_scalar(x + i * IDEFICS2_NF4X16_COLS, q + i * IDEFICS2_NF4X16_QREC);
    }
}

// ---------------------------------------------------------------------------------------------
// Products. A tile is one 16-row group times nt ≤ NF4X16_TILE vectors: each sub-chunk of codes is
// decoded once and used for every vector of the tile.

// Vectors per tile. Eight keep 8 int32 and 8 float accumulators plus the decoded codes in the 32
// zmm registers.
#define NF4X16_TILE 8

// Groups whose weights stay in L2 while all vectors pass over them (prefill): about 256 KiB, a
// quarter of Zen 4's L2, so the records of a tile of vectors fit beside them.
#define NF4X16_L2_BYTES (256 * 1024)

static void nf4x16_tile_scalar(const uint8_t * wg, int64_t nchunks, const uint8_t * xq, int64_t xq_stride,
                               float * y, int64_t y_stride, int nt) {
    for (int t = 0; t < nt; t++) {
        const uint8_t * xt = xq + t * xq_stride;
        for (int r = 0; r < IDEFICS2_NF4X16_ROWS; r++) {
            float acc = 0.0f;
            for (int64_t j = 0; j < nchunks; j++) {
                const uint8_t * blk = wg + j * IDEFICS2_NF4X16_CHUNK;
                const uint8_t * rec = xt + j * IDEFICS2_NF4X16_QREC;
                const int8_t * q = (const int8_t *) rec;
                int32_t s = -nf4x16_rd_i32(rec + 68);
                for (int k = 0; k < NF4X16_SUB; k++) {
                    for (int i = 0; i < 4; i++) {
                        const uint8_t b = blk[64 + 64 * k + 4 * r + i];
                        s += nf4x16_lut_u8[b & 0x0F] * q[8 * k + i] + nf4x16_lut_u8[b >> 4] * q[8 * k + 4 + i];
                    }
                }
                acc = fmaf((float) s, nf4x16_rd_f32(blk + 4 * r) * nf4x16_rd_f32(rec + 64), acc);
            }
            y[t * y_stride + r] = acc;
        }
    }
}

#ifdef NF4X16_HAVE_X86

// The tile body, inlined with a constant nt so that the accumulator arrays live in registers.
// Fewer vectors get more int32 accumulators each (S per vector), so that consecutive vpdpbusd
// (latency 4–5 cycles) do not wait on each other: one vector uses 4 chains, two or three use 2.
// |Σ| per chunk is at most 64·255·127 + 128·64·127 < 2^22: no int32 overflow, exact in float.
__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline))
static inline void nf4x16_tile_vnni_body(const uint8_t * wg, int64_t nchunks, const uint8_t * xq,
                                         int64_t xq_stride, float * y, int64_t y_stride, const int nt) {
    const int S = nt >= 4 ? 1 : nt >= 2 ? 2 : 4;
    const __m512i lut = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *) nf4x16_lut_u8));
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512 accf[NF4X16_TILE];
    __m512i acc[NF4X16_TILE][4];
    const uint8_t * xt[NF4X16_TILE];
    for (int t = 0; t < nt; t++) {
        accf[t] = _mm512_setzero_ps();
        xt[t] = xq + t * xq_stride;
    }
    for (int64_t j = 0; j < nchunks; j++) {
        const uint8_t * blk = wg + j * IDEFICS2_NF4X16_CHUNK;
        const int64_t xo = j * IDEFICS2_NF4X16_QREC;
        for (int t = 0; t < nt; t++) {
            acc[t][0] = _mm512_set1_epi32(-nf4x16_rd_i32(xt[t] + xo + 68));
            for (int s = 1; s < S; s++) acc[t][s] = _mm512_setzero_si512();
        }
        // Two sub-chunks per step, so that the accumulator indices are constants.
        for (int k = 0; k < NF4X16_SUB; k += 2) {
            const __m512i q0 = _mm512_loadu_si512((const void *) (blk + 64 + 64 * k));
            const __m512i q1 = _mm512_loadu_si512((const void *) (blk + 128 + 64 * k));
            const __m512i wl0 = _mm512_shuffle_epi8(lut, _mm512_and_si512(q0, m4));
            const __m512i wh0 = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(q0, 4), m4));
            const __m512i wl1 = _mm512_shuffle_epi8(lut, _mm512_and_si512(q1, m4));
            const __m512i wh1 = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(q1, 4), m4));
            for (int t = 0; t < nt; t++) {
                const uint8_t * x = xt[t] + xo + 8 * k;
                acc[t][0] = _mm512_dpbusd_epi32(acc[t][0], wl0, _mm512_set1_epi32(nf4x16_rd_i32(x)));
                acc[t][1 % S] = _mm512_dpbusd_epi32(acc[t][1 % S], wh0, _mm512_set1_epi32(nf4x16_rd_i32(x + 4)));
                acc[t][2 % S] = _mm512_dpbusd_epi32(acc[t][2 % S], wl1, _mm512_set1_epi32(nf4x16_rd_i32(x + 8)));
                acc[t][3 % S] = _mm512_dpbusd_epi32(acc[t][3 % S], wh1, _mm512_set1_epi32(nf4x16_rd_i32(x + 12)));
            }
        }
        const __m512 sc = _mm512_loadu_ps((const float *) blk);
        for (int t = 0; t < nt; t++) {
            __m512i s = acc[t][0];
            if (S == 2) s = _mm512_add_epi32(s, acc[t][1]);
            if (S == 4) s = _mm512_add_epi32(_mm512_add_epi32(s, acc[t][1]), _mm512_add_epi32(acc[t][2], acc[t][3]));
            const __m512 f = _mm512_mul_ps(sc, _mm512_set1_ps(nf4x16_rd_f32(xt[t] + xo + 64)));
            accf[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), f, accf[t]);
        }
    }
    for (int t = 0; t < nt; t++) _mm512_storeu_ps(y + t * y_stride, accf[t]);
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void nf4x16_tile_vnni(const uint8_t * wg, int64_t nchunks, const uint8_t * xq, int64_t xq_stride,
                             float * y, int64_t y_stride, int nt) {
    switch (nt) {
    case 1: nf4x16_tile_vnni_body(wg, nchunks, xq, xq_stride, y, y_stride, 1); return;
    case 2: nf4x16_tile_vnni_body(wg, nchunks, xq, xq_stride, y, y_stride, 2); return;
    case 3: nf4x16_tile_vnni_body(wg, nchunks, xq, xq_stride, y, y_stride, 3); return;
    case 4: nf4x16_tile_vnni_body(wg, nchunks, xq, xq_stride, y, y_stride, 4); return;
    case 5: nf4x16_tile_vnni_body(wg, nchunks, xq, xq_stride, y, y_stride, 5); return;
    case 6: nf4x16_tile_vnni_body(wg, nchunks, xq, xq_stride, y, y_stride, 6); return;
    case 7: nf4x16_tile_vnni_body(wg, nchunks, xq, xq_stride, y, y_stride, 7); return;
    default: nf4x16_tile_vnni_body(wg, nchunks, xq, xq_stride, y, y_stride, NF4X16_TILE); return;
    }
}

// Rows 8h…8h+7 of a group for h in [h0, h0 + nh) and nt ≤ 4 vectors (nh·nt ≤ 4). |Σ| per chunk ≤ 64·127·127 < 2^20.
// Each 64-byte sub-chunk of codes holds rows 0-7 in its first 32 bytes and rows 8-15 in its second. With one
// vector both halves take one pass (nh = 2), which streams the weights through once and requests them
// X16_PREFETCH_AHEAD bytes ahead (x16.h); with more each half takes its own pass (nh = 1), the
// second from the cache. A row's sums and float operations are the same either way, so the results are identical.
// With AVX-VNNI (dot, x16.h) the chunk's sums are the AVX-512 path's: vpdpbusd of the unsigned levels
// (level + 128) and the activations, starting from −128·Σx.
__attribute__((target("avx2,fma"), always_inline))
static inline void nf4x16_rows_avx2(const uint8_t * wg, int64_t nchunks, const uint8_t * xq, int64_t xq_stride,
                                    float * y, int64_t y_stride, const int nt, const int h0, const int nh, const int dot) {
    int8_t lut_s8[16], lut_abs[16];
    for (int i = 0; i < 16; i++) {
        lut_s8[i] = (int8_t) (nf4x16_lut_u8[i] - 128);
        lut_abs[i] = (int8_t) abs(nf4x16_lut_u8[i] - 128);
    }
    const __m256i lut = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *) lut_s8));
    const __m256i luta = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *) lut_abs));
    const __m256i lutu = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *) nf4x16_lut_u8));
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 accf[2][4];
    const uint8_t * xt[4];
    for (int t = 0; t < nt; t++) {
        xt[t] = xq + t * xq_stride;
    }
#pragma GCC unroll 2
    for (int e = 0; e < nh; e++) {
        for (int t = 0; t < nt; t++) accf[e][t] = _mm256_setzero_ps();
    }
    for (int64_t j = 0; j < nchunks; j++) {
        const uint8_t * blk = wg + j * IDEFICS2_NF4X16_CHUNK;
        const int64_t xo = j * IDEFICS2_NF4X16_QREC;
        if (nh == 2) x16_prefetch(blk + X16_PREFETCH_AHEAD, IDEFICS2_NF4X16_CHUNK);
        __m256i acc[2][4];
#pragma GCC unroll 2
        for (int e = 0; e < nh; e++) {
            for (int t = 0; t < nt; t++) {
                acc[e][t] = dot == X16_DOT_MADDUBS ? _mm256_setzero_si256() : _mm256_set1_epi32(-nf4x16_rd_i32(xt[t] + xo + 68));
            }
        }
#pragma GCC unroll 8
        for (int k = 0; k < NF4X16_SUB; k++) {
#pragma GCC unroll 2
            for (int e = 0; e < nh; e++) {
                const __m256i c = _mm256_loadu_si256((const __m256i *) (blk + 64 + 64 * k + 32 * (h0 + e)));
                const __m256i il = _mm256_and_si256(c, m4), ih = _mm256_and_si256(_mm256_srli_epi16(c, 4), m4);
                if (dot != X16_DOT_MADDUBS) {
                    const __m256i ul = _mm256_shuffle_epi8(lutu, il), uh = _mm256_shuffle_epi8(lutu, ih);
                    for (int t = 0; t < nt; t++) {
                        const uint8_t * x = xt[t] + xo + 8 * k;
                        acc[e][t] = x16_dpbusd(acc[e][t], ul, _mm256_set1_epi32(nf4x16_rd_i32(x)), dot);
                        acc[e][t] = x16_dpbusd(acc[e][t], uh, _mm256_set1_epi32(nf4x16_rd_i32(x + 4)), dot);
                    }
                    continue;
                }
                const __m256i wl = _mm256_shuffle_epi8(lut, il), wh = _mm256_shuffle_epi8(lut, ih);
                const __m256i al = _mm256_shuffle_epi8(luta, il), ah = _mm256_shuffle_epi8(luta, ih);
                for (int t = 0; t < nt; t++) {
                    const uint8_t * x = xt[t] + xo + 8 * k;
                    const __m256i pl = _mm256_maddubs_epi16(al, _mm256_sign_epi8(_mm256_set1_epi32(nf4x16_rd_i32(x)), wl));
                    const __m256i ph = _mm256_maddubs_epi16(ah, _mm256_sign_epi8(_mm256_set1_epi32(nf4x16_rd_i32(x + 4)), wh));
                    acc[e][t] = _mm256_add_epi32(acc[e][t], _mm256_add_epi32(_mm256_madd_epi16(pl, ones), _mm256_madd_epi16(ph, ones)));
                }
            }
        }
#pragma GCC unroll 2
        for (int e = 0; e < nh; e++) {
            const __m256 sc = _mm256_loadu_ps((const float *) blk + 8 * (h0 + e));
            for (int t = 0; t < nt; t++) {
                const __m256 f = _mm256_mul_ps(sc, _mm256_set1_ps(nf4x16_rd_f32(xt[t] + xo + 64)));
                accf[e][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[e][t]), f, accf[e][t]);
            }
        }
    }
#pragma GCC unroll 2
    for (int e = 0; e < nh; e++) {
        for (int t = 0; t < nt; t++) _mm256_storeu_ps(y + t * y_stride + 8 * (h0 + e), accf[e][t]);
    }
}

#define NF4X16_AVX2_CASE(N) \
    case N: \
        nf4x16_rows_avx2(wg, nchunks, xq + t0 * xq_stride, xq_stride, y + t0 * y_stride, y_stride, N, 0, 1, dot); \
        nf4x16_rows_avx2(wg, nchunks, xq + t0 * xq_stride, xq_stride, y + t0 * y_stride, y_stride, N, 1, 1, dot); \
        break;

__attribute__((target("avx2,fma"), always_inline))
static inline void nf4x16_tiles_avx2(const uint8_t * wg, int64_t nchunks, const uint8_t * xq, int64_t xq_stride,
                                     float * y, int64_t y_stride, int nt, const int dot) {
    if (nt == 1) {
        nf4x16_rows_avx2(wg, nchunks, xq, xq_stride, y, y_stride, 1, 0, 2, dot);
        return;
    }
    for (int t0 = 0; t0 < nt; t0 += 4) {
        switch (nt - t0 < 4 ? nt - t0 : 4) {
            NF4X16_AVX2_CASE(1)
            NF4X16_AVX2_CASE(2)
            NF4X16_AVX2_CASE(3)
            NF4X16_AVX2_CASE(4)
        }
    }
}

// One tile function per way of multiplying (x16.h), each with its constant inlined.
__attribute__((target("avx2,fma")))
static void nf4x16_tile_avx2(const uint8_t * wg, int64_t nchunks, const uint8_t * xq, int64_t xq_stride,
                             float * y, int64_t y_stride, int nt) {
    nf4x16_tiles_avx2(wg, nchunks, xq, xq_stride, y, y_stride, nt, X16_DOT_MADDUBS);
}

__attribute__((target("avx2,fma")))
static void nf4x16_tile_avxvnni(const uint8_t * wg, int64_t nchunks, const uint8_t * xq, int64_t xq_stride,
                                float * y, int64_t y_stride, int nt) {
    nf4x16_tiles_avx2(wg, nchunks, xq, xq_stride, y, y_stride, nt, X16_DOT_VNNI);
}

__attribute__((target("avx2,fma")))
static void nf4x16_tile_vnni_emulated(const uint8_t * wg, int64_t nchunks, const uint8_t * xq, int64_t xq_stride,
                                      float * y, int64_t y_stride, int nt) {
    nf4x16_tiles_avx2(wg, nchunks, xq, xq_stride, y, y_stride, nt, X16_DOT_VNNI_EMULATED);
}

#endif // NF4X16_HAVE_X86

// NEON with the dot-product extension: a table lookup (vqtbl1q) turns 16 code nibbles into the signed levels
// (round(level·127), −127…127), and sdot multiplies them, 4 rows × 4 columns, by a 4-byte group of activations into
// each row's int32 lane: Σ level·x, the AVX2 path's integers. The i8mm path multiplies the same levels by two
// tokens' activations with smmla (x16.h). The float operations are the scalar path's.
#ifdef X16_HAVE_NEON
X16_DOTPROD_TARGET __attribute__((always_inline))
static inline int8x16_t nf4x16_neon_lut(void) {
    int8_t lut_s8[16];
    for (int i = 0; i < 16; i++) lut_s8[i] = (int8_t) (nf4x16_lut_u8[i] - 128);
    return vld1q_s8(lut_s8);
}

// accf[t] += chunk j's sums acc[t] (rows 4r…4r+3 in acc[t][r]) times the rows' scales and token t's.
X16_DOTPROD_TARGET __attribute__((always_inline))
static inline void nf4x16_neon_chunk_acc(const uint8_t * blk, const uint8_t * xq, int64_t xq_stride, int64_t xo,
                                         int32x4_t acc[2][4], float32x4_t accf[2][4], const int nt) {
    for (int t = 0; t < nt; t++) {
        const float dx = nf4x16_rd_f32(xq + t * xq_stride + xo + 64);
        for (int r = 0; r < 4; r++) {
            const float32x4_t f = vmulq_n_f32(vld1q_f32((const float *) (const void *) (blk + 16 * r)), dx);
            accf[t][r] = vfmaq_f32(accf[t][r], vcvtq_f32_s32(acc[t][r]), f);
        }
    }
}

X16_DOTPROD_TARGET __attribute__((always_inline))
static inline void nf4x16_tile_neon(const uint8_t * wg, int64_t nchunks, const uint8_t * xq, int64_t xq_stride,
                                    float * y, int64_t y_stride, const int nt) {
    const int8x16_t lut = nf4x16_neon_lut();
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    float32x4_t accf[2][4];
    x16_neon_zero_f32(accf, nt);
    for (int64_t j = 0; j < nchunks; j++) {
        const uint8_t * blk = wg + j * IDEFICS2_NF4X16_CHUNK;
        const int64_t xo = j * IDEFICS2_NF4X16_QREC;
        int32x4_t acc[2][4];
        x16_neon_zero_s32(acc, nt);
        for (int k = 0; k < NF4X16_SUB; k++) {
            int8x16_t xl[2], xh[2];
            for (int t = 0; t < nt; t++) {
                xl[t] = x16_neon_group4(xq + t * xq_stride + xo + 8 * k);
                xh[t] = x16_neon_group4(xq + t * xq_stride + xo + 8 * k + 4);
            }
            for (int r = 0; r < 4; r++) {
                const uint8x16_t c = vld1q_u8(blk + 64 + 64 * k + 16 * r);
                const int8x16_t wl = vqtbl1q_s8(lut, vandq_u8(c, m4)), wh = vqtbl1q_s8(lut, vshrq_n_u8(c, 4));
                for (int t = 0; t < nt; t++) acc[t][r] = vdotq_s32(vdotq_s32(acc[t][r], wl, xl[t]), wh, xh[t]);
            }
        }
        nf4x16_neon_chunk_acc(blk, xq, xq_stride, xo, acc, accf, nt);
    }
    for (int t = 0; t < nt; t++) {
        for (int r = 0; r < 4; r++) vst1q_f32(y + t * y_stride + 4 * r, accf[t][r]);
    }
}

X16_DOTPROD_TARGET
static void nf4x16_tile_neon_n(const uint8_t * wg, int64_t nchunks, const uint8_t * xq, int64_t xq_stride,
                               float * y, int64_t y_stride, int nt) {
    for (int t0 = 0; t0 < nt; t0 += 2) {
        if (nt - t0 >= 2) {
            nf4x16_tile_neon(wg, nchunks, xq + t0 * xq_stride, xq_stride, y + t0 * y_stride, y_stride, 2);
        } else {
            nf4x16_tile_neon(wg, nchunks, xq + t0 * xq_stride, xq_stride, y + t0 * y_stride, y_stride, 1);
        }
    }
}

// Two tokens with smmla: per chunk, p[r] holds rows 4r…4r+3 in pair order (x16.h).
X16_I8MM_TARGET __attribute__((always_inline))
static inline void nf4x16_tile_i8mm(const uint8_t * wg, int64_t nchunks, const uint8_t * xq, int64_t xq_stride,
                                    float * y, int64_t y_stride) {
    const int8x16_t lut = nf4x16_neon_lut();
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    float32x4_t accf[2][4];
    x16_neon_zero_f32(accf, 2);
    for (int64_t j = 0; j < nchunks; j++) {
        const uint8_t * blk = wg + j * IDEFICS2_NF4X16_CHUNK;
        const int64_t xo = j * IDEFICS2_NF4X16_QREC;
        int32x4_t p[4][2];
        for (int r = 0; r < 4; r++) p[r][0] = p[r][1] = vdupq_n_s32(0);
        for (int k = 0; k < NF4X16_SUB; k++) {
            const int8x16_t x2 = x16_neon_pair8(xq + xo + 8 * k, xq + xq_stride + xo + 8 * k);
            for (int r = 0; r < 4; r++) {
                const uint8x16_t c = vld1q_u8(blk + 64 + 64 * k + 16 * r);
                x16_mmla_rows4(p[r], vqtbl1q_s8(lut, vandq_u8(c, m4)), vqtbl1q_s8(lut, vshrq_n_u8(c, 4)), x2);
            }
        }
        int32x4_t acc[2][4];
        x16_neon_unpair(p, acc);
        nf4x16_neon_chunk_acc(blk, xq, xq_stride, xo, acc, accf, 2);
    }
    for (int t = 0; t < 2; t++) {
        for (int r = 0; r < 4; r++) vst1q_f32(y + t * y_stride + 4 * r, accf[t][r]);
    }
}

// Pairs of tokens with smmla, a last odd one with sdot.
X16_I8MM_TARGET
static void nf4x16_tile_i8mm_n(const uint8_t * wg, int64_t nchunks, const uint8_t * xq, int64_t xq_stride,
                               float * y, int64_t y_stride, int nt) {
    int t0 = 0;
    for (; nt - t0 >= 2; t0 += 2) nf4x16_tile_i8mm(wg, nchunks, xq + t0 * xq_stride, xq_stride, y + t0 * y_stride, y_stride);
    if (t0 < nt) nf4x16_tile_neon(wg, nchunks, xq + t0 * xq_stride, xq_stride, y + t0 * y_stride, y_stride, 1);
}
#endif

void idefics2_nf4x16_matmul(const uint8_t * w, int64_t cols, const uint8_t * xq, int64_t ntok, int64_t xq_stride,
                            float * y, int64_t y_stride, int64_t g0, int64_t g1) {
    const int64_t nchunks = cols / IDEFICS2_NF4X16_COLS;
    const int64_t gbytes = nchunks * IDEFICS2_NF4X16_CHUNK;
    int vnni = 0, avx2 = -1, neon = 0, i8mm = 0;
#ifdef NF4X16_HAVE_X86
    vnni = idefics2_nf4_isa() == IDEFICS2_NF4_AVX512VNNI;
    avx2 = nf4x16_avx2_dot();
#endif
#ifdef X16_HAVE_NEON
    {
        const int isa = idefics2_nf4_isa();
        neon = isa == IDEFICS2_NF4_NEON_DOTPROD;
        i8mm = isa == IDEFICS2_NF4_NEON_I8MM;
    }
#endif
    // One vector: the groups in order. Several: blocks of groups that stay in L2 while every tile
    // of vectors passes over them, so the weights are read from memory once.
    const int64_t gb = ntok == 1 ? g1 - g0 : (NF4X16_L2_BYTES / gbytes > 1 ? NF4X16_L2_BYTES / gbytes : 1);
    for (int64_t gs = g0; gs < g1; gs += gb) {
        const int64_t ge = gs + gb < g1 ? gs + gb : g1;
        for (int64_t t = 0; t < ntok; t += NF4X16_TILE) {
            const int nt = (int) (ntok - t < NF4X16_TILE ? ntok - t : NF4X16_TILE);
            for (int64_t g = gs; g < ge; g++) {
                const uint8_t * wg = w + g * gbytes;
                const uint8_t * xt = xq + t * xq_stride;
                float * yt = y + t * y_stride + g * IDEFICS2_NF4X16_ROWS;
#ifdef NF4X16_HAVE_X86
                if (vnni) {
                    nf4x16_tile_vnni(wg, nchunks, xt, xq_stride, yt, y_stride, nt);
                    continue;
                }
                if (avx2 == X16_DOT_MADDUBS) {
                    nf4x16_tile_avx2(wg, nchunks, xt, xq_stride, yt, y_stride, nt);
                    continue;
                }
                if (avx2 == X16_DOT_VNNI) {
                    nf4x16_tile_avxvnni(wg, nchunks, xt, xq_stride, yt, y_stride, nt);
                    continue;
                }
                if (avx2 == X16_DOT_VNNI_EMULATED) {
                    nf4x16_tile_vnni_emulated(wg, nchunks, xt, xq_stride, yt, y_stride, nt);
                    continue;
                }
#endif
#ifdef X16_HAVE_NEON
                if (neon) {
                    nf4x16_tile_neon_n(wg, nchunks, xt, xq_stride, yt, y_stride, nt);
                    continue;
                }
                if (i8mm) {
                    nf4x16_tile_i8mm_n(wg, nchunks, xt, xq_stride, yt, y_stride, nt);
                    continue;
                }
#endif
                nf4x16_tile_scalar(wg, nchunks, xt, xq_stride, yt, y_stride, nt);
            }
        }
    }
    (void) vnni;
    (void) avx2;
    (void) neon;
    (void) i8mm;
}

// ---------------------------------------------------------------------------------------------
// Graph ops

// Threads split the records of all vectors.
static void nf4x16_quantize_custom(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
    (void) userdata;
    const struct ggml_tensor * x = dst->src[0];
    const int64_t nrec = x->ne[0] / IDEFICS2_NF4X16_COLS;
    const int64_t total = nrec * x->ne[1] * x->ne[2] * x->ne[3];
    const int64_t i0 = total * ith / nth;
    const int64_t i1 = total * (ith + 1) / nth;
    for (int64_t i = i0; i < i1;) {
        const int64_t row = i / nrec;
        const int64_t b = i - row * nrec;
        const int64_t n = nrec - b < i1 - i ? nrec - b : i1 - i;
        const int64_t r1 = row % x->ne[1];
        const int64_t r2 = (row / x->ne[1]) % x->ne[2];
        const int64_t r3 = row / (x->ne[1] * x->ne[2]);
        const float * xp = (const float *) ((const char *) x->data + r1 * x->nb[1] + r2 * x->nb[2] + r3 * x->nb[3]);
        uint8_t * qp = (uint8_t *) dst->data + r1 * dst->nb[1] + r2 * dst->nb[2] + r3 * dst->nb[3];
        idefics2_nf4x16_quantize(xp + b * IDEFICS2_NF4X16_COLS, qp + b * IDEFICS2_NF4X16_QREC, n);
        i += n;
    }
}

struct ggml_tensor * idefics2_nf4x16_quantize_op(struct ggml_context * ctx, struct ggml_tensor * x) {
    struct ggml_tensor * args[1] = { x };
    return ggml_custom_4d(ctx, GGML_TYPE_I8, x->ne[0] / IDEFICS2_NF4X16_COLS * IDEFICS2_NF4X16_QREC, x->ne[1],
                          x->ne[2], x->ne[3], args, 1, nf4x16_quantize_custom, GGML_N_TASKS_MAX, NULL);
}

// Threads split the 16-row groups.
static void nf4x16_mul_mat_custom(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
    (void) userdata;
    const struct ggml_tensor * w = dst->src[0];
    const struct ggml_tensor * xq = dst->src[1];
    const int64_t cols = xq->ne[0] / IDEFICS2_NF4X16_QREC * IDEFICS2_NF4X16_COLS;
    const int64_t groups = dst->ne[0] / IDEFICS2_NF4X16_ROWS;
    const int64_t g0 = groups * ith / nth;
    const int64_t g1 = groups * (ith + 1) / nth;
    if (g0 >= g1) return;
    for (int64_t i3 = 0; i3 < xq->ne[3]; i3++) {
        for (int64_t i2 = 0; i2 < xq->ne[2]; i2++) {
            const uint8_t * xp = (const uint8_t *) xq->data + i2 * xq->nb[2] + i3 * xq->nb[3];
            float * yp = (float *) ((char *) dst->data + i2 * dst->nb[2] + i3 * dst->nb[3]);
            idefics2_nf4x16_matmul((const uint8_t *) w->data, cols, xp, xq->ne[1], (int64_t) xq->nb[1], yp,
                                   (int64_t) (dst->nb[1] / sizeof(float)), g0, g1);
        }
    }
}

struct ggml_tensor * idefics2_nf4x16_mul_mat(struct ggml_context * ctx, struct ggml_tensor * w,
                                             struct ggml_tensor * xq, int64_t rows) {
    struct ggml_tensor * args[2] = { w, xq };
    return ggml_custom_4d(ctx, GGML_TYPE_F32, rows, xq->ne[1], xq->ne[2], xq->ne[3], args, 2, nf4x16_mul_mat_custom,
                          GGML_N_TASKS_MAX, NULL);
}
