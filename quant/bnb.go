package quant

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
)

// bitsandbytes double quantization (bnb_4bit_use_double_quant / compress_statistics) and the
// import of checkpoints that transformers saved with a bitsandbytes 4-bit config.

// NestedBlockSize is the block size bitsandbytes uses to quantize the absmax of a 4-bit tensor
// (functional.quantize_4bit: quantize_blockwise(absmax, blocksize=256)).
const NestedBlockSize = 256

// NF4Nested is the double-quantized form of an NF4 tensor's absmax, as bitsandbytes stores it:
// absmax[i] = float32(Code[QAbsmax[i]] · Absmax[i/BlockSize]) + Offset, each a float32
// operation (kDequantizeBlockwise, then `absmax += quant_state.offset`).
type NF4Nested struct {
	QAbsmax   []uint8   // "absmax" (uint8): one 8-bit code per NF4 block
	Absmax    []float32 // "nested_absmax": one scale per BlockSize codes
	Code      []float32 // "nested_quant_map": 256 values
	BlockSize int       // "nested_blocksize"
	Offset    float32   // "nested_offset": the mean subtracted before quantizing
}

// Dequantize returns the float32 absmax values bitsandbytes' dequantize_4bit computes from the
// nested state (exactly: one float32 multiply and one float32 add per value).
func (n *NF4Nested) Dequantize() ([]float32, error) {
	if n.BlockSize <= 0 {
		return nil, fmt.Errorf("quant: nf4 nested: block size %d is not positive", n.BlockSize)
	}
	if len(n.Code) != 256 {
		return nil, fmt.Errorf("quant: nf4 nested: quant map has %d entries, want 256", len(n.Code))
	}
	if want := ceilDiv(len(n.QAbsmax), n.BlockSize); len(n.Absmax) != want {
		return nil, fmt.Errorf("quant: nf4 nested: %d nested absmax values for %d codes in blocks of %d, want %d", len(n.Absmax), len(n.QAbsmax), n.BlockSize, want)
	}
	out := make([]float32, len(n.QAbsmax))
	for i, q := range n.QAbsmax {
		out[i] = float32(n.Code[q]*n.Absmax[i/n.BlockSize]) + n.Offset
	}
	return out, nil
}

// QuantizeNested double-quantizes absmax the way bitsandbytes' quantize_4bit does with
// compress_statistics=True: subtract the mean, then 8-bit blockwise quantization (blocks of
// NestedBlockSize) with the signed dynamic map (DynamicMap) and dQuantize's rounding.
//
// One difference is unavoidable: bitsandbytes computes the mean with a CUDA float32 reduction
// whose summation order is not specified; here it is summed in float64 and rounded once. The
// offset can therefore differ from bitsandbytes' in the last bit; everything after it is exact.
func QuantizeNested(absmax []float32) (*NF4Nested, error) {
	if i := firstNonFinite(absmax); i >= 0 {
		return nil, &NonFiniteError{Index: i, Value: absmax[i]}
	}
	var sum float64
	for _, a := range absmax {
		sum += float64(a)
	}
	var offset float32
	if len(absmax) > 0 {
		offset = float32(sum / float64(len(absmax)))
	}
	centered := make([]float32, len(absmax))
	for i, a := range absmax {
		centered[i] = a - offset
	}
	code := DynamicMap()
	n := &NF4Nested{
		QAbsmax:   make([]uint8, len(absmax)),
		Absmax:    make([]float32, ceilDiv(len(absmax), NestedBlockSize)),
		Code:      code[:],
		BlockSize: NestedBlockSize,
		Offset:    offset,
	}
	for b := range n.Absmax {
		lo := b * NestedBlockSize
		hi := min(len(centered), lo+NestedBlockSize)
		m := float32(-math.MaxFloat32)
		for _, v := range centered[lo:hi] {
			m = max(m, absf(v))
		}
		n.Absmax[b] = m
		inv := 1 / m
		for i := lo; i < hi; i++ {
			n.QAbsmax[i] = dynamicQuantize(&code, centered[i]*inv)
		}
	}
	return n, nil
}

