package quant

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

// nf4CodeTree transcribes bitsandbytes' dQuantizeNF4 (csrc/kernels.cu) branch for branch; it is
// the slow reference for nf4Code.
func nf4CodeTree(x float32) uint8 {
	if x > 0.03979014977812767 {
		if x > 0.3893125355243683 {
			if x > 0.6427869200706482 {
				if x > 0.8614784181118011 {
					return 0b1111
				}
				return 0b1110
			}
			if x > 0.5016634166240692 {
				return 0b1101
			}
			return 0b1100
		}
		if x > 0.2035212516784668 {
			if x > 0.2920137718319893 {
				return 0b1011
			}
			return 0b1010
		}
		if x > 0.1202552504837513 {
			return 0b1001
		}
		return 0b1000
	}
	if x > -0.33967943489551544 {
		if x > -0.13791173323988914 {
			if x > -0.045525018125772476 {
				return 0b0111
			}
			return 0b0110
		}
		if x > -0.23460740596055984 {
			return 0b0101
		}
		return 0b0100
	}
	if x > -0.6106329262256622 {
		if x > -0.4599952697753906 {
			return 0b0011
		}
		return 0b0010
	}
	if x > -0.8480964004993439 {
		return 0b0001
	}
	return 0b0000
}

func TestNF4CodeMatchesKernelTree(t *testing.T) {
	var xs []float32
	for _, th := range nf4Thresholds {
		xs = append(xs, th, math.Nextafter32(th, 2), math.Nextafter32(th, -2))
	}
	xs = append(xs, NF4Codebook[:]...)
	xs = append(xs, 0, float32(math.Copysign(0, -1)), 1.5, -1.5, float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)))
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 100000; i++ {
		xs = append(xs, float32(2.4*r.Float64()-1.2))
	}
	for _, x := range xs {
		if got, want := nf4Code(x), nf4CodeTree(x); got != want {
			t.Fatalf("nf4Code(%v) = %d, dQuantizeNF4 gives %d", x, got, want)
		}
	}
	// Each threshold lies between the codes it separates, and every code maps to itself.
	for k, th := range nf4Thresholds {
		if !(NF4Codebook[k] < th && th < NF4Codebook[k+1]) {
			t.Fatalf("threshold %d = %v not between codes %v and %v", k, th, NF4Codebook[k], NF4Codebook[k+1])
		}
	}
	for c, v := range NF4Codebook {
		if got := nf4Code(v); int(got) != c {
			t.Fatalf("code of codebook value %v = %d, want %d", v, got, c)
		}
	}
}

func TestNF4CodebookExact(t *testing.T) {
	// The decimals in bitsandbytes (get_4bit_type, nf4_dequantization_lut) are float32 values
	// printed as doubles, so the float32 literal, torch.tensor(list) and Go's float32 conversion
	// all give the same value: widening back to float64 reproduces the decimal exactly.
	decimals := [16]string{
		"-1.0", "-0.6961928009986877", "-0.5250730514526367", "-0.39491748809814453",
		"-0.28444138169288635", "-0.18477343022823334", "-0.09105003625154495", "0.0",
		"0.07958029955625534", "0.16093020141124725", "0.24611230194568634", "0.33791524171829224",
		"0.44070982933044434", "0.5626170039176941", "0.7229568362236023", "1.0",
	}
	for i, s := range decimals {
		d, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatal(err)
		}
		if float64(NF4Codebook[i]) != d {
			t.Errorf("NF4Codebook[%d] = %v, not exactly %s", i, float64(NF4Codebook[i]), s)
		}
	}
}

