package quant

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// kDataset is one kind of super-block input for comparing fast fits with the reference.
type kDataset struct {
	name string
	gen  func(r *rand.Rand, x []float32)
}

func genEach(f func(r *rand.Rand, i int) float64) func(r *rand.Rand, x []float32) {
	return func(r *rand.Rand, x []float32) {
		for i := range x {
			x[i] = float32(f(r, i))
		}
	}
}

// kDatasets covers the shapes that exercise every branch of the fits: typical weights, heavy
// tails, outliers, one-signed groups, flat and all-zero groups, exact ties on the rounding grid,
// values near and beyond the float16 range of the block scales, subnormals and arbitrary finite
// bit patterns.
var kDatasets = []kDataset{
	{"normal", genEach(func(r *rand.Rand, _ int) float64 { return r.NormFloat64() })},
	{"weights_0.02", genEach(func(r *rand.Rand, _ int) float64 { return 0.02 * r.NormFloat64() })},
	{"student_t3", genEach(func(r *rand.Rand, _ int) float64 {
		var chi2 float64
		for k := 0; k < 3; k++ {
			z := r.NormFloat64()
			chi2 += z * z
		}
		return r.NormFloat64() / math.Sqrt(chi2/3)
	})},
	{"outliers", genEach(func(r *rand.Rand, i int) float64 {
		if i%37 == 0 {
			return 300 * r.NormFloat64()
		}
		return r.NormFloat64()
	})},
	{"positive", genEach(func(r *rand.Rand, _ int) float64 { return 1 + r.Float64() })},
	{"negative", genEach(func(r *rand.Rand, _ int) float64 { return -1 - r.Float64() })},
	{"zeros", genEach(func(*rand.Rand, int) float64 { return 0 })},
	{"negative_zeros", genEach(func(*rand.Rand, int) float64 { return math.Copysign(0, -1) })},
	{"constant", genEach(func(*rand.Rand, int) float64 { return 0.375 })},
	{"constant_negative", genEach(func(*rand.Rand, int) float64 { return -3 })},
	{"groups_mixed", genEach(func(r *rand.Rand, i int) float64 {
		switch (i / 16) % 4 { // flat, zero, tiny and normal groups side by side
		case 0:
			return 0.5
		case 1:
			return 0
		case 2:
			return 1e-20 * r.NormFloat64()
		}
		return r.NormFloat64()
	})},
	{"sparse", genEach(func(r *rand.Rand, _ int) float64 {
		if r.IntN(8) == 0 {
			return r.NormFloat64()
		}
		return 0
	})},
	{"grid_ties", genEach(func(r *rand.Rand, _ int) float64 { return float64(r.IntN(65)-32) * 0.125 })},
	{"few_levels", genEach(func(r *rand.Rand, _ int) float64 { return float64(r.IntN(3)) })},
	{"tiny_1e-30", genEach(func(r *rand.Rand, _ int) float64 { return 1e-30 * r.NormFloat64() })},
	{"subnormal_1e-40", genEach(func(r *rand.Rand, _ int) float64 { return 1e-40 * r.NormFloat64() })},
	{"large_1e4", genEach(func(r *rand.Rand, _ int) float64 { return 1e4 * r.NormFloat64() })},
	{"huge_1e30", genEach(func(r *rand.Rand, _ int) float64 { return 1e30 * r.NormFloat64() })},
	{"huge_3e38", genEach(func(r *rand.Rand, _ int) float64 { return 3e38 * (2*r.Float64() - 1) })},
	{"random_bits", func(r *rand.Rand, x []float32) {
		for i := range x {
			x[i] = finiteFromBits(r.Uint32())
		}
	}},
}

// finiteFromBits maps a bit pattern to a finite float32 (NaN and ±Inf become 0).
func finiteFromBits(b uint32) float32 {
	f := math.Float32frombits(b)
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		return 0
	}
	return f
}

// kEncoder is one K-quant encoder parameterized by its fit.
type kEncoder struct {
	typ  Type
	with func(x []float32, y []byte, fit fitImpl)
}

var kEncoders = []kEncoder{{Q4_K, quantizeQ4K}, {Q5_K, quantizeQ5K}, {Q6_K, quantizeQ6K}}