// QuantizeNF4Double quantizes src like QuantizeNF4 and then double-quantizes the absmax
// (bnb_4bit_use_double_quant=True). The returned tensor carries the de-nested absmax, i.e.
// exactly the float32 scales bitsandbytes dequantizes with; nested holds the stored form.
func QuantizeNF4Double(src []float32, blockSize int) (t *NF4Tensor, nested *NF4Nested, err error) {
	t, err = QuantizeNF4(src, blockSize)
	if err != nil {
		return nil, nil, err
	}
	nested, err = QuantizeNested(t.Absmax)
	if err != nil {
		return nil, nil, err
	}
	if t.Absmax, err = nested.Dequantize(); err != nil {
		return nil, nil, err
	}
	return t, nested, nil
}

// dynamicQuantize transcribes bitsandbytes' dQuantize<0> (csrc/kernels.cu): a 7-step binary
// search in the sorted 256-entry code followed by round-to-nearest against the midpoints.
func dynamicQuantize(code *[256]float32, x float32) uint8 {
	pivot, upperPivot, lowerPivot := 127, 255, 0
	lower, upper := float32(-1), float32(1)
	val := code[pivot]
	for i := 64; i > 0; i >>= 1 {
		if x > val {
			lowerPivot = pivot
			lower = val
			pivot += i
		} else {
			upperPivot = pivot
			upper = val
			pivot -= i
		}
		val = code[pivot]
	}
	if upperPivot == 255 {
		upper = code[upperPivot]
	}
	if lowerPivot == 0 {
		lower = code[lowerPivot]
	}
	if x > val {
		midpoint := (upper + val) * 0.5
		if x > midpoint {
			return uint8(upperPivot)
		}
		return uint8(pivot)
	}
	midpoint := (lower + val) * 0.5
	if x < midpoint {
		return uint8(lowerPivot)
	}
	return uint8(pivot)
}

// DynamicMap returns bitsandbytes' signed 8-bit dynamic quantization map,
// functional.create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), the default
// code of quantize_blockwise and therefore of nested absmax quantization. It is computed in
// float32 the way PyTorch evaluates the Python code on the CPU: linspace(0.1, 1, 2^i+1) (scalar
// formula), pairwise means, scaled by float32(10^(i−6)), both signs, plus 0 and 1, sorted.
// A checkpoint's own nested_quant_map is always used in preference when importing.
func DynamicMap() [256]float32 {
	var data []float32
	for i := 0; i < 7; i++ {
		items := 1<<i + 1
		b := linspaceF32(0.1, 1, items)
		// Python evaluates 10**(i-6) as a double; PyTorch casts the scalar to float32.
		scale := float32(math.Pow10(i - 6))
		for k := 0; k+1 < len(b); k++ {
			mean := (b[k] + b[k+1]) / 2
			data = append(data, scale*mean, -scale*mean)
		}
	}
	data = append(data, 0, 1)
	sort.Slice(data, func(a, b int) bool { return data[a] < data[b] })
	var out [256]float32
	copy(out[:], data)
	return out
}

// linspaceF32 is torch.linspace for float32 on the CPU (RangeFactoriesKernel.cpp, scalar
// path): step = (end−start)/(steps−1) in float32; the first half counts up from start, the
// second half down from end.
func linspaceF32(start, end float32, steps int) []float32 {
	out := make([]float32, steps)
	if steps == 1 {
		out[0] = start
		return out
	}
	step := (end - start) / float32(steps-1)
	half := steps / 2
	for idx := range out {
		if idx < half {
			out[idx] = start + float32(step*float32(idx))
		} else {
			out[idx] = end - float32(step*float32(steps-idx-1))
		}
	}
	return out
}

// BNB tensor name suffixes, appended to "<module>.weight" by transformers when it saves a
// bitsandbytes Params4bit (QuantState.as_dict(packed=True)).
const (
	BNBSuffixAbsmax         = ".absmax"
	BNBSuffixQuantMap       = ".quant_map"
	BNBSuffixNestedAbsmax   = ".nested_absmax"
	BNBSuffixNestedQuantMap = ".nested_quant_map"
	BNBSuffixQuantStateNF4  = ".quant_state.bitsandbytes__nf4"
	BNBSuffixQuantStateFP4  = ".quant_state.bitsandbytes__fp4"
)

// BNBTensor is one tensor as read from a safetensors file.
type BNBTensor struct {
	DType string // safetensors dtype name: "U8", "F32", "F16", "BF16", …
	Shape []int
	Data  []byte // raw little-endian bytes
}