func TestQuantizeNF4HandCases(t *testing.T) {
	cases := []struct {
		name      string
		src       []float32
		blockSize int
		absmax    []float32
		codes     []byte
		deq       []float32
	}{
		{
			// absmax 2, normalized 1, −1, 0.5, −0.25, 0 → codes 15, 0, 12, 4, 7; the missing sixth
			// value is the kernel's zero padding (code 7). Value 2k is the high nibble.
			name: "odd length", src: []float32{2, -2, 1, -0.5, 0}, blockSize: 64,
			absmax: []float32{2},
			codes:  []byte{0xF0, 0xC4, 0x77},
			deq:    []float32{2, -2, 0.44070982933044434 * 2, -0.28444138169288635 * 2, 0},
		},
		{
			// All zeros: absmax 0, the kernel multiplies by 1/0 and NaN compares false everywhere →
			// code 0, which dequantizes to −1·0 = −0.
			name: "zero block", src: []float32{0, 0, 0, 0}, blockSize: 64,
			absmax: []float32{0},
			codes:  []byte{0x00, 0x00},
			deq:    []float32{float32(math.Copysign(0, -1)), float32(math.Copysign(0, -1)), float32(math.Copysign(0, -1)), float32(math.Copysign(0, -1))},
		},
		{
			// 0.0797 / 1 is just above the 7|8 threshold 0.0398 and below 8|9 (0.1203): code 8;
			// −0.05 is below −0.0455: code 6; −1 is code 0, 1 is code 15.
			name: "thresholds", src: []float32{0.0797, -0.05, -1, 1}, blockSize: 64,
			absmax: []float32{1},
			codes:  []byte{0x86, 0x0F},
			deq:    []float32{0.07958029955625534, -0.09105003625154495, -1, 1},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q, err := QuantizeNF4(c.src, c.blockSize)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(q.Absmax, c.absmax) || !slices.Equal(q.Codes, c.codes) {
				t.Fatalf("absmax %v codes %x, want %v %x", q.Absmax, q.Codes, c.absmax, c.codes)
			}
			deq, err := q.Dequantize()
			if err != nil {
				t.Fatal(err)
			}
			for i := range deq {
				if math.Float32bits(deq[i]) != math.Float32bits(c.deq[i]) {
					t.Fatalf("value %d = %v, want %v", i, deq[i], c.deq[i])
				}
			}
		})
	}
}

// TestNF4DequantizeHandCases decodes packed bytes and a quant state with values worked out by
// hand from bitsandbytes' kDequantizeBlockwise: out = dDequantizeNF4(nibble) · absmax.
func TestNF4DequantizeHandCases(t *testing.T) {
	q := &NF4Tensor{
		N: 130, BlockSize: 64,
		Absmax: []float32{0.5, 4, 0.25},
		Codes:  make([]byte, 65),
	}
	q.Codes[0] = 0x7A  // values 0, 1: code 7 (0) and code 10 (0.24611230194568634)
	q.Codes[31] = 0xF1 // values 62, 63: last pair of block 0
	q.Codes[32] = 0x0E // values 64, 65: first pair of block 1 (absmax 4)
	q.Codes[64] = 0xD3 // values 128, 129: block 2 (absmax 0.25)
	deq, err := q.Dequantize()
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]float32{
		0:   0,
		1:   0.12305615097284317, // 0.24611230194568634f · 0.5, exact (power of two)
		62:  0.5,
		63:  -0.34809640049934387, // −0.6961928009986877f · 0.5
		64:  -4,
		65:  2.891827344894409, // 0.7229568362236023f · 4
		128: 0.14065425097942352,
		129: -0.09872937202453613,
		2:   -0.5, // code 0 of the zeroed bytes: −1 · 0.5
	}
	for i, w := range want {
		if deq[i] != w {
			t.Errorf("value %d = %.17g, want %.17g", i, deq[i], w)
		}
	}
}

