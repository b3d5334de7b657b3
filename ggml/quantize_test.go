package ggml_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/quant"
)

// encodeTypes are the types quant encodes; each is compared with ggml_quantize_chunk.
var encodeTypes = []quant.Type{
	quant.F16, quant.BF16, quant.Q4_0, quant.Q4_1, quant.Q5_0, quant.Q5_1, quant.Q8_0,
	quant.Q4_K, quant.Q5_K, quant.Q6_K, quant.Q8_K,
}

// dataset is one kind of input; gen fills n values.
type dataset struct {
	name string
	gen  func(r *rand.Rand, n int) []float32
}

// overflowingScale lists the datasets whose reciprocal block scale overflows in the 32-value
// formats, so that ggml's reference converts ±Inf and NaN to integers, which C leaves undefined:
// x86-64 gives INT32_MIN, aarch64 saturates. quant writes x86-64's bytes on every platform (files
// converted anywhere are identical); elsewhere the blocks must decode to the same values (the
// scale is zero, so the level bits do not matter).
var overflowingScale = map[string]bool{"subnormal_1e-40": true}

func fill(n int, f func(i int) float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(f(i))
	}
	return v
}

// studentT draws from Student's t with df degrees of freedom (heavy tails).
func studentT(r *rand.Rand, df int) float64 {
	var chi2 float64
	for i := 0; i < df; i++ {
		z := r.NormFloat64()
		chi2 += z * z
	}
	return r.NormFloat64() / math.Sqrt(chi2/float64(df))
}

var datasets = []dataset{
	{"normal", func(r *rand.Rand, n int) []float32 { return fill(n, func(int) float64 { return r.NormFloat64() }) }},
	{"normal_small_weights", func(r *rand.Rand, n int) []float32 {
		return fill(n, func(int) float64 { return 0.02 * r.NormFloat64() })
	}},
	{"student_t3", func(r *rand.Rand, n int) []float32 { return fill(n, func(int) float64 { return studentT(r, 3) }) }},
	{"cauchy_clipped", func(r *rand.Rand, n int) []float32 {
		return fill(n, func(int) float64 {
			c := math.Tan(math.Pi * (r.Float64() - 0.5))
			return math.Max(-1e4, math.Min(1e4, c))
		})
	}},
	{"outliers", func(r *rand.Rand, n int) []float32 {
		return fill(n, func(i int) float64 {
			if i%97 == 0 {
				return 300 * r.NormFloat64()
			}
			return r.NormFloat64()
		})
	}},
	{"positive", func(r *rand.Rand, n int) []float32 { return fill(n, func(int) float64 { return 1 + r.Float64() }) }},
	{"negative", func(r *rand.Rand, n int) []float32 { return fill(n, func(int) float64 { return -1 - r.Float64() }) }},
	{"zeros", func(r *rand.Rand, n int) []float32 { return make([]float32, n) }},
	{"constant", func(r *rand.Rand, n int) []float32 { return fill(n, func(int) float64 { return 0.375 }) }},
	{"constant_negative", func(r *rand.Rand, n int) []float32 { return fill(n, func(int) float64 { return -3 }) }},
	{"sparse", func(r *rand.Rand, n int) []float32 {
		return fill(n, func(i int) float64 {
			if r.IntN(8) == 0 {
				return r.NormFloat64()
			}
			return 0
		})
	}},
	// Small integers times a power of two: exact ties for every rounding step.
	{"grid_ties", func(r *rand.Rand, n int) []float32 {
		return fill(n, func(int) float64 { return float64(r.IntN(65)-32) * 0.125 })
	}},
	{"tiny_1e-30", func(r *rand.Rand, n int) []float32 {
		return fill(n, func(int) float64 { return 1e-30 * r.NormFloat64() })
	}},
	{"subnormal_1e-40", func(r *rand.Rand, n int) []float32 {
		return fill(n, func(int) float64 { return 1e-40 * r.NormFloat64() })
	}},
	{"large_1e4", func(r *rand.Rand, n int) []float32 {
		return fill(n, func(int) float64 { return 1e4 * r.NormFloat64() })
	}},
	// Beyond the fp16 range of the block scales: ggml writes ±Inf scales; quant must write the same.
	{"huge_1e30", func(r *rand.Rand, n int) []float32 {
		return fill(n, func(int) float64 { return 1e30 * r.NormFloat64() })
	}},
	{"huge_3e38", func(r *rand.Rand, n int) []float32 {
		return fill(n, func(int) float64 { return 3e38 * (2*r.Float64() - 1) })
	}},
	{"random_bits", func(r *rand.Rand, n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			for {
				f := math.Float32frombits(r.Uint32())
				if !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0) {
					v[i] = f
					break
				}
			}
		}
		return v
	}},
}

// rowLengths returns the row lengths to test for a block size: multiples of the block that are
// not multiples of 256 where the format allows.
func rowLengths(bs int) []int {
	switch bs {
	case 1:
		return []int{1, 7, 300}
	case 32:
		return []int{32, 96, 1152}
	default:
		return []int{256, 1280}
	}
}

