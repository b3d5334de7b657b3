package ggml

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/quant"
)

// q6kx16Cases are rows × cols Q6_K matrices times x [cols, n1, n2] (n1·n2 tokens): one and several super-blocks,
// every token count of a tile and its remainders, more tokens than one span of 64, and batch dimensions.
var q6kx16Cases = []q4x16Case{
	{16, 256, 1, 1},
	{32, 512, 1, 1},
	{64, 768, 3, 1},
	{48, 2048, 8, 1},
	{16, 1024, 13, 1},
	{32, 512, 9, 2},
	{128, 1024, 70, 1},
	{32, 256, 35, 2},
}

// q6kx16Fixture returns a random Q6_K matrix (ggml's block layout) and inputs. Rows get sub-blocks of very
// different magnitudes so that the int8 scales span their range with both signs; activations have a few large
// values, one token's first super-block is zero and another's largest magnitude occurs with both signs.
func q6kx16Fixture(t testing.TB, c q4x16Case, seed uint64) (w []byte, x []float32) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, uint64(c.rows*c.cols)))
	src := make([]float32, c.rows*c.cols)
	for i := 0; i < len(src); i += 16 {
		g := float32(0.05 * math.Exp(2*r.NormFloat64()))
		for j := i; j < i+16; j++ {
			src[j] = g * float32(r.NormFloat64())
		}
	}
	w, err := quant.Quantize(quant.Q6_K, src, c.cols)
	if err != nil {
		t.Fatal(err)
	}
	x = make([]float32, c.cols*c.n1*c.n2)
	for i := range x {
		x[i] = float32(r.NormFloat64())
		if r.IntN(50) == 0 {
			x[i] *= 20
		}
	}
	if ntok := c.n1 * c.n2; ntok > 2 {
		clear(x[c.cols : c.cols+256])
		x[2*c.cols+5], x[2*c.cols+9] = -200, 200
	}
	return w, x
}

// q6kx16Ref computes the product the kernel defines, in float64: x quantized per block of 256 as ggml's Q8_K,
// times the Q6_K values in integers per super-block (Σ sc·(code − 32)·q over sub-blocks of 16, decoded as ggml's
// dequantize_row_q6_K reads block_q6_K), scaled by d·dx. It returns the reference and, per output, two scales of
// float32 rounding: mag = Σ over super-blocks of |isum·d·dx| (the kernel's integer sums are exact) and vmag = Σ
// over values of |term·d·dx| (ggml scales partial sums over subsets of the values separately).
func q6kx16Ref(w []byte, x []float32, rows, cols int) (ref, mag, vmag []float64) {
	ntok := len(x) / cols
	ns := cols / 256
	ref = make([]float64, rows*ntok)
	mag = make([]float64, rows*ntok)
	vmag = make([]float64, rows*ntok)
	for t := 0; t < ntok; t++ {
		for s := 0; s < ns; s++ {
			q, dx := q8kRef(x[t*cols+256*s : t*cols+256*s+256])
			for r := 0; r < rows; r++ {
				blk := w[(r*ns+s)*210:]
				d := float64(quant.F16ToF32(uint16(blk[208]) | uint16(blk[209])<<8))
				isum, asum := 0, 0
				for v := 0; v < 256; v++ {
					n, l, part := v/128, v%32, (v%128)/32
					ql := blk[64*n+l+32*(part%2)]
					code := int(ql & 0x0F)
					if part >= 2 {
						code = int(ql >> 4)
					}
					code |= int(blk[128+32*n+l]>>(2*part)&3) << 4
					term := int(int8(blk[192+v/16])) * (code - 32) * q[v]
					isum += term
					asum += max(term, -term)
				}
				a := float64(isum) * d * float64(dx)
				ref[t*rows+r] += a
				mag[t*rows+r] += math.Abs(a)
				vmag[t*rows+r] += float64(asum) * math.Abs(d*float64(dx))
			}
		}
	}
	return ref, mag, vmag
}

func runQ6KX16(t testing.TB, c q4x16Case, w []byte, x []float32, threads int) []float32 {
	t.Helper()
	packed := make([]byte, Q6KX16Size(c.rows, c.cols))
	if err := Q6KX16Repack(packed, w, c.rows, c.cols); err != nil {
		t.Fatal(err)
	}
	n := newNF4Graph(t, cpuDevice(t), threads, TypeI8, []int{len(packed)}, packed, []int{c.cols, c.n1, c.n2}, func(ctx *Context, w, x Tensor) Tensor {
		return w.MulMatQ6KX16(ctx, x, c.rows)
	})
	defer n.Close()
	if got := n.out.Ne4(); got != [4]int{c.rows, c.n1, c.n2, 1} {
		t.Fatalf("output shape %v", got)
	}
	y, err := n.run(x)
	if err != nil {
		t.Fatal(err)
	}
	return y
}

