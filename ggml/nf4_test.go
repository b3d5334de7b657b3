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

// nf4Tol is the tolerance of the NF4 kernel against the float64 reference, relative to
// Σ|w·x| of each output: float32 accumulation over up to a few thousand terms in a different
// order (per-block partial sums scaled by absmax, SIMD lanes) stays well below 1e-5.
const nf4Tol = 1e-5

type nf4Case struct {
	rows, cols, bs, ntok int
}

// nf4Cases cover full blocks, blocks straddling rows (cols not a multiple of the block, like
// SigLIP's 4304), odd cols (rows starting mid-byte), several vectors (tiled path) and large blocks.
var nf4Cases = []nf4Case{
	{64, 256, 64, 1},
	{37, 4304, 64, 1},
	{33, 130, 64, 3},
	{5, 7, 64, 2},
	{9, 65, 64, 1},
	{16, 1024, 128, 5},
	{6, 4096, 4096, 1},
	{3, 64, 64, 9},
	{11, 192, 64, 4},
}

// nf4Fixture quantizes a random rows×cols matrix and returns its stream, the dequantized matrix
// (quant's reference decoder, bit-identical to bitsandbytes) and random inputs.
func nf4Fixture(t testing.TB, c nf4Case, seed uint64) (stream []byte, w []float32, x []float32) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, uint64(c.rows*c.cols)))
	src := make([]float32, c.rows*c.cols)
	for i := range src {
		src[i] = float32(0.05 * r.NormFloat64())
	}
	q, err := quant.QuantizeNF4(src, c.bs)
	if err != nil {
		t.Fatal(err)
	}
	if stream, err = q.EncodeStream(); err != nil {
		t.Fatal(err)
	}
	if w, err = q.Dequantize(); err != nil {
		t.Fatal(err)
	}
	x = make([]float32, c.cols*c.ntok)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return stream, w, x
}

// nf4Check compares y [rows, ntok] with the float64 product of w and x.
func nf4Check(t *testing.T, c nf4Case, w, x, y []float32) {
	t.Helper()
	worst, worstAt := 0.0, -1
	for tok := 0; tok < c.ntok; tok++ {
		for r := 0; r < c.rows; r++ {
			var ref, mag float64
			for k := 0; k < c.cols; k++ {
				p := float64(w[r*c.cols+k]) * float64(x[tok*c.cols+k])
				ref += p
				mag += math.Abs(p)
			}
			got := float64(y[tok*c.rows+r])
			e := math.Abs(got-ref) / (mag + 1e-30)
			if e > worst {
				worst, worstAt = e, tok*c.rows+r
			}
		}
	}
	if worst > nf4Tol {
		t.Fatalf("worst relative error %.3g at output %d, tolerance %g", worst, worstAt, nf4Tol)
	}
}

func TestNF4MatMulMatchesReference(t *testing.T) {
	defer SetNF4ISA(NF4BestISA())
	for _, isa := range NF4SupportedISAs() {
		if err := SetNF4ISA(isa); err != nil {
			t.Fatal(err)
		}
		for _, c := range nf4Cases {
			for _, threads := range []int{1, 3} {
				t.Run(fmt.Sprintf("%s/%dx%d/bs%d/ntok%d/threads%d", isa, c.rows, c.cols, c.bs, c.ntok, threads), func(t *testing.T) {
					stream, w, x := nf4Fixture(t, c, 1)
					y, err := NF4MatMul(stream, c.rows, c.cols, c.bs, x, threads)
					if err != nil {
						t.Fatal(err)
					}
					nf4Check(t, c, w, x, y)
				})
			}
		}
	}
}

// TestNF4ISAsAgree checks every SIMD path against the scalar path on the same data.
func TestNF4ISAsAgree(t *testing.T) {
	defer SetNF4ISA(NF4BestISA())
	c := nf4Case{48, 4304, 64, 6}
	stream, _, x := nf4Fixture(t, c, 2)
	if err := SetNF4ISA(NF4Scalar); err != nil {
		t.Fatal(err)
	}
	want, err := NF4MatMul(stream, c.rows, c.cols, c.bs, x, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, isa := range NF4SupportedISAs()[1:] {
		if err := SetNF4ISA(isa); err != nil {
			t.Fatal(err)
		}
		got, err := NF4MatMul(stream, c.rows, c.cols, c.bs, x, 2)
		if err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if d := math.Abs(float64(got[i] - want[i])); d > 1e-4*(1+math.Abs(float64(want[i]))) {
				t.Fatalf("%s: output %d = %v, scalar %v", isa, i, got[i], want[i])
			}
		}
	}
}

