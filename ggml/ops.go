package ggml

// #include "ggml.h"
import "C"

import "fmt"

// Every op checks ggml's preconditions in Go first (see ShapeError) and then builds the node in ctx.

func (c *Context) node(op string, p *C.struct_ggml_tensor) Tensor {
	c.take(op)
	if p == nil {
		shapeErr(op, "ggml returned no tensor")
	}
	return Tensor{p}
}

func need(op string, ts ...Tensor) {
	for _, t := range ts {
		if t.ptr == nil {
			shapeErr(op, "nil operand")
		}
	}
}

// canRepeat reports whether b broadcasts to a (each dim of a is a multiple of b's).
func canRepeat(b, a Tensor) bool {
	for i := 0; i < MaxDims; i++ {
		if b.Ne(i) == 0 || a.Ne(i)%b.Ne(i) != 0 {
			return false
		}
	}
	return true
}

func shapeOf(t Tensor) string { return fmt.Sprint(t.Ne4()) }

// MulMat computes ggml_mul_mat(w, x): for w [k, m, …] and x [k, n, …] the result is [m, n, …] (x·wᵀ over ne0),
// broadcasting w over x's dims 2 and 3.
func (w Tensor) MulMat(ctx *Context, x Tensor) Tensor {
	need("mul_mat", w, x)
	if w.Ne(0) != x.Ne(0) || x.Ne(2)%w.Ne(2) != 0 || x.Ne(3)%w.Ne(3) != 0 {
		shapeErr("mul_mat", "weight %s and input %s do not match", shapeOf(w), shapeOf(x))
	}
	if C.ggml_is_transposed(w.ptr) {
		shapeErr("mul_mat", "weight %s is transposed", shapeOf(w))
	}
	if x.Type() != TypeF32 && x.Type() != TypeF16 {
		shapeErr("mul_mat", "input type %s; want f32 or f16", x.Type())
	}
	return ctx.node("mul_mat", C.ggml_mul_mat(ctx.ptr, w.ptr, x.ptr))
}

// MulMatF32 is MulMat with the result accumulated at F32 precision on backends that would otherwise use F16.
func (w Tensor) MulMatF32(ctx *Context, x Tensor) Tensor {
	r := w.MulMat(ctx, x)
	C.ggml_mul_mat_set_prec(r.ptr, C.GGML_PREC_F32)
	return r
}

func binaryOp(op string, ctx *Context, a, b Tensor, f func(*C.struct_ggml_context, *C.struct_ggml_tensor, *C.struct_ggml_tensor) *C.struct_ggml_tensor) Tensor {
	need(op, a, b)
	if !canRepeat(b, a) {
		shapeErr(op, "%s does not broadcast to %s", shapeOf(b), shapeOf(a))
	}
	if a.Type() != TypeF32 && a.Type() != TypeF16 {
		shapeErr(op, "type %s; want f32 or f16", a.Type())
	}
	return ctx.node(op, f(ctx.ptr, a.ptr, b.ptr))
}

// Add is a + b with b broadcast over a.
func (a Tensor) Add(ctx *Context, b Tensor) Tensor {
	return binaryOp("add", ctx, a, b, func(c *C.struct_ggml_context, x, y *C.struct_ggml_tensor) *C.struct_ggml_tensor {
		return C.ggml_add(c, x, y)
	})
}

// Sub is a − b with b broadcast over a.
func (a Tensor) Sub(ctx *Context, b Tensor) Tensor {
	return binaryOp("sub", ctx, a, b, func(c *C.struct_ggml_context, x, y *C.struct_ggml_tensor) *C.struct_ggml_tensor {
		return C.ggml_sub(c, x, y)
	})
}

// Mul is a ⊙ b with b broadcast over a.
func (a Tensor) Mul(ctx *Context, b Tensor) Tensor {
	return binaryOp("mul", ctx, a, b, func(c *C.struct_ggml_context, x, y *C.struct_ggml_tensor) *C.struct_ggml_tensor {
		return C.ggml_mul(c, x, y)
	})
}

// Scale multiplies every element by s.
func (a Tensor) Scale(ctx *Context, s float32) Tensor {
	need("scale", a)
	return ctx.node("scale", C.ggml_scale(ctx.ptr, a.ptr, C.float(s)))
}