// runGGMLQ6K multiplies the Q6_K matrix in ggml's own layout by x with ggml_mul_mat (ggml_vec_dot_q6_K_q8_K).
func runGGMLQ6K(t testing.TB, c q4x16Case, w []byte, x []float32, threads int) []float32 {
	t.Helper()
	n := newNF4Graph(t, cpuDevice(t), threads, TypeQ6_K, []int{c.cols, c.rows}, w, []int{c.cols, c.n1, c.n2}, func(ctx *Context, w, x Tensor) Tensor {
		return w.MulMat(ctx, x)
	})
	defer n.Close()
	y, err := n.run(x)
	if err != nil {
		t.Fatal(err)
	}
	return y
}

// tolQ6KX16 bounds |got − reference| as a fraction of Σ over super-blocks of |isum·d·dx| per output: integer sums
// are exact, and float32 scaling and accumulation over cols/256 super-blocks (one term each) stay within a few
// ulps of it.
const tolQ6KX16 = 1e-6

// tolGGMLQ6K bounds ggml's own Q6_K product as a fraction of Σ over values of |term·d·dx|: it scales partial
// integer sums (vector lanes) in float32 separately, whose magnitudes can far exceed a super-block's total when
// sub-blocks cancel (the fixture's scales span a wide range), so its error is measured against the values' terms
// (measured up to 1.3e-7; against Σ over super-blocks it reached 1.3e-5).
const tolGGMLQ6K = 1e-6

func TestQ6KX16MatMul(t *testing.T) {
	isas := Q4X16SupportedISAs()
	defer SetQ4X16ISA(Q4X16BestISA())
	for ci, c := range q6kx16Cases {
		w, x := q6kx16Fixture(t, c, uint64(ci))
		ref, mag, vmag := q6kx16Ref(w, x, c.rows, c.cols)
		name := fmt.Sprintf("%dx%d_x%dx%d", c.rows, c.cols, c.n1, c.n2)
		// ggml's own product of the same Q6_K matrix: the same integer sums, another float order.
		t.Run(name+"/ggml", func(t *testing.T) {
			y := runGGMLQ6K(t, c, w, x, 2)
			worst := 0.0
			for i := range ref {
				d := math.Abs(float64(y[i]) - ref[i])
				if d > tolGGMLQ6K*vmag[i]+1e-30 || math.IsNaN(float64(y[i])) {
					t.Fatalf("output %d: ggml gives %g, reference %g (Σ|terms| %g)", i, y[i], ref[i], vmag[i])
				}
				if vmag[i] > 0 {
					worst = max(worst, d/vmag[i])
				}
			}
			t.Logf("max |error|/Σ|value terms| %.3g", worst)
		})
		var first []float32
		for _, isa := range isas {
			for _, threads := range []int{1, 3} {
				t.Run(fmt.Sprintf("%s/%s/t%d", name, isa, threads), func(t *testing.T) {
					if err := SetQ4X16ISA(isa); err != nil {
						t.Fatal(err)
					}
					y := runQ6KX16(t, c, w, x, threads)
					worst := 0.0
					for i := range ref {
						d := math.Abs(float64(y[i]) - ref[i])
						if d > tolQ6KX16*mag[i]+1e-30 || math.IsNaN(float64(y[i])) {
							t.Fatalf("output %d: got %g, want %g (Σ|terms| %g)", i, y[i], ref[i], mag[i])
						}
						if mag[i] > 0 {
							worst = max(worst, d/mag[i])
						}
					}
					t.Logf("max |error|/Σ|terms| %.3g", worst)
					// Every path and thread count gives the same bits (the scalar path uses the same
					// operations, fmaf included).
					if first == nil {
						first = y
					}
					for i := range y {
						if math.Float32bits(y[i]) != math.Float32bits(first[i]) {
							t.Fatalf("output %d: %g differs from the first path's %g", i, y[i], first[i])
						}
					}
				})
			}
		}
	}
}

