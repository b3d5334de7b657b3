package graph

import "github.com/idefics2-go/idefics2/ggml"

// attend computes softmax(q·kᵀ·scale + mask)·v per head with grouped-query broadcasting (query head i uses kv
// head i / (heads/kvHeads), the HF GQA grouping).
//
// q [hd, heads, nq], k and v [hd, kvHeads, nk]; mask [nk, ≥nq] (F32 for the plain path, F16 for flash) or nil.
// Returns [hd·heads, nq].
func attend(ctx *ggml.Context, q, k, v, mask ggml.Tensor, scale float32, flash bool) ggml.Tensor {
	hd, heads, nq, nk := q.Ne(0), q.Ne(1), q.Ne(2), k.Ne(2)
	// Bound the score matrix [nk, chunk, heads] (4 bytes each): one 980×980 image has 4,900 patches, whose full
	// score matrix would take 1.5 GB. Queries are independent, so split them into chunks whose scores fit.
	if chunk := maxScoreBytes / (4 * nk * heads); !flash && chunk < nq && q.IsContiguous() {
		chunk = max(chunk, 16)
		vt := transposeV(ctx, v)
		var parts []ggml.Tensor
		for i0 := 0; i0 < nq; i0 += chunk {
			c := min(chunk, nq-i0)
			qc := q.View(ctx, i0*q.Nb(2), []int{hd, heads, c}, []int{q.Nb(1), q.Nb(2)})
			var mc ggml.Tensor
			if !mask.IsNil() {
				mc = mask.View(ctx, i0*mask.Nb(1), []int{mask.Ne(0), c}, []int{mask.Nb(1)})
			}
			parts = append(parts, attendAll(ctx, qc, k, vt, mc, scale))
		}
		return concatTree(ctx, parts)
	}
	if !flash {
		return attendAll(ctx, q, k, transposeV(ctx, v), mask, scale)
	}
	qp := q.Permute(ctx, 0, 2, 1, 3) // [hd, nq, heads]
	kp := k.Permute(ctx, 0, 2, 1, 3) // [hd, nk, kvHeads]
	vp := v.Permute(ctx, 0, 2, 1, 3) // [hd, nk, kvHeads]
	if kp.Type() == ggml.TypeF32 {
		kp = kp.Cast(ctx, ggml.TypeF16)
		vp = vp.Cast(ctx, ggml.TypeF16)
	}
	o := qp.FlashAttnExt(ctx, kp, vp, mask, scale) // [hd, heads, nq]
	return o.Reshape(ctx, hd*heads, nq)
}

// maxScoreBytes bounds one attention score matrix of the plain (non-fused) path (a variable so tests can force
// chunking on tiny models).
var maxScoreBytes = 64 << 20

// transposeV turns v [hd, kvHeads, nk] into the F32 [nk, hd, kvHeads] the plain path multiplies by.
func transposeV(ctx *ggml.Context, v ggml.Tensor) ggml.Tensor {
	vt := v.Permute(ctx, 1, 2, 0, 3).Cont(ctx) // [nk, hd, kvHeads]
	if vt.Type() != ggml.TypeF32 {
		vt = vt.Cast(ctx, ggml.TypeF32)
	}
	return vt
}

// attendAll is the plain attention path over all queries of q at once (see attend); vt is transposeV(v).
func attendAll(ctx *ggml.Context, q, k, vt, mask ggml.Tensor, scale float32) ggml.Tensor {
	hd, heads, nq := q.Ne(0), q.Ne(1), q.Ne(2)
	qp := q.Permute(ctx, 0, 2, 1, 3)            // [hd, nq, heads]
	kp := k.Permute(ctx, 0, 2, 1, 3)            // [hd, nk, kvHeads]
	kq := kp.MulMatF32(ctx, qp)                 // [nk, nq, heads]
	kq = kq.SoftMaxExt(ctx, mask, scale)        // over nk
	kqv := vt.MulMat(ctx, kq)                   // [hd, nq, heads]
	o := kqv.Permute(ctx, 0, 2, 1, 3).Cont(ctx) // [hd, heads, nq]
	return o.Reshape(ctx, hd*heads, nq)
}

// concatTree joins [w, n_i] parts along dim 1 pairwise, so each value is copied log2(len) times, not len times.
func concatTree(ctx *ggml.Context, parts []ggml.Tensor) ggml.Tensor {
	for len(parts) > 1 {
		var next []ggml.Tensor
		for i := 0; i < len(parts); i += 2 {
			if i+1 < len(parts) {
				next = append(next, parts[i].Concat(ctx, parts[i+1], 1))
			} else {
				next = append(next, parts[i])
			}
		}
		parts = next
	}
	return parts[0]
}
