package ggml

// #include <stdint.h>
// #include "q4x16.h"
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// Q4_0 matrices in this project's 16-row interleaved layout (q4x16.h), multiplied with int8 activations by
// AVX-512 VNNI dot products: a CPU custom op that replaces ggml's repacked Q4_0 path where the CPU has VNNI.

// Q4X16ISA names a path of the q4x16 kernel.
type Q4X16ISA int

// q4x16 kernel paths (enum idefics2_q4x16_isa in q4x16.h).
const (
	Q4X16Scalar     Q4X16ISA = C.IDEFICS2_Q4X16_SCALAR
	Q4X16AVX512VNNI Q4X16ISA = C.IDEFICS2_Q4X16_AVX512VNNI
	Q4X16AVX2       Q4X16ISA = C.IDEFICS2_Q4X16_AVX2
	Q4X16AVX2VNNI   Q4X16ISA = C.IDEFICS2_Q4X16_AVX2VNNI
	// Q4X16AVX2VNNIEmulated is the AVX-VNNI path's arithmetic with vpdpbusd computed from AVX2 instructions:
	// never chosen, forced by tests so that a CPU without AVX-VNNI checks that path's kernels.
	Q4X16AVX2VNNIEmulated Q4X16ISA = C.IDEFICS2_Q4X16_AVX2VNNI_EMULATED
	// Q4X16NEONDotProd is AArch64 NEON with the dot-product extension (sdot).
	Q4X16NEONDotProd Q4X16ISA = C.IDEFICS2_Q4X16_NEON_DOTPROD
	// Q4X16NEONI8MM is AArch64 NEON with dot products and the int8 matrix multiply (smmla), which takes two tokens at
	// a time (a lone token goes by sdot).
	Q4X16NEONI8MM Q4X16ISA = C.IDEFICS2_Q4X16_NEON_I8MM
)

func (i Q4X16ISA) String() string {
	switch i {
	case Q4X16Scalar:
		return "scalar"
	case Q4X16AVX512VNNI:
		return "avx512vnni"
	case Q4X16AVX2:
		return "avx2"
	case Q4X16AVX2VNNI:
		return "avx2-vnni"
	case Q4X16AVX2VNNIEmulated:
		return "avx2-vnni-emulated"
	case Q4X16NEONDotProd:
		return "neon-dotprod"
	case Q4X16NEONI8MM:
		return "neon-i8mm"
	}
	return fmt.Sprintf("q4x16isa(%d)", int(i))
}

// Q4X16BestISA is the fastest q4x16 path this CPU runs.
func Q4X16BestISA() Q4X16ISA { return Q4X16ISA(C.idefics2_q4x16_best_isa()) }

// Q4X16Fast reports whether this CPU has the vector path (AVX-512 F, BW and VNNI); without it the loader keeps
// ggml's own repacked layout.
func Q4X16Fast() bool { return Q4X16BestISA() == Q4X16AVX512VNNI }

// Q4X16SupportedISAs lists the q4x16 paths this CPU can run (under the ISA cap), scalar first; the emulated
// AVX-VNNI path is among them wherever an AVX2 path is.
func Q4X16SupportedISAs() []Q4X16ISA {
	out := []Q4X16ISA{Q4X16Scalar}
	cur := Q4X16ISA(C.idefics2_q4x16_isa())
	for _, isa := range []Q4X16ISA{Q4X16AVX2, Q4X16AVX2VNNI, Q4X16AVX2VNNIEmulated, Q4X16AVX512VNNI, Q4X16NEONDotProd, Q4X16NEONI8MM} {
		if SetQ4X16ISA(isa) == nil {
			out = append(out, isa)
		}
	}
	SetQ4X16ISA(cur)
	return out
}

// SetQ4X16ISA forces a path of the q4x16 and q4kx16 kernels for the whole process (tests and benchmarks); it
// refuses a path this CPU cannot run. Use Q4X16BestISA() to restore the default.
func SetQ4X16ISA(isa Q4X16ISA) error {
	if C.idefics2_q4x16_set_isa(C.int(isa)) != 0 {
		return fmt.Errorf("ggml: q4x16: path %s is not available on this CPU (best: %s)", isa, Q4X16BestISA())
	}
	return nil
}