// encoderFor returns enc with a fixed fit.
func (enc kEncoder) encoderFor(fit fitImpl) func(x []float32, y []byte) {
	return func(x []float32, y []byte) { enc.with(x, y, fit) }
}

// compareBlock encodes x with the reference and with enc and fails on the first differing byte.
func compareBlock(t *testing.T, typ Type, ref, enc func(x []float32, y []byte), x []float32) bool {
	t.Helper()
	want := make([]byte, typ.TypeSize())
	got := make([]byte, typ.TypeSize())
	ref(x, want)
	enc(x, got)
	if !bytes.Equal(got, want) {
		t.Errorf("%s: bytes differ:\n got  %x\n want %x\n input %v", typ, got, want, x)
		return false
	}
	return true
}

// TestFastFitsMatchReference checks every fast fit (pure Go, and AVX2 assembly where the CPU
// has it) against the reference transcription on all datasets, 64 super-blocks each, and the
// dispatching encoders Quantize uses.
func TestFastFitsMatchReference(t *testing.T) {
	t.Logf("fast fits in this build: %v; Quantize uses %v", fastFits, fastFit)
	for _, enc := range kEncoders {
		ref := enc.encoderFor(fitRef)
		type variant struct {
			name string
			fn   func(x []float32, y []byte)
		}
		variants := []variant{{"dispatch", blockCodecs[enc.typ].quantize}}
		for _, f := range fastFits {
			variants = append(variants, variant{f.String(), enc.encoderFor(f)})
		}
		for _, v := range variants {
			for di, ds := range kDatasets {
				t.Run(fmt.Sprintf("%s/%s/%s", enc.typ, v.name, ds.name), func(t *testing.T) {
					r := rand.New(rand.NewPCG(uint64(di), uint64(enc.typ)))
					x := make([]float32, QK_K)
					for b := 0; b < 64; b++ {
						ds.gen(r, x)
						if !compareBlock(t, enc.typ, ref, v.fn, x) {
							return
						}
					}
				})
			}
		}
	}
}

// TestFrameLayout checks the field offsets the assembly uses.
func TestFrameLayout(t *testing.T) {
	for _, c := range frameOffsets() {
		if c.got != c.want {
			t.Errorf("%s: offset %d, assembly uses %d", c.name, c.got, c.want)
		}
	}
}

// FuzzKQuantFits feeds arbitrary finite super-blocks to every fast fit and compares the
// encodings with the reference.
func FuzzKQuantFits(f *testing.F) {
	seed := make([]byte, 4*QK_K)
	for i := 0; i < QK_K; i++ {
		binary.LittleEndian.PutUint32(seed[4*i:], math.Float32bits(float32(i%17)-8))
	}
	f.Add(seed)
	f.Add(make([]byte, 4*QK_K))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		x := make([]float32, QK_K)
		for i := range x {
			if 4*i+4 <= len(data) {
				x[i] = finiteFromBits(binary.LittleEndian.Uint32(data[4*i:]))
			} else if len(data) > 0 {
				// Short inputs repeat a few values: flat and tied groups.
				x[i] = float32(int8(data[i%len(data)])) / 16
			}
		}
		for _, enc := range kEncoders {
			for _, f := range fastFits {
				compareBlock(t, enc.typ, enc.encoderFor(fitRef), enc.encoderFor(f), x)
			}
		}
	})
}

// BenchmarkKQuantFits measures each fit of each K-quant type on one goroutine (MB/s of float32
// input), the reference included, on N(0, 0.02²) weights.
func BenchmarkKQuantFits(b *testing.B) {
	src := normals(21, 16*4096, 0.02)
	for _, enc := range kEncoders {
		for _, f := range append([]fitImpl{fitRef}, fastFits...) {
			fn := enc.encoderFor(f)
			b.Run(enc.typ.String()+"/"+f.String(), func(b *testing.B) {
				dst := make([]byte, len(src)/QK_K*enc.typ.TypeSize())
				ts := enc.typ.TypeSize()
				b.SetBytes(int64(4 * len(src)))
				stop := cpuMeter(b)
				for i := 0; i < b.N; i++ {
					for k := 0; k < len(src)/QK_K; k++ {
						fn(src[k*QK_K:(k+1)*QK_K], dst[k*ts:(k+1)*ts])
					}
				}
				stop(int64(4 * len(src)))
			})
		}
	}
}
