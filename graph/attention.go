package graph

import "github.com/idefics2-go/idefics2/ggml"

// attend computes softmax(q·kᵀ·scale + mask)·v per head with grouped-query broadcasting (query head i uses kv
// head i / (heads/kvHeads), the HF GQA grouping).
//
// q [hd, heads, nq], k and v [hd, kvHeads, nk]; mask [nk, ≥nq] (F32 for the plain path, F16 for flash) or nil.
// With kern.padGEMM (CPU, F32 k and v, no mask) the operands are zero-padded so that both products take the CPU's
// tiled GEMM (see gemmBlock); padded keys are masked. Returns [hd·heads, nq].
func attend(ctx *ggml.Context, q, k, v, mask ggml.Tensor, scale float32, kern attnKernel) ggml.Tensor {
	hd, heads, nq, nk := q.Ne(0), q.Ne(1), q.Ne(2), k.Ne(2)
	if kern.flash {
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
	hdp, nkp := hd, nk
	if kern.padGEMM && mask.IsNil() && k.Type() == ggml.TypeF32 && v.Type() == ggml.TypeF32 {
		hdp, nkp = roundUp(hd, gemmBlock), roundUp(nk, gemmBlock)
	}
	// kp [hdp, nkp, kvHeads]: a strided view when nothing is padded (its rows are contiguous).
	kp := k.Permute(ctx, 0, 2, 1, 3)
	if hdp != hd || nkp != nk {
		kp = kp.Pad(ctx, hdp-hd, nkp-nk, 0, 0)
	}
	// vt [nkp, hd, kvHeads], F32.
	vt := v.Permute(ctx, 1, 2, 0, 3).Cont(ctx)
	if vt.Type() != ggml.TypeF32 {
		vt = vt.Cast(ctx, ggml.TypeF32)
	}
	if nkp != nk {
		vt = vt.Pad(ctx, nkp-nk, 0, 0, 0)
	}
	return attendChunks(ctx, q, kp, vt, mask, scale, hd, hdp, nk, kern.scoreBytes)
}

// Attention is multi-head attention with grouped-query heads (query head i uses kv head i / (heads/kvHeads), the HF
// GQA grouping): the four projections and the kernel chosen at load.
type Attention struct {
	Query, Key, Value, Output Linear
	heads, kvHeads, headDim   int
	scale                     float32
	kernel                    attnKernel
}

// attnKernel is how an unmasked attention (vision tower, perceiver) computes: ggml's separate products (padded for
// the CPU's tiled GEMM where padGEMM), ggml's flash attention, or this project's fused CPU kernel.
type attnKernel struct {
	flash, fused, padGEMM bool
	scoreBytes            int // bound on one score matrix of the plain path (attendChunks)
}

// bindAttention binds attn_q, attn_k, attn_v [in, heads·hd or kvHeads·hd] and the output projection out
// [heads·hd, in] (named outName: "attn_out" in the mmproj, "attn_output" in the text model).
func bindAttention(b binder, in, heads, kvHeads, headDim int, bias bool, outName string) Attention {
	return Attention{
		Query:   b.linear("attn_q", in, heads*headDim, bias),
		Key:     b.linear("attn_k", in, kvHeads*headDim, bias),
		Value:   b.linear("attn_v", in, kvHeads*headDim, bias),
		Output:  b.linear(outName, heads*headDim, in, bias),
		heads:   heads,
		kvHeads: kvHeads,
		headDim: headDim,
		scale:   float32(1 / sqrt(float64(headDim))),
	}
}

// project returns q [hd, heads, nq] and k [hd, kvHeads, nk] from xq and xkv ([in, n] each), and v as
// [kvHeads·hd, nk]. q, k and v stacked at load (self-attention, xq = xkv) take one product; its results are strided
// views.
func (a *Attention) project(ctx *ggml.Context, xq, xkv ggml.Tensor) (q, k, v ggml.Tensor) {
	nq, nk := xq.Ne(1), xkv.Ne(1)
	if xq == xkv {
		if ys, ok := stacked(ctx, xq, a.Query, a.Key, a.Value); ok {
			esz := ys[0].Type().TypeSize()
			q = ys[0].View(ctx, 0, []int{a.headDim, a.heads, nq}, []int{a.headDim * esz, ys[0].Nb(1)})
			k = ys[1].View(ctx, 0, []int{a.headDim, a.kvHeads, nk}, []int{a.headDim * esz, ys[1].Nb(1)})
			return q, k, ys[2]
		}
	}
	q = a.Query.Forward(ctx, xq).Reshape(ctx, a.headDim, a.heads, nq)
	k = a.Key.Forward(ctx, xkv).Reshape(ctx, a.headDim, a.kvHeads, nk)
	return q, k, a.Value.Forward(ctx, xkv)
}

// Forward is unmasked attention of the queries from xq [in, nq] over the keys and values from xkv [in, nk]
// (SiglipAttention, Idefics2PerceiverAttention) and returns [in, nq] after the output projection.
func (a *Attention) Forward(ctx *ggml.Context, xq, xkv ggml.Tensor) ggml.Tensor {
	q, k, v := a.project(ctx, xq, xkv)
	if !v.IsContiguous() {
		v = v.Cont(ctx)
	}
	v = v.Reshape(ctx, a.headDim, a.kvHeads, v.Ne(1))
	return a.Output.Forward(ctx, attendUnmasked(ctx, q, k, v, a.scale, a.kernel))
}

// attendUnmasked is attend without a mask. The fused kernel (ggml.FusedAttention) keeps each block of scores in
// cache instead of writing a score matrix of nq × nk per head through memory; it takes F32 operands with
// contiguous rows and head sizes up to ggml.AttnMaxHead, and the other paths serve the rest.
func attendUnmasked(ctx *ggml.Context, q, k, v ggml.Tensor, scale float32, kern attnKernel) ggml.Tensor {
	if kern.fused && !kern.flash && q.Ne(0) <= ggml.AttnMaxHead && q.Ne(3) == 1 && k.Ne(3) == 1 &&
		q.Type() == ggml.TypeF32 && k.Type() == ggml.TypeF32 && v.Type() == ggml.TypeF32 &&
		q.Nb(0) == 4 && k.Nb(0) == 4 && v.Nb(0) == 4 {
		return q.FusedAttention(ctx, k, v, scale)
	}
	return attend(ctx, q, k, v, ggml.Tensor{}, scale, kern)
}

// attendT is attend on the plain path with V already transposed: vt [nk, hd, kvHeads] (rows contiguous, any
// type ggml multiplies by; an F16 cache is multiplied as F16, its probabilities converted to F16 as llama.cpp
// does).
func attendT(ctx *ggml.Context, q, k, vt, mask ggml.Tensor, scale float32, scoreBytes int) ggml.Tensor {
	return attendChunks(ctx, q, k.Permute(ctx, 0, 2, 1, 3), vt, mask, scale, q.Ne(0), q.Ne(0), k.Ne(2), scoreBytes)
}

// attendChunks runs attendAll over chunks of queries. kp [hdp, nkp, kvHeads] and vt [nkp, hd, kvHeads] may be
// padded from hd and nk (see attend); padded keys are masked.
func attendChunks(ctx *ggml.Context, q, kp, vt, mask ggml.Tensor, scale float32, hd, hdp, nk, scoreBytes int) ggml.Tensor {
	heads, nq, nkp := q.Ne(1), q.Ne(2), kp.Ne(1)
	// Bound the score matrix [nkp, chunk, heads] (4 bytes each): one 980×980 image has 4,900 patches, whose full
	// score matrix would take 1.5 GB. Queries are independent, so split them into chunks whose scores fit.
	// At most maxChunks chunks, so that the graph's node count stays bounded (graphSize) whatever the image size:
	// past that the score matrix grows instead.
	chunk := nq
	if c := scoreBytes / (4 * nkp * heads); c < nq && q.IsContiguous() {
		chunk = max(c, 16, (nq+maxChunks-1)/maxChunks)
	}
	// Padded keys get -1e30 before the softmax (so weight 0), through a mask [nkp, chunk] shared by the chunks.
	var keyMask ggml.Tensor
	if nkp != nk {
		keyMask = ctx.Arange(0, float32(nkp), 1).ScaleBias(ctx, 1, -(float32(nk)-0.5)).Step(ctx).Scale(ctx, -1e30)
		keyMask = keyMask.Repeat4D(ctx, nkp, chunk, 1, 1)
	}
	if chunk >= nq {
		return attendAll(ctx, q, kp, vt, orMask(mask, keyMask), scale, hd, hdp)
	}
	var parts []ggml.Tensor
	for i0 := 0; i0 < nq; i0 += chunk {
		c := min(chunk, nq-i0)
		qc := q.View(ctx, i0*q.Nb(2), []int{hd, heads, c}, []int{q.Nb(1), q.Nb(2)})
		var mc ggml.Tensor
		if !mask.IsNil() {
			mc = mask.View(ctx, i0*mask.Nb(1), []int{mask.Ne(0), c}, []int{mask.Nb(1)})
		} else if !keyMask.IsNil() {
			mc = keyMask
			if c < chunk {
				mc = keyMask.View(ctx, 0, []int{nkp, c}, []int{keyMask.Nb(1)})
			}
		}
		parts = append(parts, attendAll(ctx, qc, kp, vt, mc, scale, hd, hdp))
	}
	return concatTree(ctx, parts)
}

// gemmBlock is the multiple the CPU's tiled F32 GEMM (ggml's llamafile sgemm with AVX-512: 16 floats per vector)
// needs in the inner dimension of a product; without it ggml computes one dot product per output. The vision
// tower's head size (72) and key counts (729, 4900) are not multiples of 16.
const gemmBlock = 16

func roundUp(n, m int) int { return (n + m - 1) / m * m }

func orMask(a, b ggml.Tensor) ggml.Tensor {
	if !a.IsNil() {
		return a
	}
	return b
}

// defaultScoreBytes bounds one attention score matrix of the plain (non-fused) path (attendChunks).
const defaultScoreBytes = 64 << 20

// maxChunks bounds the query chunks of one attention (see attendChunks): 27 vision layers × 32 chunks × about
// 12 nodes stay well inside graphSize.
const maxChunks = 32

// attendAll is the plain attention path over all queries of q [hd, heads, nq] at once (see attend): kp is
// [hdp, nk', kvHeads] and vt [nk', hd, kvHeads]; q is padded from hd to hdp.
func attendAll(ctx *ggml.Context, q, kp, vt, mask ggml.Tensor, scale float32, hd, hdp int) ggml.Tensor {
	heads, nq := q.Ne(1), q.Ne(2)
	qp := q.Permute(ctx, 0, 2, 1, 3) // [hd, nq, heads]
	switch {
	case hdp != hd:
		qp = qp.Pad(ctx, hdp-hd, 0, 0, 0)
	case kp.Type() == ggml.TypeF32:
		// A contiguous q lets the CPU take its tiled GEMM for q·kᵀ (F16 keys convert q anyway).
		qp = qp.Cont(ctx)
	}
	kq := kp.MulMatF32(ctx, qp)                 // [nk', nq, heads]
	kq = kq.SoftMaxExt(ctx, mask, scale)        // over nk'
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
