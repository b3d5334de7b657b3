package ggml

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// decAttnCase is one decode-attention problem: n new tokens at the end of nk cached positions, in a cache of size
// positions (so that the views have the strides of a real cache).
type decAttnCase struct {
	hd, heads, kvh, n, nk, size int
	f16                         bool
	mask                        string // "none", "causal" or "window" (causal with a sliding window of nk/2)
}

var decAttnCases = []decAttnCase{
	{128, 32, 8, 1, 1, 8, true, "causal"},      // the first generated token
	{128, 32, 8, 1, 77, 90, true, "causal"},    // Mistral shapes
	{128, 32, 8, 1, 77, 90, false, "causal"},   // an F32 cache
	{128, 8, 2, 3, 256, 260, true, "causal"},   // one whole key block
	{128, 8, 2, 2, 257, 300, true, "causal"},   // one more key
	{128, 8, 2, 4, 600, 600, true, "window"},   // several blocks, masked ones skipped
	{72, 4, 4, 1, 33, 40, true, "none"},        // head size not a multiple of 16, no grouping
	{96, 16, 1, 2, 20, 21, false, "none"},      // 16 query heads on one key head
	{16, 2, 1, 1, 5, 5, true, "causal"},        //
	{200, 2, 2, 1, 17, 17, false, "causal"},    // head size above 128
	{128, 4, 2, 1, 1000, 1024, true, "causal"}, // a long context
}

// decAttnMask is the additive mask [n rows of nk]: token i sits at position nk−n+i.
func decAttnMask(c decAttnCase) []float32 {
	m := make([]float32, c.n*c.nk)
	for i := 0; i < c.n; i++ {
		pos := c.nk - c.n + i
		for j := 0; j < c.nk; j++ {
			switch {
			case c.mask == "none":
			case j > pos, c.mask == "window" && j <= pos-c.nk/2:
				m[i*c.nk+j] = float32(math.Inf(-1))
			}
		}
	}
	return m
}