func unary(op string, ctx *Context, a Tensor, f func(*C.struct_ggml_context, *C.struct_ggml_tensor) *C.struct_ggml_tensor) Tensor {
	need(op, a)
	if a.Type() != TypeF32 && a.Type() != TypeF16 {
		shapeErr(op, "type %s; want f32 or f16", a.Type())
	}
	if a.Nb(0) != a.Type().TypeSize() {
		shapeErr(op, "rows of %s are not contiguous", shapeOf(a))
	}
	return ctx.node(op, f(ctx.ptr, a.ptr))
}

// GELU is ggml's tanh-approximation GELU (on the CPU it reads an fp16 table: about 1e-3 relative error).
func (a Tensor) GELU(ctx *Context) Tensor {
	return unary("gelu", ctx, a, func(c *C.struct_ggml_context, x *C.struct_ggml_tensor) *C.struct_ggml_tensor {
		return C.ggml_gelu(c, x)
	})
}

// GELUTanhExact is 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) built from F32 ops, matching PyTorch's
// gelu(approximate="tanh") to float32 rounding (ggml's GELU op goes through an fp16 table on the CPU).
func (a Tensor) GELUTanhExact(ctx *Context) Tensor {
	const sqrt2OverPi = 0.7978845608028654
	x3 := a.Mul(ctx, a).Mul(ctx, a)
	inner := a.Add(ctx, x3.Scale(ctx, 0.044715)).Scale(ctx, sqrt2OverPi)
	t := inner.Tanh(ctx)
	// 0.5·x·(1+t) = 0.5·x + 0.5·x·t
	half := a.Scale(ctx, 0.5)
	return half.Add(ctx, half.Mul(ctx, t))
}

// Tanh is the element-wise hyperbolic tangent.
func (a Tensor) Tanh(ctx *Context) Tensor {
	return unary("tanh", ctx, a, func(c *C.struct_ggml_context, x *C.struct_ggml_tensor) *C.struct_ggml_tensor {
		return C.ggml_tanh(c, x)
	})
}

// SiLU is x·σ(x).
func (a Tensor) SiLU(ctx *Context) Tensor {
	return unary("silu", ctx, a, func(c *C.struct_ggml_context, x *C.struct_ggml_tensor) *C.struct_ggml_tensor {
		return C.ggml_silu(c, x)
	})
}

// SwiGLU is SiLU(a) ⊙ b, fused.
func (a Tensor) SwiGLU(ctx *Context, b Tensor) Tensor {
	need("swiglu", a, b)
	if a.Ne4() != b.Ne4() || a.Type() != b.Type() {
		shapeErr("swiglu", "gate %s and up %s differ", shapeOf(a), shapeOf(b))
	}
	if a.Type() != TypeF32 && a.Type() != TypeF16 {
		shapeErr("swiglu", "type %s; want f32 or f16", a.Type())
	}
	return ctx.node("swiglu", C.ggml_swiglu_split(ctx.ptr, a.ptr, b.ptr))
}

// Norm normalizes each row over ne0 to zero mean and unit variance (no affine part).
func (a Tensor) Norm(ctx *Context, eps float32) Tensor {
	return unary("norm", ctx, a, func(c *C.struct_ggml_context, x *C.struct_ggml_tensor) *C.struct_ggml_tensor {
		return C.ggml_norm(c, x, C.float(eps))
	})
}

// RMSNorm divides each row by sqrt(mean(x²) + eps) (no weight).
func (a Tensor) RMSNorm(ctx *Context, eps float32) Tensor {
	return unary("rms_norm", ctx, a, func(c *C.struct_ggml_context, x *C.struct_ggml_tensor) *C.struct_ggml_tensor {
		return C.ggml_rms_norm(c, x, C.float(eps))
	})
}

