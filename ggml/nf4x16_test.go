package ggml

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/quant"
)

// nf4x16Cases cover one group and chunk, several groups, blocks of 128 and 4096 (scales repeated
// over chunks), an odd number of chunks (4352 = 68 × 64), vector counts below, at and above the
// kernel's tile of 8 (1, 3, 8, 13) and a remainder tile, and more groups than one L2 block of the
// multi-vector loop holds (9 groups of 4096 columns; a block holds 7).
var nf4x16Cases = []nf4Case{
	{144, 4096, 64, 11},
	{16, 64, 64, 1},
	{32, 256, 64, 3},
	{48, 4096, 128, 8},
	{16, 4096, 4096, 2},
	{64, 4352, 64, 13},
	{16, 128, 128, 1},
	{128, 256, 256, 9},
}

// nf4x16RepackRef repacks by the layout's definition (nf4x16.h), from the decoded codes.
func nf4x16RepackRef(t testing.TB, stream []byte, rows, cols, bs int) []byte {
	t.Helper()
	q, err := quant.DecodeNF4Stream(stream, rows*cols, bs)
	if err != nil {
		t.Fatal(err)
	}
	nchunks := cols / 64
	out := make([]byte, rows/16*nchunks*576)
	for g := 0; g < rows/16; g++ {
		for j := 0; j < nchunks; j++ {
			chunk := out[(g*nchunks+j)*576:]
			for r := 0; r < 16; r++ {
				e := (g*16+r)*cols + 64*j
				binary.LittleEndian.PutUint32(chunk[4*r:], math.Float32bits(q.Absmax[e/bs]))
				for k := 0; k < 8; k++ {
					for i := 0; i < 4; i++ {
						chunk[64+64*k+4*r+i] = q.Code(e+8*k+i) | q.Code(e+8*k+4+i)<<4
					}
				}
			}
		}
	}
	return out
}

// nf4x16Record is one decoded activation record.
type nf4x16Record struct {
	q    [64]int8
	dd   float32
	bias int32
}

func nf4x16Records(raw []byte) []nf4x16Record {
	out := make([]nf4x16Record, len(raw)/72)
	for i := range out {
		rec := raw[72*i:]
		for k := 0; k < 64; k++ {
			out[i].q[k] = int8(rec[k])
		}
		out[i].dd = math.Float32frombits(binary.LittleEndian.Uint32(rec[64:]))
		out[i].bias = int32(binary.LittleEndian.Uint32(rec[68:]))
	}
	return out
}

// nf4x16QuantizeRef quantizes one block of 64 values by the record's definition (nf4x16.h), with
// the kernel's float32 operations: q = round-half-even(x · (127/max|x|)), dd = max|x|/127/127.
func nf4x16QuantizeRef(x []float32) nf4x16Record {
	var amax float32
	for _, v := range x {
		amax = max(amax, float32(math.Abs(float64(v))))
	}
	var id float32
	if amax > 0 {
		id = 127 / amax
	}
	r := nf4x16Record{dd: amax / 127 / 127}
	var sum int32
	for i, v := range x {
		q := math.RoundToEven(float64(float32(v * id)))
		r.q[i] = int8(max(-127, min(127, q)))
		sum += int32(r.q[i])
	}
	r.bias = 128 * sum
	return r
}

func TestNF4x16LUT(t *testing.T) {
	got := NF4x16LUT()
	for i, l := range quant.NF4Codebook {
		if want := byte(math.Round(float64(l)*127) + 128); got[i] != want {
			t.Errorf("code %d (level %v): %d, want %d", i, l, got[i], want)
		}
	}
}

func TestNF4RepackMatchesReference(t *testing.T) {
	for _, c := range nf4x16Cases {
		t.Run(fmt.Sprintf("%dx%d/bs%d", c.rows, c.cols, c.bs), func(t *testing.T) {
			stream, _, _ := nf4Fixture(t, c, 5)
			got, err := NF4Repack(stream, c.rows, c.cols, c.bs)
			if err != nil {
				t.Fatal(err)
			}
			want := nf4x16RepackRef(t, stream, c.rows, c.cols, c.bs)
			if len(got) != len(want) {
				t.Fatalf("%d bytes, want %d", len(got), len(want))
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("byte %d (group %d, chunk byte %d) = %#02x, want %#02x", i, i/(c.cols/64*576), i%576, got[i], want[i])
				}
			}
			if c.bs == 64 && len(got) != len(stream) {
				t.Errorf("blocks of 64: %d bytes, the stream has %d", len(got), len(stream))
			}
		})
	}
}