func TestQuantizeMatchesGGML(t *testing.T) {
	for _, typ := range encodeTypes {
		for _, ds := range datasets {
			for _, cols := range rowLengths(typ.BlockSize()) {
				rows := 3
				name := fmt.Sprintf("%s/%s/%dx%d", typ, ds.name, rows, cols)
				t.Run(name, func(t *testing.T) {
					r := rand.New(rand.NewPCG(uint64(cols), uint64(len(ds.name))*131+uint64(typ)))
					src := ds.gen(r, rows*cols)
					want, err := ggml.QuantizeChunk(int(typ), src, rows, cols)
					if err != nil {
						t.Fatal(err)
					}
					got, err := quant.Quantize(typ, src, cols)
					if err != nil {
						t.Fatal(err)
					}
					if overflowingScale[ds.name] && runtime.GOARCH != "amd64" && typ.BlockSize() == 32 {
						gd, err := quant.Dequantize(typ, got, len(src))
						if err != nil {
							t.Fatal(err)
						}
						wd, err := ggml.DequantizeRow(int(typ), want, len(src))
						if err != nil {
							t.Fatal(err)
						}
						// Zero scales decode to zeros whose signs follow the level bits: compare values.
						for i := range gd {
							if gd[i] != wd[i] {
								t.Fatalf("value %d decodes to %v here, %v from ggml's bytes", i, gd[i], wd[i])
							}
						}
						return
					}
					if i := firstDiff(got, want); i >= 0 {
						ts := typ.TypeSize()
						b := i / ts
						t.Fatalf("byte %d (block %d) differs:\n got  %x\n want %x\n input %v", i, b,
							got[b*ts:(b+1)*ts], want[b*ts:(b+1)*ts], src[b*typ.BlockSize():(b+1)*typ.BlockSize()])
					}
					// Decoding the same bytes gives the same floats in both.
					gd, err := quant.Dequantize(typ, want, len(src))
					if err != nil {
						t.Fatal(err)
					}
					wd, err := ggml.DequantizeRow(int(typ), want, len(src))
					if err != nil {
						t.Fatal(err)
					}
					if i := firstFloatDiff(gd, wd); i >= 0 {
						t.Fatalf("dequantized value %d: got %v (%#08x), want %v (%#08x)", i, gd[i], math.Float32bits(gd[i]), wd[i], math.Float32bits(wd[i]))
					}
				})
			}
		}
	}
}

// TestDequantizeRandomBytesMatchesGGML decodes arbitrary block contents (NaN and Inf scales,
// every code) with both decoders.
func TestDequantizeRandomBytesMatchesGGML(t *testing.T) {
	for _, typ := range append([]quant.Type{quant.F32}, encodeTypes...) {
		t.Run(typ.String(), func(t *testing.T) {
			r := rand.New(rand.NewPCG(7, uint64(typ)))
			n := 64 * typ.BlockSize()
			size, err := typ.RowSize(n)
			if err != nil {
				t.Fatal(err)
			}
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(r.Uint32())
			}
			got, err := quant.Dequantize(typ, data, n)
			if err != nil {
				t.Fatal(err)
			}
			if typ == quant.F32 {
				// ggml has no to_float for F32; compare with the raw bits.
				for i := range got {
					if w := binary.LittleEndian.Uint32(data[4*i:]); math.Float32bits(got[i]) != w {
						t.Fatalf("value %d: got %#08x, want %#08x", i, math.Float32bits(got[i]), w)
					}
				}
				return
			}
			want, err := ggml.DequantizeRow(int(typ), data, n)
			if err != nil {
				t.Fatal(err)
			}
			if i := firstFloatDiff(got, want); i >= 0 {
				t.Fatalf("value %d: got %v (%#08x), want %v (%#08x)", i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
			}
		})
	}
}

// TestHalfConversionsMatchGGML checks the scalar conversions on special values, including NaN,
// which Quantize rejects but the conversion functions define.
func TestHalfConversionsMatchGGML(t *testing.T) {
	special := []float32{
		0, float32(math.Copysign(0, -1)), 1, -1, 65504, 65505, 65519.99, 65520, -65520, 1e30, -1e30,
		float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), math.Float32frombits(0x7f800001),
		math.Float32frombits(0xffc12345), 5.9604645e-08, 2.9802322e-08, 2.9802326e-08, 6.1035156e-05,
		6.097555e-05, 1e-45, math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32,
		math.Float32frombits(0x3f808000), math.Float32frombits(0x3f818000), math.Float32frombits(0x3f80ffff),
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 1<<16; i++ {
		special = append(special, math.Float32frombits(r.Uint32()))
	}
	check := func(name string, typ quant.Type, conv func(float32) uint16) {
		t.Run(name, func(t *testing.T) {
			want, err := ggml.QuantizeChunk(int(typ), special, 1, len(special))
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range special {
				if got, w := conv(v), binary.LittleEndian.Uint16(want[2*i:]); got != w {
					t.Fatalf("%s(%v = %#08x) = %#04x, want %#04x", name, v, math.Float32bits(v), got, w)
				}
			}
		})
	}
	check("F32ToF16", quant.F16, quant.F32ToF16)
	check("F32ToBF16", quant.BF16, quant.F32ToBF16)

	t.Run("F16ToF32_all", func(t *testing.T) {
		data := make([]byte, 2<<16)
		for h := 0; h < 1<<16; h++ {
			binary.LittleEndian.PutUint16(data[2*h:], uint16(h))
		}
		want, err := ggml.DequantizeRow(int(quant.F16), data, 1<<16)
		if err != nil {
			t.Fatal(err)
		}
		for h := 0; h < 1<<16; h++ {
			if got := quant.F16ToF32(uint16(h)); math.Float32bits(got) != math.Float32bits(want[h]) {
				t.Fatalf("F16ToF32(%#04x) = %#08x, want %#08x", h, math.Float32bits(got), math.Float32bits(want[h]))
			}
		}
	})
}

