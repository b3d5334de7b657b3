package quant

import (
	"encoding/binary"
	"math"
)

// The 32-value "legacy" block formats. Each encoder is a transcription of ggml's
// quantize_row_*_ref (ggml-quants.c), the path ggml_quantize_chunk takes without an importance
// matrix; each decoder of dequantize_row_*. Block layouts (ggml-common.h), little-endian:
//
//	Q4_0 (18 B): d fp16 | qs[16]          value j in qs[j]&15 (j<16) or qs[j-16]>>4, x = (q-8)·d
//	Q4_1 (20 B): d fp16 | m fp16 | qs[16] x = q·d + m
//	Q5_0 (22 B): d fp16 | qh u32 | qs[16] 5th bit of value j in qh bit j, x = (q-16)·d
//	Q5_1 (24 B): d fp16 | m fp16 | qh u32 | qs[16]
//	Q8_0 (34 B): d fp16 | qs[32] int8     x = q·d

const qk = 32 // QK4_0 = QK4_1 = QK5_0 = QK5_1 = QK8_0 (ggml-common.h)

// cvtToInt8 is C's (int8_t) conversion of a float as gcc compiles it on x86-64: cvttss2si to a
// 32-bit integer (truncation toward zero; NaN and out-of-range give INT32_MIN) followed by
// keeping the low byte. In range it is plain truncation; the out-of-range cases only occur for
// degenerate blocks (e.g. subnormal inputs whose reciprocal scale overflows).
func cvtToInt8(f float32) int8 {
	return int8(cvtToInt32(f))
}

// cvtToInt32 is x86-64's cvttss2si: truncation toward zero, INT32_MIN for NaN and for values
// out of range (|f| ≥ 2^31; −2^31 itself converts to INT32_MIN as well).
func cvtToInt32(f float32) int32 {
	if absf(f) < 0x1p31 { // one compare, false for NaN
		return int32(f)
	}
	return math.MinInt32
}

// roundf is C's roundf: round half away from zero. Exact for every float32 through float64.
func roundf(f float32) float32 {
	return float32(math.Round(float64(f)))
}

// roundToInt8 is cvtToInt8(roundf(f)), C's (int8_t)roundf(f) on x86-64, without math.Round on
// the common path: below 2^31 in magnitude, float64(f) ± 0.5 is exact (a float32 has 24
// significant bits), so truncating it toward zero rounds f half away from zero, and the
// result fits the int32 that cvttss2si produces.
func roundToInt8(f float32) int8 {
	if absf(f) < 0x1p31 { // false for NaN
		// ±0.5 with the sign of f, without a branch (the sign of weights is unpredictable).
		h := math.Float64frombits(0x3fe0000000000000 | uint64(math.Float32bits(f)>>31)<<63)
		return int8(int32(float64(f) + h))
	}
	return cvtToInt8(roundf(f))
}

// signedAbsMax returns the first value of largest magnitude of x (finite values), as
// quantize_row_q{4,5}_0_ref find it: "if (amax < fabsf(v)) { amax = fabsf(v); max = v; }" from
// amax = max = 0. Magnitudes compare as their bit patterns with the sign cleared; the strict
// comparison keeps the first of equal magnitudes. Branch-free selects, since the branch
// mispredicts on random data.
func signedAbsMax(x []float32) float32 {
	var amax, max uint32
	for _, v := range x {
		b := math.Float32bits(v)
		a := b & 0x7fffffff
		if a > amax {
			amax = a
			max = b
		}
	}
	return math.Float32frombits(max)
}

func putF16(b []byte, f float32) { binary.LittleEndian.PutUint16(b, F32ToF16(f)) }
func getF16(b []byte) float32    { return F16ToF32(binary.LittleEndian.Uint16(b)) }

// quantizeBlockQ4_0 transcribes quantize_row_q4_0_ref for one block.
func quantizeBlockQ4_0(x []float32, y []byte) {
	x = x[:qk]
	y = y[:18]
	max := signedAbsMax(x)
	d := max / -8
	var id float32
	if d != 0 {
		id = 1 / d
	}
	putF16(y[0:], d)
	for j := 0; j < qk/2; j++ {
		x0 := float32(x[j] * id)
		x1 := float32(x[qk/2+j] * id)
		xi0 := uint8(min(15, int(cvtToInt8(x0+8.5))))
		xi1 := uint8(min(15, int(cvtToInt8(x1+8.5))))
		y[2+j] = xi0 | xi1<<4
	}
}

func dequantizeBlockQ4_0(x []byte, y []float32) {
	x = x[:18]
	y = y[:qk]
	d := getF16(x[0:])
	for j := 0; j < qk/2; j++ {
		x0 := int(x[2+j]&0x0F) - 8
		x1 := int(x[2+j]>>4) - 8
		y[j] = float32(x0) * d
		y[j+qk/2] = float32(x1) * d
	}
}

// quantizeBlockQ4_1 transcribes quantize_row_q4_1_ref for one block.
func quantizeBlockQ4_1(x []float32, y []byte) {
	x = x[:qk]
	y = y[:20]
	min_ := float32(math.MaxFloat32)
	max_ := float32(-math.MaxFloat32)
	for _, v := range x {
		if v < min_ {
			min_ = v
		}
		if v > max_ {
			max_ = v
		}
	}
	d := (max_ - min_) / 15
	var id float32
	if d != 0 {
		id = 1 / d
	}
	putF16(y[0:], d)
	putF16(y[2:], min_)
	for j := 0; j < qk/2; j++ {
		x0 := float32((x[j] - min_) * id)
		x1 := float32((x[qk/2+j] - min_) * id)
		xi0 := uint8(min(15, int(cvtToInt8(x0+0.5))))
		xi1 := uint8(min(15, int(cvtToInt8(x1+0.5))))
		y[4+j] = xi0 | xi1<<4
	}
}

