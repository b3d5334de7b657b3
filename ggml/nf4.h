// NF4 (bitsandbytes 4-bit NormalFloat) matrix multiplication for the CPU.
//
// Weights are the GGUF NF4 block stream of docs/formats.md: for each block of bs values (bs one of
// 64 … 4096) a little-endian float32 absmax followed by bs/2 bytes of codes, value 2k of the block
// in the high nibble of byte k and value 2k+1 in the low nibble. The matrix has `rows` rows of
// `cols` values, flattened row-major, so blocks may straddle rows (as in bitsandbytes).
#ifndef IDEFICS2_NF4_H
#define IDEFICS2_NF4_H

#include <stdint.h>

#include "ggml.h"

// SIMD paths; idefics2_nf4_set_isa refuses one the CPU (and OS) cannot run.
enum idefics2_nf4_isa {
    IDEFICS2_NF4_SCALAR = 0,
    IDEFICS2_NF4_AVX2 = 1,   // AVX2 + FMA
    IDEFICS2_NF4_AVX512 = 2, // AVX-512F
    IDEFICS2_NF4_NEON = 3,   // AArch64 Advanced SIMD
    // AVX-512F + BW + VNNI: the stream kernel runs its AVX-512F path; the repacked nf4x16 kernel
    // (nf4x16.h) runs its int8 dot-product path, which needs BW (vpshufb on zmm) and VNNI (vpdpbusd).
    IDEFICS2_NF4_AVX512VNNI = 4,
    // AVX2 + FMA + AVX-VNNI: the stream kernel runs its AVX2 path, the nf4x16 kernel its AVX2 path with vpdpbusd.
    IDEFICS2_NF4_AVX2VNNI = 5,
    // As IDEFICS2_NF4_AVX2VNNI with vpdpbusd computed from AVX2 instructions: never chosen, forced by tests so that
    // a CPU without AVX-VNNI checks that path's kernels.
    IDEFICS2_NF4_AVX2VNNI_EMULATED = 6,
    // AArch64 NEON with the dot-product extension: the stream kernel runs its NEON path, the nf4x16 kernel its sdot
    // path.
    IDEFICS2_NF4_NEON_DOTPROD = 7,
    // AArch64 NEON with dot products and the int8 matrix multiply: the stream kernel runs its NEON path, the nf4x16
    // kernel its smmla path (two tokens at a time, a lone one by sdot).
    IDEFICS2_NF4_NEON_I8MM = 8,
};

// Best path this CPU supports (detected once).
int idefics2_nf4_best_isa(void);
// Path in use.
int idefics2_nf4_isa(void);
// Forces a path (for tests and benchmarks); -1 selects the best. Returns 0, or -1 when the CPU
// lacks it or the build has no such path.
int idefics2_nf4_set_isa(int isa);

// y[t*y_stride + r] = sum_c W[r][c] * x[t*x_stride + c] for rows r in [r0, r1) and t < ntok.
// Strides are in floats.
void idefics2_nf4_matmul(const uint8_t * w, int64_t rows, int64_t cols, int bs,
                         const float * x, int64_t ntok, int64_t x_stride,
                         float * y, int64_t y_stride, int64_t r0, int64_t r1);

// Graph op: dst [rows, ne1, ne2, ne3] (F32) = W [rows × x->ne[0]] · x, x F32 with contiguous
// rows. w is the I8 tensor holding the block stream. The caller checks shapes first.
struct ggml_tensor * idefics2_nf4_mul_mat(struct ggml_context * ctx, struct ggml_tensor * w,
                                          struct ggml_tensor * x, int64_t rows, int bs);

#endif