func TestNF4StreamRoundTrip(t *testing.T) {
	for _, bs := range []int{64, 128, 4096} {
		for _, n := range []int{0, 1, 2, 63, 64, 65, 127, 129, 4096 + 3} {
			t.Run(fmt.Sprintf("bs%d/n%d", bs, n), func(t *testing.T) {
				src := normals(uint64(n), n, 0.03)
				q, err := QuantizeNF4(src, bs)
				if err != nil {
					t.Fatal(err)
				}
				stream, err := q.EncodeStream()
				if err != nil {
					t.Fatal(err)
				}
				size, _ := NF4StreamSize(n, bs)
				if len(stream) != size || size != ceilDiv(n, bs)*(4+bs/2) {
					t.Fatalf("stream %d bytes, NF4StreamSize %d", len(stream), size)
				}
				back, err := DecodeNF4Stream(stream, n, bs)
				if err != nil {
					t.Fatal(err)
				}
				if back.N != q.N || back.BlockSize != q.BlockSize || !slices.Equal(back.Codes, q.Codes) ||
					!slices.Equal(back.Absmax, q.Absmax) {
					t.Fatal("stream round trip changed the tensor")
				}
				a, _ := q.Dequantize()
				b, err := DequantizeNF4Stream(stream, n, bs)
				if err != nil || !slices.Equal(a, b) {
					t.Fatalf("DequantizeNF4Stream differs (%v)", err)
				}
				// Padding after the last value's codes is zero.
				if n%bs != 0 {
					last := stream[len(stream)-(bs/2-ceilDiv(n%bs, 2)):]
					for _, x := range last {
						if x != 0 {
							t.Fatalf("padding byte %#x", x)
						}
					}
				}
			})
		}
	}
}

// TestTypeNF4MatchesStream checks that Quantize(NF4, …) writes the stream of QuantizeNF4 and that
// Dequantize(NF4, …) reads it back like DequantizeNF4Stream.
func TestTypeNF4MatchesStream(t *testing.T) {
	src := normals(8, 6*128, 0.02)
	got, err := Quantize(NF4, src, 128)
	if err != nil {
		t.Fatal(err)
	}
	q, err := QuantizeNF4(src, NF4BlockSize)
	if err != nil {
		t.Fatal(err)
	}
	want, err := q.EncodeStream()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatal("Quantize(NF4) differs from QuantizeNF4 + EncodeStream")
	}
	a, err := Dequantize(NF4, got, len(src))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := q.Dequantize()
	if !slices.Equal(a, b) {
		t.Fatal("Dequantize(NF4) differs from NF4Tensor.Dequantize")
	}
}

func TestNF4BadInput(t *testing.T) {
	if _, err := QuantizeNF4(make([]float32, 64), 32); err == nil {
		t.Fatal("block size 32 accepted")
	}
	src := make([]float32, 100)
	src[77] = float32(math.Inf(1))
	_, err := QuantizeNF4(src, 64)
	checkErr(t, err, new(*NonFiniteError), "index 77")
	_, err = DecodeNF4Stream(make([]byte, 35), 64, 64)
	checkErr(t, err, new(*FormatError), "35 bytes for 64 values")
	_, err = NF4StreamSize(-1, 64)
	checkErr(t, err, nil, "negative")
	bad := &NF4Tensor{N: 10, BlockSize: 64, Absmax: []float32{1, 2}, Codes: make([]byte, 5)}
	_, err = bad.EncodeStream()
	checkErr(t, err, nil, "2 absmax values for 10 elements")
	bad = &NF4Tensor{N: 10, BlockSize: 64, Absmax: []float32{1}, Codes: make([]byte, 4)}
	_, err = bad.Dequantize()
	checkErr(t, err, nil, "4 code bytes for 10 elements, want 5")
}

// exactDynamicMap is create_dynamic_map's intended values, computed in float64.
func exactDynamicMap() []float64 {
	var data []float64
	for i := 0; i < 7; i++ {
		n := 1 << i
		for k := 0; k < n; k++ {
			mean := 0.1 + (float64(k)+0.5)*0.9/float64(n)
			v := math.Pow10(i-6) * mean
			data = append(data, v, -v)
		}
	}
	data = append(data, 0, 1)
	slices.Sort(data)
	return data
}

