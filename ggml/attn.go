package ggml

// #include "attn.h"
import "C"

import (
	"fmt"
	"math"
)

// Fused short-head attention on the CPU (attn.c): a ggml custom op for attention without a mask whose head
// size is small (the vision tower's 72, the perceiver's 96), where ggml's two products have a short inner
// dimension and the score matrix is as large as the image squared.

// AttnISA names a path of the fused attention kernel.
type AttnISA int

// Fused attention paths (enum idefics2_attn_isa in attn.h).
const (
	AttnScalar AttnISA = C.IDEFICS2_ATTN_SCALAR
	AttnAVX512 AttnISA = C.IDEFICS2_ATTN_AVX512
	AttnAVX2   AttnISA = C.IDEFICS2_ATTN_AVX2
	AttnNEON   AttnISA = C.IDEFICS2_ATTN_NEON
)

func (i AttnISA) String() string {
	switch i {
	case AttnScalar:
		return "scalar"
	case AttnAVX512:
		return "avx512"
	case AttnAVX2:
		return "avx2"
	case AttnNEON:
		return "neon"
	}
	return fmt.Sprintf("attnisa(%d)", int(i))
}

// AttnMaxHead is the largest head size FusedAttention takes.
const AttnMaxHead = C.IDEFICS2_ATTN_MAX_HEAD

// AttnBestISA is the fastest fused-attention path this CPU runs.
func AttnBestISA() AttnISA { return AttnISA(C.idefics2_attn_best_isa()) }

// AttnFast reports whether this CPU has a vector path of the fused attention (the scalar one is for tests: the
// graph should keep ggml's products without it).
func AttnFast() bool { return AttnBestISA() != AttnScalar }

// AttnSupportedISAs lists the fused-attention paths this CPU runs (under the ISA cap), scalar first.
func AttnSupportedISAs() []AttnISA {
	out := []AttnISA{AttnScalar}
	switch AttnBestISA() {
	case AttnAVX2:
		out = append(out, AttnAVX2)
	case AttnAVX512:
		out = append(out, AttnAVX2, AttnAVX512)
	case AttnNEON:
		out = append(out, AttnNEON)
	}
	return out
}

// SetAttnISA forces a fused-attention path for the whole process (tests and benchmarks); it refuses a path this
// CPU cannot run. Use AttnBestISA() to restore the default.
func SetAttnISA(isa AttnISA) error {
	if C.idefics2_attn_set_isa(C.int(isa)) != 0 {
		return fmt.Errorf("ggml: attention: path %s is not available on this CPU (best: %s)", isa, AttnBestISA())
	}
	return nil
}

// FusedAttention computes softmax(q·kᵀ·scale)·v per head, with no mask, as one CPU custom op. q is F32
// [hd, heads, nq], k and v F32 [hd, kvHeads, nk] with contiguous rows (any strides above), heads a multiple of
// kvHeads (query head h uses key head h / (heads/kvHeads), the HF grouping), hd at most AttnMaxHead. The result
// is F32 [hd·heads, nq]. Only the CPU backend runs it.
func (q Tensor) FusedAttention(ctx *Context, k, v Tensor, scale float32) Tensor {
	const op = "fused_attention"
	need(op, q, k, v)
	for _, t := range []struct {
		name string
		t    Tensor
	}{{"q", q}, {"k", k}, {"v", v}} {
		if t.t.Type() != TypeF32 || t.t.Nb(0) != 4 {
			shapeErr(op, "%s %s is %s with element stride %d; want f32 with contiguous rows", t.name, shapeOf(t.t), t.t.Type(), t.t.Nb(0))
		}
		if t.t.Ne(3) != 1 {
			shapeErr(op, "%s %s has a 4th dimension", t.name, shapeOf(t.t))
		}
	}
	hd, heads, nq := q.Ne(0), q.Ne(1), q.Ne(2)
	if k.Ne4() != v.Ne4() {
		shapeErr(op, "k %s and v %s differ in shape", shapeOf(k), shapeOf(v))
	}
	if k.Ne(0) != hd || hd > AttnMaxHead {
		shapeErr(op, "head size: q %s, k %s; want the same, at most %d", shapeOf(q), shapeOf(k), AttnMaxHead)
	}
	if kvh := k.Ne(1); heads%kvh != 0 {
		shapeErr(op, "q has %d heads, not a multiple of k's %d", heads, kvh)
	}
	if nq < 1 || k.Ne(2) < 1 {
		shapeErr(op, "no queries or keys: q %s, k %s", shapeOf(q), shapeOf(k))
	}
	if math.IsNaN(float64(scale)) || math.IsInf(float64(scale), 0) {
		shapeErr(op, "scale %v is not finite", scale)
	}
	return ctx.node(op, C.idefics2_attn(ctx.ptr, q.ptr, k.ptr, v.ptr, C.float(scale)))
}
