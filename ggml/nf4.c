// NF4 matrix multiplication on the CPU: a scalar path and SIMD paths (AVX2+FMA, AVX-512F, NEON)
// chosen at run time. The x86 SIMD functions are compiled with target attributes, so the file
// builds for baseline x86-64 and an instruction is only executed after __builtin_cpu_supports
// (which also checks that the OS saves the vector registers) said the CPU has it.

#include "nf4.h"
#include "isacap.h"
#include "x16.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#error "the NF4 block stream is little-endian; big-endian hosts are not supported"
#endif

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define NF4_HAVE_X86 1
#include <immintrin.h>
#endif

#if defined(__aarch64__) && defined(__ARM_NEON)
#define NF4_HAVE_NEON 1
#include <arm_neon.h>
#endif

// bitsandbytes' NF4 codebook (dDequantizeNF4, csrc/kernels.cu), as float32.
static const float nf4_lut[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

// Rows processed together when several vectors share the weights: each row is dequantized once
// into a buffer and reused for every vector.
#define NF4_TILE 4

static inline float nf4_absmax(const uint8_t * rec) {
    float a;
    memcpy(&a, rec, sizeof a);
    return a;
}

// Code of value o of a block (value 2k in the high nibble of byte k).
static inline int nf4_code(const uint8_t * codes, int64_t o) {
    const uint8_t b = codes[o >> 1];
    return (o & 1) ? (b & 0x0F) : (b >> 4);
}

// Part of a block: values o … o+n-1 of the block at rec against x[0 … n-1], scaled by absmax.
static float nf4_segment_dot(const uint8_t * rec, int64_t o, int64_t n, const float * x) {
    const uint8_t * codes = rec + 4;
    float s = 0.0f;
    for (int64_t k = 0; k < n; k++) {
        s += nf4_lut[nf4_code(codes, o + k)] * x[k];
    }
    return nf4_absmax(rec) * s;
}

static void nf4_segment_dequant(const uint8_t * rec, int64_t o, int64_t n, float * out) {
    const uint8_t * codes = rec + 4;
    const float a = nf4_absmax(rec);
    for (int64_t k = 0; k < n; k++) {
        out[k] = nf4_lut[nf4_code(codes, o + k)] * a;
    }
}

// One piece of a row: n values starting at value o of the block record rec, at column c of the
// row. A row [e0, e0+cols) is cut at block boundaries; pieces are full blocks except at row edges
// when cols is not a multiple of bs.
typedef struct {
    const uint8_t * rec;
    int64_t o;
    int64_t n;
    int full;
} nf4_piece;

static inline nf4_piece nf4_piece_at(const uint8_t * w, int64_t e0, int64_t c, int64_t cols, int bs) {
    const int64_t e = e0 + c;
    const int64_t b = e / bs;
    nf4_piece p;
    p.o = e - b * bs;
    p.n = bs - p.o;
    if (p.n > cols - c) p.n = cols - c;
    p.rec = w + b * (4 + bs / 2);
    p.full = p.o == 0 && p.n == bs;
    return p;
}

// ---------------------------------------------------------------------------------------------
// Scalar

static float nf4_row_dot_scalar(const uint8_t * w, int64_t e0, int64_t cols, int bs, const float * x) {
    float sum = 0.0f;
    for (int64_t c = 0; c < cols;) {
        const nf4_piece p = nf4_piece_at(w, e0, c, cols, bs);
        const uint8_t * rec = p.rec;
        const int64_t o = p.o, n = p.n;
        if (p.full) {
            // Eight independent partial sums: no loop-carried dependency on one float, and the
            // compiler can keep them in one or two SSE2 registers.
            const uint8_t * codes = rec + 4;
            const float * xb = x + c;
            float s[8] = { 0 };
            for (int k = 0; k < bs / 2; k += 4) {
                for (int j = 0; j < 4; j++) {
                    const uint8_t b = codes[k + j];
                    s[2 * j] += nf4_lut[b >> 4] * xb[2 * (k + j)];
                    s[2 * j + 1] += nf4_lut[b & 0x0F] * xb[2 * (k + j) + 1];
                }
            }
            sum += nf4_absmax(rec) * (((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])));
        } else { sum += nf4_segment_dot(rec, o, n, x + c); }
        c += n;
    }
    return sum;
}

