package ggml

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// attnTol bounds the fused attention's error against the float64 reference, relative to max|v|: an output is a
// convex combination of values, computed in float32 with a polynomial exp (relative error below 2e-7) over at
// most a few thousand keys.
const attnTol = 2e-5

type attnCase struct {
	hd, heads, kvh, nq, nk int
	permuted               bool // q, k and v are permuted views of [hd, n, heads] tensors (strided heads)
}

var attnCases = []attnCase{
	{72, 2, 2, 37, 50, false},
	{72, 3, 3, 16, 16, false},
	{72, 1, 1, 33, 1300, false}, // several key blocks of the value product
	{96, 4, 2, 64, 129, false},  // grouped keys (perceiver-like)
	{96, 4, 1, 5, 3, true},
	{16, 2, 2, 17, 32, true},
	{1, 1, 1, 3, 5, false},
	{128, 2, 2, 9, 40, false},
	{112, 2, 1, 8, 21, false},
	{80, 2, 2, 1, 1, true},
}

// attnRef is softmax(q·kᵀ·scale)·v in float64, for q [hd, heads, nq] and k, v [hd, kvh, nk] given as flat
// arrays in that order; returns [hd·heads, nq].
func attnRef(c attnCase, q, k, v []float32, scale float64) []float64 {
	out := make([]float64, c.hd*c.heads*c.nq)
	group := c.heads / c.kvh
	s := make([]float64, c.nk)
	for h := 0; h < c.heads; h++ {
		g := h / group
		for i := 0; i < c.nq; i++ {
			qi := q[(i*c.heads+h)*c.hd:]
			m := math.Inf(-1)
			for j := 0; j < c.nk; j++ {
				kj := k[(j*c.kvh+g)*c.hd:]
				t := 0.0
				for d := 0; d < c.hd; d++ {
					t += float64(qi[d]) * float64(kj[d])
				}
				s[j] = t * scale
				m = math.Max(m, s[j])
			}
			l := 0.0
			for j := range s {
				s[j] = math.Exp(s[j] - m)
				l += s[j]
			}
			o := out[(i*c.heads+h)*c.hd:]
			for j := 0; j < c.nk; j++ {
				vj := v[(j*c.kvh+g)*c.hd:]
				for d := 0; d < c.hd; d++ {
					o[d] += s[j] / l * float64(vj[d])
				}
			}
		}
	}
	return out
}

func randVec(r *rand.Rand, n int, sd float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(sd * r.NormFloat64())
	}
	return v
}

// transpose12 reorders [hd, a, b] (flat) to [hd, b, a].
func transpose12(x []float32, hd, a, b int) []float32 {
	out := make([]float32, len(x))
	for i := 0; i < b; i++ {
		for j := 0; j < a; j++ {
			copy(out[(j*b+i)*hd:(j*b+i+1)*hd], x[(i*a+j)*hd:(i*a+j+1)*hd])
		}
	}
	return out
}

