package ggml

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/quant"
)

// q4kx16Cases are rows × cols Q4_K matrices times x [cols, n1, n2] (n1·n2 tokens): one and several super-blocks,
// every token count of a tile and its remainders, more tokens than one span of 64, and batch dimensions.
var q4kx16Cases = []q4x16Case{
	{16, 256, 1, 1},
	{32, 512, 1, 1},
	{64, 768, 3, 1},
	{48, 2048, 8, 1},
	{16, 1024, 13, 1},
	{32, 512, 9, 2},
	{128, 1024, 70, 1},
	{32, 256, 35, 2},
}

// q4kx16Fixture returns a random Q4_K matrix (ggml's block layout) and inputs. Rows get offsets so that the mins
// matter; activations have a few large values, as hidden states do, one token's first super-block is zero (the
// quantizer's zero case) and another's largest magnitude occurs with both signs (the first one sets the scale).
func q4kx16Fixture(t testing.TB, c q4x16Case, seed uint64) (w []byte, x []float32) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, uint64(c.rows*c.cols)))
	src := make([]float32, c.rows*c.cols)
	for i := range src {
		if i%32 == 0 && r.IntN(2) == 0 {
			off := float32(0.05 * r.NormFloat64())
			for j := i; j < i+32; j++ {
				src[j] = off
			}
		}
		src[i] += float32(0.05 * r.NormFloat64())
	}
	w, err := quant.Quantize(quant.Q4_K, src, c.cols)
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

// q8kRef quantizes one block of 256 values as ggml's quantize_row_q8_K_ref: the first value of largest magnitude
// m sets iscale = −127/m, q = round(iscale·x) half to even, and the scale is 1/iscale in float32.
func q8kRef(xb []float32) (q [256]int, d float32) {
	amax, m := float32(0), float32(0)
	for _, v := range xb {
		if a := float32(math.Abs(float64(v))); a > amax {
			amax, m = a, v
		}
	}
	if amax == 0 {
		return q, 0
	}
	iscale := -127 / m
	for i, v := range xb {
		q[i] = min(127, int(math.RoundToEven(float64(iscale*v))))
	}
	return q, 1 / iscale
}

// q4kScaleMin unpacks sub-block j's 6-bit scale and min from block_q4_K's 12 bytes (ggml's get_scale_min_k4).
func q4kScaleMin(j int, s []byte) (sc, m int) {
	if j < 4 {
		return int(s[j] & 63), int(s[j+4] & 63)
	}
	return int(s[j+4]&0x0F | (s[j-4]>>6)<<4), int(s[j+4]>>4 | (s[j]>>6)<<4)
}

// q4kx16Ref computes the product the kernel defines, in float64: x quantized per block of 256 as ggml's Q8_K,
// times the Q4_K values in integers per super-block (Σ sc·code·q and Σ m·q), scaled by d·dx and dmin·dx. It
// returns the reference and, per output, Σ|terms| (the scale of float32 rounding).
func q4kx16Ref(w []byte, x []float32, rows, cols int) (ref, mag []float64) {
	ntok := len(x) / cols
	ns := cols / 256
	ref = make([]float64, rows*ntok)
	mag = make([]float64, rows*ntok)
	for t := 0; t < ntok; t++ {
		for s := 0; s < ns; s++ {
			q, dx := q8kRef(x[t*cols+256*s : t*cols+256*s+256])
			for r := 0; r < rows; r++ {
				blk := w[(r*ns+s)*144:]
				d := float64(quant.F16ToF32(uint16(blk[0]) | uint16(blk[1])<<8))
				dmin := float64(quant.F16ToF32(uint16(blk[2]) | uint16(blk[3])<<8))
				isum, msum := 0, 0
				for j := 0; j < 8; j++ {
					sc, m := q4kScaleMin(j, blk[4:16])
					dot, xsum := 0, 0
					for i := 0; i < 32; i++ {
						v := 32*j + i
						b := blk[16+32*(v/64)+v%32]
						code := int(b & 0x0F)
						if v%64 >= 32 {
							code = int(b >> 4)
						}
						dot += code * q[v]
						xsum += q[v]
					}
					isum += sc * dot
					msum += m * xsum
				}
				a, b := float64(isum)*d*float64(dx), float64(msum)*dmin*float64(dx)
				ref[t*rows+r] += a - b
				mag[t*rows+r] += math.Abs(a) + math.Abs(b)
			}
		}
	}
	return ref, mag
}

func cpuDevice(t testing.TB) Device {
	t.Helper()
	for _, d := range Devices() {
		if d.Kind == DeviceCPU {
			return d
		}
	}
	t.Fatal("no CPU device")
	return Device{}
}