// BNBWeight is the set of tensors transformers saves for one bitsandbytes 4-bit weight named
// Name ("<module>.weight"). Absmax is float32, or uint8 codes when the state is nested.
type BNBWeight struct {
	Name           string
	Weight         BNBTensor  // packed codes, ceil(n/2) bytes
	Absmax         BNBTensor  // Name + BNBSuffixAbsmax
	QuantMap       *BNBTensor // Name + BNBSuffixQuantMap; optional
	NestedAbsmax   *BNBTensor // Name + BNBSuffixNestedAbsmax; nested only
	NestedQuantMap *BNBTensor // Name + BNBSuffixNestedQuantMap; nested only
	QuantState     BNBTensor  // Name + BNBSuffixQuantStateNF4: uint8 bytes of a JSON object
}

// BNBQuantState is the JSON object bitsandbytes packs into "quant_state.bitsandbytes__nf4"
// (QuantState.as_dict(packed=True): the non-tensor fields, json.dumps'ed into a uint8 tensor).
type BNBQuantState struct {
	QuantType       string   `json:"quant_type"`
	BlockSize       int      `json:"blocksize"`
	DType           string   `json:"dtype"` // original weight dtype: "float16", "bfloat16", "float32"
	Shape           []int    `json:"shape"` // PyTorch shape, e.g. [out_features, in_features]
	NestedBlockSize int      `json:"nested_blocksize,omitempty"`
	NestedOffset    *float64 `json:"nested_offset,omitempty"`
	NestedDType     string   `json:"nested_dtype,omitempty"`
}

// Nested reports whether the state describes double-quantized absmax values.
func (s *BNBQuantState) Nested() bool { return s.NestedOffset != nil || s.NestedBlockSize != 0 }

// Elements returns the number of values of the shape.
func (s *BNBQuantState) Elements() (int, error) {
	n := 1
	for _, d := range s.Shape {
		if d < 0 || (d > 0 && n > maxInt/d) {
			return 0, fmt.Errorf("quant: bnb quant state: shape %v is invalid", s.Shape)
		}
		n *= d
	}
	return n, nil
}

// ParseBNBQuantState decodes the JSON of a quant_state tensor and checks its fields.
func ParseBNBQuantState(data []byte) (*BNBQuantState, error) {
	return parseBNBQuantState(data, "bnb quant state")
}

// parseBNBQuantState is ParseBNBQuantState with errors naming subject.
func parseBNBQuantState(data []byte, subject string) (*BNBQuantState, error) {
	var s BNBQuantState
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&s); err != nil {
		return nil, formatErrorf(subject, "invalid JSON: %v", err)
	}
	if s.QuantType != "nf4" {
		return nil, &UnsupportedError{What: fmt.Sprintf("bitsandbytes quant_type %q in %s (only nf4)", s.QuantType, subject)}
	}
	if !slices.Contains(NF4BlockSizes, s.BlockSize) {
		return nil, &UnsupportedError{What: fmt.Sprintf("nf4 block size %d in %s (bitsandbytes allows %v)", s.BlockSize, subject, NF4BlockSizes)}
	}
	if len(s.Shape) == 0 {
		return nil, formatErrorf(subject, "missing shape")
	}
	if _, err := s.Elements(); err != nil {
		return nil, formatErrorf(subject, "shape %v is invalid", s.Shape)
	}
	switch s.DType {
	case "float16", "bfloat16", "float32":
	default:
		return nil, formatErrorf(subject, "dtype %q is not float16, bfloat16 or float32", s.DType)
	}
	if s.Nested() {
		if s.NestedOffset == nil {
			return nil, formatErrorf(subject, "nested state without nested_offset")
		}
		if s.NestedBlockSize <= 0 {
			return nil, formatErrorf(subject, "nested_blocksize %d is not positive", s.NestedBlockSize)
		}
		if f := float32(*s.NestedOffset); math.IsInf(float64(f), 0) || f != f {
			return nil, formatErrorf(subject, "nested_offset %v is not a finite float32", *s.NestedOffset)
		}
		if s.NestedDType != "" && s.NestedDType != "float32" {
			return nil, &UnsupportedError{What: fmt.Sprintf("bitsandbytes nested_dtype %q in %s (only float32)", s.NestedDType, subject)}
		}
	}
	return &s, nil
}

