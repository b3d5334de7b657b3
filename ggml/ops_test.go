package ggml

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// Tolerances against the float64 references.
const (
	// tolF32 is the relative tolerance of F32 ops: float32 rounding, accumulated in another order than the
	// float64 reference.
	tolF32 = 1e-5
	// tolGELUTable covers ggml's CPU GELU, which rounds its input to fp16 and reads an fp16 table.
	tolGELUTable = 2e-3
	// tolF16 covers F16 storage of an operand (11-bit mantissa) with F32 accumulation.
	tolF16 = 2e-3
)

type input struct {
	typ   Type
	shape []int
	f32   []float32
	i32   []int32
	raw   []byte // data of any other type, as is
}

func randF32(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

func prod(s []int) int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

// testDevices are the devices to test: the loaded CPU SIMD variant (if any), the portable CPU build, and every
// GPU whose backend library was found (CUDA, Vulkan, Metal), so a machine with a GPU checks its backend too.
func testDevices(t *testing.T) []Device {
	out := Devices()
	cpus := 0
	for _, d := range out {
		if d.Kind == DeviceCPU {
			cpus++
		}
	}
	if cpus == 0 {
		t.Fatal("no CPU device")
	}
	return out
}

// testName names a device in subtest names: the CPU variant, else the backend device name.
func testName(d Device) string {
	if d.Variant != "" {
		return d.Variant
	}
	return d.Name
}

// eval builds a graph with the given inputs on dev and returns the output as float32 (or int32 as float32).
func eval(t *testing.T, dev Device, ins []input, build func(ctx *Context, x []Tensor) Tensor) ([]float32, [4]int) {
	t.Helper()
	r, err := NewRunner(dev, 2, 256)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := NewContext(64, 256)
	defer ctx.Close()
	var xs []Tensor
	for i, in := range ins {
		x := ctx.NewTensor(in.typ, in.shape...).SetName(fmt.Sprintf("in%d", i)).SetInput()
		xs = append(xs, x)
	}
	var out Tensor
	if err := Catch(func() { out = build(ctx, xs).SetOutput() }); err != nil {
		t.Fatal(err)
	}
	g := ctx.NewGraph(256)
	g.Build(out)
	var res []float32
	err = r.Run(g, func() error {
		for i, in := range ins {
			if !xs[i].Allocated() {
				continue
			}
			var err error
			switch in.typ {
			case TypeI32:
				err = xs[i].SetInt32(in.i32)
			case TypeF32:
				err = xs[i].SetFloat32(in.f32)
			case TypeF16:
				err = xs[i].SetBytes(f16Bytes(in.f32))
			default:
				if in.raw != nil {
					err = xs[i].SetBytes(in.raw)
					break
				}
				err = fmt.Errorf("test input type %s", in.typ)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}, func() error {
		var err error
		if out.Type() == TypeI32 {
			var v []int32
			v, err = out.Int32s()
			for _, x := range v {
				res = append(res, float32(x))
			}
			return err
		}
		res, err = out.Float32s()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return res, out.Ne4()
}

func f16Bytes(v []float32) []byte {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		h := f32ToF16(x)
		b[2*i], b[2*i+1] = byte(h), byte(h>>8)
	}
	return b
}

// f32ToF16 rounds to nearest even (IEEE half).
func f32ToF16(f float32) uint16 {
	bits := math.Float32bits(f)
	sign := uint16(bits>>16) & 0x8000
	exp := int((bits>>23)&0xff) - 127 + 15
	mant := bits & 0x7fffff
	switch {
	case exp >= 31:
		return sign | 0x7c00
	case exp <= 0:
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint(14 - exp)
		half := uint32(1) << (shift - 1)
		r := mant >> shift
		if mant&((1<<shift)-1) > half || (mant&((1<<shift)-1) == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(exp)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++
	}
	return sign | uint16(r)
}

func roundF16(v []float32) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = halfToF32(f32ToF16(x))
	}
	return out
}

func halfToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0:
		f := float32(mant) / 1024 / 16384
		if sign != 0 {
			f = -f
		}
		return f
	case exp == 31:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}

// compare checks got against want: max |a−b| / max(|b|, tiny) ≤ tol.
func compare(t *testing.T, name string, got []float32, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d values, want %d", name, len(got), len(want))
	}
	maxRef, maxErr, worst := 0.0, 0.0, 0
	for i := range want {
		maxRef = math.Max(maxRef, math.Abs(want[i]))
		if e := math.Abs(float64(got[i]) - want[i]); e > maxErr || math.IsNaN(e) {
			maxErr, worst = e, i
		}
	}
	rel := maxErr / math.Max(maxRef, 1e-30)
	if rel > tol || math.IsNaN(rel) {
		t.Errorf("%s: max abs err %.3g (rel %.3g > %.1g) at %d: got %v want %v", name, maxErr, rel, tol, worst, got[worst], want[worst])
	}
}

func TestOps(t *testing.T) {
	for _, dev := range testDevices(t) {
		t.Run(testName(dev), func(t *testing.T) { testOps(t, dev) })
	}
}

func testOps(t *testing.T, dev Device) {
	r := rand.New(rand.NewPCG(1, 2))
	t.Run("mul_mat_f32_broadcast", func(t *testing.T) {
		k, m, n, h, hx := 37, 5, 3, 2, 4
		w := randF32(r, k*m*h)
		x := randF32(r, k*n*hx)
		got, ne := eval(t, dev, []input{{typ: TypeF32, shape: []int{k, m, h}, f32: w}, {typ: TypeF32, shape: []int{k, n, hx}, f32: x}},
			func(ctx *Context, in []Tensor) Tensor { return in[0].MulMat(ctx, in[1]) })
		if ne != [4]int{m, n, hx, 1} {
			t.Fatalf("shape %v", ne)
		}
		compare(t, "mul_mat", got, refMulMat(w, x, k, m, n, h, hx), tolF32)
	})
	t.Run("mul_mat_f16_weight", func(t *testing.T) {
		k, m, n := 64, 7, 5
		w := randF32(r, k*m)
		x := randF32(r, k*n)
		got, _ := eval(t, dev, []input{{typ: TypeF16, shape: []int{k, m}, f32: w}, {typ: TypeF32, shape: []int{k, n}, f32: x}},
			func(ctx *Context, in []Tensor) Tensor { return in[0].MulMat(ctx, in[1]) })
		// The CPU converts activations to F16 for an F16 weight: compare against both rounded.
		compare(t, "mul_mat_f16", got, refMulMat(roundF16(w), roundF16(x), k, m, n, 1, 1), tolF16)
	})
	t.Run("add_mul_sub_scale_broadcast", func(t *testing.T) {
		a := randF32(r, 6*5*3)
		b := randF32(r, 6)
		got, _ := eval(t, dev, []input{{typ: TypeF32, shape: []int{6, 5, 3}, f32: a}, {typ: TypeF32, shape: []int{6}, f32: b}},
			func(ctx *Context, in []Tensor) Tensor {
				return in[0].Add(ctx, in[1]).Mul(ctx, in[1]).Sub(ctx, in[1]).Scale(ctx, 0.5)
			})
		want := make([]float64, len(a))
		for i := range a {
			bb := float64(b[i%6])
			want[i] = ((float64(a[i])+bb)*bb - bb) * 0.5
		}
		compare(t, "binary", got, want, tolF32)
	})
	t.Run("norm_rms_norm", func(t *testing.T) {
		n, rows := 45, 4
		a := randF32(r, n*rows)
		got, _ := eval(t, dev, []input{{typ: TypeF32, shape: []int{n, rows}, f32: a}},
			func(ctx *Context, in []Tensor) Tensor { return in[0].Norm(ctx, 1e-6) })
		compare(t, "norm", got, refNorm(a, n, 1e-6, false), tolF32)
		got, _ = eval(t, dev, []input{{typ: TypeF32, shape: []int{n, rows}, f32: a}},
			func(ctx *Context, in []Tensor) Tensor { return in[0].RMSNorm(ctx, 1e-5) })
		compare(t, "rms_norm", got, refNorm(a, n, 1e-5, true), tolF32)
	})
	t.Run("unary", func(t *testing.T) {
		a := randF32(r, 97)
		for i := range a {
			a[i] *= 3
		}
		b := randF32(r, 97)
		cases := []struct {
			name  string
			build func(ctx *Context, in []Tensor) Tensor
			ref   func(x, y float64) float64
			tol   float64
		}{
			{"gelu_table", func(ctx *Context, in []Tensor) Tensor { return in[0].GELU(ctx) }, gelu, tolGELUTable},
			{"gelu_exact", func(ctx *Context, in []Tensor) Tensor { return in[0].GELUTanhExact(ctx) }, gelu, tolF32},
			{"silu", func(ctx *Context, in []Tensor) Tensor { return in[0].SiLU(ctx) }, func(x, _ float64) float64 { return x / (1 + math.Exp(-x)) }, tolF32},
			{"tanh", func(ctx *Context, in []Tensor) Tensor { return in[0].Tanh(ctx) }, func(x, _ float64) float64 { return math.Tanh(x) }, tolF32},
			{"swiglu", func(ctx *Context, in []Tensor) Tensor { return in[0].SwiGLU(ctx, in[1]) }, func(x, y float64) float64 { return x / (1 + math.Exp(-x)) * y }, tolF32},
		}
		for _, c := range cases {
			got, _ := eval(t, dev, []input{{typ: TypeF32, shape: []int{97}, f32: a}, {typ: TypeF32, shape: []int{97}, f32: b}}, c.build)
			want := make([]float64, len(a))
			for i := range a {
				want[i] = c.ref(float64(a[i]), float64(b[i]))
			}
			compare(t, c.name, got, want, c.tol)
		}
	})
	t.Run("soft_max_ext_mask", func(t *testing.T) {
		nk, nq, nh := 11, 3, 2
		a := randF32(r, nk*nq*nh)
		mask := make([]float32, nk*nq)
		for i := range mask {
			if r.IntN(4) == 0 && i%nk != 0 {
				mask[i] = float32(math.Inf(-1))
			}
		}
		got, _ := eval(t, dev, []input{{typ: TypeF32, shape: []int{nk, nq, nh}, f32: a}, {typ: TypeF32, shape: []int{nk, nq}, f32: mask}},
			func(ctx *Context, in []Tensor) Tensor { return in[0].SoftMaxExt(ctx, in[1], 0.7) })
		want := make([]float64, len(a))
		for h := 0; h < nh; h++ {
			for q := 0; q < nq; q++ {
				row := a[(h*nq+q)*nk:][:nk]
				mrow := mask[q*nk:][:nk]
				mx := math.Inf(-1)
				for i := range row {
					mx = math.Max(mx, 0.7*float64(row[i])+float64(mrow[i]))
				}
				sum := 0.0
				for i := range row {
					sum += math.Exp(0.7*float64(row[i]) + float64(mrow[i]) - mx)
				}
				for i := range row {
					want[(h*nq+q)*nk+i] = math.Exp(0.7*float64(row[i])+float64(mrow[i])-mx) / sum
				}
			}
		}
		compare(t, "soft_max", got, want, tolF32)
	})
	for _, mode := range []RoPEMode{RoPENormal, RoPENeox} {
		t.Run(fmt.Sprintf("rope_mode%d", mode), func(t *testing.T) {
			d, nh, nt := 8, 3, 5
			a := randF32(r, d*nh*nt)
			pos := []int32{0, 3, 7, 100, 2}
			got, _ := eval(t, dev, []input{{typ: TypeF32, shape: []int{d, nh, nt}, f32: a}, {typ: TypeI32, shape: []int{nt}, i32: pos}},
				func(ctx *Context, in []Tensor) Tensor {
					return in[0].RoPE(ctx, in[1], RoPEOptions{Dims: d, Mode: mode, Base: 10000})
				})
			compare(t, "rope", got, refRoPE(a, pos, d, nh, nt, 10000, mode == RoPENeox), tolF32)
		})
	}
	t.Run("get_rows_concat_permute", func(t *testing.T) {
		a := randF32(r, 5*7)
		idx := []int32{6, 0, 3}
		got, ne := eval(t, dev, []input{{typ: TypeF32, shape: []int{5, 7}, f32: a}, {typ: TypeI32, shape: []int{3}, i32: idx}},
			func(ctx *Context, in []Tensor) Tensor {
				rows := in[0].GetRows(ctx, in[1])              // [5, 3]
				cat := rows.Concat(ctx, rows.Scale(ctx, 2), 1) // [5, 6]
				return cat.Transpose(ctx).Cont(ctx)            // [6, 5]
			})
		if ne != [4]int{6, 5, 1, 1} {
			t.Fatalf("shape %v", ne)
		}
		want := make([]float64, 30)
		for j := 0; j < 6; j++ { // rows of cat
			for i := 0; i < 5; i++ {
				v := float64(a[int(idx[j%3])*5+i])
				if j >= 3 {
					v *= 2
				}
				want[i*6+j] = v
			}
		}
		compare(t, "gather", got, want, tolF32)
	})
	t.Run("arange_step_repeat_pad", func(t *testing.T) {
		// The key-padding mask of the CPU attention path: 0 for the first n of np keys, -1e30 after, tiled over
		// rows; plus a zero pad.
		const n, np, rows = 5, 8, 3
		a := randF32(r, 2*3)
		got, ne := eval(t, dev, []input{{typ: TypeF32, shape: []int{3, 2}, f32: a}},
			func(ctx *Context, in []Tensor) Tensor {
				m := ctx.Arange(0, np, 1).ScaleBias(ctx, 1, -(n-0.5)).Step(ctx).Scale(ctx, -1e30) // [np]
				m = m.Repeat4D(ctx, np, rows, 1, 1)                                               // [np, rows]
				p := in[0].Pad(ctx, np-3, rows-2, 0, 0)                                           // [np, rows]
				return m.Add(ctx, p)
			})
		if ne != [4]int{np, rows, 1, 1} {
			t.Fatalf("shape %v", ne)
		}
		want := make([]float64, np*rows)
		for j := 0; j < rows; j++ {
			for i := 0; i < np; i++ {
				if i >= n {
					want[j*np+i] = -1e30
				}
				if i < 3 && j < 2 {
					want[j*np+i] += float64(a[j*3+i])
				}
			}
		}
		compare(t, "key mask", got, want, tolF32)
	})
	t.Run("view_reshape_permute4", func(t *testing.T) {
		a := randF32(r, 2*3*4)
		got, ne := eval(t, dev, []input{{typ: TypeF32, shape: []int{2, 3, 4}, f32: a}},
			func(ctx *Context, in []Tensor) Tensor {
				v := in[0].View(ctx, 4*2, []int{2, 2, 4}, []int{2 * 4, 6 * 4}) // rows 1..2 of each matrix
				p := v.Permute(ctx, 1, 0, 2, 3).Cont(ctx)                      // [2(rows), 2(cols), 4]
				return p.Reshape(ctx, 16)
			})
		if ne != [4]int{16, 1, 1, 1} {
			t.Fatalf("shape %v", ne)
		}
		var want []float64
		for k := 0; k < 4; k++ {
			for i := 0; i < 2; i++ { // new dim1 = old dim0
				for j := 0; j < 2; j++ { // new dim0 = old dim1 (rows 1..2)
					want = append(want, float64(a[k*6+(j+1)*2+i]))
				}
			}
		}
		compare(t, "view", got, want, tolF32)
	})
	t.Run("conv2d_patch", func(t *testing.T) {
		p, c, oc, w, h := 3, 3, 4, 7, 6 // patch 3, image 7×6 → 2×2 patches
		k := randF32(r, p*p*c*oc)
		img := randF32(r, w*h*c)
		got, ne := eval(t, dev, []input{{typ: TypeF32, shape: []int{p, p, c, oc}, f32: k}, {typ: TypeF32, shape: []int{w, h, c, 1}, f32: img}},
			func(ctx *Context, in []Tensor) Tensor { return in[0].Conv2D(ctx, in[1], p, p) })
		ow, oh := w/p, h/p
		if ne != [4]int{ow, oh, oc, 1} {
			t.Fatalf("shape %v", ne)
		}
		want := make([]float64, ow*oh*oc)
		for o := 0; o < oc; o++ {
			for y := 0; y < oh; y++ {
				for x := 0; x < ow; x++ {
					s := 0.0
					for ci := 0; ci < c; ci++ {
						for ky := 0; ky < p; ky++ {
							for kx := 0; kx < p; kx++ {
								s += float64(k[((o*c+ci)*p+ky)*p+kx]) * float64(img[(ci*h+y*p+ky)*w+x*p+kx])
							}
						}
					}
					want[(o*oh+y)*ow+x] = s
				}
			}
		}
		compare(t, "conv2d", got, want, tolF16) // ggml_conv_2d runs im2col in F16
	})
	t.Run("flash_attn_vs_reference", func(t *testing.T) {
		d, nq, nkv, nh, nhkv := 16, 3, 9, 4, 2
		q := randF32(r, d*nq*nh)
		k := randF32(r, d*nkv*nhkv)
		v := randF32(r, d*nkv*nhkv)
		mask := make([]float32, nkv*nq)
		for qi := 0; qi < nq; qi++ {
			for j := 0; j < nkv; j++ {
				if j > nkv-nq+qi {
					mask[qi*nkv+j] = float32(math.Inf(-1))
				}
			}
		}
		scale := float32(1 / math.Sqrt(float64(d)))
		got, ne := eval(t, dev, []input{
			{typ: TypeF32, shape: []int{d, nq, nh}, f32: q}, {typ: TypeF16, shape: []int{d, nkv, nhkv}, f32: k},
			{typ: TypeF16, shape: []int{d, nkv, nhkv}, f32: v}, {typ: TypeF16, shape: []int{nkv, nq}, f32: mask}},
			func(ctx *Context, in []Tensor) Tensor { return in[0].FlashAttnExt(ctx, in[1], in[2], in[3], scale) })
		if ne != [4]int{d, nh, nq, 1} {
			t.Fatalf("shape %v", ne)
		}
		ref := refAttention(roundF16(q), roundF16(k), roundF16(v), mask, d, nq, nkv, nh, nhkv, float64(scale))
		// ref is [d, nq, nh]; flash output is [d, nh, nq].
		want := make([]float64, len(ref))
		for h := 0; h < nh; h++ {
			for qi := 0; qi < nq; qi++ {
				for i := 0; i < d; i++ {
					want[(qi*nh+h)*d+i] = ref[(h*nq+qi)*d+i]
				}
			}
		}
		compare(t, "flash_attn", got, want, tolF16)
	})
	t.Run("cpy_f16_argmax", func(t *testing.T) {
		a := randF32(r, 13*4)
		got, _ := eval(t, dev, []input{{typ: TypeF32, shape: []int{13, 4}, f32: a}},
			func(ctx *Context, in []Tensor) Tensor { return in[0].Cast(ctx, TypeF16).Cast(ctx, TypeF32).Argmax(ctx) })
		ra := roundF16(a)
		for row := 0; row < 4; row++ {
			best := 0
			for i := 1; i < 13; i++ {
				if ra[row*13+i] > ra[row*13+best] {
					best = i
				}
			}
			if int(got[row]) != best {
				t.Errorf("argmax row %d: got %v want %d", row, got[row], best)
			}
		}
	})
}

func TestShapeErrors(t *testing.T) {
	ctx := NewContext(16, 0)
	defer ctx.Close()
	a := ctx.NewTensor(TypeF32, 4, 3)
	b := ctx.NewTensor(TypeF32, 5, 3)
	i := ctx.NewTensor(TypeI32, 2)
	cases := []struct {
		name string
		f    func()
		want string
	}{
		{"mul_mat", func() { a.MulMat(ctx, b) }, "mul_mat"},
		{"add", func() { a.Add(ctx, b) }, "broadcast"},
		{"rope", func() { a.RoPE(ctx, i, RoPEOptions{Dims: 4}) }, "positions"},
		{"reshape", func() { a.Reshape(ctx, 5) }, "reshape"},
		{"view", func() { a.View(ctx, 40, []int{4}, nil) }, "beyond"},
		{"permute", func() { a.Permute(ctx, 0, 0, 1, 2) }, "permutation"},
		{"q4_0 bad row", func() { ctx.NewTensor(TypeQ4_0, 33) }, "block size"},
		{"unknown type", func() { ctx.NewTensor(Type(4), 2) }, "unknown type"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Catch(c.f)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to mention %q", err, c.want)
			}
		})
	}
}