func runQ4KX16(t testing.TB, c q4x16Case, w []byte, x []float32, threads int) []float32 {
	t.Helper()
	packed := make([]byte, Q4KX16Size(c.rows, c.cols))
	if err := Q4KX16Repack(packed, w, c.rows, c.cols); err != nil {
		t.Fatal(err)
	}
	n := newNF4Graph(t, cpuDevice(t), threads, TypeI8, []int{len(packed)}, packed, []int{c.cols, c.n1, c.n2}, func(ctx *Context, w, x Tensor) Tensor {
		return w.MulMatQ4KX16(ctx, x, c.rows)
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

// runGGMLQ4K multiplies the Q4_K matrix in ggml's own layout by x with ggml_mul_mat (ggml_vec_dot_q4_K_q8_K).
func runGGMLQ4K(t testing.TB, c q4x16Case, w []byte, x []float32, threads int) []float32 {
	t.Helper()
	n := newNF4Graph(t, cpuDevice(t), threads, TypeQ4_K, []int{c.cols, c.rows}, w, []int{c.cols, c.n1, c.n2}, func(ctx *Context, w, x Tensor) Tensor {
		return w.MulMat(ctx, x)
	})
	defer n.Close()
	y, err := n.run(x)
	if err != nil {
		t.Fatal(err)
	}
	return y
}

// tolQ4KX16 bounds |got − reference| as a fraction of Σ|terms| per output: integer sums are exact, and float32
// scaling and accumulation over cols/256 super-blocks (two terms each) stay within a few ulps of Σ|terms|.
const tolQ4KX16 = 1e-6

// tolGGMLQ4K is the same bound for ggml's own Q4_K product, which splits a super-block's integer sum into 8
// partial sums (vector lanes) scaled and added in float32 separately; their magnitudes can exceed the total's,
// so its rounding error is larger relative to Σ|terms| (measured up to 1.4e-6).
const tolGGMLQ4K = 1e-5

func TestQ4KX16MatMul(t *testing.T) {
	isas := Q4X16SupportedISAs()
	defer SetQ4X16ISA(Q4X16BestISA())
	for ci, c := range q4kx16Cases {
		w, x := q4kx16Fixture(t, c, uint64(ci))
		ref, mag := q4kx16Ref(w, x, c.rows, c.cols)
		name := fmt.Sprintf("%dx%d_x%dx%d", c.rows, c.cols, c.n1, c.n2)
		// ggml's own product of the same Q4_K matrix: the same integer sums, another float order.
		t.Run(name+"/ggml", func(t *testing.T) {
			y := runGGMLQ4K(t, c, w, x, 2)
			worst := 0.0
			for i := range ref {
				d := math.Abs(float64(y[i]) - ref[i])
				if d > tolGGMLQ4K*mag[i]+1e-30 || math.IsNaN(float64(y[i])) {
					t.Fatalf("output %d: ggml gives %g, reference %g (Σ|terms| %g)", i, y[i], ref[i], mag[i])
				}
				if mag[i] > 0 {
					worst = max(worst, d/mag[i])
				}
			}
			t.Logf("max |error|/Σ|terms| %.3g", worst)
		})
		var first []float32
		for _, isa := range isas {
			for _, threads := range []int{1, 3} {
				t.Run(fmt.Sprintf("%s/%s/t%d", name, isa, threads), func(t *testing.T) {
					if err := SetQ4X16ISA(isa); err != nil {
						t.Fatal(err)
					}
					y := runQ4KX16(t, c, w, x, threads)
					worst := 0.0
					for i := range ref {
						d := math.Abs(float64(y[i]) - ref[i])
						if d > tolQ4KX16*mag[i]+1e-30 || math.IsNaN(float64(y[i])) {
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

// TestQ4KX16AgainstFloat checks the whole approximation (int8 activations) against the float64 product of the
// dequantized matrix: rounding x to 127 levels per block of 256 errs by at most half a level per value, so
// |error| ≤ Σ_blocks (max|x_b|/254)·Σ|w_b|, with a 1.01 margin for float32.
func TestQ4KX16AgainstFloat(t *testing.T) {
	c := q4x16Case{64, 1024, 5, 1}
	w, x := q4kx16Fixture(t, c, 9)
	wf, err := quant.Dequantize(quant.Q4_K, w, c.rows*c.cols)
	if err != nil {
		t.Fatal(err)
	}
	y := runQ4KX16(t, c, w, x, 2)
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

func TestQ4KX16BadInput(t *testing.T) {
	src := make([]byte, 16*512/256*144)
	dst := make([]byte, Q4KX16Size(16, 512))
	if len(dst) != 2*2368 {
		t.Fatalf("Q4KX16Size(16, 512) = %d, want %d", len(dst), 2*2368)
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
		{"short source", dst, src[:10], 16, 512, "source has 10 bytes, want 4608"},
		{"short destination", dst[:500], src, 16, 512, "destination has 500 bytes, want 4736"},
		{"destination of the Q4_K size", src, src, 16, 512, "destination has 4608 bytes, want 4736"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := Q4KX16Repack(c.dst, c.src, c.rows, c.cols)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
	ctx := NewContext(16, 0)
	defer ctx.Close()
	w := ctx.NewTensor(TypeI8, 4736)
	x := ctx.NewTensor(TypeF32, 512, 2)
	for _, c := range []struct {
		name string
		op   func()
		want string
	}{
		{"f16 input", func() { w.MulMatQ4KX16(ctx, ctx.NewTensor(TypeF16, 512, 2), 16) }, "want f32"},
		{"f32 weight", func() { ctx.NewTensor(TypeF32, 1184).MulMatQ4KX16(ctx, x, 16) }, "want a contiguous i8"},
		{"size", func() { w.MulMatQ4KX16(ctx, x, 32) }, "has 4736 bytes, want 9472"},
		{"odd rows", func() { w.MulMatQ4KX16(ctx, x, 8) }, "multiple of 16"},
		{"columns", func() { w.MulMatQ4KX16(ctx, ctx.NewTensor(TypeF32, 320, 2), 16) }, "columns of 256"},
		{"transposed input", func() { w.MulMatQ4KX16(ctx, x.Transpose(ctx), 16) }, "contiguous rows"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := Catch(c.op)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}

// BenchmarkQ4KX16MatVec times the decoder's two matrix shapes (4096 × 14336 and 14336 × 4096) times one vector,
// 2 threads, and reports the weight bytes read per second (the q4kx16 layout's size), against ggml's product of
// the same Q4_K matrix in its own layout.
func BenchmarkQ4KX16MatVec(b *testing.B) {
	for _, s := range [][2]int{{4096, 14336}, {14336, 4096}} {
		c := q4x16Case{s[0], s[1], 1, 1}
		w, x := q4kx16Fixture(b, c, 1)
		packed := make([]byte, Q4KX16Size(c.rows, c.cols))
		if err := Q4KX16Repack(packed, w, c.rows, c.cols); err != nil {
			b.Fatal(err)
		}
		for _, k := range []struct {
			name string
			typ  Type
			data []byte
			wne  []int
			op   func(ctx *Context, w, x Tensor) Tensor
		}{
			{"q4kx16", TypeI8, packed, []int{len(packed)}, func(ctx *Context, w, x Tensor) Tensor { return w.MulMatQ4KX16(ctx, x, c.rows) }},
			{"ggml", TypeQ4_K, w, []int{c.cols, c.rows}, func(ctx *Context, w, x Tensor) Tensor { return w.MulMat(ctx, x) }},
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

// quantizeTestBlocks are activation blocks (value i of a block of n) for the quantizer path tests: the
// first-largest-magnitude rule, rounding ties, zeros, NaN and infinities.
func quantizeTestBlocks(r *rand.Rand) map[string]func(i int) float32 {
	return map[string]func(i int) float32{
		"normal": func(int) float32 { return float32(r.NormFloat64()) },
		"ties":   func(int) float32 { return float32(r.IntN(255)-127) * 0.5 },
		"equal_magnitudes": func(i int) float32 {
			if i%2 == 0 {
				return -3
			}
			return 3
		},
		"zeros":      func(int) float32 { return 0 },
		"subnormal":  func(int) float32 { return float32(r.NormFloat64() * 1e-40) },
		"huge":       func(int) float32 { return float32(r.NormFloat64() * 1e38) },
		"nan":        func(i int) float32 { return map[bool]float32{true: float32(math.NaN()), false: 1}[i == 5] },
		"inf":        func(i int) float32 { return map[bool]float32{true: float32(math.Inf(-1)), false: 1}[i == 27] },
		"nan_larger": func(i int) float32 { return map[bool]float32{true: float32(math.NaN()), false: float32(i)}[i == 0] },
		"nan_last": func(i int) float32 {
			return map[bool]float32{true: float32(math.NaN()), false: float32(i%7) - 3}[i%32 == 31]
		},
	}
}

// checkQuantizePaths checks that every activation quantizer path of the q4x16 selection writes the scalar path's
// bytes for blocks of n values (quantize: the row quantizer under the current path).
func checkQuantizePaths(t *testing.T, n int, quantize func([]float32) []byte) {
	t.Helper()
	defer SetQ4X16ISA(Q4X16BestISA())
	for name, gen := range quantizeTestBlocks(rand.New(rand.NewPCG(7, 11))) {
		x := make([]float32, 2*n)
		for i := range x {
			x[i] = gen(i % n)
		}
		if err := SetQ4X16ISA(Q4X16Scalar); err != nil {
			t.Fatal(err)
		}
		want := quantize(x)
		for _, isa := range Q4X16SupportedISAs()[1:] {
			if err := SetQ4X16ISA(isa); err != nil {
				t.Fatal(err)
			}
			if got := quantize(x); !bytes.Equal(got, want) {
				i := 0
				for got[i] == want[i] {
					i++
				}
				t.Errorf("%s/%s: byte %d is %#02x, scalar %#02x", name, isa, i, got[i], want[i])
			}
		}
	}
}

// TestQ8X256QuantizePaths checks that every q8x256 quantizer path this CPU runs writes the scalar path's bytes.
func TestQ8X256QuantizePaths(t *testing.T) { checkQuantizePaths(t, 256, q8x256QuantizeRow) }

// TestQ8X32QuantizePaths does the same for the q8x32 records of q4x16.
func TestQ8X32QuantizePaths(t *testing.T) { checkQuantizePaths(t, 32, q8x32QuantizeRow) }
