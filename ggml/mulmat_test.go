package ggml

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// tolQuant is the relative tolerance of a quantized-weight matmul against the dequantized weights in float64: the
// CPU also quantizes the activations (to Q8_0 or Q8_K), which costs up to about 1% of the largest output.
const tolQuant = 2e-2

func TestMulMatQuantizedWeights(t *testing.T) {
	types := []Type{TypeBF16, TypeQ8_0, TypeQ4_0, TypeQ4_1, TypeQ5_0, TypeQ5_1, TypeQ4_K, TypeQ5_K, TypeQ6_K}
	for _, dev := range testDevices(t) {
		for _, typ := range types {
			t.Run(fmt.Sprintf("%s/%s", testName(dev), typ), func(t *testing.T) {
				r := rand.New(rand.NewPCG(uint64(typ), 7))
				k := 256 * 3 // a multiple of every block size; not of 512
				if typ.BlockSize() == 32 {
					k = 32 * 13
				}
				m, n, h := 9, 3, 2 // batch > 1 over dims 1 and 2
				w := randF32(r, k*m)
				raw, err := QuantizeChunk(int(typ), w, m, k)
				if err != nil {
					t.Fatal(err)
				}
				deq, err := DequantizeRow(int(typ), raw, k*m)
				if err != nil {
					t.Fatal(err)
				}
				x := randF32(r, k*n*h)
				got, ne := eval(t, dev, []input{{typ: typ, shape: []int{k, m}, raw: raw}, {typ: TypeF32, shape: []int{k, n, h}, f32: x}},
					func(ctx *Context, in []Tensor) Tensor { return in[0].MulMat(ctx, in[1]) })
				if ne != [4]int{m, n, h, 1} {
					t.Fatalf("shape %v", ne)
				}
				compare(t, "mul_mat_"+typ.String(), got, refMulMat(deq, x, k, m, n, 1, h), tolQuant)
				// get_rows on the quantized matrix dequantizes exactly.
				got, _ = eval(t, dev, []input{{typ: typ, shape: []int{k, m}, raw: raw}, {typ: TypeI32, shape: []int{2}, i32: []int32{4, 1}}},
					func(ctx *Context, in []Tensor) Tensor { return in[0].GetRows(ctx, in[1]) })
				want := make([]float64, 2*k)
				for i := 0; i < k; i++ {
					want[i] = float64(deq[4*k+i])
					want[k+i] = float64(deq[k+i])
				}
				compare(t, "get_rows_"+typ.String(), got, want, 1e-6)
			})
		}
	}
}
