package quant

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

// NF4BlockSize is bitsandbytes' default 4-bit block size (quantize_4bit blocksize=64), the
// block size of Type NF4.
const NF4BlockSize = 64

// NF4BlockSizes lists the block sizes bitsandbytes accepts for 4-bit quantization
// (functional.quantize_4bit asserts blocksize in [4096, 2048, 1024, 512, 256, 128, 64]).
var NF4BlockSizes = []int{64, 128, 256, 512, 1024, 2048, 4096}

// NF4Codebook is the NormalFloat4 code: value of each 4-bit code as a fraction of the block's
// absmax. Source: bitsandbytes functional.get_4bit_type("nf4") and nf4_dequantization_lut /
// dDequantizeNF4 in csrc/kernels.cu; the float32 roundings of these decimals are the values the
// kernels use.
var NF4Codebook = [16]float32{
	-1.0,
	-0.6961928009986877,
	-0.5250730514526367,
	-0.39491748809814453,
	-0.28444138169288635,
	-0.18477343022823334,
	-0.09105003625154495,
	0.0,
	0.07958029955625534,
	0.16093020141124725,
	0.24611230194568634,
	0.33791524171829224,
	0.44070982933044434,
	0.5626170039176941,
	0.7229568362236023,
	1.0,
}

// nf4Thresholds are the decision points of bitsandbytes' dQuantizeNF4 (csrc/kernels.cu), in
// increasing order: code k+1 is chosen over code k when the normalized value is strictly
// greater than nf4Thresholds[k]. They are float32 literals in the kernel.
var nf4Thresholds = [15]float32{
	-0.8480964004993439,
	-0.6106329262256622,
	-0.4599952697753906,
	-0.33967943489551544,
	-0.23460740596055984,
	-0.13791173323988914,
	-0.045525018125772476,
	0.03979014977812767,
	0.1202552504837513,
	0.2035212516784668,
	0.2920137718319893,
	0.3893125355243683,
	0.5016634166240692,
	0.6427869200706482,
	0.8614784181118011,
}

// nf4Code returns the 4-bit code of a normalized value: the number of thresholds it strictly
// exceeds. This equals the branch tree of dQuantizeNF4 for every input, NaN included (every
// comparison with NaN is false, so NaN gets code 0 in both); the test keeps a transcription of the
// tree as the reference. A binary search on the sorted thresholds keeps it to four comparisons.
func nf4Code(x float32) uint8 {
	t := &nf4Thresholds
	c := b2u8(x > t[7]) << 3
	c |= b2u8(x > t[c+3]) << 2
	c |= b2u8(x > t[c+1]) << 1
	return c | b2u8(x > t[c])
}

// b2u8 is 1 for true; the compiler turns it into a SETcc, so nf4Code has no branches to
// mispredict on random data.
func b2u8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// NF4Tensor is a tensor quantized to NF4 exactly as bitsandbytes represents it after
// dequantizing nested statistics: the value at flat index i (row-major over the PyTorch shape)
// is NF4Codebook[code(i)] · Absmax[i/BlockSize], a float32 product.
type NF4Tensor struct {
	N         int       // number of values
	BlockSize int       // values per absmax block, one of NF4BlockSizes
	Absmax    []float32 // ceil(N/BlockSize) block scales
	// Codes holds ceil(N/2) bytes in bitsandbytes' order: value 2k in the high nibble of
	// Codes[k], value 2k+1 in the low nibble. For odd N the low nibble of the last byte is
	// padding (bitsandbytes writes the code of 0).
	Codes []byte
}

// Code returns the 4-bit code of value i.
func (t *NF4Tensor) Code(i int) uint8 {
	b := t.Codes[i/2]
	if i%2 == 0 {
		return b >> 4
	}
	return b & 0x0F
}

