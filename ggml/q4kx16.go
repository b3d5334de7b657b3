package ggml

// #include <stdint.h>
// #include "q4kx16.h"
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// Q4_K matrices in this project's 16-row interleaved layout (q4kx16.h), multiplied with int8 activations by
// AVX-512 VNNI dot products: a CPU custom op that replaces ggml's Q4_K path where the CPU has VNNI. It shares the
// q4x16 path selection: Q4X16Fast says whether the vector path exists and SetQ4X16ISA forces one for both layouts.

// q4kx16Block is the bytes of one group of 16 rows and one super-block of 256 columns in the q4kx16 layout
// (IDEFICS2_Q4KX16_BLOCK): 16 × 144 bytes of Q4_K blocks with the 6-bit scales and mins widened to bytes.
const q4kx16Block = C.IDEFICS2_Q4KX16_BLOCK

// q4kx16Shape checks that a rows × cols Q4_K matrix has the q4kx16 layout's shape and returns its Q4_K size and
// its size in the layout, in bytes.
func q4kx16Shape(rows, cols int) (src, packed int, err error) {
	if rows <= 0 || cols <= 0 || rows%16 != 0 || cols%256 != 0 {
		return 0, 0, fmt.Errorf("%d rows × %d columns; want rows a multiple of 16 and columns of 256", rows, cols)
	}
	if rows > int(^uint(0)>>2)/cols/10 {
		return 0, 0, fmt.Errorf("%d rows × %d columns overflows", rows, cols)
	}
	return rows * cols / 256 * 144, rows / 16 * cols / 256 * q4kx16Block, nil
}

// Q4KX16Eligible reports whether a rows × cols Q4_K matrix can take the q4kx16 layout.
func Q4KX16Eligible(rows, cols int) bool {
	_, _, err := q4kx16Shape(rows, cols)
	return err == nil
}

// Q4KX16Size is the size in bytes of a rows × cols Q4_K matrix in the q4kx16 layout (2368/2304 of its Q4_K size),
// or 0 when the shape does not fit the layout.
func Q4KX16Size(rows, cols int) int {
	_, n, err := q4kx16Shape(rows, cols)
	if err != nil {
		return 0
	}
	return n
}

// Q4KX16Repack writes the q4kx16 layout of the Q4_K matrix src (rows × cols, ggml's block_q4_K rows) into dst,
// which has Q4KX16Size(rows, cols) bytes.
func Q4KX16Repack(dst, src []byte, rows, cols int) error {
	ssize, psize, err := q4kx16Shape(rows, cols)
	if err != nil {
		return fmt.Errorf("ggml: q4kx16 repack: %w", err)
	}
	if len(src) != ssize {
		return fmt.Errorf("ggml: q4kx16 repack: source has %d bytes, want %d for %d × %d Q4_K", len(src), ssize, rows, cols)
	}
	if len(dst) != psize {
		return fmt.Errorf("ggml: q4kx16 repack: destination has %d bytes, want %d for %d × %d", len(dst), psize, rows, cols)
	}
	C.idefics2_q4kx16_repack((*C.uint8_t)(unsafe.Pointer(&src[0])), (*C.uint8_t)(unsafe.Pointer(&dst[0])), C.int64_t(rows), C.int64_t(cols))
	runtime.KeepAlive(src)
	runtime.KeepAlive(dst)
	return nil
}

// MulMatQ4KX16 is ggml_mul_mat for a Q4_K weight held in the q4kx16 layout: w is the I8 tensor of a rows × cols
// matrix (cols = x.Ne(0)), x F32 [cols, n1, n2, n3] with contiguous rows; the result is F32 [rows, n1, n2, n3]. It
// builds two CPU custom ops: x quantized to int8 per block of 256 as ggml's Q8_K, then the product.
func (w Tensor) MulMatQ4KX16(ctx *Context, x Tensor, rows int) Tensor {
	const op = "mul_mat_q4kx16"
	need(op, w, x)
	if w.Type() != TypeI8 || !w.IsContiguous() {
		shapeErr(op, "weight %s is %s; want a contiguous i8 tensor in the q4kx16 layout", shapeOf(w), w.Type())
	}
	if x.Type() != TypeF32 || x.Nb(0) != 4 {
		shapeErr(op, "input %s is %s with element stride %d; want f32 with contiguous rows", shapeOf(x), x.Type(), x.Nb(0))
	}
	_, size, err := q4kx16Shape(rows, x.Ne(0))
	if err != nil {
		shapeErr(op, "%v", err)
	}
	if w.NumElements() != size {
		shapeErr(op, "weight has %d bytes, want %d for %d × %d", w.NumElements(), size, rows, x.Ne(0))
	}
	xq := ctx.quantizeOnce(x, quantQ8x256)
	return ctx.node(op, C.idefics2_q4kx16_mul_mat(ctx.ptr, w.ptr, xq.ptr, C.int64_t(rows)))
}

// q8x256QuantizeRow quantizes x (a multiple of 256 values) into q8x256 records with the current path (tests).
func q8x256QuantizeRow(x []float32) []byte {
	out := make([]byte, len(x)/256*C.IDEFICS2_Q8X256_RECORD)
	if len(out) == 0 {
		return out
	}
	C.idefics2_q8x256_quantize_row((*C.float)(unsafe.Pointer(&x[0])), (*C.uint8_t)(unsafe.Pointer(&out[0])), C.int64_t(len(x)))
	runtime.KeepAlive(x)
	return out
}