// RepackBNB imports a weight that bitsandbytes already quantized to NF4, without loss: the
// codes are copied unchanged and nested absmax values are dequantized exactly as
// bitsandbytes' dequantize_4bit does, so t.Dequantize() equals bitsandbytes' float32
// dequantization bit for bit. The quant_map, when present, must be the NF4 codebook.
func RepackBNB(w BNBWeight) (*NF4Tensor, *BNBQuantState, error) {
	st, err := parseBNBQuantState(w.QuantState.Data, fmt.Sprintf("tensor %q", w.Name+BNBSuffixQuantStateNF4))
	if err != nil {
		return nil, nil, err
	}
	n, _ := st.Elements()
	t := &NF4Tensor{N: n, BlockSize: st.BlockSize}
	blocks := ceilDiv(n, st.BlockSize)

	if want := ceilDiv(n, 2); len(w.Weight.Data) != want {
		return nil, nil, formatErrorf(fmt.Sprintf("tensor %q", w.Name), "%d bytes of packed codes for shape %v, want %d", len(w.Weight.Data), st.Shape, want)
	}
	t.Codes = slices.Clone(w.Weight.Data)

	if w.QuantMap != nil {
		qm, err := bnbFloat32s(w.Name+BNBSuffixQuantMap, *w.QuantMap, 16)
		if err != nil {
			return nil, nil, err
		}
		for i, v := range qm {
			if math.Float32bits(v) != math.Float32bits(NF4Codebook[i]) {
				return nil, nil, formatErrorf(fmt.Sprintf("tensor %q", w.Name+BNBSuffixQuantMap), "entry %d is %v, the NF4 codebook has %v", i, v, NF4Codebook[i])
			}
		}
	}

	if !st.Nested() {
		if t.Absmax, err = bnbFloat32s(w.Name+BNBSuffixAbsmax, w.Absmax, blocks); err != nil {
			return nil, nil, err
		}
	} else {
		absName := w.Name + BNBSuffixAbsmax
		if w.Absmax.DType != "U8" {
			return nil, nil, formatErrorf(fmt.Sprintf("tensor %q", absName), "dtype %s, want U8 for a nested quant state", w.Absmax.DType)
		}
		if len(w.Absmax.Data) != blocks {
			return nil, nil, formatErrorf(fmt.Sprintf("tensor %q", absName), "%d values, want %d", len(w.Absmax.Data), blocks)
		}
		if w.NestedAbsmax == nil || w.NestedQuantMap == nil {
			return nil, nil, formatErrorf(fmt.Sprintf("tensor %q", w.Name), "nested quant state without %s and %s", BNBSuffixNestedAbsmax, BNBSuffixNestedQuantMap)
		}
		nested := &NF4Nested{
			QAbsmax:   w.Absmax.Data,
			BlockSize: st.NestedBlockSize,
			Offset:    float32(*st.NestedOffset),
		}
		if nested.Absmax, err = bnbFloat32s(w.Name+BNBSuffixNestedAbsmax, *w.NestedAbsmax, ceilDiv(blocks, st.NestedBlockSize)); err != nil {
			return nil, nil, err
		}
		if nested.Code, err = bnbFloat32s(w.Name+BNBSuffixNestedQuantMap, *w.NestedQuantMap, 256); err != nil {
			return nil, nil, err
		}
		if t.Absmax, err = nested.Dequantize(); err != nil {
			return nil, nil, err // unreachable: the lengths were checked above
		}
	}
	if i := firstNonFinite(t.Absmax); i >= 0 {
		return nil, nil, formatErrorf(fmt.Sprintf("tensor %q", w.Name+BNBSuffixAbsmax), "block %d has non-finite absmax %v", i, t.Absmax[i])
	}
	return t, st, nil
}

// bnbFloat32s decodes a float32 tensor of exactly want values.
func bnbFloat32s(name string, t BNBTensor, want int) ([]float32, error) {
	if t.DType != "F32" {
		return nil, formatErrorf(fmt.Sprintf("tensor %q", name), "dtype %s, want F32", t.DType)
	}
	if len(t.Data) != 4*want {
		return nil, formatErrorf(fmt.Sprintf("tensor %q", name), "%d bytes, want %d (%d float32 values)", len(t.Data), 4*want, want)
	}
	out := make([]float32, want)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return out, nil
}
