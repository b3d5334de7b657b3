package graph

import (
	"math"

	"github.com/idefics2-go/idefics2/ggml"
)

// Linear is y = W·x (+ b): weight [in, out], optional bias [out]. The weight carries the kernel its placement chose
// (Plan); Tail, when set, holds W's last rows in the file's layout, multiplied by ggml_mul_mat and appended. Run-time
// LoRA adapters add s·B·(A·x) to y, whatever W's layout.
type Linear struct {
	Weight ggml.Tensor
	Bias   ggml.Tensor
	Tail   ggml.Tensor

	kernel    Kernel
	rows      int // outputs of Weight (the head's rows when split)
	blockSize int // NF4 block size
	group     *stackedGroup
	member    int        // index in group
	loras     []loraPair // run-time adapters, in load order
}

// kernels multiply a placed weight w by x [in, n…]; rows and blockSize are the weight's.
var kernels = [...]func(w ggml.Tensor, ctx *ggml.Context, x ggml.Tensor, rows, blockSize int) ggml.Tensor{
	KernelMulMat: func(w ggml.Tensor, ctx *ggml.Context, x ggml.Tensor, _, _ int) ggml.Tensor { return w.MulMat(ctx, x) },
	KernelQ4X16: func(w ggml.Tensor, ctx *ggml.Context, x ggml.Tensor, rows, _ int) ggml.Tensor {
		return w.MulMatQ4X16(ctx, x, rows)
	},
	KernelQ4KX16: func(w ggml.Tensor, ctx *ggml.Context, x ggml.Tensor, rows, _ int) ggml.Tensor {
		return w.MulMatQ4KX16(ctx, x, rows)
	},
	KernelQ6KX16: func(w ggml.Tensor, ctx *ggml.Context, x ggml.Tensor, rows, _ int) ggml.Tensor {
		return w.MulMatQ6KX16(ctx, x, rows)
	},
	KernelNF4: func(w ggml.Tensor, ctx *ggml.Context, x ggml.Tensor, rows, bs int) ggml.Tensor {
		return w.MulMatNF4(ctx, x, rows, bs)
	},
	KernelNF4X16: func(w ggml.Tensor, ctx *ggml.Context, x ggml.Tensor, rows, _ int) ggml.Tensor {
		return w.MulMatNF4x16(ctx, x, rows)
	},
}

// mul multiplies a weight by x with kernel k; this project's kernels read x as a contiguous matrix.
func mul(k Kernel, w ggml.Tensor, ctx *ggml.Context, x ggml.Tensor, rows, blockSize int) ggml.Tensor {
	if k != KernelMulMat && !x.IsContiguous() {
		x = x.Cont(ctx)
	}
	return kernels[k](w, ctx, x, rows, blockSize)
}

// Forward maps x [in, n] to [out, n].
func (l Linear) Forward(ctx *ggml.Context, x ggml.Tensor) ggml.Tensor {
	y := mul(l.kernel, l.Weight, ctx, x, l.rows, l.blockSize)
	if !l.Tail.IsNil() {
		y = y.Concat(ctx, l.Tail.MulMat(ctx, x), 0)
	}
	if !l.Bias.IsNil() {
		y = y.Add(ctx, l.Bias)
	}
	return addLoRA(ctx, y, x, l.loras)
}