static void nf4_row_dequant_scalar(const uint8_t * w, int64_t e0, int64_t cols, int bs, float * out) {
    for (int64_t c = 0; c < cols;) {
        const nf4_piece p = nf4_piece_at(w, e0, c, cols, bs);
        nf4_segment_dequant(p.rec, p.o, p.n, out + c);
        c += p.n;
    }
}

static void nf4_tile_dot_scalar(const float * buf, int nr, int64_t cols, const float * x, float * y) {
    for (int r = 0; r < nr; r++) {
        const float * row = buf + r * cols;
        float s[8] = { 0 };
        int64_t c = 0;
        for (; c + 8 <= cols; c += 8) {
            for (int j = 0; j < 8; j++) {
                s[j] += row[c + j] * x[c + j];
            }
        }
        float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
        for (; c < cols; c++) {
            t += row[c] * x[c];
        }
        y[r] = t;
    }
}

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA: 16 code bytes → 32 values in natural order (unpack high/low nibbles), looked up 8 at
// a time with two 8-entry permutes selected by bit 3.

#ifdef NF4_HAVE_X86

__attribute__((target("avx2,fma")))
static inline __m256 nf4_lookup8_avx2(__m128i idx8, __m256 lut_lo, __m256 lut_hi) {
    const __m256i idx = _mm256_cvtepu8_epi32(idx8);
    const __m256 a = _mm256_permutevar8x32_ps(lut_lo, idx);
    const __m256 b = _mm256_permutevar8x32_ps(lut_hi, idx);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

__attribute__((target("avx2,fma")))
static inline float nf4_hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma")))
static float nf4_row_dot_avx2(const uint8_t * w, int64_t e0, int64_t cols, int bs, const float * x) {
    const __m256 lut_lo = _mm256_loadu_ps(nf4_lut);
    const __m256 lut_hi = _mm256_loadu_ps(nf4_lut + 8);
    const __m128i m4 = _mm_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps();
    float tail = 0.0f;
    for (int64_t c = 0; c < cols;) {
        const nf4_piece p = nf4_piece_at(w, e0, c, cols, bs);
        const uint8_t * rec = p.rec;
        const int64_t o = p.o, n = p.n;
        if (p.full) {
            const uint8_t * codes = rec + 4;
            const float * xb = x + c;
            __m256 b0 = _mm256_setzero_ps();
            __m256 b1 = _mm256_setzero_ps();
            for (int k = 0; k < bs / 2; k += 16) {
                const __m128i q = _mm_loadu_si128((const __m128i *) (codes + k));
                const __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
                const __m128i lo = _mm_and_si128(q, m4);
                const __m128i v0 = _mm_unpacklo_epi8(hi, lo);
                const __m128i v1 = _mm_unpackhi_epi8(hi, lo);
                const float * xk = xb + 2 * k;
                b0 = _mm256_fmadd_ps(nf4_lookup8_avx2(v0, lut_lo, lut_hi), _mm256_loadu_ps(xk), b0);
                b1 = _mm256_fmadd_ps(nf4_lookup8_avx2(_mm_srli_si128(v0, 8), lut_lo, lut_hi), _mm256_loadu_ps(xk + 8), b1);
                b0 = _mm256_fmadd_ps(nf4_lookup8_avx2(v1, lut_lo, lut_hi), _mm256_loadu_ps(xk + 16), b0);
                b1 = _mm256_fmadd_ps(nf4_lookup8_avx2(_mm_srli_si128(v1, 8), lut_lo, lut_hi), _mm256_loadu_ps(xk + 24), b1);
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(nf4_absmax(rec)), _mm256_add_ps(b0, b1), acc);
        } else { tail += nf4_segment_dot(rec, o, n, x + c); }
        c += n;
    }
    return nf4_hsum_avx2(acc) + tail;
}

__attribute__((target("avx2,fma")))
static void nf4_row_dequant_avx2(const uint8_t * w, int64_t e0, int64_t cols, int bs, float * out) {
    const __m256 lut_lo = _mm256_loadu_ps(nf4_lut);
    const __m256 lut_hi = _mm256_loadu_ps(nf4_lut + 8);
    const __m128i m4 = _mm_set1_epi8(0x0F);
    for (int64_t c = 0; c < cols;) {
        const nf4_piece p = nf4_piece_at(w, e0, c, cols, bs);
        const uint8_t * rec = p.rec;
        const int64_t o = p.o, n = p.n;
        if (p.full) {
            const uint8_t * codes = rec + 4;
            float * ob = out + c;
            const __m256 a = _mm256_set1_ps(nf4_absmax(rec));
            for (int k = 0; k < bs / 2; k += 16) {
                const __m128i q = _mm_loadu_si128((const __m128i *) (codes + k));
                const __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
                const __m128i lo = _mm_and_si128(q, m4);
                const __m128i v0 = _mm_unpacklo_epi8(hi, lo);
                const __m128i v1 = _mm_unpackhi_epi8(hi, lo);
                float * ok = ob + 2 * k;
                _mm256_storeu_ps(ok, _mm256_mul_ps(nf4_lookup8_avx2(v0, lut_lo, lut_hi), a));
                _mm256_storeu_ps(ok + 8, _mm256_mul_ps(nf4_lookup8_avx2(_mm_srli_si128(v0, 8), lut_lo, lut_hi), a));
                _mm256_storeu_ps(ok + 16, _mm256_mul_ps(nf4_lookup8_avx2(v1, lut_lo, lut_hi), a));
                _mm256_storeu_ps(ok + 24, _mm256_mul_ps(nf4_lookup8_avx2(_mm_srli_si128(v1, 8), lut_lo, lut_hi), a));
            }
        } else { nf4_segment_dequant(rec, o, n, out + c); }
        c += n;
    }
}

__attribute__((target("avx2,fma")))
static void nf4_tile_dot_avx2(const float * buf, int nr, int64_t cols, const float * x, float * y) {
    __m256 acc[NF4_TILE];
    for (int r = 0; r < nr; r++) acc[r] = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8) {
        const __m256 xv = _mm256_loadu_ps(x + c);
        for (int r = 0; r < nr; r++) {
            acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(buf + r * cols + c), xv, acc[r]);
        }
    }
    for (int r = 0; r < nr; r++) {
        float s = nf4_hsum_avx2(acc[r]);
        for (int64_t k = c; k < cols; k++) s += buf[r * cols + k] * x[k];
        y[r] = s;
    }
}