// TestQuantizeChunkBadInput checks that shapes ggml would assert on are refused in Go.
func TestQuantizeChunkBadInput(t *testing.T) {
	cases := []struct {
		name       string
		typ        int
		n          int
		rows, cols int
		want       string
	}{
		{"not a block multiple", int(quant.Q4_0), 48, 1, 48, "block size"},
		{"k-quant row of 1152", int(quant.Q4_K), 1152, 1, 1152, "block size"},
		{"length mismatch", int(quant.Q8_0), 64, 3, 32, "values for"},
		{"zero columns", int(quant.Q8_0), 0, 1, 0, "bad shape"},
		{"negative rows", int(quant.Q8_0), 32, -1, 32, "bad shape"},
		{"unsupported type", 24, 32, 1, 32, "not supported"},
		{"unknown type", 999, 32, 1, 32, "not supported"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ggml.QuantizeChunk(c.typ, make([]float32, c.n), c.rows, c.cols)
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
	if _, err := ggml.DequantizeRow(int(quant.Q4_0), make([]byte, 17), 32); err == nil {
		t.Fatal("DequantizeRow accepted 17 bytes for a Q4_0 block")
	}
	if _, err := ggml.DequantizeRow(int(quant.Q6_K), make([]byte, 210), 255); err == nil {
		t.Fatal("DequantizeRow accepted 255 values of Q6_K")
	}
}

func firstDiff(a, b []byte) int {
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func firstFloatDiff(a, b []float32) int {
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

// quantGoldenPath holds ggml's encodings of one fixed input for every type package quant
// encodes, so that quant's own tests check byte-exactness without cgo.
const quantGoldenPath = "../testdata/quant/ggml_golden.txt"

var updateQuantGolden = flag.Bool("update-quant-golden", false, "rewrite "+quantGoldenPath+" from ggml_quantize_chunk")

// goldenInput is 2 rows of 256 values mixing the cases that exercise every branch: normal
// values, a zero sub-block, exact ties, outliers, heavy tails, tiny and constant values.
func goldenInput() []float32 {
	r := rand.New(rand.NewPCG(2024, 5))
	v := make([]float32, 512)
	for i := range v {
		switch {
		case i < 128:
			v[i] = float32(r.NormFloat64())
		case i < 160:
			v[i] = 0
		case i < 192:
			v[i] = float32(r.IntN(33)-16) * 0.25
		case i < 256:
			v[i] = float32(r.NormFloat64())
			if i%13 == 0 {
				v[i] *= 100
			}
		case i < 384:
			v[i] = float32(studentT(r, 3))
		case i < 416:
			v[i] = float32(1e-30 * r.NormFloat64())
		case i < 448:
			v[i] = -0.75
		default:
			v[i] = float32(0.02 * r.NormFloat64())
		}
	}
	return v
}

func renderQuantGolden(t *testing.T) string {
	src := goldenInput()
	raw := make([]byte, 4*len(src))
	for i, f := range src {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(f))
	}
	var b strings.Builder
	b.WriteString("# ggml_quantize_chunk (ollama v0.17.4 ggml, imatrix NULL) of the input below; Q8_K via quantize_row_q8_K_ref.\n")
	b.WriteString("# Format: <type> <rows>x<cols> <hex bytes>; the input line holds little-endian float32.\n")
	b.WriteString("# Regenerate: go test ./ggml -run TestQuantGolden -update-quant-golden\n")
	fmt.Fprintf(&b, "input 2x256 %s\n", hex.EncodeToString(raw))
	for _, typ := range encodeTypes {
		out, err := ggml.QuantizeChunk(int(typ), src, 2, 256)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s 2x256 %s\n", typ, hex.EncodeToString(out))
	}
	return b.String()
}

// TestQuantGolden keeps testdata/quant/ggml_golden.txt equal to what the pinned ggml produces.
func TestQuantGolden(t *testing.T) {
	want := renderQuantGolden(t)
	if *updateQuantGolden {
		if err := os.WriteFile(quantGoldenPath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(quantGoldenPath)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s is stale; regenerate it with -update-quant-golden and review the diff", quantGoldenPath)
	}
}