// decAttnRef: q [hd, heads, n], k and v [hd, kvh, nk] (flat, values as the cache holds them), mask [n][nk].
func decAttnRef(c decAttnCase, q, k, v, mask []float32, scale float64) []float64 {
	out := make([]float64, c.hd*c.heads*c.n)
	group := c.heads / c.kvh
	s := make([]float64, c.nk)
	for h := 0; h < c.heads; h++ {
		g := h / group
		for i := 0; i < c.n; i++ {
			qi := q[(i*c.heads+h)*c.hd:]
			m := math.Inf(-1)
			for j := 0; j < c.nk; j++ {
				kj := k[(j*c.kvh+g)*c.hd:]
				t := 0.0
				for d := 0; d < c.hd; d++ {
					t += float64(qi[d]) * float64(kj[d])
				}
				s[j] = t*scale + float64(mask[i*c.nk+j])
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

// runDecAttn builds the cache tensors of c (K [hd·kvh, size], V transposed [size, hd·kvh]), fills the first nk
// positions and runs DecodeAttention over views of them.
func runDecAttn(t testing.TB, c decAttnCase, q, k, v, mask []float32, scale float32, threads int) []float32 {
	t.Helper()
	r, err := NewRunner(cpuDevice(t), threads, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := NewContext(16, 64)
	defer ctx.Close()
	typ := TypeF32
	if c.f16 {
		typ = TypeF16
	}
	w := c.hd * c.kvh
	var qt, kc, vc, mt, out Tensor
	if err := Catch(func() {
		qt = ctx.NewTensor(TypeF32, c.hd, c.heads, c.n).SetInput()
		kc = ctx.NewTensor(typ, w, c.size).SetInput()
		vc = ctx.NewTensor(typ, c.size, w).SetInput()
		esz := typ.TypeSize()
		kv := kc.View(ctx, 0, []int{c.hd, c.kvh, c.nk}, []int{c.hd * esz, kc.Nb(1)})
		vt := vc.View(ctx, 0, []int{c.nk, c.hd, c.kvh}, []int{vc.Nb(1), c.hd * vc.Nb(1)})
		if c.mask != "none" {
			mt = ctx.NewTensor(TypeF32, c.nk, c.n+2).SetInput() // rows past n are padding
		}
		out = qt.DecodeAttention(ctx, kv, vt, mt, scale).SetOutput()
	}); err != nil {
		t.Fatal(err)
	}
	if got := out.Ne4(); got != [4]int{c.hd * c.heads, c.n, 1, 1} {
		t.Fatalf("output shape %v", got)
	}
	// The caches' contents: positions past nk hold garbage the op must not read into the result.
	kAll := make([]float32, w*c.size)
	vAll := make([]float32, w*c.size)
	for i := range kAll {
		kAll[i], vAll[i] = 1e4, -1e4
	}
	copy(kAll, k)
	for j := 0; j < c.nk; j++ {
		for e := 0; e < w; e++ {
			vAll[e*c.size+j] = v[j*w+e]
		}
	}
	g := ctx.NewGraph(16)
	g.Build(out)
	set := func(t Tensor, x []float32) error {
		if t.Type() == TypeF16 {
			return t.SetBytes(f16Bytes(x))
		}
		return t.SetFloat32(x)
	}
	var y []float32
	err = r.Run(g, func() error {
		if err := set(qt, q); err != nil {
			return err
		}
		if err := set(kc, kAll); err != nil {
			return err
		}
		if err := set(vc, vAll); err != nil {
			return err
		}
		if !mt.IsNil() {
			mp := make([]float32, c.nk*(c.n+2))
			copy(mp, mask)
			return mt.SetFloat32(mp)
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

func TestDecodeAttention(t *testing.T) {
	isas := AttnSupportedISAs()
	defer SetAttnISA(AttnBestISA())
	for _, isa := range isas {
		for ci, c := range decAttnCases {
			for _, threads := range []int{1, 3} {
				name := fmt.Sprintf("%s/hd%d_h%d_kv%d_n%d_k%d_f16%v_%s/t%d", isa, c.hd, c.heads, c.kvh, c.n, c.nk, c.f16, c.mask, threads)
				t.Run(name, func(t *testing.T) {
					if err := SetAttnISA(isa); err != nil {
						t.Fatal(err)
					}
					r := rand.New(rand.NewPCG(uint64(ci), 11))
					q := randVec(r, c.hd*c.heads*c.n, 1.5)
					k := randVec(r, c.hd*c.kvh*c.nk, 1.5)
					v := randVec(r, c.hd*c.kvh*c.nk, 1)
					if c.f16 { // the reference sees the values the cache holds
						for i := range k {
							k[i], v[i] = halfToF32(f32ToF16(k[i])), halfToF32(f32ToF16(v[i]))
						}
					}
					mask := decAttnMask(c)
					if c.mask == "none" {
						mask = make([]float32, c.n*c.nk)
					}
					scale := float32(1 / math.Sqrt(float64(c.hd)))
					got := runDecAttn(t, c, q, k, v, mask, scale, threads)
					want := decAttnRef(c, q, k, v, mask, float64(scale))
					checkAttn(t, got, want, v)
				})
			}
		}
	}
}

func TestDecodeAttentionBadShapes(t *testing.T) {
	ctx := NewContext(32, 0)
	defer ctx.Close()
	q := ctx.NewTensor(TypeF32, 64, 8, 1)
	k := ctx.NewTensor(TypeF16, 64, 2, 10)
	vt := ctx.NewTensor(TypeF16, 10, 64, 2)
	mask := ctx.NewTensor(TypeF32, 10, 1)
	cases := []struct {
		name string
		op   func()
		want string
	}{
		{"f16 q", func() { ctx.NewTensor(TypeF16, 64, 8, 1).DecodeAttention(ctx, k, vt, mask, 1) }, "want f32 [hd, heads, n]"},
		{"mixed cache types", func() { q.DecodeAttention(ctx, k, ctx.NewTensor(TypeF32, 10, 64, 2), mask, 1) }, "both f16 or both f32"},
		{"q8 cache", func() { q.DecodeAttention(ctx, ctx.NewTensor(TypeQ8_0, 64, 2, 10), vt, mask, 1) }, "both f16 or both f32"},
		{"head size", func() { q.DecodeAttention(ctx, ctx.NewTensor(TypeF16, 32, 2, 10), vt, mask, 1) }, "do not match q"},
		{"values not transposed", func() { q.DecodeAttention(ctx, k, ctx.NewTensor(TypeF16, 64, 2, 10), mask, 1) }, "want the transposed [10, 64, 2]"},
		{"grouping", func() {
			q.DecodeAttention(ctx, ctx.NewTensor(TypeF16, 64, 3, 10), ctx.NewTensor(TypeF16, 10, 64, 3), nil0(), 1)
		}, "over 3 key heads"},
		{"group too large", func() {
			ctx.NewTensor(TypeF32, 64, 32, 1).DecodeAttention(ctx, ctx.NewTensor(TypeF16, 64, 1, 10), ctx.NewTensor(TypeF16, 10, 64, 1), mask, 1)
		}, "at most 16 per key head"},
		{"mask keys", func() { q.DecodeAttention(ctx, k, vt, ctx.NewTensor(TypeF32, 9, 1), 1) }, "want f32 [10, ≥1]"},
		{"f16 mask", func() { q.DecodeAttention(ctx, k, vt, ctx.NewTensor(TypeF16, 10, 1), 1) }, "mask"},
		{"strided keys", func() { q.DecodeAttention(ctx, k.Permute(ctx, 1, 0, 2, 3), vt, mask, 1) }, "contiguous rows"},
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

func nil0() Tensor { return Tensor{} }