// Four rows against two vectors at a time (8 accumulators + 4 rows + 1 input fit the 16 ymm
// registers); leftover vectors and partial tiles go one vector at a time.
__attribute__((target("avx2,fma")))
static void nf4_tile_multi_avx2(const float * buf, int nr, int64_t cols, const float * x, int64_t ntok,
                                int64_t x_stride, float * y, int64_t y_stride) {
    int64_t t = 0;
    if (nr == NF4_TILE) {
        for (; t + 2 <= ntok; t += 2) {
            const float * xs[2] = { x + t * x_stride, x + (t + 1) * x_stride };
            __m256 acc[2][NF4_TILE];
            for (int i = 0; i < 2; i++)
                for (int r = 0; r < NF4_TILE; r++) acc[i][r] = _mm256_setzero_ps();
            int64_t c = 0;
            for (; c + 8 <= cols; c += 8) {
                __m256 rv[NF4_TILE];
                for (int r = 0; r < NF4_TILE; r++) rv[r] = _mm256_loadu_ps(buf + r * cols + c);
                for (int i = 0; i < 2; i++) {
                    const __m256 xv = _mm256_loadu_ps(xs[i] + c);
                    for (int r = 0; r < NF4_TILE; r++) acc[i][r] = _mm256_fmadd_ps(rv[r], xv, acc[i][r]);
                }
            }
            for (int i = 0; i < 2; i++) {
                for (int r = 0; r < NF4_TILE; r++) {
                    float s = nf4_hsum_avx2(acc[i][r]);
                    for (int64_t k = c; k < cols; k++) s += buf[r * cols + k] * xs[i][k];
                    y[(t + i) * y_stride + r] = s;
                }
            }
        }
    }
    for (; t < ntok; t++) nf4_tile_dot_avx2(buf, nr, cols, x + t * x_stride, y + t * y_stride);
}

