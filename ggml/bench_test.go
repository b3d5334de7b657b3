package ggml

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/idefics2-go/idefics2/quant"
)

// BenchmarkMatVec measures weight-matrix × one activation vector (the generation hot path) for a 4096×14336
// weight (the FFN up projection of the 8B decoder, larger than the CPU caches) on every CPU device (the SIMD variant loaded at run time and the portable cgo build), reporting the
// weight bytes streamed per second.
func BenchmarkMatVec(b *testing.B) {
	const k, m = 4096, 14336
	r := rand.New(rand.NewPCG(3, 4))
	w := make([]float32, k*m)
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	x := make([]float32, k)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	var devs []Device
	for _, d := range Devices() {
		if d.Kind == DeviceCPU {
			devs = append(devs, d)
		}
	}
	for _, typ := range []Type{TypeQ4_0, TypeQ8_0, TypeF16, TypeQ4_K} {
		raw, err := QuantizeChunk(int(typ), w, m, k)
		if typ == TypeF16 {
			raw, err = f16Bytes(w), nil
		}
		if err != nil {
			b.Fatal(err)
		}
		for _, dev := range devs {
			for _, threads := range []int{1, 2} {
				b.Run(fmt.Sprintf("%s/%s/t%d", typ, dev.Variant, threads), func(b *testing.B) {
					benchMatVec(b, dev, typ, raw, x, k, m, threads)
				})
			}
		}
	}
}

func benchMatVec(b *testing.B, dev Device, typ Type, raw []byte, x []float32, k, m, threads int) {
	b.SetBytes(int64(len(raw)))
	benchMatMul(b, dev, typ, raw, x, k, m, 1, threads)
}