// TestQ6KX16AgainstFloat checks the whole approximation (int8 activations) against the float64 product of the
// dequantized matrix (quant's dequantizer, an independent reading of block_q6_K): rounding x to 127 levels per
// block of 256 errs by at most half a level per value, so |error| ≤ Σ_blocks (max|x_b|/254)·Σ|w_b|, with a 1.01
// margin for float32.
func TestQ6KX16AgainstFloat(t *testing.T) {
	c := q4x16Case{64, 1024, 5, 1}
	w, x := q6kx16Fixture(t, c, 9)
	wf, err := quant.Dequantize(quant.Q6_K, w, c.rows*c.cols)
	if err != nil {
		t.Fatal(err)
	}
	y := runQ6KX16(t, c, w, x, 2)
	for tk := 0; tk < c.n1; tk++ {
		for r := 0; r < c.rows; r++ {
			want, bound := 0.0, 0.0
			for b := 0; b < c.cols/256; b++ {
				amax, wsum := 0.0, 0.0
				for i := 256 * b; i < 256*b+256; i++ {
					want += float64(wf[r*c.cols+i]) * float64(x[tk*c.cols+i])
					amax = math.Max(amax, math.Abs(float64(x[tk*c.cols+i])))
					wsum += math.Abs(float64(wf[r*c.cols+i]))
				}
				bound += amax / 254 * wsum
			}
			if d := math.Abs(float64(y[tk*c.rows+r]) - want); d > 1.01*bound {
				t.Fatalf("token %d row %d: got %g, want %g ± %g", tk, r, y[tk*c.rows+r], want, bound)
			}
		}
	}
}

func TestQ6KX16BadInput(t *testing.T) {
	src := make([]byte, 16*512/256*210)
	dst := make([]byte, Q6KX16Size(16, 512))
	if len(dst) != 2*3360 {
		t.Fatalf("Q6KX16Size(16, 512) = %d, want %d", len(dst), 2*3360)
	}
	for _, c := range []struct {
		name       string
		dst, src   []byte
		rows, cols int
		want       string
	}{
		{"rows", dst, src, 15, 512, "rows a multiple of 16"},
		{"cols", dst, src, 16, 288, "columns of 256"},
		{"zero", dst, src, 0, 512, "want rows"},
		{"short source", dst, src[:10], 16, 512, "source has 10 bytes, want 6720"},
		{"short destination", dst[:500], src, 16, 512, "destination has 500 bytes, want 6720"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := Q6KX16Repack(c.dst, c.src, c.rows, c.cols)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
	ctx := NewContext(16, 0)
	defer ctx.Close()
	w := ctx.NewTensor(TypeI8, 6720)
	x := ctx.NewTensor(TypeF32, 512, 2)
	for _, c := range []struct {
		name string
		op   func()
		want string
	}{
		{"f16 input", func() { w.MulMatQ6KX16(ctx, ctx.NewTensor(TypeF16, 512, 2), 16) }, "want f32"},
		{"f32 weight", func() { ctx.NewTensor(TypeF32, 1680).MulMatQ6KX16(ctx, x, 16) }, "want a contiguous i8"},
		{"size", func() { w.MulMatQ6KX16(ctx, x, 32) }, "has 6720 bytes, want 13440"},
		{"odd rows", func() { w.MulMatQ6KX16(ctx, x, 8) }, "multiple of 16"},
		{"columns", func() { w.MulMatQ6KX16(ctx, ctx.NewTensor(TypeF32, 320, 2), 16) }, "columns of 256"},
		{"transposed input", func() { w.MulMatQ6KX16(ctx, x.Transpose(ctx), 16) }, "contiguous rows"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := Catch(c.op)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}

// BenchmarkQ6KX16MatVec times the decoder's ffn_down shape (4096 × 14336) and the output projection's head
// (32000 × 4096) times one vector, 2 threads, and reports the weight bytes read per second, against ggml's product
// of the same Q6_K matrix in its own layout.
func BenchmarkQ6KX16MatVec(b *testing.B) {
	for _, s := range [][2]int{{4096, 14336}, {32000, 4096}} {
		c := q4x16Case{s[0], s[1], 1, 1}
		w, x := q6kx16Fixture(b, c, 1)
		packed := make([]byte, Q6KX16Size(c.rows, c.cols))
		if err := Q6KX16Repack(packed, w, c.rows, c.cols); err != nil {
			b.Fatal(err)
		}
		for _, k := range []struct {
			name string
			typ  Type
			data []byte
			wne  []int
			op   func(ctx *Context, w, x Tensor) Tensor
		}{
			{"q6kx16", TypeI8, packed, []int{len(packed)}, func(ctx *Context, w, x Tensor) Tensor { return w.MulMatQ6KX16(ctx, x, c.rows) }},
			{"ggml", TypeQ6_K, w, []int{c.cols, c.rows}, func(ctx *Context, w, x Tensor) Tensor { return w.MulMat(ctx, x) }},
		} {
			b.Run(fmt.Sprintf("%dx%d/%s", c.rows, c.cols, k.name), func(b *testing.B) {
				n := newNF4Graph(b, cpuDevice(b), 2, k.typ, k.wne, k.data, []int{c.cols, 1, 1}, k.op)
				defer n.Close()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := n.run(x); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(k.data))*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
			})
		}
	}
}