func TestDynamicMap(t *testing.T) {
	code := DynamicMap()
	exact := exactDynamicMap()
	for i := range code {
		if i > 0 && !(code[i-1] < code[i]) {
			t.Fatalf("map not strictly increasing at %d: %v, %v", i, code[i-1], code[i])
		}
		// PyTorch builds and vector widths round some entries differently (two published dumps
		// of the map disagree in 70 of 256 entries); all agree within one ulp of the exact value.
		f := float32(exact[i])
		if code[i] != f && code[i] != math.Nextafter32(f, 2) && code[i] != math.Nextafter32(f, -2) {
			t.Fatalf("entry %d = %v, more than one ulp from %v", i, code[i], exact[i])
		}
	}
	if code[127] != 0 || code[255] != 1 || math.Float32bits(code[0]) != 0xbf7e3333 {
		t.Fatalf("code[0]=%v code[127]=%v code[255]=%v", code[0], code[127], code[255])
	}
	for i := 0; i < 127; i++ {
		if code[i] != -code[254-i] {
			t.Fatalf("entries %d and %d are not symmetric: %v, %v", i, 254-i, code[i], code[254-i])
		}
	}
}

func TestDynamicQuantize(t *testing.T) {
	code := DynamicMap()
	for i, v := range code {
		if got := dynamicQuantize(&code, v); int(got) != i {
			t.Fatalf("dQuantize(code[%d]=%v) = %d", i, v, got)
		}
	}
	cases := []struct {
		x    float32
		want uint8
	}{
		{1, 255}, {1.5, 255}, {-1, 0}, {-1.5, 0}, {0, 127}, {5e-7, 128}, {-5e-7, 126},
		// NaN compares false everywhere: the search walks down to pivot 0 and keeps it.
		{float32(math.NaN()), 0},
	}
	for _, c := range cases {
		if got := dynamicQuantize(&code, c.x); got != c.want {
			t.Errorf("dQuantize(%v) = %d, want %d", c.x, got, c.want)
		}
	}
	// Otherwise the result is a nearest code.
	r := rand.New(rand.NewPCG(9, 9))
	for i := 0; i < 50000; i++ {
		x := float32(2*r.Float64() - 1)
		if i%2 == 0 {
			x *= float32(math.Pow10(-r.IntN(7)))
		}
		q := dynamicQuantize(&code, x)
		d := absf(code[q] - x)
		for j := max(0, int(q)-1); j <= min(255, int(q)+1); j++ {
			if absf(code[j]-x) < d {
				t.Fatalf("dQuantize(%v) = %d (%v), but code[%d] = %v is nearer", x, q, code[q], j, code[j])
			}
		}
	}
}

func TestNestedDequantizeHandCase(t *testing.T) {
	var code [256]float32
	for i := range code {
		code[i] = float32(i) / 256
	}
	code[7] = 0.1 // float32 0x3dcccccd
	n := &NF4Nested{
		QAbsmax:   []uint8{3, 255, 7},
		Absmax:    []float32{2},
		Code:      code[:],
		BlockSize: 256,
		Offset:    0.25,
	}
	got, err := n.Dequantize()
	if err != nil {
		t.Fatal(err)
	}
	// 3/256·2 + 0.25 and 255/256·2 + 0.25 are exact. 0.1f·3 rounds to 0x3e99999a, + 0.5 …
	want := []uint32{math.Float32bits(0.2734375), math.Float32bits(2.2421875)}
	for i, w := range want {
		if math.Float32bits(got[i]) != w {
			t.Errorf("absmax %d = %v, want %v", i, got[i], math.Float32frombits(w))
		}
	}
	// … with nested absmax 3 and offset 0.5 the third value is float32(0.1f·3) + 0.5 = 0x3f4ccccd.
	n.Absmax[0], n.Offset = 3, 0.5
	got, _ = n.Dequantize()
	if math.Float32bits(got[2]) != 0x3f4ccccd {
		t.Errorf("absmax 2 = %#08x, want 0x3f4ccccd", math.Float32bits(got[2]))
	}
	for _, bad := range []*NF4Nested{
		{QAbsmax: []uint8{1}, Absmax: []float32{1}, Code: code[:], BlockSize: 0},
		{QAbsmax: []uint8{1}, Absmax: []float32{1}, Code: code[:10], BlockSize: 256},
		{QAbsmax: make([]uint8, 257), Absmax: []float32{1}, Code: code[:], BlockSize: 256},
	} {
		if _, err := bad.Dequantize(); err == nil {
			t.Errorf("Dequantize accepted %+v", bad)
		}
	}
}