// Validate checks the block size and that the slice lengths agree with N.
func (t *NF4Tensor) Validate() error {
	if err := checkNF4BlockSize(t.BlockSize); err != nil {
		return err
	}
	if t.N < 0 {
		return fmt.Errorf("quant: nf4: negative element count %d", t.N)
	}
	if want := ceilDiv(t.N, t.BlockSize); len(t.Absmax) != want {
		return fmt.Errorf("quant: nf4: %d absmax values for %d elements in blocks of %d, want %d", len(t.Absmax), t.N, t.BlockSize, want)
	}
	if want := ceilDiv(t.N, 2); len(t.Codes) != want {
		return fmt.Errorf("quant: nf4: %d code bytes for %d elements, want %d", len(t.Codes), t.N, want)
	}
	return nil
}

func checkNF4BlockSize(bs int) error {
	if !slices.Contains(NF4BlockSizes, bs) {
		return &UnsupportedError{What: fmt.Sprintf("nf4 block size %d (bitsandbytes allows %v)", bs, NF4BlockSizes)}
	}
	return nil
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// QuantizeNF4 quantizes src (flattened row-major, as bitsandbytes flattens a weight) to NF4
// with the given block size, reproducing bitsandbytes' kQuantizeBlockwise for NF4: absmax is
// the largest |x| of each block, each value is multiplied by the float32 reciprocal 1/absmax and
// mapped through dQuantizeNF4's thresholds. Blocks may straddle rows, as in bitsandbytes. A
// block of zeros gets absmax 0 and code 0 (0·(1/0) is NaN in the kernel).
func QuantizeNF4(src []float32, blockSize int) (*NF4Tensor, error) {
	if err := checkNF4BlockSize(blockSize); err != nil {
		return nil, err
	}
	if i := firstNonFinite(src); i >= 0 {
		return nil, &NonFiniteError{Index: i, Value: src[i]}
	}
	t := &NF4Tensor{
		N:         len(src),
		BlockSize: blockSize,
		Absmax:    make([]float32, ceilDiv(len(src), blockSize)),
		Codes:     make([]byte, ceilDiv(len(src), 2)),
	}
	for b := range t.Absmax {
		lo := b * blockSize
		hi := min(len(src), lo+blockSize)
		t.Absmax[b] = quantizeNF4Block(src[lo:hi], t.Codes[lo/2:ceilDiv(hi, 2)])
	}
	return t, nil
}

// quantizeNF4Block encodes up to one block of values (len(x) ≤ block size, starting at an even
// index) into ceil(len(x)/2) code bytes and returns the absmax. A missing odd partner is the
// kernel's zero padding.
func quantizeNF4Block(x []float32, codes []byte) float32 {
	// local_abs_max = fmaxf(-FLT_MAX, fabsf(v)) over the valid items; inputs are finite.
	absmax := float32(-math.MaxFloat32)
	for _, v := range x {
		absmax = max(absmax, absf(v))
	}
	inv := 1 / absmax
	for j := range codes {
		hi := nf4Code(x[2*j] * inv)
		var v1 float32 // padding beyond the valid items is loaded as 0
		if 2*j+1 < len(x) {
			v1 = x[2*j+1]
		}
		lo := nf4Code(v1 * inv)
		codes[j] = hi<<4 | lo
	}
	return absmax
}

// quantizeBlockNF4 encodes one full 64-value block as a GGUF stream record (Type NF4).
func quantizeBlockNF4(x []float32, y []byte) {
	y = y[:4+NF4BlockSize/2]
	absmax := quantizeNF4Block(x[:NF4BlockSize], y[4:])
	binary.LittleEndian.PutUint32(y, math.Float32bits(absmax))
}

// dequantizeBlockNF4 decodes one 64-value GGUF stream record (Type NF4).
func dequantizeBlockNF4(x []byte, y []float32) {
	x = x[:4+NF4BlockSize/2]
	y = y[:NF4BlockSize]
	absmax := math.Float32frombits(binary.LittleEndian.Uint32(x))
	for j, b := range x[4:] {
		y[2*j] = NF4Codebook[b>>4] * absmax
		y[2*j+1] = NF4Codebook[b&0x0F] * absmax
	}
}

// Dequantize returns the float32 values, bit-identical to bitsandbytes' kDequantizeBlockwise
// for NF4 with a float32 output (dDequantizeNF4(code) * absmax). bitsandbytes with a float16 or
// bfloat16 quant_state.dtype rounds these to that type (F32ToF16, F32ToBF16).
func (t *NF4Tensor) Dequantize() ([]float32, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	out := make([]float32, t.N)
	for i := range out {
		out[i] = NF4Codebook[t.Code(i)] * t.Absmax[i/t.BlockSize]
	}
	return out, nil
}

// NF4StreamSize returns the byte size of the GGUF block stream of n NF4 values in blocks of
// blockSize: one record of a float32 absmax and blockSize/2 code bytes per block, the last
// block padded to full size (docs/formats.md).
func NF4StreamSize(n, blockSize int) (int, error) {
	if err := checkNF4BlockSize(blockSize); err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, fmt.Errorf("quant: nf4: negative element count %d", n)
	}
	rec := 4 + blockSize/2
	blocks := ceilDiv(n, blockSize)
	if blocks > maxInt/rec {
		return 0, fmt.Errorf("quant: nf4: element count %d overflows the stream size", n)
	}
	return blocks * rec, nil
}

