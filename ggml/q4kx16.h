// Q4_K matrices in a 16-row interleaved layout ("q4kx16") multiplied by int8 activations with AVX-512
// VNNI dot products, on the CPU. The q4x16 layout (q4x16.h) does the same for Q4_0; both share its
// path selection (idefics2_q4x16_set_isa).
//
// Layout: the rows are cut into groups of 16 and each group's columns into super-blocks of 256 (the
// Q4_K blocks, 8 sub-blocks of 32 columns). For group g and super-block s, at byte
// (g·ns + s)·2368 with ns = cols/256:
//     0: 16 × float16 d, row 0 first;
//    32: 16 × float16 dmin;
//    64: 8 × 16 bytes of scales: byte 16j + r is sub-block j's 6-bit scale of row r;
//   192: 4 × 32 bytes of mins: byte 32k + 2r + i is the 6-bit min of row r, sub-block 2k + i;
//   320: 8 × 4 × 64 bytes of codes: sub-block j, part k (0…3), byte 4r + i holds the code of row r,
//        column 256s + 32j + 8k + i in its low nibble and of column 256s + 32j + 8k + 4 + i in its
//        high nibble.
// A value is d·sc_j·code − dmin·m_j, as in Q4_K. The size is 2368/2304 of the Q4_K matrix (+2.8%: the
// scales and mins take a byte each instead of 6 bits).
//
// Activations are quantized per block of 256 (q8x256 records, 288 bytes) as ggml's Q8_K does
// (quantize_row_q8_K_ref): with m the first value of largest magnitude, q = round(x·(−127/m)) (half to
// even) as int8 at bytes 0…255, then the 8 sums of q over sub-blocks of 32 as int16 at 256…271, the
// float scale 1/(−127/m) at 272, and zeros to 288. Per output, super-block and token the kernel
// computes in integers isum = Σ_j sc_j·Σ code·q and msum = Σ_j m_j·Σ q, then
// acc += isum·(d·dx) − msum·(dmin·dx) in float32: ggml's Q4_K·Q8_K dot product
// (ggml_vec_dot_q4_K_q8_K) up to the order of float additions.
#ifndef IDEFICS2_Q4KX16_H
#define IDEFICS2_Q4KX16_H

#include <stddef.h>
#include <stdint.h>

#include "ggml.h"

#define IDEFICS2_Q4KX16_BLOCK 2368 // bytes per group of 16 rows and super-block of 256 columns
#define IDEFICS2_Q8X256_RECORD 288  // bytes per activation record (256 values)

// Repacks a Q4_K matrix of rows × cols (rows a multiple of 16, cols of 256; rows·cols/256·144 bytes)
// into dst (rows/16 · cols/256 · 2368 bytes).
void idefics2_q4kx16_repack(const uint8_t * src, uint8_t * dst, int64_t rows, int64_t cols);

// Quantizes n floats (n a multiple of 256) into n/256 q8x256 records.
void idefics2_q8x256_quantize_row(const float * x, uint8_t * dst, int64_t n);

// y[t·y_stride + r] for r in [r0, r1) (multiples of 16) and t < ntok: row r of the q4kx16 matrix w
// (cols columns) times the q8x256 records of token t at xq + t·x_stride bytes. Strides of y in floats.
void idefics2_q4kx16_matmul(const uint8_t * w, int64_t cols, const uint8_t * xq, int64_t ntok,
                            int64_t x_stride, float * y, int64_t y_stride, int64_t r0, int64_t r1);

// Graph ops. quantize: x F32 [cols, n1, n2, n3] with contiguous rows (cols a multiple of 256) →
// I8 [cols/256·288, n1, n2, n3]. mul_mat: w the I8 tensor holding a rows × cols q4kx16 matrix, xq the
// quantize op's result → F32 [rows, n1, n2, n3]. The caller checks shapes first.
struct ggml_tensor * idefics2_q8x256_quantize(struct ggml_context * ctx, struct ggml_tensor * x);
struct ggml_tensor * idefics2_q4kx16_mul_mat(struct ggml_context * ctx, struct ggml_tensor * w,
                                             struct ggml_tensor * xq, int64_t rows);

#endif