func TestQuantizeNF4Double(t *testing.T) {
	src := normals(4, 64*600, 0.02)
	plain, err := QuantizeNF4(src, 64)
	if err != nil {
		t.Fatal(err)
	}
	q, nested, err := QuantizeNF4Double(src, 64)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(q.Codes, plain.Codes) {
		t.Fatal("double quantization changed the codes")
	}
	if len(nested.QAbsmax) != 600 || len(nested.Absmax) != 3 || nested.BlockSize != 256 {
		t.Fatalf("nested shape: %d codes, %d scales, block %d", len(nested.QAbsmax), len(nested.Absmax), nested.BlockSize)
	}
	var mean float64
	for _, a := range plain.Absmax {
		mean += float64(a)
	}
	mean /= float64(len(plain.Absmax))
	if nested.Offset != float32(mean) {
		t.Fatalf("offset %v, want the mean %v", nested.Offset, mean)
	}
	// The dynamic map's largest gap is 0.0141 (near ±1), so the error is at most ~0.7% of each
	// nested block's absmax.
	for i, a := range q.Absmax {
		bound := 0.0071 * float64(nested.Absmax[i/256])
		if d := math.Abs(float64(a) - float64(plain.Absmax[i])); d > bound {
			t.Fatalf("absmax %d: %v vs %v, error %g > %g", i, a, plain.Absmax[i], d, bound)
		}
	}
}

// bnbFixture builds the safetensors-level tensors transformers would save for q.
func bnbFixture(t *testing.T, q *NF4Tensor, nested *NF4Nested, shape []int, dtype string) BNBWeight {
	t.Helper()
	f32 := func(v []float32) BNBTensor {
		b := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
		}
		return BNBTensor{DType: "F32", Shape: []int{len(v)}, Data: b}
	}
	qm := f32(NF4Codebook[:])
	w := BNBWeight{
		Name:     "model.layers.0.mlp.up_proj.weight",
		Weight:   BNBTensor{DType: "U8", Shape: []int{len(q.Codes), 1}, Data: slices.Clone(q.Codes)},
		QuantMap: &qm,
	}
	state := fmt.Sprintf(`{"quant_type": "nf4", "blocksize": %d, "dtype": %q, "shape": [%d, %d]`, q.BlockSize, dtype, shape[0], shape[1])
	if nested == nil {
		w.Absmax = f32(q.Absmax)
	} else {
		w.Absmax = BNBTensor{DType: "U8", Shape: []int{len(nested.QAbsmax)}, Data: slices.Clone(nested.QAbsmax)}
		na, nm := f32(nested.Absmax), f32(nested.Code)
		w.NestedAbsmax, w.NestedQuantMap = &na, &nm
		// Python's json.dumps writes the float32 offset (as a double) in shortest repr.
		state += fmt.Sprintf(`, "nested_blocksize": %d, "nested_offset": %v, "nested_dtype": "float32"`, nested.BlockSize, float64(nested.Offset))
	}
	state += "}"
	w.QuantState = BNBTensor{DType: "U8", Shape: []int{len(state)}, Data: []byte(state)}
	return w
}