// ---------------------------------------------------------------------------------------------
// AVX-512F: one 16-entry permute looks up 16 values.

__attribute__((target("avx512f")))
static float nf4_row_dot_avx512(const uint8_t * w, int64_t e0, int64_t cols, int bs, const float * x) {
    const __m512 lut = _mm512_loadu_ps(nf4_lut);
    const __m128i m4 = _mm_set1_epi8(0x0F);
    __m512 acc = _mm512_setzero_ps();
    float tail = 0.0f;
    for (int64_t c = 0; c < cols;) {
        const nf4_piece p = nf4_piece_at(w, e0, c, cols, bs);
        const uint8_t * rec = p.rec;
        const int64_t o = p.o, n = p.n;
        if (p.full) {
            const uint8_t * codes = rec + 4;
            const float * xb = x + c;
            __m512 b0 = _mm512_setzero_ps();
            __m512 b1 = _mm512_setzero_ps();
            for (int k = 0; k < bs / 2; k += 16) {
                const __m128i q = _mm_loadu_si128((const __m128i *) (codes + k));
                const __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
                const __m128i lo = _mm_and_si128(q, m4);
                const __m512 w0 = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(hi, lo)), lut);
                const __m512 w1 = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpackhi_epi8(hi, lo)), lut);
                b0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xb + 2 * k), b0);
                b1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xb + 2 * k + 16), b1);
            }
            acc = _mm512_fmadd_ps(_mm512_set1_ps(nf4_absmax(rec)), _mm512_add_ps(b0, b1), acc);
        } else { tail += nf4_segment_dot(rec, o, n, x + c); }
        c += n;
    }
    return _mm512_reduce_add_ps(acc) + tail;
}

__attribute__((target("avx512f")))
static void nf4_row_dequant_avx512(const uint8_t * w, int64_t e0, int64_t cols, int bs, float * out) {
    const __m512 lut = _mm512_loadu_ps(nf4_lut);
    const __m128i m4 = _mm_set1_epi8(0x0F);
    for (int64_t c = 0; c < cols;) {
        const nf4_piece p = nf4_piece_at(w, e0, c, cols, bs);
        const uint8_t * rec = p.rec;
        const int64_t o = p.o, n = p.n;
        if (p.full) {
            const uint8_t * codes = rec + 4;
            float * ob = out + c;
            const __m512 a = _mm512_set1_ps(nf4_absmax(rec));
            for (int k = 0; k < bs / 2; k += 16) {
                const __m128i q = _mm_loadu_si128((const __m128i *) (codes + k));
                const __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
                const __m128i lo = _mm_and_si128(q, m4);
                const __m512 w0 = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(hi, lo)), lut);
                const __m512 w1 = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpackhi_epi8(hi, lo)), lut);
                _mm512_storeu_ps(ob + 2 * k, _mm512_mul_ps(w0, a));
                _mm512_storeu_ps(ob + 2 * k + 16, _mm512_mul_ps(w1, a));
            }
        } else { nf4_segment_dequant(rec, o, n, out + c); }
        c += n;
    }
}