// ForwardGEMM is Forward for the CPU's tiled GEMM (ggml's llamafile sgemm), which needs the inner dimension to be a
// multiple of its vector block (32 values for BF16 with AVX512-BF16, 16 for F16 and F32 with AVX-512); otherwise
// ggml computes one dot product per output. When split is set and the weight's inner size is not such a multiple
// (the vision MLP's 4304 for BF16), the product is split into a block-aligned part and the short rest, whose sum is
// the same product.
func (l Linear) ForwardGEMM(ctx *ggml.Context, x ggml.Tensor, split bool) ggml.Tensor {
	block := 0
	switch l.Weight.Type() {
	case ggml.TypeBF16:
		block = 32
	case ggml.TypeF16, ggml.TypeF32:
		block = 16
	}
	k := l.Weight.Ne(0)
	if l.kernel != KernelMulMat || !l.Tail.IsNil() || len(l.loras) > 0 || !split || block == 0 || k%block == 0 || k < block ||
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

// stacked multiplies x by the matrices ls when they are the members of one stacked group, in order, without biases
// or tails, and returns the member products as views of one result ([rows_i, n] each, strided by the group's
// width, or each member's own result where a run-time adapter adds to it; ys[i] for i < len(ls)); ok is false
// otherwise. It allocates no Go memory (decode steps).
func stacked(ctx *ggml.Context, x ggml.Tensor, ls ...Linear) (ys [maxFused]ggml.Tensor, ok bool) {
	g := ls[0].group
	if g == nil || len(g.rows) != len(ls) || x.Ne(2) != 1 || x.Ne(3) != 1 {
		return ys, false
	}
	for i, l := range ls {
		if l.group != g || l.member != i || !l.Bias.IsNil() || !l.Tail.IsNil() {
			return ys, false
		}
	}
	y := mul(g.kernel, g.parent, ctx, x, g.total, 0) // [total, n…]
	off := 0
	for i, r := range g.rows {
		ys[i] = y.View(ctx, off*y.Type().TypeSize(), []int{r, y.Ne(1)}, []int{y.Nb(1)})
		ys[i] = addLoRA(ctx, ys[i], x, ls[i].loras)
		off += r
	}
	return ys, true
}

// LayerNorm is torch.nn.LayerNorm with affine weight and bias over ne0.
type LayerNorm struct {
	Weight, Bias ggml.Tensor
}

// Forward normalizes each column of x.
func (n LayerNorm) Forward(ctx *ggml.Context, x ggml.Tensor, eps float32) ggml.Tensor {
	return x.Norm(ctx, eps).Mul(ctx, n.Weight).Add(ctx, n.Bias)
}

// RMSNorm is the Llama/Mistral RMSNorm: w ⊙ x / sqrt(mean(x²) + eps).
type RMSNorm struct {
	Weight ggml.Tensor
}

// Forward normalizes each column of x.
func (n RMSNorm) Forward(ctx *ggml.Context, x ggml.Tensor, eps float32) ggml.Tensor {
	return x.RMSNorm(ctx, eps).Mul(ctx, n.Weight)
}

// SwiGLU is down(SiLU(gate(x)) ⊙ up(x)) without biases: the Mistral MLP, the connector's modality projection and
// the perceiver's MLP (Idefics2MLP, MistralMLP).
type SwiGLU struct {
	Gate, Up, Down Linear
}

// bindSwiGLU binds gate, up [in, inner] and down [inner, out] named prefix+"gate" etc. ("ffn_" for layers, "" for
// the modality projection).
func bindSwiGLU(b binder, prefix string, in, inner, out int) SwiGLU {
	return SwiGLU{
		Gate: b.linear(prefix+"gate", in, inner, false),
		Up:   b.linear(prefix+"up", in, inner, false),
		Down: b.linear(prefix+"down", inner, out, false),
	}
}

// Forward maps x [in, n] to [out, n]. Gate and up stacked at load take one product.
func (m SwiGLU) Forward(ctx *ggml.Context, x ggml.Tensor) ggml.Tensor {
	if ys, ok := stacked(ctx, x, m.Gate, m.Up); ok {
		return m.Down.Forward(ctx, ys[0].SwiGLU(ctx, ys[1]))
	}
	return m.Down.Forward(ctx, m.Gate.Forward(ctx, x).SwiGLU(ctx, m.Up.Forward(ctx, x)))
}

// GELUMLP is fc2(GELU_tanh(fc1(x))) with biases: the vision encoder's MLP (Idefics2VisionMLP).
type GELUMLP struct {
	Up, Down Linear // HF fc1, fc2
	gelu     GELU
	padGEMM  bool // split fc2's product for the CPU's tiled GEMM (Linear.ForwardGEMM)
}

// Forward maps x [hidden, n] to [hidden, n].
func (m GELUMLP) Forward(ctx *ggml.Context, x ggml.Tensor) ggml.Tensor {
	f := m.Up.Forward(ctx, x)
	if m.gelu == GELUExact {
		f = f.GELUTanhExact(ctx)
	} else {
		f = f.GELU(ctx)
	}
	return m.Down.ForwardGEMM(ctx, f, m.padGEMM)
}

func sqrt(x float64) float64 { return math.Sqrt(x) }