func TestRepackBNB(t *testing.T) {
	shape := []int{24, 80} // 1920 values: blocks of 64 straddle rows of 80
	src := normals(12, shape[0]*shape[1], 0.05)
	plain, err := QuantizeNF4(src, 64)
	if err != nil {
		t.Fatal(err)
	}
	double, nested, err := QuantizeNF4Double(src, 64)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		want   *NF4Tensor
		nested *NF4Nested
	}{{"plain", plain, nil}, {"nested", double, nested}} {
		t.Run(c.name, func(t *testing.T) {
			got, st, err := RepackBNB(bnbFixture(t, c.want, c.nested, shape, "bfloat16"))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(st.Shape, shape) || st.DType != "bfloat16" || st.BlockSize != 64 || st.Nested() != (c.nested != nil) {
				t.Fatalf("state %+v", st)
			}
			if got.N != c.want.N || !slices.Equal(got.Codes, c.want.Codes) {
				t.Fatal("codes changed")
			}
			for i := range got.Absmax {
				if math.Float32bits(got.Absmax[i]) != math.Float32bits(c.want.Absmax[i]) {
					t.Fatalf("absmax %d = %v, want %v", i, got.Absmax[i], c.want.Absmax[i])
				}
			}
		})
	}
}

func TestRepackBNBBadInput(t *testing.T) {
	src := normals(13, 256, 0.05)
	plain, _ := QuantizeNF4(src, 64)
	double, nested, _ := QuantizeNF4Double(src, 64)
	good := func() BNBWeight { return bnbFixture(t, plain, nil, []int{4, 64}, "float16") }
	goodNested := func() BNBWeight { return bnbFixture(t, double, nested, []int{4, 64}, "float16") }
	state := func(s string) BNBTensor { return BNBTensor{DType: "U8", Data: []byte(s)} }
	cases := []struct {
		name    string
		w       func() BNBWeight
		wantErr any
		substr  string
	}{
		{"invalid json", func() BNBWeight { w := good(); w.QuantState = state(`{"quant_type": "nf4",`); return w }, new(*FormatError), "invalid JSON"},
		{"fp4", func() BNBWeight {
			w := good()
			w.QuantState = state(`{"quant_type": "fp4", "blocksize": 64, "dtype": "float16", "shape": [4, 64]}`)
			return w
		}, new(*UnsupportedError), `quant_type "fp4"`},
		{"block size 32", func() BNBWeight {
			w := good()
			w.QuantState = state(`{"quant_type": "nf4", "blocksize": 32, "dtype": "float16", "shape": [4, 64]}`)
			return w
		}, new(*UnsupportedError), "block size 32"},
		{"no shape", func() BNBWeight {
			w := good()
			w.QuantState = state(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float16"}`)
			return w
		}, new(*FormatError), "missing shape"},
		{"negative shape", func() BNBWeight {
			w := good()
			w.QuantState = state(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [-4, 64]}`)
			return w
		}, new(*FormatError), "shape [-4 64] is invalid"},
		{"bad dtype", func() BNBWeight {
			w := good()
			w.QuantState = state(`{"quant_type": "nf4", "blocksize": 64, "dtype": "int8", "shape": [4, 64]}`)
			return w
		}, new(*FormatError), `dtype "int8"`},
		{"nested without offset", func() BNBWeight {
			w := good()
			w.QuantState = state(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [4, 64], "nested_blocksize": 256}`)
			return w
		}, new(*FormatError), "without nested_offset"},
		{"short weight", func() BNBWeight { w := good(); w.Weight.Data = w.Weight.Data[:127]; return w }, new(*FormatError), "127 bytes of packed codes"},
		{"absmax f16", func() BNBWeight { w := good(); w.Absmax.DType = "F16"; return w }, new(*FormatError), "dtype F16, want F32"},
		{"absmax count", func() BNBWeight { w := good(); w.Absmax.Data = w.Absmax.Data[:12]; return w }, new(*FormatError), "12 bytes, want 16"},
		{"quant map mismatch", func() BNBWeight {
			w := good()
			qm := *w.QuantMap
			qm.Data = slices.Clone(qm.Data)
			qm.Data[8] ^= 1
			w.QuantMap = &qm
			return w
		}, new(*FormatError), "entry 2"},
		{"non-finite absmax", func() BNBWeight {
			w := good()
			w.Absmax.Data = slices.Clone(w.Absmax.Data)
			binary.LittleEndian.PutUint32(w.Absmax.Data[4:], 0x7fc00000)
			return w
		}, new(*FormatError), "block 1 has non-finite absmax"},
		{"nested absmax f32", func() BNBWeight {
			w := goodNested()
			w.Absmax = BNBTensor{DType: "F32", Data: make([]byte, 16)}
			return w
		}, new(*FormatError), "want U8 for a nested quant state"},
		{"nested missing tensors", func() BNBWeight { w := goodNested(); w.NestedQuantMap = nil; return w }, new(*FormatError), "without .nested_absmax and .nested_quant_map"},
		{"nested quant map short", func() BNBWeight {
			w := goodNested()
			nm := *w.NestedQuantMap
			nm.Data = nm.Data[:1020]
			w.NestedQuantMap = &nm
			return w
		}, new(*FormatError), "nested_quant_map"},
		{"nested code count", func() BNBWeight { w := goodNested(); w.Absmax.Data = w.Absmax.Data[:3]; return w }, new(*FormatError), "3 values, want 4"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := RepackBNB(c.w())
			checkErr(t, err, c.wantErr, c.substr)
		})
	}
}

