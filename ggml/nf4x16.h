// NF4 in the repacked "nf4x16" layout, multiplied with int8 activations (docs/formats.md,
// "Repacked NF4 on the CPU").
//
// Layout: for each group of 16 rows, for each chunk of 64 columns j: 16 float32 scales (row r's
// absmax of the block that holds columns 64j … 64j+63; repeated in every chunk of a block when the
// block size is above 64), then 8 sub-chunks of 64 code bytes. Sub-chunk k covers columns
// 64j+8k … 64j+8k+7: byte 4r+i holds the code of column 64j+8k+i in its low nibble and that of
// column 64j+8k+4+i in its high nibble. A chunk is 64 + 512 = 576 bytes. The layout exists only
// when rows % 16 == 0, cols % 64 == 0 and cols % bs == 0 (no block straddles a row).
//
// Activations: per 64 values one record of 72 bytes: 64 int8 q = round(x·127/max|x|) in column
// order, a float32 dd = max|x|/127/127 (the activation scale times the codebook's 1/127) and an
// int32 bias = 128·Σq (the codebook is stored as unsigned bytes u = round(level·127) + 128, so
// Σ u·q − bias = Σ round(level·127)·q).
#ifndef IDEFICS2_NF4X16_H
#define IDEFICS2_NF4X16_H

#include <stdint.h>

#include "ggml.h"

#define IDEFICS2_NF4X16_ROWS 16   // rows per group
#define IDEFICS2_NF4X16_COLS 64   // columns per chunk (and values per activation record)
#define IDEFICS2_NF4X16_CHUNK 576 // bytes per group and chunk: 16 scales + 16 × 64 codes
#define IDEFICS2_NF4X16_QREC 72   // bytes per activation record

// The codebook as unsigned bytes (round(level·127) + 128), for tests.
void idefics2_nf4x16_lut(uint8_t out[16]);

// Repacks the groups [g0, g1) of a rows × cols NF4 block stream (blocks of bs values) into dst,
// which holds the whole repacked matrix. The caller checks the shape.
void idefics2_nf4x16_repack(const uint8_t * stream, uint8_t * dst, int64_t cols, int bs, int64_t g0, int64_t g1);

// Quantizes nrec × 64 values of x into nrec activation records at q.
void idefics2_nf4x16_quantize(const float * x, uint8_t * q, int64_t nrec);

// y[t*y_stride + r] = Σ_c W[r][c]·x_t[c] for rows r of the groups [g0, g1) and t < ntok, where
// W is the repacked matrix w of cols columns and x_t is given by the cols/64 activation records
// at xq + t*xq_stride (bytes). y_stride is in floats.
void idefics2_nf4x16_matmul(const uint8_t * w, int64_t cols, const uint8_t * xq, int64_t ntok, int64_t xq_stride,
                            float * y, int64_t y_stride, int64_t g0, int64_t g1);

// Graph op: activation records I8 [72·ne0/64, ne1, ne2, ne3] of x (F32 with contiguous rows,
// ne0 % 64 == 0). Threads split the records.
struct ggml_tensor * idefics2_nf4x16_quantize_op(struct ggml_context * ctx, struct ggml_tensor * x);

// Graph op: dst F32 [rows, ne1, ne2, ne3] = W · x, W the repacked matrix in the I8 tensor w and
// xq the records of x made by idefics2_nf4x16_quantize_op. Threads split the 16-row groups. The
// caller checks shapes first.
struct ggml_tensor * idefics2_nf4x16_mul_mat(struct ggml_context * ctx, struct ggml_tensor * w,
                                             struct ggml_tensor * xq, int64_t rows);

#endif