// q4x16Shape checks that a rows × cols Q4_0 matrix has the q4x16 layout's shape and returns its byte size.
func q4x16Shape(rows, cols int) (int, error) {
	if rows <= 0 || cols <= 0 || rows%16 != 0 || cols%32 != 0 {
		return 0, fmt.Errorf("%d rows × %d columns; want rows a multiple of 16 and columns of 32", rows, cols)
	}
	if rows > int(^uint(0)>>2)/cols {
		return 0, fmt.Errorf("%d rows × %d columns overflows", rows, cols)
	}
	return rows * cols / 32 * 18, nil
}

// Q4X16Eligible reports whether a rows × cols Q4_0 matrix can take the q4x16 layout.
func Q4X16Eligible(rows, cols int) bool {
	_, err := q4x16Shape(rows, cols)
	return err == nil
}

// Q4X16Repack writes the q4x16 layout of the Q4_0 matrix src (rows × cols, ggml's block_q4_0 rows) into dst,
// which has src's size.
func Q4X16Repack(dst, src []byte, rows, cols int) error {
	size, err := q4x16Shape(rows, cols)
	if err != nil {
		return fmt.Errorf("ggml: q4x16 repack: %w", err)
	}
	if len(src) != size || len(dst) != size {
		return fmt.Errorf("ggml: q4x16 repack: source %d and destination %d bytes, want %d for %d × %d Q4_0", len(src), len(dst), size, rows, cols)
	}
	C.idefics2_q4x16_repack((*C.uint8_t)(unsafe.Pointer(&src[0])), (*C.uint8_t)(unsafe.Pointer(&dst[0])), C.int64_t(rows), C.int64_t(cols))
	runtime.KeepAlive(src)
	runtime.KeepAlive(dst)
	return nil
}

// MulMatQ4X16 is ggml_mul_mat for a Q4_0 weight held in the q4x16 layout: w is the I8 tensor of a rows × cols
// matrix (cols = x.Ne(0)), x F32 [cols, n1, n2, n3] with contiguous rows; the result is F32 [rows, n1, n2, n3]. It
// builds two CPU custom ops: x quantized to int8 per block of 32, then the product.
func (w Tensor) MulMatQ4X16(ctx *Context, x Tensor, rows int) Tensor {
	const op = "mul_mat_q4x16"
	need(op, w, x)
	if w.Type() != TypeI8 || !w.IsContiguous() {
		shapeErr(op, "weight %s is %s; want a contiguous i8 tensor in the q4x16 layout", shapeOf(w), w.Type())
	}
	if x.Type() != TypeF32 || x.Nb(0) != 4 {
		shapeErr(op, "input %s is %s with element stride %d; want f32 with contiguous rows", shapeOf(x), x.Type(), x.Nb(0))
	}
	size, err := q4x16Shape(rows, x.Ne(0))
	if err != nil {
		shapeErr(op, "%v", err)
	}
	if w.NumElements() != size {
		shapeErr(op, "weight has %d bytes, want %d for %d × %d", w.NumElements(), size, rows, x.Ne(0))
	}
	xq := ctx.quantizeOnce(x, quantQ8x32)
	return ctx.node(op, C.idefics2_q4x16_mul_mat(ctx.ptr, w.ptr, xq.ptr, C.int64_t(rows)))
}

// q8x32QuantizeRow quantizes x (a multiple of 32 values) into q8x32 records with the current path (tests).
func q8x32QuantizeRow(x []float32) []byte {
	out := make([]byte, len(x)/32*C.IDEFICS2_Q8X32_RECORD)
	if len(out) == 0 {
		return out
	}
	C.idefics2_q8x32_quantize_row((*C.float)(unsafe.Pointer(&x[0])), (*C.uint8_t)(unsafe.Pointer(&out[0])), C.int64_t(len(x)))
	runtime.KeepAlive(x)
	return out
}