// runAttn computes FusedAttention on the first CPU device with the given threads.
func runAttn(t testing.TB, c attnCase, q, k, v []float32, scale float32, threads int) []float32 {
	t.Helper()
	dev := cpuDevice(t)
	r, err := NewRunner(dev, threads, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := NewContext(16, 64)
	defer ctx.Close()
	var qt, kt, vt, out Tensor
	if err := Catch(func() {
		if c.permuted {
			qt = ctx.NewTensor(TypeF32, c.hd, c.nq, c.heads).SetInput()
			kt = ctx.NewTensor(TypeF32, c.hd, c.nk, c.kvh).SetInput()
			vt = ctx.NewTensor(TypeF32, c.hd, c.nk, c.kvh).SetInput()
			out = qt.Permute(ctx, 0, 2, 1, 3).FusedAttention(ctx, kt.Permute(ctx, 0, 2, 1, 3), vt.Permute(ctx, 0, 2, 1, 3), scale)
		} else {
			qt = ctx.NewTensor(TypeF32, c.hd, c.heads, c.nq).SetInput()
			kt = ctx.NewTensor(TypeF32, c.hd, c.kvh, c.nk).SetInput()
			vt = ctx.NewTensor(TypeF32, c.hd, c.kvh, c.nk).SetInput()
			out = qt.FusedAttention(ctx, kt, vt, scale)
		}
		out.SetOutput()
	}); err != nil {
		t.Fatal(err)
	}
	if got := out.Ne4(); got != [4]int{c.hd * c.heads, c.nq, 1, 1} {
		t.Fatalf("output shape %v", got)
	}
	g := ctx.NewGraph(16)
	g.Build(out)
	qi, ki, vi := q, k, v
	if c.permuted {
		qi, ki, vi = transpose12(q, c.hd, c.heads, c.nq), transpose12(k, c.hd, c.kvh, c.nk), transpose12(v, c.hd, c.kvh, c.nk)
	}
	var y []float32
	err = r.Run(g, func() error {
		for _, p := range []struct {
			t Tensor
			d []float32
		}{{qt, qi}, {kt, ki}, {vt, vi}} {
			if err := p.t.SetFloat32(p.d); err != nil {
				return err
			}
		}
		return nil
	}, func() error {
		var err error
		y, err = out.Float32s()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return y
}

func TestFusedAttention(t *testing.T) {
	isas := AttnSupportedISAs()
	defer SetAttnISA(AttnBestISA())
	for _, isa := range isas {
		for ci, c := range attnCases {
			for _, threads := range []int{1, 3} {
				name := fmt.Sprintf("%s/hd%d_h%d_kv%d_q%d_k%d_perm%v/t%d", isa, c.hd, c.heads, c.kvh, c.nq, c.nk, c.permuted, threads)
				t.Run(name, func(t *testing.T) {
					if err := SetAttnISA(isa); err != nil {
						t.Fatal(err)
					}
					r := rand.New(rand.NewPCG(uint64(ci), 7))
					// Large logits (sd of q·k ≈ 3 after scaling) make the softmax peaked, as in trained models.
					q := randVec(r, c.hd*c.heads*c.nq, 1.5)
					k := randVec(r, c.hd*c.kvh*c.nk, 1.5)
					v := randVec(r, c.hd*c.kvh*c.nk, 1)
					scale := float32(1 / math.Sqrt(float64(c.hd)))
					got := runAttn(t, c, q, k, v, scale, threads)
					want := attnRef(c, q, k, v, float64(scale))
					checkAttn(t, got, want, v)
				})
			}
		}
	}
}

// checkAttn fails t when an attention output is farther from the float64 reference than attnTol × max|v|.
func checkAttn(t *testing.T, got []float32, want []float64, v []float32) {
	t.Helper()
	vmax := 0.0
	for _, x := range v {
		vmax = math.Max(vmax, math.Abs(float64(x)))
	}
	worst := 0.0
	for i := range want {
		worst = math.Max(worst, math.Abs(float64(got[i])-want[i]))
	}
	if worst > attnTol*vmax || math.IsNaN(worst) {
		t.Fatalf("max |error| %.3g > %.3g (tolerance %g × max|v| %.3g)", worst, attnTol*vmax, attnTol, vmax)
	}
}

func TestFusedAttentionBadShapes(t *testing.T) {
	ctx := NewContext(32, 0)
	defer ctx.Close()
	q := ctx.NewTensor(TypeF32, 72, 4, 10)
	k := ctx.NewTensor(TypeF32, 72, 2, 12)
	v := ctx.NewTensor(TypeF32, 72, 2, 12)
	k3 := ctx.NewTensor(TypeF32, 72, 3, 12)
	v3 := ctx.NewTensor(TypeF32, 72, 3, 12)
	vShort := ctx.NewTensor(TypeF32, 72, 2, 11)
	kh := ctx.NewTensor(TypeF16, 72, 2, 12)
	kd := ctx.NewTensor(TypeF32, 64, 2, 12)
	vd := ctx.NewTensor(TypeF32, 64, 2, 12)
	big := ctx.NewTensor(TypeF32, 136, 1, 4)
	cases := []struct {
		name string
		op   func()
		want string
	}{
		{"f16 keys", func() { q.FusedAttention(ctx, kh, v, 1) }, "k [72 2 12 1] is f16"},
		{"k and v differ", func() { q.FusedAttention(ctx, k, vShort, 1) }, "differ in shape"},
		{"head size", func() { q.FusedAttention(ctx, kd, vd, 1) }, "head size"},
		{"head too large", func() { big.FusedAttention(ctx, big, big, 1) }, "at most 128"},
		{"grouping", func() { q.FusedAttention(ctx, k3, v3, 1) }, "not a multiple of k's 3"},
		{"strided rows", func() { q.FusedAttention(ctx, k.Permute(ctx, 1, 0, 2, 3), v, 1) }, "contiguous rows"},
		{"scale", func() { q.FusedAttention(ctx, k, v, float32(math.Inf(1))) }, "not finite"},
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

// BenchmarkFusedAttention times one vision layer's attention (16 heads of 72) at 378×378 (729 patches) and
// 980×980 (4,900 patches) with 2 threads.
func BenchmarkFusedAttention(b *testing.B) {
	for _, n := range []int{729, 4900} {
		b.Run(fmt.Sprintf("patches%d", n), func(b *testing.B) {
			c := attnCase{hd: 72, heads: 16, kvh: 16, nq: n, nk: n}
			r := rand.New(rand.NewPCG(1, 1))
			q := randVec(r, c.hd*c.heads*c.nq, 1)
			k := randVec(r, c.hd*c.heads*c.nk, 1)
			v := randVec(r, c.hd*c.heads*c.nk, 1)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				runAttn(b, c, q, k, v, 0.1178, 2)
			}
			flops := 4 * float64(c.hd) * float64(c.heads) * float64(n) * float64(n)
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