__attribute__((target("avx512f")))
static void nf4_tile_dot_avx512(const float * buf, int nr, int64_t cols, const float * x, float * y) {
    __m512 acc[NF4_TILE];
    for (int r = 0; r < nr; r++) acc[r] = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + 16 <= cols; c += 16) {
        const __m512 xv = _mm512_loadu_ps(x + c);
        for (int r = 0; r < nr; r++) {
            acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(buf + r * cols + c), xv, acc[r]);
        }
    }
    for (int r = 0; r < nr; r++) {
        float s = _mm512_reduce_add_ps(acc[r]);
        for (int64_t k = c; k < cols; k++) s += buf[r * cols + k] * x[k];
        y[r] = s;
    }
}

// Four rows against four vectors at a time (16 accumulators + 4 rows + 1 input of the 32 zmm
// registers); leftover vectors and partial tiles go one vector at a time.
__attribute__((target("avx512f")))
static void nf4_tile_multi_avx512(const float * buf, int nr, int64_t cols, const float * x, int64_t ntok,
                                  int64_t x_stride, float * y, int64_t y_stride) {
    int64_t t = 0;
    if (nr == NF4_TILE) {
        for (; t + 4 <= ntok; t += 4) {
            const float * xs[4];
            for (int i = 0; i < 4; i++) xs[i] = x + (t + i) * x_stride;
            __m512 acc[4][NF4_TILE];
            for (int i = 0; i < 4; i++)
                for (int r = 0; r < NF4_TILE; r++) acc[i][r] = _mm512_setzero_ps();
            int64_t c = 0;
            for (; c + 16 <= cols; c += 16) {
                __m512 rv[NF4_TILE];
                for (int r = 0; r < NF4_TILE; r++) rv[r] = _mm512_loadu_ps(buf + r * cols + c);
                for (int i = 0; i < 4; i++) {
                    const __m512 xv = _mm512_loadu_ps(xs[i] + c);
                    for (int r = 0; r < NF4_TILE; r++) acc[i][r] = _mm512_fmadd_ps(rv[r], xv, acc[i][r]);
                }
            }
            for (int i = 0; i < 4; i++) {
                for (int r = 0; r < NF4_TILE; r++) {
                    float s = _mm512_reduce_add_ps(acc[i][r]);
                    for (int64_t k = c; k < cols; k++) s += buf[r * cols + k] * xs[i][k];
                    y[(t + i) * y_stride + r] = s;
                }
            }
        }
    }
    for (; t < ntok; t++) nf4_tile_dot_avx512(buf, nr, cols, x + t * x_stride, y + t * y_stride);
}

#endif // NF4_HAVE_X86

// ---------------------------------------------------------------------------------------------
// NEON (always present on AArch64): values looked up through a small stack array.

#ifdef NF4_HAVE_NEON

static float nf4_row_dot_neon(const uint8_t * w, int64_t e0, int64_t cols, int bs, const float * x) {
    float32x4_t acc = vdupq_n_f32(0.0f);
    float tail = 0.0f;
    for (int64_t c = 0; c < cols;) {
        const nf4_piece p = nf4_piece_at(w, e0, c, cols, bs);
        const uint8_t * rec = p.rec;
        const int64_t o = p.o, n = p.n;
        if (p.full) {
            const uint8_t * codes = rec + 4;
            const float * xb = x + c;
            float32x4_t b0 = vdupq_n_f32(0.0f);
            float32x4_t b1 = vdupq_n_f32(0.0f);
            float v[8];
            for (int k = 0; k < bs / 2; k += 4) {
                for (int j = 0; j < 4; j++) {
                    const uint8_t b = codes[k + j];
                    v[2 * j] = nf4_lut[b >> 4];
                    v[2 * j + 1] = nf4_lut[b & 0x0F];
                }
                b0 = vfmaq_f32(b0, vld1q_f32(v), vld1q_f32(xb + 2 * k));
                b1 = vfmaq_f32(b1, vld1q_f32(v + 4), vld1q_f32(xb + 2 * k + 4));
            }
            acc = vfmaq_f32(acc, vaddq_f32(b0, b1), vdupq_n_f32(nf4_absmax(rec)));
        } else { tail += nf4_segment_dot(rec, o, n, x + c); }
        c += n;
    }
    return vaddvq_f32(acc) + tail;
}

