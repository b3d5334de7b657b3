// Attention of a few new tokens over a KV cache on the CPU, as one op: the decoder's generation step. ggml's path
// there is four ops per layer (q·kᵀ, softmax, p·v and a copy) whose products have one column each, so that each
// key costs a separate small dot product call and the probabilities are rounded to F16 for an F16 cache. Here each
// work item (token, key head) reads the head's keys and values once for all the query heads that share them
// (grouped-query attention), with an online softmax over blocks of keys.
#ifndef IDEFICS2_DECATTN_H
#define IDEFICS2_DECATTN_H

#include <stdint.h>

#include "ggml.h"

// Largest head size the op takes, and most query heads per key head.
#define IDEFICS2_DECATTN_MAX_HEAD 256
#define IDEFICS2_DECATTN_MAX_GROUP 16

// Graph op (paths chosen as for idefics2_attn, attn.h):
//   q    F32 [hd, heads, n] with contiguous rows;
//   k    F16 or F32 [hd, kv_heads, nk]: the cache's keys, contiguous rows (any strides above);
//   vt   the same type, [nk, hd, kv_heads]: the cache's values transposed, contiguous rows;
//   mask F32 [nk, ≥ n], added to the scaled scores (0 or −Inf), or NULL;
// heads a multiple of kv_heads (query head h uses key head h / (heads / kv_heads)). Returns
// F32 [hd·heads, n] = softmax(q·kᵀ·scale + mask)·v per head. The caller checks shapes first.
struct ggml_tensor * idefics2_decode_attn(struct ggml_context * ctx, struct ggml_tensor * q, struct ggml_tensor * k,
                                          struct ggml_tensor * vt, struct ggml_tensor * mask, float scale);

#endif