// SoftMaxExt is softmax(a·scale + mask) over ne0, mask [ne0, ≥ne1, broadcast over ne2/ne3] (nil mask: none).
func (a Tensor) SoftMaxExt(ctx *Context, mask Tensor, scale float32) Tensor {
	need("soft_max", a)
	if !a.IsContiguous() {
		shapeErr("soft_max", "input %s is not contiguous", shapeOf(a))
	}
	if mask.ptr != nil {
		if mask.Type() != TypeF16 && mask.Type() != TypeF32 {
			shapeErr("soft_max", "mask type %s; want f16 or f32", mask.Type())
		}
		if !mask.IsContiguous() || mask.Ne(0) != a.Ne(0) || mask.Ne(1) < a.Ne(1) || a.Ne(2)%mask.Ne(2) != 0 || a.Ne(3)%mask.Ne(3) != 0 {
			shapeErr("soft_max", "mask %s does not fit scores %s", shapeOf(mask), shapeOf(a))
		}
	}
	return ctx.node("soft_max", C.ggml_soft_max_ext(ctx.ptr, a.ptr, mask.ptr, C.float(scale), 0))
}

// RoPEMode selects how dimensions are paired.
type RoPEMode int

const (
	// RoPENormal rotates adjacent pairs (2i, 2i+1) (GGML_ROPE_TYPE_NORMAL, llama.cpp's `llama`).
	RoPENormal RoPEMode = 0
	// RoPENeox rotates pairs (i, i+d/2) (GGML_ROPE_TYPE_NEOX, HF "rotate half").
	RoPENeox RoPEMode = C.GGML_ROPE_TYPE_NEOX
)

// RoPEOptions are the parameters of RoPE.
type RoPEOptions struct {
	Dims      int // rotated dimensions (≤ head size, even)
	Mode      RoPEMode
	Base      float32 // θ base (rope_theta)
	FreqScale float32 // 0 means 1
	CtxOrig   int     // original context (YaRN only; 0 otherwise)
}

// RoPE rotates a [headDim, nHead, nTokens, 1] by the positions pos (I32 [nTokens]).
func (a Tensor) RoPE(ctx *Context, pos Tensor, o RoPEOptions) Tensor {
	need("rope", a, pos)
	if pos.Type() != TypeI32 || pos.Ne(0) != a.Ne(2) {
		shapeErr("rope", "positions %s (%s) do not match %s", shapeOf(pos), pos.Type(), shapeOf(a))
	}
	if o.Dims <= 0 || o.Dims > a.Ne(0) || o.Dims%2 != 0 {
		shapeErr("rope", "dims %d for head size %d", o.Dims, a.Ne(0))
	}
	if a.Type() != TypeF32 && a.Type() != TypeF16 {
		shapeErr("rope", "type %s", a.Type())
	}
	fs := o.FreqScale
	if fs == 0 {
		fs = 1
	}
	return ctx.node("rope", C.ggml_rope_ext(ctx.ptr, a.ptr, pos.ptr, nil, C.int(o.Dims), C.int(o.Mode), C.int(o.CtxOrig),
		C.float(o.Base), C.float(fs), 0, 1, 0, 0))
}

// GetRows gathers rows of a ([n, rows, …]) by the I32 indices idx ([k] or [k, ne2]).
func (a Tensor) GetRows(ctx *Context, idx Tensor) Tensor {
	need("get_rows", a, idx)
	if idx.Type() != TypeI32 || a.Ne(2) != idx.Ne(1) || idx.Ne(3) != 1 {
		shapeErr("get_rows", "indices %s (%s) for %s", shapeOf(idx), idx.Type(), shapeOf(a))
	}
	return ctx.node("get_rows", C.ggml_get_rows(ctx.ptr, a.ptr, idx.ptr))
}

// Concat joins a and b along dim (all other dims equal).
func (a Tensor) Concat(ctx *Context, b Tensor, dim int) Tensor {
	need("concat", a, b)
	if dim < 0 || dim >= MaxDims || a.Type() != b.Type() {
		shapeErr("concat", "dim %d, types %s/%s", dim, a.Type(), b.Type())
	}
	for i := 0; i < MaxDims; i++ {
		if i != dim && a.Ne(i) != b.Ne(i) {
			shapeErr("concat", "%s and %s differ outside dim %d", shapeOf(a), shapeOf(b), dim)
		}
	}
	return ctx.node("concat", C.ggml_concat(ctx.ptr, a.ptr, b.ptr, C.int(dim)))
}