func TestNF4RepackBadInput(t *testing.T) {
	stream := make([]byte, 36*16)
	cases := []struct {
		name           string
		w              []byte
		rows, cols, bs int
		want           string
	}{
		{"rows not a multiple of 16", stream, 8, 128, 64, "rows 8 is not a multiple of 16"},
		{"cols not a multiple of 64", stream, 16, 96, 64, "cols 96 is not a multiple of 64"},
		{"block straddles rows", stream, 16, 64, 128, "cols 64 is not a multiple of the block size 128"},
		{"block size 48", stream, 16, 64, 48, "block size 48"},
		{"zero rows", stream, 0, 64, 64, "bad shape"},
		{"huge shape", stream, math.MaxInt / 2, 64, 64, "bad shape"},
		{"short stream", stream[:100], 16, 64, 64, "stream is 100 bytes, want 576"},
		{"long stream", append(stream, 0), 16, 64, 64, "stream is 577 bytes, want 576"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := NF4Repack(c.w, c.rows, c.cols, c.bs)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}

// TestNF4x16Quantize checks the activation records of every path against the definition, bit for bit,
// on random values of several magnitudes, a block of zeros, exact halves (ties go to even), integers and blocks
// holding Inf or NaN.
func TestNF4x16Quantize(t *testing.T) {
	defer SetNF4ISA(NF4BestISA())
	r := rand.New(rand.NewPCG(7, 8))
	x := make([]float32, 64*8)
	for i := range x {
		x[i] = float32(r.NormFloat64()) * float32(math.Pow(10, float64(i/64-3)))
	}
	clear(x[64:128])
	for i := 0; i < 64; i++ {
		x[128+i] = float32(i-32) + 0.5 // with max |x| = 127 (below) x·127/max|x| is x: every value is a tie
		x[192+i] = -float32(i)         // integers: exact
	}
	x[128+63] = 127
	x[256+5] = float32(math.Inf(-1))
	x[320+9] = float32(math.NaN())
	for _, isa := range NF4SupportedISAs() {
		t.Run(isa.String(), func(t *testing.T) {
			if err := SetNF4ISA(isa); err != nil {
				t.Fatal(err)
			}
			got := nf4x16Records(nf4x16Quantize(x))
			for b := range got {
				if b == 4 || b == 5 {
					g := got[b]
					if g.q != [64]int8{} || g.bias != 0 || !math.IsNaN(float64(g.dd)) {
						t.Errorf("block %d (non-finite): q %v, dd %v, bias %d; want zeros, NaN, 0", b, g.q[:4], g.dd, g.bias)
					}
					continue
				}
				want := nf4x16QuantizeRef(x[64*b : 64*b+64])
				if got[b] != want {
					t.Errorf("block %d: got %+v\nwant %+v", b, got[b], want)
				}
			}
		})
	}
}

// nf4x16Int8Ref is the product of the kernel's integer model in float64: per row and chunk the
// exact Σ u·q − bias, times absmax·dd, summed over chunks. It also returns, per output, the sum of
// the chunk terms' magnitudes (the scale of float32 rounding in the kernel's accumulation).
func nf4x16Int8Ref(t testing.TB, stream []byte, c nf4Case, x []float32) (y, mag []float64) {
	t.Helper()
	q, err := quant.DecodeNF4Stream(stream, c.rows*c.cols, c.bs)
	if err != nil {
		t.Fatal(err)
	}
	lut := NF4x16LUT()
	recs := nf4x16Records(nf4x16Quantize(x))
	nrec := c.cols / 64
	y = make([]float64, c.rows*c.ntok)
	mag = make([]float64, c.rows*c.ntok)
	for tok := 0; tok < c.ntok; tok++ {
		for r := 0; r < c.rows; r++ {
			for j := 0; j < nrec; j++ {
				rec := recs[tok*nrec+j]
				s := -int64(rec.bias)
				for k := 0; k < 64; k++ {
					s += int64(lut[q.Code(r*c.cols+64*j+k)]) * int64(rec.q[k])
				}
				v := float64(s) * float64(q.Absmax[(r*c.cols+64*j)/c.bs]*rec.dd)
				y[tok*c.rows+r] += v
				mag[tok*c.rows+r] += math.Abs(v)
			}
		}
	}
	return y, mag
}

// nf4x16Int8Tol bounds the kernel against nf4x16Int8Ref relative to the sum of the chunk terms'
// magnitudes: the integer sums are exact, so only float32 rounding of the per-chunk scale product
// and of the accumulation over at most 68 chunks remains (68 · 2^-24 ≈ 4e-6 in the worst case).
const nf4x16Int8Tol = 1e-5

// TestNF4x16MatMulMatchesInt8Model checks every path against the integer model in float64.
func TestNF4x16MatMulMatchesInt8Model(t *testing.T) {
	defer SetNF4ISA(NF4BestISA())
	for _, isa := range NF4SupportedISAs() {
		if err := SetNF4ISA(isa); err != nil {
			t.Fatal(err)
		}
		for _, c := range nf4x16Cases {
			for _, threads := range []int{1, 3} {
				t.Run(fmt.Sprintf("%s/%dx%d/bs%d/ntok%d/threads%d", isa, c.rows, c.cols, c.bs, c.ntok, threads), func(t *testing.T) {
					stream, _, x := nf4Fixture(t, c, 6)
					packed, err := NF4Repack(stream, c.rows, c.cols, c.bs)
					if err != nil {
						t.Fatal(err)
					}
					y, err := NF4x16MatMul(packed, c.rows, c.cols, x, threads)
					if err != nil {
						t.Fatal(err)
					}
					want, mag := nf4x16Int8Ref(t, stream, c, x)
					worst, at := 0.0, -1
					for i := range y {
						if e := math.Abs(float64(y[i])-want[i]) / (mag[i] + 1e-30); e > worst {
							worst, at = e, i
						}
					}
					if worst > nf4x16Int8Tol {
						t.Fatalf("worst relative error %.3g at output %d (got %v, want %v), tolerance %g", worst, at, y[at], want[at], nf4x16Int8Tol)
					}
				})
			}
		}
	}
}

// TestNF4x16PathsAgree checks that the VNNI path gives the scalar path's float32 results exactly: both
// add each chunk's exact integer sum, converted to float32, by one fused multiply-add with the same
// scale product in the same chunk order.
func TestNF4x16PathsAgree(t *testing.T) {
	isas := NF4SupportedISAs()
	if len(isas) == 1 {
		t.Logf("no vector NF4 path on this CPU: only the scalar nf4x16 path runs")
		return
	}
	defer SetNF4ISA(NF4BestISA())
	for _, c := range append(nf4x16Cases, nf4Case{64, 4096, 64, 20}) {
		t.Run(fmt.Sprintf("%dx%d/bs%d/ntok%d", c.rows, c.cols, c.bs, c.ntok), func(t *testing.T) {
			stream, _, x := nf4Fixture(t, c, 7)
			packed, err := NF4Repack(stream, c.rows, c.cols, c.bs)
			if err != nil {
				t.Fatal(err)
			}
			// Every path (AVX2 and AVX-512 without VNNI take nf4x16's AVX2 path) gives the scalar path's bits.
			var want []float32
			for _, isa := range isas {
				if err := SetNF4ISA(isa); err != nil {
					t.Fatal(err)
				}
				got, err := NF4x16MatMul(packed, c.rows, c.cols, x, 2)
				if err != nil {
					t.Fatal(err)
				}
				if want == nil {
					want = got
					continue
				}
				for i := range want {
					if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
						t.Fatalf("output %d: %s %v, scalar %v", i, isa, got[i], want[i])
					}
				}
			}
		})
	}
}

// nf4x16Tol bounds the nf4x16 product against the float64 product of the dequantized matrix, as
// ‖y − ref‖ / ‖ref‖ per vector. Two roundings separate them: the codebook held as round(level·127)
// (error up to 0.5/127 of absmax per weight) and the activations held as int8 per 64 values (up to
// 0.5/127 of the block's max |x|). On a 256 × 4096 fixture (Gaussian weights and inputs) each alone
// measures 0.58% and 0.60%, together 0.83% (independent errors add in quadrature). The small
// fixtures below, with 16 to 128 outputs per vector, spread more: 0.98%–1.28%. A wrong code, scale,
// sign or column order gives errors of order 1.
const nf4x16Tol = 2e-2

// TestNF4x16MatMulMatchesReference checks every path against the float64 product of the dequantized
// matrix (the stream kernel's reference).
func TestNF4x16MatMulMatchesReference(t *testing.T) {
	defer SetNF4ISA(NF4BestISA())
	for _, isa := range NF4SupportedISAs() {
		if err := SetNF4ISA(isa); err != nil {
			t.Fatal(err)
		}
		for _, c := range nf4x16Cases {
			t.Run(fmt.Sprintf("%s/%dx%d/bs%d/ntok%d", isa, c.rows, c.cols, c.bs, c.ntok), func(t *testing.T) {
				stream, w, x := nf4Fixture(t, c, 8)
				packed, err := NF4Repack(stream, c.rows, c.cols, c.bs)
				if err != nil {
					t.Fatal(err)
				}
				y, err := NF4x16MatMul(packed, c.rows, c.cols, x, 2)
				if err != nil {
					t.Fatal(err)
				}
				nf4x16CheckNorm(t, c, w, x, y)
			})
		}
	}
}

// nf4x16CheckNorm compares y [rows, ntok] with the float64 product of w and x, per vector, by norm.
func nf4x16CheckNorm(t *testing.T, c nf4Case, w, x, y []float32) {
	t.Helper()
	worst, worstTok := 0.0, -1
	for tok := 0; tok < c.ntok; tok++ {
		var den, num float64
		for r := 0; r < c.rows; r++ {
			var ref float64
			for k := 0; k < c.cols; k++ {
				ref += float64(w[r*c.cols+k]) * float64(x[tok*c.cols+k])
			}
			d := float64(y[tok*c.rows+r]) - ref
			num += d * d
			den += ref * ref
		}
		if e := math.Sqrt(num / den); e > worst || math.IsNaN(e) {
			worst, worstTok = e, tok
		}
	}
	t.Logf("worst ‖y − ref‖/‖ref‖ %.4g (vector %d)", worst, worstTok)
	if !(worst <= nf4x16Tol) {
		t.Fatalf("worst relative error %.3g at vector %d, tolerance %g", worst, worstTok, nf4x16Tol)
	}
}

// TestMulMatNF4x16Graph runs the graph ops (quantize, then multiply; the weight filled by SetNF4x16 straight into
// its host buffer) and compares them with the direct call, which runs the same kernels: the results are equal.
func TestMulMatNF4x16Graph(t *testing.T) {
	for _, dev := range Devices() {
		if dev.Kind != DeviceCPU {
			continue
		}
		for _, c := range []nf4Case{{32, 256, 64, 1}, {48, 4096, 128, 8}, {64, 4352, 64, 13}, {16, 128, 64, 6}} {
			t.Run(fmt.Sprintf("%s/%dx%d/ntok%d", dev.Variant, c.rows, c.cols, c.ntok), func(t *testing.T) {
				stream, _, x := nf4Fixture(t, c, 9)
				packed, err := NF4Repack(stream, c.rows, c.cols, c.bs)
				if err != nil {
					t.Fatal(err)
				}
				want, err := NF4x16MatMul(packed, c.rows, c.cols, x, 1)
				if err != nil {
					t.Fatal(err)
				}
				// x as [cols, ntok] and, when ntok is even, as [cols, ntok/2, 2] (batch dims).
				shapes := [][]int{{c.cols, c.ntok}}
				if c.ntok%2 == 0 {
					shapes = append(shapes, []int{c.cols, c.ntok / 2, 2})
				}
				for _, xs := range shapes {
					size := NF4x16Size(c.rows, c.cols)
					n := newNF4Graph(t, dev, 2, TypeI8, []int{size}, make([]byte, size), xs, func(ctx *Context, w, x Tensor) Tensor {
						return w.MulMatNF4x16(ctx, x, c.rows)
					})
					if err := n.w.SetNF4x16(stream, c.rows, c.cols, c.bs); err != nil {
						n.Close()
						t.Fatal(err)
					}
					if got, err := n.w.Bytes(); err != nil || string(got) != string(packed) {
						n.Close()
						t.Fatalf("SetNF4x16 did not store NF4Repack's bytes (err %v)", err)
					}
					y, err := n.run(x)
					n.Close()
					if err != nil {
						t.Fatal(err)
					}
					for i := range want {
						if math.Float32bits(y[i]) != math.Float32bits(want[i]) {
							t.Fatalf("x %v: output %d = %v, direct call %v", xs, i, y[i], want[i])
						}
					}
				}
			})
		}
	}
}

// TestProductsShareQuantizedInput checks that products of one input in the same record format use one quantize op
// (q, k and v; gate and up; Q4_K and Q6_K matrices share Q8_K records), that other formats get their own, and that
// Reset forgets the memo.
func TestProductsShareQuantizedInput(t *testing.T) {
	const cols = 256
	q4 := func(ctx *Context, rows int) Tensor { return ctx.NewTensor(TypeI8, rows*cols/32*18) }
	mm := map[string]func(ctx *Context, rows int, x Tensor) Tensor{
		"q4x16": func(ctx *Context, rows int, x Tensor) Tensor { return q4(ctx, rows).MulMatQ4X16(ctx, x, rows) },
		"q4kx16": func(ctx *Context, rows int, x Tensor) Tensor {
			return ctx.NewTensor(TypeI8, Q4KX16Size(rows, cols)).MulMatQ4KX16(ctx, x, rows)
		},
		"q6kx16": func(ctx *Context, rows int, x Tensor) Tensor {
			return ctx.NewTensor(TypeI8, Q6KX16Size(rows, cols)).MulMatQ6KX16(ctx, x, rows)
		},
		"nf4x16": func(ctx *Context, rows int, x Tensor) Tensor {
			return ctx.NewTensor(TypeI8, NF4x16Size(rows, cols)).MulMatNF4x16(ctx, x, rows)
		},
	}
	for _, c := range []struct {
		a, b  string
		share bool
	}{
		{"q4x16", "q4x16", true},
		{"q4kx16", "q4kx16", true},
		{"q4kx16", "q6kx16", true},
		{"q6kx16", "q6kx16", true},
		{"nf4x16", "nf4x16", true},
		{"q4x16", "q4kx16", false},
		{"q4x16", "nf4x16", false},
		{"q6kx16", "nf4x16", false},
	} {
		t.Run(c.a+"_"+c.b, func(t *testing.T) {
			ctx := NewContext(16, 16)
			defer ctx.Close()
			x := ctx.NewTensor(TypeF32, cols, 3)
			y1 := mm[c.a](ctx, 16, x)
			y2 := mm[c.b](ctx, 32, x)
			if shared := y1.ptr.src[1] == y2.ptr.src[1]; shared != c.share {
				t.Fatalf("quantized input shared: %v, want %v", shared, c.share)
			}
			if got := y2.Shape(); got[0] != 32 || got[1] != 3 {
				t.Fatalf("output shape %v, want [32 3]", got)
			}
			// Another input gets its own records.
			if y3 := mm[c.a](ctx, 16, ctx.NewTensor(TypeF32, cols, 3)); y3.ptr.src[1] == y1.ptr.src[1] {
				t.Fatal("two inputs share one quantize op")
			}
			ctx.Reset()
			if len(ctx.quantized) != 0 {
				t.Fatalf("Reset kept %d memo entries", len(ctx.quantized))
			}
		})
	}
}

func TestMulMatNF4x16BadShapes(t *testing.T) {
	ctx := NewContext(16, 0)
	defer ctx.Close()
	w := ctx.NewTensor(TypeI8, NF4x16Size(16, 64))
	wf := ctx.NewTensor(TypeF32, 36)
	x := ctx.NewTensor(TypeF32, 64, 2)
	x96 := ctx.NewTensor(TypeF32, 96, 2)
	xh := ctx.NewTensor(TypeF16, 64, 2)
	cases := []struct {
		name string
		op   func()
		want string
	}{
		{"f32 weight", func() { wf.MulMatNF4x16(ctx, x, 16) }, "want a contiguous i8 nf4x16 matrix"},
		{"f16 input", func() { w.MulMatNF4x16(ctx, xh, 16) }, "want f32"},
		{"rows", func() { w.MulMatNF4x16(ctx, x, 8) }, "rows 8 is not a multiple of 16"},
		{"cols", func() { w.MulMatNF4x16(ctx, x96, 16) }, "cols 96 is not a multiple of 64"},
		{"weight size", func() { w.MulMatNF4x16(ctx, x, 32) }, "has 576 bytes, want 1152"},
		{"zero rows", func() { w.MulMatNF4x16(ctx, x, 0) }, "bad shape"},
		{"transposed input", func() { w.MulMatNF4x16(ctx, x.Transpose(ctx), 16) }, "contiguous rows"},
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

func TestSetNF4x16BadInput(t *testing.T) {
	ctx := NewContext(4, 0)
	defer ctx.Close()
	w := ctx.NewTensor(TypeI8, NF4x16Size(16, 64))
	wf := ctx.NewTensor(TypeF32, NF4x16Size(16, 64)/4)
	dev := cpuDevice(t)
	b, err := NewBackend(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	buf, err := AllocTensors(ctx, b.DefaultBufferType())
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	stream := make([]byte, 576)
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"f32 tensor", wf.SetNF4x16(stream, 16, 64, 64), "not i8"},
		{"tensor size", w.SetNF4x16(make([]byte, 1152), 32, 64, 64), "holds 576 bytes, got 1152"},
		{"stream size", w.SetNF4x16(stream[:500], 16, 64, 64), "stream is 500 bytes"},
		{"rows", w.SetNF4x16(stream, 15, 64, 64), "rows 15"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", c.err, c.want)
			}
		})
	}
}