static void nf4_tile_dot_neon(const float * buf, int nr, int64_t cols, const float * x, float * y) {
    float32x4_t acc[NF4_TILE];
    for (int r = 0; r < nr; r++) acc[r] = vdupq_n_f32(0.0f);
    int64_t c = 0;
    for (; c + 4 <= cols; c += 4) {
        const float32x4_t xv = vld1q_f32(x + c);
        for (int r = 0; r < nr; r++) {
            acc[r] = vfmaq_f32(acc[r], vld1q_f32(buf + r * cols + c), xv);
        }
    }
    for (int r = 0; r < nr; r++) {
        float s = vaddvq_f32(acc[r]);
        for (int64_t k = c; k < cols; k++) s += buf[r * cols + k] * x[k];
        y[r] = s;
    }
}

#endif // NF4_HAVE_NEON

// ---------------------------------------------------------------------------------------------
// Dispatch

static int nf4_detect(void) {
#if defined(NF4_HAVE_X86)
    __builtin_cpu_init();
    if (idefics2_isa_allows(IDEFICS2_ISA_AVX512) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vnni")) return IDEFICS2_NF4_AVX512VNNI;
    if (idefics2_isa_allows(IDEFICS2_ISA_AVX512) && __builtin_cpu_supports("avx512f")) return IDEFICS2_NF4_AVX512;
    if (idefics2_isa_allows(IDEFICS2_ISA_AVX2) && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        return x16_avxvnni() ? IDEFICS2_NF4_AVX2VNNI : IDEFICS2_NF4_AVX2;
    }
    return IDEFICS2_NF4_SCALAR;
#elif defined(NF4_HAVE_NEON)
#if defined(X16_HAVE_NEON)
    if (x16_arm_i8mm()) return IDEFICS2_NF4_NEON_I8MM;
    if (x16_arm_dotprod()) return IDEFICS2_NF4_NEON_DOTPROD;
#endif
    return IDEFICS2_NF4_NEON;
#else
    return IDEFICS2_NF4_SCALAR;
#endif
}

static int nf4_best = -1;    // detected once; racing first calls store the same value
static int nf4_current = -1; // -1: use nf4_best

int idefics2_nf4_best_isa(void) {
    int b = __atomic_load_n(&nf4_best, __ATOMIC_ACQUIRE);
    if (b < 0) {
        b = nf4_detect();
        __atomic_store_n(&nf4_best, b, __ATOMIC_RELEASE);
    }
    return b;
}

int idefics2_nf4_isa(void) {
    const int c = __atomic_load_n(&nf4_current, __ATOMIC_ACQUIRE);
    return c >= 0 ? c : idefics2_nf4_best_isa();
}

int idefics2_nf4_set_isa(int isa) {
    const int best = idefics2_nf4_best_isa();
    int ok = 0;
    switch (isa) {
    case -1:
    case IDEFICS2_NF4_SCALAR:
        ok = 1;
        break;
    case IDEFICS2_NF4_AVX2:
    case IDEFICS2_NF4_AVX2VNNI_EMULATED:
        ok = best == IDEFICS2_NF4_AVX2 || best == IDEFICS2_NF4_AVX2VNNI || best == IDEFICS2_NF4_AVX512 ||
             best == IDEFICS2_NF4_AVX512VNNI;
        break;
    case IDEFICS2_NF4_AVX2VNNI:
#ifdef NF4_HAVE_X86
        ok = (best == IDEFICS2_NF4_AVX2VNNI || best == IDEFICS2_NF4_AVX512 || best == IDEFICS2_NF4_AVX512VNNI) &&
             x16_avxvnni();
#endif
        break;
    case IDEFICS2_NF4_AVX512:
        ok = best == IDEFICS2_NF4_AVX512 || best == IDEFICS2_NF4_AVX512VNNI;
        break;
    case IDEFICS2_NF4_AVX512VNNI:
        ok = best == IDEFICS2_NF4_AVX512VNNI;
        break;
    case IDEFICS2_NF4_NEON:
        ok = best == IDEFICS2_NF4_NEON || best == IDEFICS2_NF4_NEON_DOTPROD || best == IDEFICS2_NF4_NEON_I8MM;
        break;
    case IDEFICS2_NF4_NEON_DOTPROD:
        ok = best == IDEFICS2_NF4_NEON_DOTPROD || best == IDEFICS2_NF4_NEON_I8MM;
        break;
    case IDEFICS2_NF4_NEON_I8MM:
        ok = best == IDEFICS2_NF4_NEON_I8MM;
        break;
    }
    if (!ok) return -1;
    __atomic_store_n(&nf4_current, isa, __ATOMIC_RELEASE);
    return 0;
}

static float nf4_row_dot(int isa, const uint8_t * w, int64_t e0, int64_t cols, int bs, const float * x) {
    switch (isa) {
#ifdef NF4_HAVE_X86
    case IDEFICS2_NF4_AVX512VNNI: // the stream kernel has no VNNI path
    case IDEFICS2_NF4_AVX512: return nf4_row_dot_avx512(w, e0, cols, bs, x);
    case IDEFICS2_NF4_AVX2VNNI: // nor any AVX-VNNI one
    case IDEFICS2_NF4_AVX2VNNI_EMULATED:
    case IDEFICS2_NF4_AVX2:   return nf4_row_dot_avx2(w, e0, cols, bs, x);
#endif
#ifdef NF4_HAVE_NEON
    case IDEFICS2_NF4_NEON:   return nf4_row_dot_neon(w, e0, cols, bs, x);
#endif
    default:                  return nf4_row_dot_scalar(w, e0, cols, bs, x);
    }
}

static void nf4_row_dequant(int isa, const uint8_t * w, int64_t e0, int64_t cols, int bs, float * out) {
    switch (isa) {
#ifdef NF4_HAVE_X86
    case IDEFICS2_NF4_AVX512VNNI:
    case IDEFICS2_NF4_AVX512: nf4_row_dequant_avx512(w, e0, cols, bs, out); return;
    case IDEFICS2_NF4_AVX2VNNI:
    case IDEFICS2_NF4_AVX2VNNI_EMULATED:
    case IDEFICS2_NF4_AVX2:   nf4_row_dequant_avx2(w, e0, cols, bs, out); return;
#endif
    default:                  nf4_row_dequant_scalar(w, e0, cols, bs, out); return;
    }
}

// y[t*y_stride + r] = dot(row r of buf, vector t) for r < nr, t < ntok.
static void nf4_tile_multi(int isa, const float * buf, int nr, int64_t cols, const float * x, int64_t ntok,
                           int64_t x_stride, float * y, int64_t y_stride) {
    switch (isa) {
#ifdef NF4_HAVE_X86
    case IDEFICS2_NF4_AVX512VNNI:
    case IDEFICS2_NF4_AVX512: nf4_tile_multi_avx512(buf, nr, cols, x, ntok, x_stride, y, y_stride); return;
    case IDEFICS2_NF4_AVX2VNNI:
    case IDEFICS2_NF4_AVX2VNNI_EMULATED:
    case IDEFICS2_NF4_AVX2:   nf4_tile_multi_avx2(buf, nr, cols, x, ntok, x_stride, y, y_stride); return;
#endif
    default:
        break;
    }
    for (int64_t t = 0; t < ntok; t++) {
#ifdef NF4_HAVE_NEON
        if (isa == IDEFICS2_NF4_NEON) {
            nf4_tile_dot_neon(buf, nr, cols, x + t * x_stride, y + t * y_stride);
            continue;
        }
#endif
        nf4_tile_dot_scalar(buf, nr, cols, x + t * x_stride, y + t * y_stride);
    }
}

void idefics2_nf4_matmul(const uint8_t * w, int64_t rows, int64_t cols, int bs,
                         const float * x, int64_t ntok, int64_t x_stride,
                         float * y, int64_t y_stride, int64_t r0, int64_t r1) {
    (void) rows;
    // The stream kernel has no dot-product or matrix-multiply path: NEON_DOTPROD and NEON_I8MM run its NEON one.
    const int cur = idefics2_nf4_isa();
    const int isa = cur == IDEFICS2_NF4_NEON_DOTPROD || cur == IDEFICS2_NF4_NEON_I8MM ? IDEFICS2_NF4_NEON : cur;
    float * buf = NULL;
    if (ntok > 1) {
        buf = (float *) malloc((size_t) NF4_TILE * (size_t) cols * sizeof(float));
    }
    if (buf == NULL) {
        // One vector (or no memory for the tile): decode and multiply in one pass per row.
        for (int64_t t = 0; t < ntok; t++) {
            for (int64_t r = r0; r < r1; r++) {
                y[t * y_stride + r] = nf4_row_dot(isa, w, r * cols, cols, bs, x + t * x_stride);
            }
        }
        return;
    }
    for (int64_t rt = r0; rt < r1; rt += NF4_TILE) {
        const int nr = (int) (r1 - rt < NF4_TILE ? r1 - rt : NF4_TILE);
        for (int i = 0; i < nr; i++) {
            nf4_row_dequant(isa, w, (rt + i) * cols, cols, bs, buf + (int64_t) i * cols);
        }
        nf4_tile_multi(isa, buf, nr, cols, x, ntok, x_stride, y + rt, y_stride);
    }
    free(buf);
}

// Custom op body: threads split the rows.
static void nf4_custom_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
    const struct ggml_tensor * w = dst->src[0];
    const struct ggml_tensor * x = dst->src[1];
    const int bs = (int) (intptr_t) userdata;
    const int64_t rows = dst->ne[0];
    const int64_t cols = x->ne[0];
    const int64_t r0 = rows * ith / nth;
    const int64_t r1 = rows * (ith + 1) / nth;
    if (r0 >= r1) return;
    for (int64_t i3 = 0; i3 < x->ne[3]; i3++) {
        for (int64_t i2 = 0; i2 < x->ne[2]; i2++) {
            const float * xp = (const float *) ((const char *) x->data + i2 * x->nb[2] + i3 * x->nb[3]);
            float * yp = (float *) ((char *) dst->data + i2 * dst->nb[2] + i3 * dst->nb[3]);
            idefics2_nf4_matmul((const uint8_t *) w->data, rows, cols, bs, xp, x->ne[1],
                                (int64_t) (x->nb[1] / sizeof(float)), yp,
                                (int64_t) (dst->nb[1] / sizeof(float)), r0, r1);
        }
    }
}

struct ggml_tensor * idefics2_nf4_mul_mat(struct ggml_context * ctx, struct ggml_tensor * w,
                                          struct ggml_tensor * x, int64_t rows, int bs) {
    struct ggml_tensor * args[2] = { w, x };
    return ggml_custom_4d(ctx, GGML_TYPE_F32, rows, x->ne[1], x->ne[2], x->ne[3], args, 2,
                          nf4_custom_op, GGML_N_TASKS_MAX, (void *) (intptr_t) bs);
}
