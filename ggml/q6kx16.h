// Q6_K matrices in a 16-row interleaved layout ("q6kx16") multiplied by int8 activations with AVX-512
// VNNI dot products, on the CPU. It shares the q4x16 path selection (idefics2_q4x16_set_isa) and the
// q8x256 activation records of q4kx16 (q4kx16.h).
//
// Layout: the rows are cut into groups of 16 and each group's columns into super-blocks of 256 (the
// Q6_K blocks, 16 sub-blocks of 16 columns). For group g and super-block s, at byte (g·ns + s)·3360
// with ns = cols/256:
//     0: 16 × float16 d, row 0 first;
//    32: 8 × 32 bytes of scales: byte 32m + 2r + i is the int8 scale of row r, sub-block 2m + i;
//   288: 16 × 192 bytes of codes (6-bit, 0…63), sub-block j at 288 + 192j:
//        +0, +64: part pairs h = 0, 1: byte 64h + 4r + i holds bits 0…3 of the code of row r, column
//                 256s + 16j + 8h + i in its low nibble and of column 256s + 16j + 8h + 4 + i in its
//                 high nibble;
//        +128:    byte 4r + i holds bits 4…5 of the code of row r, column 256s + 16j + 4k + i in its
//                 bits 2k…2k+1 (k = 0…3).
// A value is d·sc_j·(code − 32), as in Q6_K. The size is 3360 = 16 × 210 bytes, that of Q6_K.
//
// Per output, super-block and token the kernel computes in integers
// isum = Σ_j sc_j·Σ code·q − 32·Σ_j sc_j·Σ q (sums over sub-blocks of 16), then acc += isum·(d·dx)
// in float32: ggml's Q6_K·Q8_K dot product (ggml_vec_dot_q6_K_q8_K) up to the order of float
// operations.
#ifndef IDEFICS2_Q6KX16_H
#define IDEFICS2_Q6KX16_H

#include <stddef.h>
#include <stdint.h>

#include "ggml.h"

#define IDEFICS2_Q6KX16_BLOCK 3360 // bytes per group of 16 rows and super-block of 256 columns

// Repacks a Q6_K matrix of rows × cols (rows a multiple of 16, cols of 256; rows·cols/256·210 bytes)
// into dst (rows/16 · cols/256 · 3360 bytes, the same size).
void idefics2_q6kx16_repack(const uint8_t * src, uint8_t * dst, int64_t rows, int64_t cols);

// y[t·y_stride + r] for r in [r0, r1) (multiples of 16) and t < ntok: row r of the q6kx16 matrix w
// (cols columns) times the q8x256 records of token t at xq + t·x_stride bytes. Strides of y in floats.
// Aborts, as ggml's own allocations do, when its scratch (ntok·cols/8 bytes at most) cannot be allocated.
void idefics2_q6kx16_matmul(const uint8_t * w, int64_t cols, const uint8_t * xq, int64_t ntok,
                            int64_t x_stride, float * y, int64_t y_stride, int64_t r0, int64_t r1);

// Graph op. mul_mat: w the I8 tensor holding a rows × cols q6kx16 matrix, xq the result of
// idefics2_q8x256_quantize (q4kx16.h) → F32 [rows, n1, n2, n3]. The caller checks shapes first.
struct ggml_tensor * idefics2_q6kx16_mul_mat(struct ggml_context * ctx, struct ggml_tensor * w,
                                             struct ggml_tensor * xq, int64_t rows);

#endif