func dequantizeBlockQ4_1(x []byte, y []float32) {
	x = x[:20]
	y = y[:qk]
	d := getF16(x[0:])
	m := getF16(x[2:])
	for j := 0; j < qk/2; j++ {
		x0 := int(x[4+j] & 0x0F)
		x1 := int(x[4+j] >> 4)
		y[j] = float32(float32(x0)*d) + m
		y[j+qk/2] = float32(float32(x1)*d) + m
	}
}

// quantizeBlockQ5_0 transcribes quantize_row_q5_0_ref for one block.
func quantizeBlockQ5_0(x []float32, y []byte) {
	x = x[:qk]
	y = y[:22]
	max := signedAbsMax(x)
	d := max / -16
	var id float32
	if d != 0 {
		id = 1 / d
	}
	putF16(y[0:], d)
	var qh uint32
	for j := 0; j < qk/2; j++ {
		x0 := float32(x[j] * id)
		x1 := float32(x[qk/2+j] * id)
		xi0 := uint8(min(31, int(cvtToInt8(x0+16.5))))
		xi1 := uint8(min(31, int(cvtToInt8(x1+16.5))))
		y[6+j] = xi0&0x0F | (xi1&0x0F)<<4
		qh |= uint32((xi0&0x10)>>4) << j
		qh |= uint32((xi1&0x10)>>4) << (j + qk/2)
	}
	binary.LittleEndian.PutUint32(y[2:], qh)
}

func dequantizeBlockQ5_0(x []byte, y []float32) {
	x = x[:22]
	y = y[:qk]
	d := getF16(x[0:])
	qh := binary.LittleEndian.Uint32(x[2:])
	for j := 0; j < qk/2; j++ {
		xh0 := uint8((qh>>j)<<4) & 0x10
		xh1 := uint8(qh>>(j+12)) & 0x10
		x0 := int32(x[6+j]&0x0F|xh0) - 16
		x1 := int32(x[6+j]>>4|xh1) - 16
		y[j] = float32(x0) * d
		y[j+qk/2] = float32(x1) * d
	}
}

// quantizeBlockQ5_1 transcribes quantize_row_q5_1_ref for one block.
func quantizeBlockQ5_1(x []float32, y []byte) {
	x = x[:qk]
	y = y[:24]
	min_ := float32(math.MaxFloat32)
	max_ := float32(-math.MaxFloat32)
	for _, v := range x {
		if v < min_ {
			min_ = v
		}
		if v > max_ {
			max_ = v
		}
	}
	d := (max_ - min_) / 31
	var id float32
	if d != 0 {
		id = 1 / d
	}
	putF16(y[0:], d)
	putF16(y[2:], min_)
	var qh uint32
	for j := 0; j < qk/2; j++ {
		x0 := float32((x[j] - min_) * id)
		x1 := float32((x[qk/2+j] - min_) * id)
		// ggml converts straight to uint8_t here (no MIN): same cvttss2si + low byte.
		xi0 := uint8(cvtToInt32(x0 + 0.5))
		xi1 := uint8(cvtToInt32(x1 + 0.5))
		y[8+j] = xi0&0x0F | (xi1&0x0F)<<4
		qh |= uint32((xi0&0x10)>>4) << j
		qh |= uint32((xi1&0x10)>>4) << (j + qk/2)
	}
	binary.LittleEndian.PutUint32(y[4:], qh)
}

func dequantizeBlockQ5_1(x []byte, y []float32) {
	x = x[:24]
	y = y[:qk]
	d := getF16(x[0:])
	m := getF16(x[2:])
	qh := binary.LittleEndian.Uint32(x[4:])
	for j := 0; j < qk/2; j++ {
		xh0 := uint8((qh>>j)<<4) & 0x10
		xh1 := uint8(qh>>(j+12)) & 0x10
		x0 := int(x[8+j]&0x0F | xh0)
		x1 := int(x[8+j]>>4 | xh1)
		y[j] = float32(float32(x0)*d) + m
		y[j+qk/2] = float32(float32(x1)*d) + m
	}
}

// quantizeBlockQ8_0 transcribes quantize_row_q8_0_ref for one block.
func quantizeBlockQ8_0(x []float32, y []byte) {
	x = x[:qk]
	y = y[:34]
	// amax = MAX(amax, fabsf(v)) with ggml's macro, (a) > (b) ? (a) : (b), over finite values:
	// the largest magnitude, which is the largest bit pattern once the sign is cleared (no
	// -0 can arise). Integer maxima compile to conditional moves instead of branches that
	// mispredict on random data.
	var amaxBits uint32
	for _, v := range x {
		amaxBits = max(amaxBits, math.Float32bits(v)&0x7fffffff)
	}
	amax := math.Float32frombits(amaxBits)
	d := amax / 127
	var id float32
	if d != 0 {
		id = 1 / d
	}
	putF16(y[0:], d)
	for j, v := range x {
		y[2+j] = uint8(roundToInt8(v * id))
	}
}

func dequantizeBlockQ8_0(x []byte, y []float32) {
	x = x[:34]
	y = y[:qk]
	d := getF16(x[0:])
	for j := range y {
		y[j] = float32(int8(x[2+j])) * d
	}
}
