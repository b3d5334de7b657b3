// Q4_0 matrices in a 16-row interleaved layout ("q4x16") multiplied by int8 activations with AVX-512
// VNNI dot products, on the CPU.
//
// Layout: the rows are cut into groups of 16 and each group's columns into blocks of 32 (the Q4_0
// blocks). For group g and block b, at byte (g·nb + b)·288 with nb = cols/32:
//   16 × float16 scales, row 0 first (the Q4_0 blocks' d);
//   4 × 64 bytes of codes: sub-block k (0…3) byte 4r+i holds the code of row r, column 32b+8k+i in
//   its low nibble and of column 32b+8k+4+i in its high nibble.
// A value is (code − 8)·d, as in Q4_0. The size is that of the Q4_0 matrix (16 × 18 bytes per group
// and block).
//
// Activations are quantized per block of 32 (q8x32 records, 40 bytes) as ggml's Q8_0 does: 32 int8
// q = round(x·127/max|x|) (half to even), the scale dx = max|x|/127 rounded to float16 (kept as a
// float), then int32 8·Σq, so that Σ (code−8)·q = Σ code·q − 8·Σq. The products are then ggml's
// Q4_0·Q8_0 dot products up to the order of float additions.
#ifndef IDEFICS2_Q4X16_H
#define IDEFICS2_Q4X16_H

#include <stddef.h>
#include <stdint.h>

#include "ggml.h"

enum idefics2_q4x16_isa {
    IDEFICS2_Q4X16_SCALAR = 0,
    IDEFICS2_Q4X16_AVX512VNNI = 1, // AVX-512 F, BW and VNNI
    IDEFICS2_Q4X16_AVX2 = 2,       // AVX2, FMA and F16C
    IDEFICS2_Q4X16_AVX2VNNI = 3,   // AVX2, FMA, F16C and AVX-VNNI
    // The AVX-VNNI path's arithmetic with vpdpbusd computed from AVX2 instructions: never chosen, forced by tests
    // so that a CPU without AVX-VNNI checks that path's kernels.
    IDEFICS2_Q4X16_AVX2VNNI_EMULATED = 4,
    IDEFICS2_Q4X16_NEON_DOTPROD = 5, // AArch64 NEON with the dot-product extension (sdot)
    // AArch64 NEON with dot products and the int8 matrix multiply (smmla): two tokens at a time, a lone one by sdot.
    IDEFICS2_Q4X16_NEON_I8MM = 6,
};

int idefics2_q4x16_best_isa(void);
int idefics2_q4x16_isa(void);
// Forces a path (tests, benchmarks) for q4x16, q4kx16 and q6kx16 (q4kx16.h, q6kx16.h); -1 selects the best.
// Returns 0, or -1 when unavailable.
int idefics2_q4x16_set_isa(int isa);
// How the kernels of an AVX2 path multiply bytes (x16.h's X16_DOT_*), or -1 for the scalar and AVX-512 paths.
int idefics2_q4x16_avx2_dot(int isa);

#define IDEFICS2_Q8X32_RECORD 40

// Repacks a Q4_0 matrix of rows × cols (rows a multiple of 16, cols of 32) into dst (same size).
void idefics2_q4x16_repack(const uint8_t * src, uint8_t * dst, int64_t rows, int64_t cols);

// Quantizes n floats (n a multiple of 32) into n/32 q8x32 records.
void idefics2_q8x32_quantize_row(const float * x, uint8_t * dst, int64_t n);

// y[t·y_stride + r] for r in [r0, r1) (multiples of 16) and t < ntok: row r of the q4x16 matrix w
// (cols columns) times the q8x32 records of token t at xq + t·x_stride bytes. Strides of y in floats.
void idefics2_q4x16_matmul(const uint8_t * w, int64_t cols, const uint8_t * xq, int64_t ntok,
                           int64_t x_stride, float * y, int64_t y_stride, int64_t r0, int64_t r1);

// Graph ops. quantize: x F32 [cols, n1, n2, n3] with contiguous rows (cols a multiple of 32) →
// I8 [cols/32·40, n1, n2, n3]. mul_mat: w the I8 tensor holding a rows × cols q4x16 matrix, xq the
// quantize op's result → F32 [rows, n1, n2, n3]. The caller checks shapes first.
struct ggml_tensor * idefics2_q8x32_quantize(struct ggml_context * ctx, struct ggml_tensor * x);
struct ggml_tensor * idefics2_q4x16_mul_mat(struct ggml_context * ctx, struct ggml_tensor * w,
                                            struct ggml_tensor * xq, int64_t rows);

#endif