func refMulMat(w, x []float32, k, m, n, h, hx int) []float64 {
	out := make([]float64, m*n*hx)
	for z := 0; z < hx; z++ {
		wz := z / (hx / h)
		for j := 0; j < n; j++ {
			for i := 0; i < m; i++ {
				s := 0.0
				for l := 0; l < k; l++ {
					s += float64(w[(wz*m+i)*k+l]) * float64(x[(z*n+j)*k+l])
				}
				out[(z*n+j)*m+i] = s
			}
		}
	}
	return out
}

func refNorm(a []float32, n int, eps float64, rms bool) []float64 {
	out := make([]float64, len(a))
	for r := 0; r < len(a)/n; r++ {
		row := a[r*n:][:n]
		mean := 0.0
		if !rms {
			for _, v := range row {
				mean += float64(v)
			}
			mean /= float64(n)
		}
		vr := 0.0
		for _, v := range row {
			vr += (float64(v) - mean) * (float64(v) - mean)
		}
		vr /= float64(n)
		for i, v := range row {
			out[r*n+i] = (float64(v) - mean) / math.Sqrt(vr+eps)
		}
	}
	return out
}

func gelu(x, _ float64) float64 {
	return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
}

func refRoPE(a []float32, pos []int32, d, nh, nt int, base float64, neox bool) []float64 {
	out := make([]float64, len(a))
	for tk := 0; tk < nt; tk++ {
		for h := 0; h < nh; h++ {
			row := a[(tk*nh+h)*d:][:d]
			o := out[(tk*nh+h)*d:][:d]
			for i := 0; i < d/2; i++ {
				theta := float64(pos[tk]) * math.Pow(base, -2*float64(i)/float64(d))
				c, s := math.Cos(theta), math.Sin(theta)
				i0, i1 := 2*i, 2*i+1
				if neox {
					i0, i1 = i, i+d/2
				}
				x0, x1 := float64(row[i0]), float64(row[i1])
				o[i0] = x0*c - x1*s
				o[i1] = x0*s + x1*c
			}
		}
	}
	return out
}

// refAttention returns [d, nq, nh] attention output with GQA (query head h uses kv head h / (nh/nhkv)).
func refAttention(q, k, v, mask []float32, d, nq, nkv, nh, nhkv int, scale float64) []float64 {
	out := make([]float64, d*nq*nh)
	for h := 0; h < nh; h++ {
		kh := h / (nh / nhkv)
		for qi := 0; qi < nq; qi++ {
			sc := make([]float64, nkv)
			mx := math.Inf(-1)
			for j := 0; j < nkv; j++ {
				s := 0.0
				for i := 0; i < d; i++ {
					s += float64(q[(h*nq+qi)*d+i]) * float64(k[(kh*nkv+j)*d+i])
				}
				sc[j] = s*scale + float64(mask[qi*nkv+j])
				mx = math.Max(mx, sc[j])
			}
			sum := 0.0
			for j := range sc {
				sc[j] = math.Exp(sc[j] - mx)
				sum += sc[j]
			}
			for i := 0; i < d; i++ {
				s := 0.0
				for j := 0; j < nkv; j++ {
					s += sc[j] / sum * float64(v[(kh*nkv+j)*d+i])
				}
				out[(h*nq+qi)*d+i] = s
			}
		}
	}
	return out
}