func FuzzParseBNBQuantState(f *testing.F) {
	f.Add([]byte(`{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [4096, 4096]}`))
	f.Add([]byte(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [2, 64], "nested_blocksize": 256, "nested_offset": 0.0123, "nested_dtype": "float32"}`))
	f.Add([]byte(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [9223372036854775807, 4]}`))
	f.Add([]byte(`{"quant_type": "nf4", "nested_offset": 1e999}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseBNBQuantState(data)
		if err != nil {
			return
		}
		if n, err := s.Elements(); err != nil || n < 0 {
			t.Fatalf("accepted state with bad shape %v", s.Shape)
		}
	})
}

func FuzzDecodeNF4Stream(f *testing.F) {
	f.Add(make([]byte, 36), 64, uint8(0))
	f.Add(make([]byte, 72), 65, uint8(0))
	f.Add(make([]byte, 68), 100, uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, n int, bsi uint8) {
		bs := NF4BlockSizes[int(bsi)%len(NF4BlockSizes)]
		q, err := DecodeNF4Stream(data, n, bs)
		if err != nil {
			return
		}
		if err := q.Validate(); err != nil {
			t.Fatal(err)
		}
		back, err := q.EncodeStream()
		if err != nil {
			t.Fatal(err)
		}
		if len(back) != len(data) {
			t.Fatalf("re-encoded %d bytes, read %d", len(back), len(data))
		}
	})
}

func FuzzRepackBNB(f *testing.F) {
	f.Add([]byte(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [2, 64]}`), make([]byte, 64), make([]byte, 8), []byte{}, []byte{})
	f.Add([]byte(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [2, 64], "nested_blocksize": 256, "nested_offset": 0.5}`), make([]byte, 64), make([]byte, 2), make([]byte, 4), make([]byte, 1024))
	f.Fuzz(func(t *testing.T, state, weight, absmax, nestedAbsmax, nestedMap []byte) {
		w := BNBWeight{
			Name:       "w",
			Weight:     BNBTensor{DType: "U8", Data: weight},
			QuantState: BNBTensor{DType: "U8", Data: state},
		}
		if len(nestedAbsmax) > 0 {
			w.Absmax = BNBTensor{DType: "U8", Data: absmax}
			na := BNBTensor{DType: "F32", Data: nestedAbsmax}
			nm := BNBTensor{DType: "F32", Data: nestedMap}
			w.NestedAbsmax, w.NestedQuantMap = &na, &nm
		} else {
			w.Absmax = BNBTensor{DType: "F32", Data: absmax}
		}
		q, _, err := RepackBNB(w)
		if err != nil {
			return
		}
		if _, err := q.Dequantize(); err != nil {
			t.Fatal(err)
		}
	})
}
