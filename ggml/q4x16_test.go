package ggml

import (
	"fmt"
	"github.com/klauspost/cpuid/v2"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/quant"
)

// q4x16Case is a rows × cols Q4_0 matrix times ntok vectors, given as x [cols, n1, n2] (n1·n2 = ntok).
type q4x16Case struct {
	rows, cols, n1, n2 int
}

var q4x16Cases = []q4x16Case{
	{16, 32, 1, 1},
	{32, 64, 1, 1},
	{64, 256, 3, 1},
	{48, 4096, 8, 1},
	{16, 96, 13, 1},
	{32, 160, 9, 2},
	{128, 512, 70, 1}, // more tokens than one span of 64
}

// q4x16Fixture returns a random Q4_0 matrix (ggml's block layout) and inputs; activations have a few large
// values, as hidden states do.
func q4x16Fixture(t testing.TB, c q4x16Case, seed uint64) (w []byte, x []float32) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, uint64(c.rows*c.cols)))
	src := make([]float32, c.rows*c.cols)
	for i := range src {
		src[i] = float32(0.05 * r.NormFloat64())
	}
	w, err := quant.Quantize(quant.Q4_0, src, c.cols)
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
	return w, x
}

// q4x16Ref computes the product the kernel defines, in float64: x quantized to int8 per block of 32 as
// idefics2_q8x32_quantize_row does (round half to even), times the Q4_0 codes, scaled per block. It returns the
// reference and, per output, Σ|terms| (the scale of float32 rounding). The scale of x is rounded to float16, as
// ggml's Q8_0 stores it.
func q4x16Ref(w []byte, x []float32, rows, cols int) (ref, mag []float64) {
	ntok := len(x) / cols
	nb := cols / 32
	ref = make([]float64, rows*ntok)
	mag = make([]float64, rows*ntok)
	for t := 0; t < ntok; t++ {
		for b := 0; b < nb; b++ {
			xb := x[t*cols+32*b : t*cols+32*b+32]
			amax := float32(0)
			for _, v := range xb {
				amax = max(amax, float32(math.Abs(float64(v))))
			}
			d := quant.F16ToF32(quant.F32ToF16(amax / 127))
			id := float32(0)
			if amax > 0 {
				id = 127 / amax
			}
			var q [32]int
			for i, v := range xb {
				q[i] = int(math.RoundToEven(float64(v * id)))
				q[i] = max(-127, min(127, q[i]))
			}
			for r := 0; r < rows; r++ {
				blk := w[(r*nb+b)*18:]
				dw := float64(quant.F16ToF32(uint16(blk[0]) | uint16(blk[1])<<8))
				s := 0
				for i := 0; i < 16; i++ {
					s += (int(blk[2+i]&0x0F) - 8) * q[i]
					s += (int(blk[2+i]>>4) - 8) * q[i+16]
				}
				v := float64(s) * dw * float64(d)
				ref[t*rows+r] += v
				mag[t*rows+r] += math.Abs(v)
			}
		}
	}
	return ref, mag
}

