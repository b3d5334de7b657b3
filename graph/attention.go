package graph

import "github.com/idefics2-go/idefics2/ggml"

// attend computes softmax(q·kᵀ·scale + mask)·v per head with grouped-query broadcasting (query head i uses kv
// head i / (heads/kvHeads), the HF GQA grouping).
//
// q [hd, heads, nq], k and v [hd, kvHeads, nk]; mask [nk, ≥nq] (F32 for the plain path, F16 for flash) or nil.
// Returns [hd·heads, nq].
func attend(ctx *ggml.Context, q, k, v, mask ggml.Tensor, scale float32, flash bool) ggml.Tensor {
	hd, heads, nq := q.Ne(0), q.Ne(1), q.Ne(2)
	qp := q.Permute(ctx, 0, 2, 1, 3) // [hd, nq, heads]
	kp := k.Permute(ctx, 0, 2, 1, 3) // [hd, nk, kvHeads]
	if flash {
		vp := v.Permute(ctx, 0, 2, 1, 3) // [hd, nk, kvHeads]
		if kp.Type() == ggml.TypeF32 {
			kp = kp.Cast(ctx, ggml.TypeF16)
			vp = vp.Cast(ctx, ggml.TypeF16)
		}
		o := qp.FlashAttnExt(ctx, kp, vp, mask, scale) // [hd, heads, nq]
		return o.Reshape(ctx, hd*heads, nq)
	}
	kq := kp.MulMatF32(ctx, qp)                // [nk, nq, heads]
	kq = kq.SoftMaxExt(ctx, mask, scale)       // over nk
	vt := v.Permute(ctx, 1, 2, 0, 3).Cont(ctx) // [nk, hd, kvHeads]
	if vt.Type() != ggml.TypeF32 {
		vt = vt.Cast(ctx, ggml.TypeF32)
	}
	kqv := vt.MulMat(ctx, kq)                   // [hd, nq, heads]
	o := kqv.Permute(ctx, 0, 2, 1, 3).Cont(ctx) // [hd, heads, nq]
	return o.Reshape(ctx, hd*heads, nq)
}