func TestSetNF4ISA(t *testing.T) {
	defer SetNF4ISA(NF4BestISA())
	for _, isa := range []NF4ISA{NF4Scalar, NF4AVX2, NF4AVX2VNNI, NF4AVX2VNNIEmulated, NF4AVX512, NF4NEON, NF4AVX512VNNI, NF4NEONDotProd, NF4NEONI8MM} {
		supported := false
		for _, s := range NF4SupportedISAs() {
			supported = supported || s == isa
		}
		err := SetNF4ISA(isa)
		if supported != (err == nil) {
			t.Fatalf("SetNF4ISA(%s) = %v, supported %v", isa, err, supported)
		}
		if err == nil && NF4CurrentISA() != isa {
			t.Fatalf("current %s after setting %s", NF4CurrentISA(), isa)
		}
	}
	// The AVX-VNNI level runs exactly where cpuid reports the instructions and the cap allows them.
	level, _, _ := MaxISA()
	vnni := level >= ISAAVX2VNNI && cpuid.CPU.Supports(cpuid.AVX2, cpuid.FMA3, cpuid.AVXVNNI)
	if got := slices.Contains(NF4SupportedISAs(), NF4AVX2VNNI); got != vnni {
		t.Fatalf("NF4 path avx2-vnni listed %v under cap %s, but cpuid's AVX2+FMA+AVX-VNNI says %v", got, level, vnni)
	}
	// The NEON paths run exactly where cpuid reports their extensions.
	for _, c := range []struct {
		isa   NF4ISA
		feats []cpuid.FeatureID
	}{{NF4NEONDotProd, []cpuid.FeatureID{cpuid.ASIMDDP}}, {NF4NEONI8MM, []cpuid.FeatureID{cpuid.ASIMDDP, cpuid.I8MM}}} {
		want := runtime.GOARCH == "arm64" && cpuid.CPU.Supports(c.feats...)
		if got := slices.Contains(NF4SupportedISAs(), c.isa); got != want {
			t.Fatalf("NF4 path %s listed %v, but cpuid on %s says %v", c.isa, got, runtime.GOARCH, want)
		}
	}
	if err := SetNF4ISA(NF4ISA(17)); err == nil {
		t.Fatal("unknown path accepted")
	}
	t.Logf("best NF4 path on this CPU: %s", NF4BestISA())
}