func runQ4X16(t testing.TB, c q4x16Case, w []byte, x []float32, threads int) []float32 {
	t.Helper()
	packed := make([]byte, len(w))
	if err := Q4X16Repack(packed, w, c.rows, c.cols); err != nil {
		t.Fatal(err)
	}
	dev := cpuDevice(t)
	n := newNF4Graph(t, dev, threads, TypeI8, []int{len(packed)}, packed, []int{c.cols, c.n1, c.n2}, func(ctx *Context, w, x Tensor) Tensor {
		return w.MulMatQ4X16(ctx, x, c.rows)
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

// TestSetQ4X16ISA checks that every path is accepted exactly when Q4X16SupportedISAs lists it, that the emulated
// AVX-VNNI path is listed wherever an AVX2 path is, and that an unknown path is refused.
func TestSetQ4X16ISA(t *testing.T) {
	defer SetQ4X16ISA(Q4X16BestISA())
	supported := Q4X16SupportedISAs()
	t.Logf("q4x16 paths on this CPU: %v (best %s)", supported, Q4X16BestISA())
	for _, isa := range []Q4X16ISA{Q4X16Scalar, Q4X16AVX2, Q4X16AVX2VNNI, Q4X16AVX2VNNIEmulated, Q4X16AVX512VNNI, Q4X16NEONDotProd, Q4X16NEONI8MM} {
		err := SetQ4X16ISA(isa)
		if slices.Contains(supported, isa) != (err == nil) {
			t.Fatalf("SetQ4X16ISA(%s) = %v, listed %v", isa, err, slices.Contains(supported, isa))
		}
	}
	if slices.Contains(supported, Q4X16AVX2) != slices.Contains(supported, Q4X16AVX2VNNIEmulated) {
		t.Fatalf("paths %v: the emulated AVX-VNNI path goes with the AVX2 one", supported)
	}
	if b := Q4X16BestISA(); b != Q4X16Scalar && !slices.Contains(supported, b) {
		t.Fatalf("best path %s is not listed in %v", b, supported)
	}
	// The AVX-VNNI path runs exactly where cpuid reports the instructions and the cap allows them.
	level, _, _ := MaxISA()
	vnni := level >= ISAAVX2VNNI && cpuid.CPU.Supports(cpuid.AVX2, cpuid.FMA3, cpuid.F16C, cpuid.AVXVNNI)
	if slices.Contains(supported, Q4X16AVX2VNNI) != vnni {
		t.Fatalf("paths %v under cap %s, but cpuid's AVX2+FMA+F16C+AVX-VNNI says %v", supported, level, vnni)
	}
	// The NEON path runs exactly where cpuid reports the dot-product extension.
	if dp := runtime.GOARCH == "arm64" && cpuid.CPU.Supports(cpuid.ASIMDDP); slices.Contains(supported, Q4X16NEONDotProd) != dp {
		t.Fatalf("paths %v, but cpuid's ASIMDDP on %s says %v", supported, runtime.GOARCH, dp)
	}
	// The i8mm path runs exactly where cpuid reports the int8 matrix multiply as well, and is then the best.
	mm := runtime.GOARCH == "arm64" && cpuid.CPU.Supports(cpuid.ASIMDDP, cpuid.I8MM)
	if slices.Contains(supported, Q4X16NEONI8MM) != mm || (mm && Q4X16BestISA() != Q4X16NEONI8MM) {
		t.Fatalf("paths %v (best %s), but cpuid's ASIMDDP+I8MM on %s says %v", supported, Q4X16BestISA(), runtime.GOARCH, mm)
	}
	if err := SetQ4X16ISA(Q4X16ISA(17)); err == nil {
		t.Fatal("unknown path accepted")
	}
}

func TestQ4X16MatMul(t *testing.T) {
	isas := Q4X16SupportedISAs()
	t.Logf("q4x16 paths on this CPU: %v", isas)
	defer SetQ4X16ISA(Q4X16BestISA())
	for ci, c := range q4x16Cases {
		w, x := q4x16Fixture(t, c, uint64(ci))
		ref, mag := q4x16Ref(w, x, c.rows, c.cols)
		var first []float32
		for _, isa := range isas {
			for _, threads := range []int{1, 3} {
				t.Run(fmt.Sprintf("%dx%d_x%dx%d/%s/t%d", c.rows, c.cols, c.n1, c.n2, isa, threads), func(t *testing.T) {
					if err := SetQ4X16ISA(isa); err != nil {
						t.Fatal(err)
					}
					y := runQ4X16(t, c, w, x, threads)
					// Integer sums are exact; float32 scaling and accumulation over cols/32 blocks stay within
					// a few ulps of Σ|terms|.
					for i := range ref {
						if d := math.Abs(float64(y[i]) - ref[i]); d > 1e-6*mag[i]+1e-30 || math.IsNaN(float64(y[i])) {
							t.Fatalf("output %d: got %g, want %g (Σ|terms| %g)", i, y[i], ref[i], mag[i])
						}
					}
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

// TestQ4X16AgainstFloat checks the whole approximation (int8 activations) against the float64 product of the
// dequantized matrix: the error of rounding x to 127 levels per block of 32 is at most half a level per value,
// so |error| ≤ Σ_blocks (max|x_b|/254)·Σ|w_b|, with a 1.01 margin for float32.
func TestQ4X16AgainstFloat(t *testing.T) {
	c := q4x16Case{64, 1024, 5, 1}
	w, x := q4x16Fixture(t, c, 9)
	wf, err := quant.Dequantize(quant.Q4_0, w, c.rows*c.cols)
	if err != nil {
		t.Fatal(err)
	}
	y := runQ4X16(t, c, w, x, 2)
	for tk := 0; tk < c.n1; tk++ {
		for r := 0; r < c.rows; r++ {
			want, bound := 0.0, 0.0
			for b := 0; b < c.cols/32; b++ {
				amax, wsum := 0.0, 0.0
				for i := 32 * b; i < 32*b+32; i++ {
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

func TestQ4X16BadInput(t *testing.T) {
	src := make([]byte, 16*64/32*18)
	for _, c := range []struct {
		name       string
		dst, src   []byte
		rows, cols int
		want       string
	}{
		{"rows", src, src, 15, 64, "rows a multiple of 16"},
		{"cols", src, src, 16, 48, "columns of 32"},
		{"zero", src, src, 0, 64, "want rows"},
		{"short source", src, src[:10], 16, 64, "want 576"},
		{"short destination", src[:500], src, 16, 64, "want 576"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := Q4X16Repack(c.dst, c.src, c.rows, c.cols)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
	ctx := NewContext(16, 0)
	defer ctx.Close()
	w := ctx.NewTensor(TypeI8, 576)
	x := ctx.NewTensor(TypeF32, 64, 2)
	for _, c := range []struct {
		name string
		op   func()
		want string
	}{
		{"f16 input", func() { w.MulMatQ4X16(ctx, ctx.NewTensor(TypeF16, 64, 2), 16) }, "want f32"},
		{"f32 weight", func() { ctx.NewTensor(TypeF32, 144).MulMatQ4X16(ctx, x, 16) }, "want a contiguous i8"},
		{"size", func() { w.MulMatQ4X16(ctx, x, 32) }, "has 576 bytes, want 1152"},
		{"odd rows", func() { w.MulMatQ4X16(ctx, x, 8) }, "multiple of 16"},
		{"transposed input", func() { w.MulMatQ4X16(ctx, x.Transpose(ctx), 16) }, "contiguous rows"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := Catch(c.op)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}

// BenchmarkQ4X16MatVec times the decoder's two matrix shapes (4096 × 14336 and 14336 × 4096) times one vector,
// 2 threads, and reports the weight bytes read per second.
func BenchmarkQ4X16MatVec(b *testing.B) {
	for _, s := range [][2]int{{4096, 14336}, {14336, 4096}} {
		c := q4x16Case{s[0], s[1], 1, 1}
		b.Run(fmt.Sprintf("%dx%d", c.rows, c.cols), func(b *testing.B) {
			w, x := q4x16Fixture(b, c, 1)
			packed := make([]byte, len(w))
			if err := Q4X16Repack(packed, w, c.rows, c.cols); err != nil {
				b.Fatal(err)
			}
			dev := cpuDevice(b)
			n := newNF4Graph(b, dev, 2, TypeI8, []int{len(packed)}, packed, []int{c.cols, 1, 1}, func(ctx *Context, w, x Tensor) Tensor {
				return w.MulMatQ4X16(ctx, x, c.rows)
			})
			defer n.Close()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := n.run(x); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(w))*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
		})
	}
}

// TestX16RepeatedRuns runs one graph several times for each layout: the op hands out runs of row groups from
// counters kept in the node (x16_sched_next), which must start from zero at every run, with any number of threads.
// 1000 groups make several runs of decreasing length; 17 leave a short last one.
func TestX16RepeatedRuns(t *testing.T) {
	type layout struct {
		name    string
		fixture func(t testing.TB, c q4x16Case, seed uint64) ([]byte, []float32)
		ref     func(w []byte, x []float32, rows, cols int) ([]float64, []float64)
		size    func(rows, cols int) int
		repack  func(dst, src []byte, rows, cols int) error
		mul     func(w Tensor, ctx *Context, x Tensor, rows int) Tensor
	}
	q6ref := func(w []byte, x []float32, rows, cols int) ([]float64, []float64) {
		ref, mag, _ := q6kx16Ref(w, x, rows, cols)
		return ref, mag
	}
	for _, l := range []layout{
		{"q4x16", q4x16Fixture, q4x16Ref, func(r, c int) int { return r * c / 32 * 18 }, Q4X16Repack, Tensor.MulMatQ4X16},
		{"q4kx16", q4kx16Fixture, q4kx16Ref, Q4KX16Size, Q4KX16Repack, Tensor.MulMatQ4KX16},
		{"q6kx16", q6kx16Fixture, q6ref, Q6KX16Size, Q6KX16Repack, Tensor.MulMatQ6KX16},
	} {
		for _, c := range []q4x16Case{{272, 256, 3, 1}, {16000, 256, 1, 1}} {
			t.Run(fmt.Sprintf("%s/%dx%d", l.name, c.rows, c.cols), func(t *testing.T) {
				w, x := l.fixture(t, c, 5)
				packed := make([]byte, l.size(c.rows, c.cols))
				if err := l.repack(packed, w, c.rows, c.cols); err != nil {
					t.Fatal(err)
				}
				dev := cpuDevice(t)
				// Each run gets other inputs, so a run that skipped its groups would leave the previous run's results.
				xs := make([][]float32, 4)
				refs, mags := make([][]float64, 4), make([][]float64, 4)
				for r := range xs {
					xs[r] = make([]float32, len(x))
					for i, v := range x {
						xs[r][i] = v * float32(1+r) * float32(1-2*(r%2))
					}
					refs[r], mags[r] = l.ref(w, xs[r], c.rows, c.cols)
				}
				for _, threads := range []int{1, 2, 3, 5} {
					n := newNF4Graph(t, dev, threads, TypeI8, []int{len(packed)}, packed, []int{c.cols, c.n1, c.n2}, func(ctx *Context, w, x Tensor) Tensor {
						return l.mul(w, ctx, x, c.rows)
					})
					for run := 0; run < 4; run++ {
						y, err := n.run(xs[run])
						if err != nil {
							n.Close()
							t.Fatal(err)
						}
						ref, mag := refs[run], mags[run]
						for i := range ref {
							if d := math.Abs(float64(y[i]) - ref[i]); d > 1e-6*mag[i]+1e-30 || math.IsNaN(float64(y[i])) {
								n.Close()
								t.Fatalf("threads %d run %d output %d: got %g, want %g", threads, run, i, y[i], ref[i])
							}
						}
					}
					n.Close()
				}
			})
		}
	}
}