// EncodeStream returns the GGUF block stream of t: for each block, its absmax as little-endian
// float32 followed by BlockSize/2 code bytes in bitsandbytes' nibble order; code bytes past the
// end of the last block are zero. The stream keeps every bit of t, so DecodeNF4Stream returns
// t unchanged.
func (t *NF4Tensor) EncodeStream() ([]byte, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	size, err := NF4StreamSize(t.N, t.BlockSize)
	if err != nil {
		return nil, err
	}
	out := make([]byte, size)
	rec := 4 + t.BlockSize/2
	half := t.BlockSize / 2
	for b, a := range t.Absmax {
		r := out[b*rec : (b+1)*rec]
		binary.LittleEndian.PutUint32(r, math.Float32bits(a))
		lo := b * half
		copy(r[4:], t.Codes[lo:min(len(t.Codes), lo+half)])
	}
	return out, nil
}

// DecodeNF4Stream parses a GGUF NF4 block stream holding n values in blocks of blockSize. It
// fails when the length does not match; padding bytes are not checked.
func DecodeNF4Stream(data []byte, n, blockSize int) (*NF4Tensor, error) {
	size, err := NF4StreamSize(n, blockSize)
	if err != nil {
		return nil, err
	}
	if len(data) != size {
		return nil, &FormatError{Subject: "nf4 stream", Detail: fmt.Sprintf("%d bytes for %d values in blocks of %d, want %d", len(data), n, blockSize, size)}
	}
	t := &NF4Tensor{
		N:         n,
		BlockSize: blockSize,
		Absmax:    make([]float32, ceilDiv(n, blockSize)),
		Codes:     make([]byte, ceilDiv(n, 2)),
	}
	rec := 4 + blockSize/2
	half := blockSize / 2
	for b := range t.Absmax {
		r := data[b*rec : (b+1)*rec]
		t.Absmax[b] = math.Float32frombits(binary.LittleEndian.Uint32(r))
		lo := b * half
		copy(t.Codes[lo:min(len(t.Codes), lo+half)], r[4:])
	}
	return t, nil
}

// DequantizeNF4Stream decodes n values from a GGUF NF4 block stream (see EncodeStream).
func DequantizeNF4Stream(data []byte, n, blockSize int) ([]float32, error) {
	t, err := DecodeNF4Stream(data, n, blockSize)
	if err != nil {
		return nil, err
	}
	return t.Dequantize()
}

// NF4ShapeKey returns the GGUF metadata key that records the logical shape of the NF4 tensor
// named tensor, in ggml order ([ne0, ne1, …]); see docs/formats.md.
func NF4ShapeKey(tensor string) string { return "idefics2.nf4." + tensor + ".shape" }

// NF4BlockSizeKey returns the GGUF metadata key that records the block size of the NF4 tensor
// named tensor; see docs/formats.md.
func NF4BlockSizeKey(tensor string) string { return "idefics2.nf4." + tensor + ".block_size" }