// Reshape views a contiguous tensor with a new shape of the same element count.
func (a Tensor) Reshape(ctx *Context, shape ...int) Tensor {
	need("reshape", a)
	if !a.IsContiguous() {
		shapeErr("reshape", "%s is not contiguous", shapeOf(a))
	}
	n := 1
	for _, d := range shape {
		n *= d
	}
	if len(shape) < 1 || len(shape) > MaxDims || n != a.NumElements() || shape[0]%a.Type().BlockSize() != 0 {
		shapeErr("reshape", "%s to %v", shapeOf(a), clone(shape))
	}
	var p *C.struct_ggml_tensor
	switch len(shape) {
	case 1:
		p = C.ggml_reshape_1d(ctx.ptr, a.ptr, C.int64_t(shape[0]))
	case 2:
		p = C.ggml_reshape_2d(ctx.ptr, a.ptr, C.int64_t(shape[0]), C.int64_t(shape[1]))
	case 3:
		p = C.ggml_reshape_3d(ctx.ptr, a.ptr, C.int64_t(shape[0]), C.int64_t(shape[1]), C.int64_t(shape[2]))
	default:
		p = C.ggml_reshape_4d(ctx.ptr, a.ptr, C.int64_t(shape[0]), C.int64_t(shape[1]), C.int64_t(shape[2]), C.int64_t(shape[3]))
	}
	return ctx.node("reshape", p)
}

// View makes a view of a with shape ne (1–4 dims), byte strides nb (len(ne)−1 values: nb1, nb2, nb3) and a byte
// offset. The view must lie inside a's data.
func (a Tensor) View(ctx *Context, offset int, ne []int, nb []int) Tensor {
	need("view", a)
	if len(ne) < 1 || len(ne) > MaxDims || len(nb) != len(ne)-1 || offset < 0 {
		shapeErr("view", "shape %v strides %v", clone(ne), clone(nb))
	}
	// Extent in bytes of the last element + 1.
	esz := a.Type().TypeSize() / a.Type().BlockSize()
	if a.Type().BlockSize() > 1 && ne[0]%a.Type().BlockSize() != 0 {
		shapeErr("view", "ne0 %d is not a multiple of the block size", ne[0])
	}
	end := offset
	rowBytes := ne[0] * esz
	if a.Type().BlockSize() > 1 {
		rowBytes = ne[0] / a.Type().BlockSize() * a.Type().TypeSize()
	}
	end += rowBytes
	for i := 1; i < len(ne); i++ {
		if ne[i] <= 0 {
			shapeErr("view", "shape %v", clone(ne))
		}
		end += (ne[i] - 1) * nb[i-1]
	}
	if ne[0] <= 0 || end > a.Nbytes() {
		shapeErr("view", "view of %v at offset %d ends at byte %d beyond %d bytes of %s", clone(ne), offset, end, a.Nbytes(), shapeOf(a))
	}
	var p *C.struct_ggml_tensor
	o := C.size_t(offset)
	switch len(ne) {
	case 1:
		p = C.ggml_view_1d(ctx.ptr, a.ptr, C.int64_t(ne[0]), o)
	case 2:
		p = C.ggml_view_2d(ctx.ptr, a.ptr, C.int64_t(ne[0]), C.int64_t(ne[1]), C.size_t(nb[0]), o)
	case 3:
		p = C.ggml_view_3d(ctx.ptr, a.ptr, C.int64_t(ne[0]), C.int64_t(ne[1]), C.int64_t(ne[2]), C.size_t(nb[0]), C.size_t(nb[1]), o)
	default:
		p = C.ggml_view_4d(ctx.ptr, a.ptr, C.int64_t(ne[0]), C.int64_t(ne[1]), C.int64_t(ne[2]), C.int64_t(ne[3]), C.size_t(nb[0]), C.size_t(nb[1]), C.size_t(nb[2]), o)
	}
	return ctx.node("view", p)
}

