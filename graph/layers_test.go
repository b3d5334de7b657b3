package graph

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/quant"
)

// TestForwardGEMMSplit checks that splitting a product's inner dimension at the GEMM block (ForwardGEMM) gives
// the unsplit product: BF16 weights with k = 80 (64 + 16) and the vision MLP's 4304 (4288 + 16), F32 with 37.
func TestForwardGEMMSplit(t *testing.T) {
	dev, err := SelectDeviceForTest()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		typ     ggml.Type
		k, m, n int
	}{
		{ggml.TypeBF16, 80, 5, 3},
		{ggml.TypeBF16, 4304, 7, 9},
		{ggml.TypeF32, 37, 4, 6},
		{ggml.TypeF16, 48, 4, 2}, // aligned: no split
	}
	for _, c := range cases {
		t.Run(c.typ.String(), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(c.k), 3))
			w := make([]float32, c.k*c.m)
			x := make([]float32, c.k*c.n)
			b := make([]float32, c.m)
			for _, s := range [][]float32{w, x, b} {
				for i := range s {
					s[i] = float32(r.NormFloat64())
				}
			}
			run, err := ggml.NewRunner(dev, 2, 64)
			if err != nil {
				t.Fatal(err)
			}
			defer run.Close()
			wctx := ggml.NewContext(4, 0)
			defer wctx.Close()
			lin := Linear{Weight: wctx.NewTensor(c.typ, c.k, c.m), Bias: wctx.NewTensor(ggml.TypeF32, c.m)}
			buf, err := ggml.AllocTensors(wctx, run.Main.DefaultBufferType())
			if err != nil {
				t.Fatal(err)
			}
			defer buf.Close()
			if err := lin.Weight.SetBytes(encode(t, c.typ, w)); err != nil {
				t.Fatal(err)
			}
			if err := lin.Bias.SetFloat32(b); err != nil {
				t.Fatal(err)
			}
			var outs [2][]float32
			for i, split := range []bool{false, true} {
				ctx := ggml.NewContext(64, 64)
				xt := ctx.NewTensor(ggml.TypeF32, c.k, c.n).SetInput()
				var y ggml.Tensor
				if err := ggml.Catch(func() { y = lin.ForwardGEMM(ctx, xt, split).SetOutput() }); err != nil {
					t.Fatal(err)
				}
				g := ctx.NewGraph(64)
				g.Build(y)
				err := run.Run(g, func() error { return xt.SetFloat32(x) }, func() error {
					var err error
					outs[i], err = y.Float32s()
					return err
				})
				ctx.Close()
				if err != nil {
					t.Fatal(err)
				}
			}
			maxRef, maxErr := 0.0, 0.0
			for i := range outs[0] {
				maxRef = math.Max(maxRef, math.Abs(float64(outs[0][i])))
				maxErr = math.Max(maxErr, math.Abs(float64(outs[1][i]-outs[0][i])))
			}
			if len(outs[0]) != c.m*c.n || len(outs[1]) != c.m*c.n || maxErr > 1e-5*maxRef {
				t.Fatalf("split %d values vs unsplit %d: max abs diff %g (max %g)", len(outs[1]), len(outs[0]), maxErr, maxRef)
			}
		})
	}
}

// encode stores v as typ (F32, F16 or BF16).
func encode(t *testing.T, typ ggml.Type, v []float32) []byte {
	var out []byte
	var err error
	switch typ {
	case ggml.TypeBF16:
		out = make([]byte, 2*len(v))
		err = quant.F32ToBF16Slice(out, v)
	case ggml.TypeF16:
		out = make([]byte, 2*len(v))
		err = quant.F32ToF16Slice(out, v)
	default:
		out = make([]byte, 4*len(v))
		for i, f := range v {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(f))
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}
