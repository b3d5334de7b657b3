package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// F32ToF16 converts to IEEE binary16 with round-to-nearest-even, exactly as ggml's
// ggml_compute_fp32_to_fp16 (ggml-impl.h, after Maratyszcza/FP16): values beyond the fp16
// range become ±Inf, NaN becomes the quiet NaN 0x7E00 with the input's sign.
func F32ToF16(f float32) uint16 {
	const scaleToInf float32 = 0x1.0p+112
	const scaleToZero float32 = 0x1.0p-110
	// The two multiplications are separate float32 roundings in ggml; keep them so.
	base := float32(float32(absf(f)*scaleToInf) * scaleToZero)

	w := math.Float32bits(f)
	shl1w := w + w
	sign := w & 0x80000000
	bias := shl1w & 0xFF000000
	if bias < 0x71000000 {
		bias = 0x71000000
	}
	base = math.Float32frombits((bias>>1)+0x07800000) + base
	bits := math.Float32bits(base)
	expBits := (bits >> 13) & 0x00007C00
	mantissaBits := bits & 0x00000FFF
	nonsign := expBits + mantissaBits
	if shl1w > 0xFF000000 {
		nonsign = 0x7E00
	}
	return uint16(sign>>16 | nonsign)
}

// F16ToF32 converts an IEEE binary16 value to float32 exactly, as ggml's
// ggml_compute_fp16_to_fp32 (ggml-impl.h), including its NaN payloads.
func F16ToF32(h uint16) float32 {
	w := uint32(h) << 16
	sign := w & 0x80000000
	twoW := w + w

	const expOffset = uint32(0xE0) << 23
	const expScale float32 = 0x1.0p-112
	normalized := math.Float32frombits((twoW>>4)+expOffset) * expScale

	const magicMask = uint32(126) << 23
	const magicBias float32 = 0.5
	denormalized := math.Float32frombits((twoW>>17)|magicMask) - magicBias

	const denormalizedCutoff = uint32(1) << 27
	if twoW < denormalizedCutoff {
		return math.Float32frombits(sign | math.Float32bits(denormalized))
	}
	return math.Float32frombits(sign | math.Float32bits(normalized))
}

// F32ToBF16 converts to bfloat16 with round-to-nearest-even, exactly as ggml's
// ggml_compute_fp32_to_bf16 (ggml-impl.h): NaN keeps its upper bits and is forced quiet
// (bit 6 of the bf16 value), subnormals are kept.
func F32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 64
	}
	return uint16((u + (0x7fff + ((u >> 16) & 1))) >> 16)
}

// BF16ToF32 widens a bfloat16 value to float32 (exact: the upper 16 bits).
func BF16ToF32(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// F32ToF16Slice converts src into dst as little-endian fp16 values; len(dst) must be
// 2*len(src).
func F32ToF16Slice(dst []byte, src []float32) error {
	if len(dst) != 2*len(src) {
		return fmt.Errorf("quant: f16: destination is %d bytes, want %d", len(dst), 2*len(src))
	}
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], F32ToF16(v))
	}
	return nil
}

// F16ToF32Slice decodes little-endian fp16 values from src into dst; len(src) must be
// 2*len(dst).
func F16ToF32Slice(dst []float32, src []byte) error {
	if len(src) != 2*len(dst) {
		return fmt.Errorf("quant: f16: source is %d bytes, want %d", len(src), 2*len(dst))
	}
	for i := range dst {
		dst[i] = F16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	}
	return nil
}

// F32ToBF16Slice converts src into dst as little-endian bf16 values; len(dst) must be
// 2*len(src).
func F32ToBF16Slice(dst []byte, src []float32) error {
	if len(dst) != 2*len(src) {
		return fmt.Errorf("quant: bf16: destination is %d bytes, want %d", len(dst), 2*len(src))
	}
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(v))
	}
	return nil
}

// BF16ToF32Slice decodes little-endian bf16 values from src into dst; len(src) must be
// 2*len(dst).
func BF16ToF32Slice(dst []float32, src []byte) error {
	if len(src) != 2*len(dst) {
		return fmt.Errorf("quant: bf16: source is %d bytes, want %d", len(src), 2*len(dst))
	}
	for i := range dst {
		dst[i] = BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	}
	return nil
}

// absf is C's fabsf: clears the sign bit (also of NaN).
func absf(f float32) float32 {
	return math.Float32frombits(math.Float32bits(f) &^ 0x80000000)
}
