// Fused attention for short heads on the CPU: softmax(q·kᵀ·scale)·v without a mask, one pass per
// block of queries with the scores kept in cache. Built for the vision tower (head size 72, up to a
// few thousand patches) and the perceiver (head size 96, grouped keys), where ggml's separate
// products take a short contraction and a score matrix the size of the image squared.
#ifndef IDEFICS2_ATTN_H
#define IDEFICS2_ATTN_H

#include <stdint.h>

#include "ggml.h"

// Paths; idefics2_attn_set_isa refuses one the CPU (and OS) cannot run.
enum idefics2_attn_isa {
    IDEFICS2_ATTN_SCALAR = 0,
    IDEFICS2_ATTN_AVX512 = 1, // AVX-512F
    IDEFICS2_ATTN_AVX2 = 2,   // AVX2, FMA and F16C
    IDEFICS2_ATTN_NEON = 3,   // AArch64 NEON (every AArch64 CPU)
};

// Largest head size the op takes.
#define IDEFICS2_ATTN_MAX_HEAD 128

int idefics2_attn_best_isa(void);
int idefics2_attn_isa(void);
// Forces a path (tests, benchmarks); -1 selects the best. Returns 0, or -1 when unavailable.
int idefics2_attn_set_isa(int isa);

// Graph op: q [hd, heads, nq], k and v [hd, kv_heads, nk] (F32, contiguous rows, any strides
// above), heads a multiple of kv_heads (query head h uses key head h / (heads / kv_heads)).
// Returns F32 [hd·heads, nq]. The caller checks shapes first.
struct ggml_tensor * idefics2_attn(struct ggml_context * ctx, struct ggml_tensor * q,
                                   struct ggml_tensor * k, struct ggml_tensor * v, float scale);

#endif