// Permute moves dimension i of a to position axes[i] (ggml_permute semantics).
func (a Tensor) Permute(ctx *Context, axes ...int) Tensor {
	need("permute", a)
	if len(axes) != MaxDims {
		shapeErr("permute", "want 4 axes, got %v", clone(axes))
	}
	seen := [MaxDims]bool{}
	for _, x := range axes {
		if x < 0 || x >= MaxDims || seen[x] {
			shapeErr("permute", "axes %v are not a permutation", clone(axes))
		}
		seen[x] = true
	}
	return ctx.node("permute", C.ggml_permute(ctx.ptr, a.ptr, C.int(axes[0]), C.int(axes[1]), C.int(axes[2]), C.int(axes[3])))
}

// Transpose swaps dims 0 and 1 (a view).
func (a Tensor) Transpose(ctx *Context) Tensor {
	need("transpose", a)
	return ctx.node("transpose", C.ggml_transpose(ctx.ptr, a.ptr))
}

// Cont makes a contiguous copy.
func (a Tensor) Cont(ctx *Context) Tensor {
	need("cont", a)
	return ctx.node("cont", C.ggml_cont(ctx.ptr, a.ptr))
}

// Copy copies a into dst (same element count; converts type, e.g. F32 → F16 for a KV cache) and returns the node
// to add to the graph.
func (a Tensor) Copy(ctx *Context, dst Tensor) Tensor {
	need("cpy", a, dst)
	if a.NumElements() != dst.NumElements() {
		shapeErr("cpy", "%s into %s", shapeOf(a), shapeOf(dst))
	}
	return ctx.node("cpy", C.ggml_cpy(ctx.ptr, a.ptr, dst.ptr))
}

// Cast converts a to type t (a new tensor).
func (a Tensor) Cast(ctx *Context, t Type) Tensor {
	need("cast", a)
	return ctx.node("cast", C.ggml_cast(ctx.ptr, a.ptr, C.enum_ggml_type(t)))
}

// Argmax is the index of the largest value of each row ([ne1] I32) of a matrix.
func (a Tensor) Argmax(ctx *Context) Tensor {
	need("argmax", a)
	if a.Ne(2) != 1 || a.Ne(3) != 1 || a.Type() != TypeF32 {
		shapeErr("argmax", "want an f32 matrix, got %s %s", a.Type(), shapeOf(a))
	}
	return ctx.node("argmax", C.ggml_argmax(ctx.ptr, a.ptr))
}

// Im2Col unfolds image data x [W, H, C, N] for the 2-D convolution kernel k [KW, KH, C, OC] with the given stride
// (no padding, no dilation) into [C·KH·KW, OW, OH, N] of type dst.
func (k Tensor) Im2Col(ctx *Context, x Tensor, strideW, strideH int, dst Type) Tensor {
	need("im2col", k, x)
	if k.Ne(2) != x.Ne(2) || strideW <= 0 || strideH <= 0 || x.Ne(0) < k.Ne(0) || x.Ne(1) < k.Ne(1) {
		shapeErr("im2col", "kernel %s and image %s (stride %d×%d)", shapeOf(k), shapeOf(x), strideW, strideH)
	}
	return ctx.node("im2col", C.ggml_im2col(ctx.ptr, k.ptr, x.ptr, C.int(strideW), C.int(strideH), 0, 0, 1, 1, true, C.enum_ggml_type(dst)))
}

// Conv2D convolves x [W, H, C, N] with kernel k [KW, KH, C, OC] (stride, no padding): result [OW, OH, OC, N].
func (k Tensor) Conv2D(ctx *Context, x Tensor, strideW, strideH int) Tensor {
	need("conv_2d", k, x)
	if k.Ne(2) != x.Ne(2) || strideW <= 0 || strideH <= 0 || x.Ne(0) < k.Ne(0) || x.Ne(1) < k.Ne(1) {
		shapeErr("conv_2d", "kernel %s and image %s (stride %d×%d)", shapeOf(k), shapeOf(x), strideW, strideH)
	}
	return ctx.node("conv_2d", C.ggml_conv_2d(ctx.ptr, k.ptr, x.ptr, C.int(strideW), C.int(strideH), 0, 0, 1, 1))
}