func TestNF4MatMulBadInput(t *testing.T) {
	stream := make([]byte, 36*4)
	cases := []struct {
		name           string
		w              []byte
		rows, cols, bs int
		x              []float32
		want           string
	}{
		{"zero rows", stream, 0, 64, 64, make([]float32, 64), "bad shape"},
		{"block size 32", stream, 4, 64, 32, make([]float32, 64), "block size 32"},
		{"short stream", stream[:100], 4, 64, 64, make([]float32, 64), "100 bytes, want 144"},
		{"ragged input", stream, 4, 64, 64, make([]float32, 65), "whole number of vectors"},
		{"huge shape", stream, math.MaxInt / 2, 64, 64, make([]float32, 64), "overflows"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := NF4MatMul(c.w, c.rows, c.cols, c.bs, c.x, 1)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}

// nf4Graph holds a weight buffer and a graph computing one product on a device.
type nf4Graph struct {
	r    *Runner
	w    Tensor
	wctx *Context
	gctx *Context
	wbuf *Buffer
	g    *Graph
	x    Tensor
	out  Tensor
}

func (n *nf4Graph) Close() {
	n.wbuf.Close()
	n.gctx.Close()
	n.wctx.Close()
	n.r.Close()
}

// newNF4Graph puts weights of type wt and shape wShape (bytes wData) in a weights buffer on dev and
// builds out = op(w, x) for x F32 xShape.
func newNF4Graph(t testing.TB, dev Device, threads int, wt Type, wShape []int, wData []byte, xShape []int, op func(ctx *Context, w, x Tensor) Tensor) *nf4Graph {
	t.Helper()
	return newNF4GraphIn(t, dev, threads, false, wt, wShape, wData, xShape, op)
}

// newNF4GraphIn is newNF4Graph with the weights in the device's first extra buffer type (the CPU's repacked layouts)
// when extra is set.
func newNF4GraphIn(t testing.TB, dev Device, threads int, extra bool, wt Type, wShape []int, wData []byte, xShape []int, op func(ctx *Context, w, x Tensor) Tensor) *nf4Graph {
	t.Helper()
	r, err := NewRunner(dev, threads, 64)
	if err != nil {
		t.Fatal(err)
	}
	n := &nf4Graph{r: r, wctx: NewContext(1, 0), gctx: NewContext(8, 64)}
	w := n.wctx.NewTensor(wt, wShape...).SetName("w")
	n.w = w
	bt := r.Main.DefaultBufferType()
	if extra {
		ts := r.Main.ExtraBufferTypes()
		if len(ts) == 0 {
			r.Close()
			t.Skipf("%s offers no repacked layout", dev.Variant)
		}
		bt = ts[0]
	}
	if n.wbuf, err = AllocTensors(n.wctx, bt); err != nil {
		t.Fatal(err)
	}
	n.wbuf.SetWeightsUsage()
	if err := w.SetBytes(wData); err != nil {
		t.Fatal(err)
	}
	if err := Catch(func() {
		n.x = n.gctx.NewTensor(TypeF32, xShape...).SetName("x").SetInput()
		n.out = op(n.gctx, w, n.x).SetName("out").SetOutput()
	}); err != nil {
		t.Fatal(err)
	}
	n.g = n.gctx.NewGraph(64)
	n.g.Build(n.out)
	return n
}

func (n *nf4Graph) run(x []float32) ([]float32, error) {
	var y []float32
	err := n.r.Run(n.g, func() error { return n.x.SetFloat32(x) }, func() error {
		var err error
		y, err = n.out.Float32s()
		return err
	})
	return y, err
}

func TestMulMatNF4Graph(t *testing.T) {
	for _, dev := range Devices() {
		if dev.Kind != DeviceCPU {
			continue
		}
		for _, c := range []nf4Case{{64, 256, 64, 1}, {37, 4304, 64, 6}, {5, 7, 64, 3}} {
			t.Run(fmt.Sprintf("%s/%dx%d/ntok%d", dev.Variant, c.rows, c.cols, c.ntok), func(t *testing.T) {
				stream, w, x := nf4Fixture(t, c, 3)
				// x as [cols, ntok, 1, 1] and, when ntok is even, as [cols, ntok/2, 2] (batch dims).
				shapes := [][]int{{c.cols, c.ntok}}
				if c.ntok%2 == 0 {
					shapes = append(shapes, []int{c.cols, c.ntok / 2, 2})
				}
				for _, xs := range shapes {
					n := newNF4Graph(t, dev, 2, TypeI8, []int{len(stream)}, stream, xs, func(ctx *Context, w, x Tensor) Tensor {
						return w.MulMatNF4(ctx, x, c.rows, c.bs)
					})
					y, err := n.run(x)
					if err != nil {
						n.Close()
						t.Fatal(err)
					}
					if got := n.out.Ne4(); got[0] != c.rows || got[1]*got[2] != c.ntok {
						n.Close()
						t.Fatalf("output shape %v", got)
					}
					n.Close()
					nf4Check(t, c, w, x, y)
				}
			})
		}
	}
}

func TestMulMatNF4BadShapes(t *testing.T) {
	ctx := NewContext(16, 0)
	defer ctx.Close()
	w := ctx.NewTensor(TypeI8, 36*4)
	wf := ctx.NewTensor(TypeF32, 36)
	x := ctx.NewTensor(TypeF32, 64, 2)
	xh := ctx.NewTensor(TypeF16, 64, 2)
	cases := []struct {
		name string
		op   func()
		want string
	}{
		{"f32 weight", func() { wf.MulMatNF4(ctx, x, 4, 64) }, "want a contiguous i8 block stream"},
		{"f16 input", func() { w.MulMatNF4(ctx, xh, 4, 64) }, "want f32"},
		{"stream size", func() { w.MulMatNF4(ctx, x, 5, 64) }, "has 144 bytes, want 180"},
		{"block size", func() { w.MulMatNF4(ctx, x, 4, 48) }, "block size 48"},
		{"zero rows", func() { w.MulMatNF4(ctx, x, 0, 64) }, "bad shape"},
		{"transposed input", func() { w.MulMatNF4(ctx, x.Transpose(ctx), 4, 64) }, "contiguous rows"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Catch(c.op)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}

// BenchmarkMatVec4096 compares the NF4 kernel (graph custom op) with ggml's Q4_0 mul_mat on a
// 4096×4096 matrix times one vector, with 1 and 2 threads, on every CPU device (the portable
// build compiled into the binary has no SIMD; a loaded variant library has).
func BenchmarkMatVec4096(b *testing.B) {
	const rows, cols = 4096, 4096
	r := rand.New(rand.NewPCG(1, 1))
	src := make([]float32, rows*cols)
	for i := range src {
		src[i] = float32(0.02 * r.NormFloat64())
	}
	x := make([]float32, cols)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	q, err := quant.QuantizeNF4(src, 64)
	if err != nil {
		b.Fatal(err)
	}
	nf4, err := q.EncodeStream()
	if err != nil {
		b.Fatal(err)
	}
	q40, err := quant.Quantize(quant.Q4_0, src, cols)
	if err != nil {
		b.Fatal(err)
	}
	defer SetNF4ISA(NF4BestISA())
	for _, dev := range Devices() {
		if dev.Kind != DeviceCPU {
			continue
		}
		for _, threads := range []int{1, 2} {
			for _, isa := range NF4SupportedISAs() {
				b.Run(fmt.Sprintf("nf4-%s/%s/threads%d", isa, dev.Variant, threads), func(b *testing.B) {
					if err := SetNF4ISA(isa); err != nil {
						b.Fatal(err)
					}
					n := newNF4Graph(b, dev, threads, TypeI8, []int{len(nf4)}, nf4, []int{cols, 1}, func(ctx *Context, w, x Tensor) Tensor {
						return w.MulMatNF4(ctx, x, rows, 64)
					})
					defer n.Close()
					b.SetBytes(int64(len(nf4)))
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						if _, err := n.run(x); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
			b.Run(fmt.Sprintf("q4_0-ggml/%s/threads%d", dev.Variant, threads), func(b *testing.B) {
				n := newNF4Graph(b, dev, threads, TypeQ4_0, []int{cols, rows}, q40, []int{cols, 1}, func(ctx *Context, w, x Tensor) Tensor {
					return w.MulMat(ctx, x)
				})
				defer n.Close()
				b.SetBytes(int64(len(q40)))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := n.run(x); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkNF4MatMul times the kernel alone (no graph) on 4096×4096 for 1, 8 and 64 vectors on
// one thread, per SIMD path, and the repacked nf4x16 kernel where the CPU has AVX-512 VNNI.
func BenchmarkNF4MatMul(b *testing.B) {
	defer SetNF4ISA(NF4BestISA())
	for _, ntok := range []int{1, 8, 64} {
		c := nf4Case{4096, 4096, 64, ntok}
		stream, _, x := nf4Fixture(b, c, 4)
		for _, isa := range NF4SupportedISAs() {
			b.Run(fmt.Sprintf("%s/ntok%d", isa, ntok), func(b *testing.B) {
				if err := SetNF4ISA(isa); err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(stream)))
				for i := 0; i < b.N; i++ {
					if _, err := NF4MatMul(stream, c.rows, c.cols, c.bs, x, 1); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(2*c.rows*c.cols*c.ntok)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
		if NF4BestISA() != NF4AVX512VNNI {
			continue
		}
		// The repacked kernel (its VNNI path), the activations' quantization included.
		packed, err := NF4Repack(stream, c.rows, c.cols, c.bs)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("nf4x16-%s/ntok%d", NF4AVX512VNNI, ntok), func(b *testing.B) {
			if err := SetNF4ISA(NF4AVX512VNNI); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(packed)))
			for i := 0; i < b.N; i++ {
				if _, err := NF4x16MatMul(packed, c.rows, c.cols, x, 1); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(2*c.rows*c.cols*c.ntok)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
