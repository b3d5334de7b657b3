package graph

import (
	"math"

	"github.com/idefics2-go/idefics2/ggml"
)

// Linear is y = W·x (+ b): weight [in, out], optional bias [out]. Tail, when set, holds the last rows of W
// (outputs) in a separate tensor (Weights.Tail): y is then W·x over the head rows followed by Tail·x.
type Linear struct {
	Weight ggml.Tensor `gguf:"weight"`
	Bias   ggml.Tensor `gguf:"bias,optional"`
	Tail   ggml.Tensor `gguf:"-"`
}

// Forward maps x [in, n] to [out, n].
func (l Linear) Forward(ctx *ggml.Context, x ggml.Tensor) ggml.Tensor {
	var y ggml.Tensor
	if v, ok := nf4Weights.Load(l.Weight); ok {
		info := v.(nf4Info)
		if !x.IsContiguous() {
			x = x.Cont(ctx)
		}
		if info.repacked {
			y = l.Weight.MulMatNF4x16(ctx, x, info.shape[1])
		} else {
			y = l.Weight.MulMatNF4(ctx, x, info.shape[1], info.blockSize)
		}
	} else if v, ok := ownWeights.Load(l.Weight); ok {
		ow := v.(ownWeight)
		if !x.IsContiguous() {
			x = x.Cont(ctx)
		}
		y = ow.layout.mulMat(l.Weight, ctx, x, ow.rows)
	} else {
		y = l.Weight.MulMat(ctx, x)
	}
	if !l.Tail.IsNil() {
		y = y.Concat(ctx, l.Tail.MulMat(ctx, x), 0)
	}
	if !l.Bias.IsNil() {
		y = y.Add(ctx, l.Bias)
	}
	return y
}

// ForwardGEMM is Forward for the CPU's tiled GEMM (ggml's llamafile sgemm), which needs the inner dimension to be a
// multiple of its vector block (32 values for BF16 with AVX512-BF16, 16 for F16 and F32 with AVX-512); otherwise
// ggml falls back to one dot product per output, about 2× slower. When split is set and the weight's inner size
// is not such a multiple (the vision MLP's 4304 for BF16), the product is split into a block-aligned part and
// the short rest, whose sum is the same product.
func (l Linear) ForwardGEMM(ctx *ggml.Context, x ggml.Tensor, split bool) ggml.Tensor {
	block := 0
	switch l.Weight.Type() {
	case ggml.TypeBF16:
		block = 32
	case ggml.TypeF16, ggml.TypeF32:
		block = 16
	}
	k := l.Weight.Ne(0)
	if isCustomWeight(l.Weight) || !split || block == 0 || k%block == 0 || k < block ||
		l.Weight.Ne(2) != 1 || x.Ne(2) != 1 {
		return l.Forward(ctx, x)
	}
	k1 := k / block * block
	w, m, n := l.Weight, l.Weight.Ne(1), x.Ne(1)
	esz, xsz := w.Type().TypeSize(), x.Type().TypeSize()
	w1 := w.View(ctx, 0, []int{k1, m}, []int{w.Nb(1)})
	w2 := w.View(ctx, k1*esz, []int{k - k1, m}, []int{w.Nb(1)})
	x1 := x.View(ctx, 0, []int{k1, n}, []int{x.Nb(1)})
	x2 := x.View(ctx, k1*xsz, []int{k - k1, n}, []int{x.Nb(1)})
	y := w1.MulMat(ctx, x1).Add(ctx, w2.MulMat(ctx, x2))
	if !l.Bias.IsNil() {
		y = y.Add(ctx, l.Bias)
	}
	return y
}

// isCustomWeight reports whether a weight is held in one of this project's own layouts (NF4 stream, q4x16,
// q4kx16) and multiplied by its custom op.
func isCustomWeight(t ggml.Tensor) bool {
	if _, ok := nf4Weights.Load(t); ok {
		return true
	}
	_, ok := ownWeights.Load(t)
	return ok
}

// LayerNorm is torch.nn.LayerNorm with affine weight and bias over ne0.
type LayerNorm struct {
	Weight ggml.Tensor `gguf:"weight"`
	Bias   ggml.Tensor `gguf:"bias"`
}

// Forward normalizes each column of x.
func (n LayerNorm) Forward(ctx *ggml.Context, x ggml.Tensor, eps float32) ggml.Tensor {
	return x.Norm(ctx, eps).Mul(ctx, n.Weight).Add(ctx, n.Bias)
}

// RMSNorm is the Llama/Mistral RMSNorm: w ⊙ x / sqrt(mean(x²) + eps).
type RMSNorm struct {
	Weight ggml.Tensor `gguf:"weight"`
}

// Forward normalizes each column of x.
func (n RMSNorm) Forward(ctx *ggml.Context, x ggml.Tensor, eps float32) ggml.Tensor {
	return x.RMSNorm(ctx, eps).Mul(ctx, n.Weight)
}

// SwiGLU is down(SiLU(gate(x)) ⊙ up(x)) without biases (Mistral MLP, Idefics2 connector and perceiver MLPs).
type SwiGLU struct {
	Gate Linear `gguf:"gate"`
	Up   Linear `gguf:"up"`
	Down Linear `gguf:"down"`
}

// Forward maps x [in, n] to [out, n].
func (m SwiGLU) Forward(ctx *ggml.Context, x ggml.Tensor) ggml.Tensor {
	return m.Down.Forward(ctx, m.Gate.Forward(ctx, x).SwiGLU(ctx, m.Up.Forward(ctx, x)))
}

// FFN is the SwiGLU MLP of decoder and perceiver layers, named ffn_gate / ffn_up / ffn_down in GGUF.
type FFN struct {
	Gate Linear `gguf:"ffn_gate"`
	Up   Linear `gguf:"ffn_up"`
	Down Linear `gguf:"ffn_down"`
}

// Forward maps x [in, n] to [out, n]. Gate and up stacked at load (fusedProduct) take one product.
func (m FFN) Forward(ctx *ggml.Context, x ggml.Tensor) ggml.Tensor {
	if ys, ok := fusedProduct(ctx, x, m.Gate, m.Up); ok {
		return m.Down.Forward(ctx, ys[0].SwiGLU(ctx, ys[1]))
	}
	return m.Down.Forward(ctx, m.Gate.Forward(ctx, x).SwiGLU(ctx, m.Up.Forward(ctx, x)))
}

func sqrt(x float64) float64 { return math.Sqrt(x) }