// BenchmarkMatMulBatch measures a weight matrix times a batch of activations (prefill and vision shapes).
func BenchmarkMatMulBatch(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	var dev Device
	for _, d := range Devices() {
		if d.Kind == DeviceCPU {
			dev = d
			break
		}
	}
	shapes := []struct{ k, m, n int }{{1152, 4304, 729}, {4096, 4096, 512}}
	for _, sh := range shapes {
		w := make([]float32, sh.k*sh.m)
		for i := range w {
			w[i] = float32(r.NormFloat64())
		}
		x := make([]float32, sh.k*sh.n)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		for _, typ := range []Type{TypeF32, TypeF16, TypeQ4_0, TypeQ8_0} {
			var raw []byte
			switch typ {
			case TypeF32:
				raw = make([]byte, 4*len(w))
				for i, v := range w {
					bits := math.Float32bits(v)
					raw[4*i], raw[4*i+1], raw[4*i+2], raw[4*i+3] = byte(bits), byte(bits>>8), byte(bits>>16), byte(bits>>24)
				}
			case TypeF16:
				raw = f16Bytes(w)
			default:
				var err error
				if raw, err = QuantizeChunk(int(typ), w, sh.m, sh.k); err != nil {
					b.Fatal(err)
				}
			}
			b.Run(fmt.Sprintf("%s/%dx%dx%d/%s", dev.Variant, sh.k, sh.m, sh.n, typ), func(b *testing.B) {
				benchMatMul(b, dev, typ, raw, x, sh.k, sh.m, sh.n, 2)
				b.ReportMetric(float64(2*sh.k*sh.m*sh.n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

func benchMatMul(b *testing.B, dev Device, typ Type, raw []byte, x []float32, k, m, n, threads int) {
	r, err := NewRunner(dev, threads, 16)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	wctx := NewContext(1, 0)
	defer wctx.Close()
	wt := wctx.NewTensor(typ, k, m)
	buf, err := AllocTensors(wctx, r.Main.DefaultBufferType())
	if err != nil {
		b.Fatal(err)
	}
	defer buf.Close()
	buf.SetWeightsUsage()
	if err := wt.SetBytes(raw); err != nil {
		b.Fatal(err)
	}
	ctx := NewContext(8, 16)
	defer ctx.Close()
	xt := ctx.NewTensor(TypeF32, k, n).SetInput()
	out := wt.MulMat(ctx, xt).SetOutput()
	g := ctx.NewGraph(16)
	g.Build(out)
	r.Sched.Reset()
	if err := r.Sched.Alloc(g); err != nil {
		b.Fatal(err)
	}
	if err := xt.SetFloat32(x); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := r.Sched.Compute(g); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNF4MatVec measures one vector times the 8B decoder's FFN matrices in NF4 (blocks of 64), as the stream
// kernel (MulMatNF4) and as the repacked nf4x16 kernel (MulMatNF4x16, the records of x made by its quantize op in
// the same graph), next to ggml's Q4_0 on the same shapes, on 2 threads through a graph on the first CPU device.
// Shapes are rows×cols of the matrix: 14336×4096 (ffn_up, ffn_gate) and 4096×14336 (ffn_down). Weight bytes per
// second are reported as MB/s.
func BenchmarkNF4MatVec(b *testing.B) {
	var dev Device
	for _, d := range Devices() {
		if d.Kind == DeviceCPU {
			dev = d
			break
		}
	}
	const threads = 2
	for _, sh := range []struct{ rows, cols int }{{14336, 4096}, {4096, 14336}} {
		r := rand.New(rand.NewPCG(9, uint64(sh.rows)))
		w := make([]float32, sh.rows*sh.cols)
		for i := range w {
			w[i] = float32(0.02 * r.NormFloat64())
		}
		x := make([]float32, sh.cols)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		q, err := quant.QuantizeNF4(w, 64)
		if err != nil {
			b.Fatal(err)
		}
		stream, err := q.EncodeStream()
		if err != nil {
			b.Fatal(err)
		}
		packed, err := NF4Repack(stream, sh.rows, sh.cols, 64)
		if err != nil {
			b.Fatal(err)
		}
		name := fmt.Sprintf("%dx%d", sh.rows, sh.cols)
		b.Run(name+"/nf4-stream", func(b *testing.B) {
			n := newNF4Graph(b, dev, threads, TypeI8, []int{len(stream)}, stream, []int{sh.cols, 1}, func(ctx *Context, w, x Tensor) Tensor {
				return w.MulMatNF4(ctx, x, sh.rows, 64)
			})
			defer n.Close()
			benchNF4Graph(b, n, x, len(stream))
		})
		b.Run(name+"/nf4x16", func(b *testing.B) {
			n := newNF4Graph(b, dev, threads, TypeI8, []int{len(packed)}, packed, []int{sh.cols, 1}, func(ctx *Context, w, x Tensor) Tensor {
				return w.MulMatNF4x16(ctx, x, sh.rows)
			})
			defer n.Close()
			benchNF4Graph(b, n, x, len(packed))
		})
		q40, err := QuantizeChunk(int(TypeQ4_0), w, sh.rows, sh.cols)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name+"/q4_0-"+dev.Variant, func(b *testing.B) {
			n := newNF4Graph(b, dev, threads, TypeQ4_0, []int{sh.cols, sh.rows}, q40, []int{sh.cols, 1}, func(ctx *Context, w, x Tensor) Tensor {
				return w.MulMat(ctx, x)
			})
			defer n.Close()
			benchNF4Graph(b, n, x, len(q40))
		})
		// Q4_0 as the runner holds it with repacking on: ggml's row-interleaved layout (extra buffer type).
		b.Run(name+"/q4_0-repacked-"+dev.Variant, func(b *testing.B) {
			n := newNF4GraphIn(b, dev, threads, true, TypeQ4_0, []int{sh.cols, sh.rows}, q40, []int{sh.cols, 1}, func(ctx *Context, w, x Tensor) Tensor {
				return w.MulMat(ctx, x)
			})
			defer n.Close()
			benchNF4Graph(b, n, x, len(q40))
		})
	}
}

func benchNF4Graph(b *testing.B, n *nf4Graph, x []float32, weightBytes int) {
	if _, err := n.run(x); err != nil { // allocates the graph
		b.Fatal(err)
	}
	b.SetBytes(int64(weightBytes))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := n.run(x); err != nil {
			b.Fatal(err)
		}
	}
}
