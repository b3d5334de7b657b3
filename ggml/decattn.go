package ggml

// #include "decattn.h"
import "C"

// DecodeAttnMaxHead and DecodeAttnMaxGroup bound the head size and the query heads per key head DecodeAttention
// takes.
const (
	DecodeAttnMaxHead  = C.IDEFICS2_DECATTN_MAX_HEAD
	DecodeAttnMaxGroup = C.IDEFICS2_DECATTN_MAX_GROUP
)

// DecodeAttention computes softmax(q·kᵀ·scale + mask)·v per head for a few new tokens over a KV cache, as one CPU
// custom op (decattn.h; the path follows SetAttnISA). q is F32 [hd, heads, n] with contiguous rows; k is the cache's
// keys [hd, kvHeads, nk] and vt its values transposed [nk, hd, kvHeads], both F16 or both F32 with contiguous rows;
// mask is F32 [nk, ≥n] (0 or −Inf) or a nil tensor. Query head h uses key head h / (heads/kvHeads). The result is
// F32 [hd·heads, n]. Only the CPU backend runs it.
func (q Tensor) DecodeAttention(ctx *Context, k, vt, mask Tensor, scale float32) Tensor {
	const op = "decode_attention"
	need(op, q, k, vt)
	hd, heads, n := q.Ne(0), q.Ne(1), q.Ne(2)
	kvh, nk := k.Ne(1), k.Ne(2)
	switch {
	case q.Type() != TypeF32 || q.Nb(0) != 4 || q.Ne(3) != 1:
		shapeErr(op, "q %s is %s; want f32 [hd, heads, n] with contiguous rows", shapeOf(q), q.Type())
	case k.Type() != TypeF16 && k.Type() != TypeF32, vt.Type() != k.Type():
		shapeErr(op, "keys are %s and values %s; want both f16 or both f32", k.Type(), vt.Type())
	case k.Nb(0) != k.Type().TypeSize() || vt.Nb(0) != vt.Type().TypeSize():
		shapeErr(op, "keys %s and values %s need contiguous rows", shapeOf(k), shapeOf(vt))
	case k.Ne(0) != hd || k.Ne(3) != 1:
		shapeErr(op, "keys %s do not match q %s: want [%d, kvHeads, nk]", shapeOf(k), shapeOf(q), hd)
	case vt.Ne(0) != nk || vt.Ne(1) != hd || vt.Ne(2) != kvh || vt.Ne(3) != 1:
		shapeErr(op, "values %s: want the transposed [%d, %d, %d]", shapeOf(vt), nk, hd, kvh)
	case hd < 1 || hd > DecodeAttnMaxHead:
		shapeErr(op, "head size %d: want 1…%d", hd, DecodeAttnMaxHead)
	case kvh < 1 || heads%kvh != 0 || heads/kvh > DecodeAttnMaxGroup:
		shapeErr(op, "%d query heads over %d key heads: want a multiple, at most %d per key head", heads, kvh, DecodeAttnMaxGroup)
	}
	var mp *C.struct_ggml_tensor
	if !mask.IsNil() {
		if mask.Type() != TypeF32 || mask.Nb(0) != 4 || mask.Ne(0) != nk || mask.Ne(1) < n || mask.Ne(2) != 1 || mask.Ne(3) != 1 {
			shapeErr(op, "mask %s is %s; want f32 [%d, ≥%d] with contiguous rows", shapeOf(mask), mask.Type(), nk, n)
		}
		mp = mask.ptr
	}
	return ctx.node(op, C.idefics2_decode_attn(ctx.ptr, q.ptr, k.ptr, vt.ptr, mp, C.float(scale)))
}