// FlashAttnExt is fused attention softmax(q·kᵀ·scale + mask)·v.
// q [d, nQ, nHead, 1], k [d, nKV, nHeadKV, 1], v [dv, nKV, nHeadKV, 1] (not transposed), mask F16 [nKV, ≥nQ]
// (or nil); the result is [dv, nHead, nQ, 1] (permuted). Precision is forced to F32.
func (q Tensor) FlashAttnExt(ctx *Context, k, v, mask Tensor, scale float32) Tensor {
	need("flash_attn_ext", q, k, v)
	if q.Ne(0) != k.Ne(0) || k.Ne(1) != v.Ne(1) || k.Ne(2) != v.Ne(2) || k.Ne(2) == 0 || q.Ne(2)%k.Ne(2) != 0 ||
		q.Ne(3) != k.Ne(3) || q.Ne(3) != v.Ne(3) {
		shapeErr("flash_attn_ext", "q %s k %s v %s", shapeOf(q), shapeOf(k), shapeOf(v))
	}
	if mask.ptr != nil {
		if mask.Type() != TypeF16 || !mask.IsContiguous() || mask.Ne(0) != k.Ne(1) || mask.Ne(1) < q.Ne(1) ||
			q.Ne(2)%mask.Ne(2) != 0 || q.Ne(3)%mask.Ne(3) != 0 {
			shapeErr("flash_attn_ext", "mask %s (%s) for q %s k %s; want f16 [nKV, ≥nQ]", shapeOf(mask), mask.Type(), shapeOf(q), shapeOf(k))
		}
	}
	r := ctx.node("flash_attn_ext", C.ggml_flash_attn_ext(ctx.ptr, q.ptr, k.ptr, v.ptr, mask.ptr, C.float(scale), 0, 0))
	C.ggml_flash_attn_ext_set_prec(r.ptr, C.GGML_PREC_F32)
	return r
}

// Pad appends p0..p3 zeros at the end of each dimension.
func (a Tensor) Pad(ctx *Context, p0, p1, p2, p3 int) Tensor {
	need("pad", a)
	if p0 < 0 || p1 < 0 || p2 < 0 || p3 < 0 {
		shapeErr("pad", "negative padding")
	}
	if a.Type() != TypeF32 || a.Nb(0) != 4 {
		shapeErr("pad", "input %s (%s) must be f32 with contiguous rows", shapeOf(a), a.Type())
	}
	return ctx.node("pad", C.ggml_pad(ctx.ptr, a.ptr, C.int(p0), C.int(p1), C.int(p2), C.int(p3)))
}

// clone copies a shape for an error message, so that the caller's (often stack-allocated) slice does not escape to
// the heap on the hot path.
func clone(s []int) []int { return append([]int(nil), s...) }

// Arange is the F32 vector start, start+step, … below stop.
func (c *Context) Arange(start, stop, step float32) Tensor {
	if step == 0 || (stop-start)/step <= 0 || (stop-start)/step > 1<<30 {
		shapeErr("arange", "start %g stop %g step %g give no or too many values", start, stop, step)
	}
	return c.node("arange", C.ggml_arange(c.ptr, C.float(start), C.float(stop), C.float(step)))
}

// Step is 1 where a > 0, else 0.
func (a Tensor) Step(ctx *Context) Tensor {
	return unary("step", ctx, a, func(c *C.struct_ggml_context, x *C.struct_ggml_tensor) *C.struct_ggml_tensor {
		return C.ggml_step(c, x)
	})
}

// ScaleBias is a·s + b.
func (a Tensor) ScaleBias(ctx *Context, s, b float32) Tensor {
	need("scale_bias", a)
	return ctx.node("scale_bias", C.ggml_scale_bias(ctx.ptr, a.ptr, C.float(s), C.float(b)))
}

// Repeat4D tiles a to the shape ne0..ne3, each a multiple of a's.
func (a Tensor) Repeat4D(ctx *Context, ne0, ne1, ne2, ne3 int) Tensor {
	need("repeat", a)
	ne := [4]int{ne0, ne1, ne2, ne3}
	for i, n := range ne {
		if n <= 0 || n%a.Ne(i) != 0 {
			shapeErr("repeat", "%s does not tile %v", shapeOf(a), ne)
		}
	}
	return ctx.node("repeat", C.ggml_repeat_4d(ctx.ptr, a.ptr, C.int64_t(ne0), C.int64_t(ne1), C.int64_t(ne2), C.int64_t(ne3)))
}
