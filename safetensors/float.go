package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"
)

// ToFloat32 decodes a floating-point tensor (F32, F16 or BF16) into a new float32 slice in the
// tensor's row-major order. F16 and BF16 widen exactly (every value of both is a float32).
func ToFloat32(t Tensor) ([]float32, error) {
	size := t.DType.Size()
	if size == 0 || len(t.Data)%size != 0 {
		return nil, fmt.Errorf("safetensors: tensor %q: %d bytes of data are not whole %s elements", t.Name, len(t.Data), t.DType)
	}
	n := len(t.Data) / size
	if int64(n) != t.NumElements() {
		return nil, fmt.Errorf("safetensors: tensor %q: %d elements of data, shape %v needs %d", t.Name, n, t.Shape, t.NumElements())
	}
	out := make([]float32, n)
	le := binary.LittleEndian
	switch t.DType {
	case F32:
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(t.Data[4*i:]))
		}
	case F16:
		for i := range out {
			out[i] = F16ToF32(le.Uint16(t.Data[2*i:]))
		}
	case BF16:
		for i := range out {
			out[i] = BF16ToF32(le.Uint16(t.Data[2*i:]))
		}
	default:
		return nil, fmt.Errorf("safetensors: tensor %q: dtype %s is not a floating-point type (want F32, F16 or BF16)", t.Name, t.DType)
	}
	return out, nil
}

// BF16ToF32 widens a bfloat16 bit pattern: bfloat16 is the top half of a float32.
func BF16ToF32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// F16ToF32 widens an IEEE 754 binary16 bit pattern exactly, including subnormals, infinities and
// NaN payloads.
func F16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch exp {
	case 0:
		// Zero or subnormal: mant × 2^-24, exact in float32.
		v := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			v = -v
		}
		return v
	case 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	}
	// Normal: rebias the exponent from 15 to 127.
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}
