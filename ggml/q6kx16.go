package ggml

// #include <stdint.h>
// #include "q4kx16.h"
// #include "q6kx16.h"
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// Q6_K matrices in this project's 16-row interleaved layout (q6kx16.h), multiplied with int8 activations by
// AVX-512 VNNI dot products: a CPU custom op that replaces ggml's Q6_K path where the CPU has VNNI. It shares the
// q4x16 path selection (Q4X16Fast, SetQ4X16ISA) and q4kx16's activation quantizer (ggml's Q8_K).

// q6kx16Block is the bytes of one group of 16 rows and one super-block of 256 columns in the q6kx16 layout
// (IDEFICS2_Q6KX16_BLOCK): 16 × 210 bytes, the size of the Q6_K blocks it holds.
const q6kx16Block = C.IDEFICS2_Q6KX16_BLOCK

// q6kx16Shape checks that a rows × cols Q6_K matrix has the q6kx16 layout's shape and returns its Q6_K size and
// its size in the layout (the same), in bytes.
func q6kx16Shape(rows, cols int) (src, packed int, err error) {
	if rows <= 0 || cols <= 0 || rows%16 != 0 || cols%256 != 0 {
		return 0, 0, fmt.Errorf("%d rows × %d columns; want rows a multiple of 16 and columns of 256", rows, cols)
	}
	if rows > int(^uint(0)>>2)/cols/10 {
		return 0, 0, fmt.Errorf("%d rows × %d columns overflows", rows, cols)
	}
	return rows * cols / 256 * 210, rows / 16 * cols / 256 * q6kx16Block, nil
}

// Q6KX16Eligible reports whether a rows × cols Q6_K matrix can take the q6kx16 layout.
func Q6KX16Eligible(rows, cols int) bool {
	_, _, err := q6kx16Shape(rows, cols)
	return err == nil
}

// Q6KX16Size is the size in bytes of a rows × cols Q6_K matrix in the q6kx16 layout (its Q6_K size), or 0 when the
// shape does not fit the layout.
func Q6KX16Size(rows, cols int) int {
	_, n, err := q6kx16Shape(rows, cols)
	if err != nil {
		return 0
	}
	return n
}

// Q6KX16Repack writes the q6kx16 layout of the Q6_K matrix src (rows × cols, ggml's block_q6_K rows) into dst,
// which has Q6KX16Size(rows, cols) bytes.
func Q6KX16Repack(dst, src []byte, rows, cols int) error {
	ssize, psize, err := q6kx16Shape(rows, cols)
	if err != nil {
		return fmt.Errorf("ggml: q6kx16 repack: %w", err)
	}
	if len(src) != ssize {
		return fmt.Errorf("ggml: q6kx16 repack: source has %d bytes, want %d for %d × %d Q6_K", len(src), ssize, rows, cols)
	}
	if len(dst) != psize {
		return fmt.Errorf("ggml: q6kx16 repack: destination has %d bytes, want %d for %d × %d", len(dst), psize, rows, cols)
	}
	C.idefics2_q6kx16_repack((*C.uint8_t)(unsafe.Pointer(&src[0])), (*C.uint8_t)(unsafe.Pointer(&dst[0])), C.int64_t(rows), C.int64_t(cols))
	runtime.KeepAlive(src)
	runtime.KeepAlive(dst)
	return nil
}

// MulMatQ6KX16 is ggml_mul_mat for a Q6_K weight held in the q6kx16 layout: w is the I8 tensor of a rows × cols
// matrix (cols = x.Ne(0)), x F32 [cols, n1, n2, n3] with contiguous rows; the result is F32 [rows, n1, n2, n3]. It
// builds two CPU custom ops: x quantized to int8 per block of 256 as ggml's Q8_K (q4kx16's quantizer), then the
// product.
func (w Tensor) MulMatQ6KX16(ctx *Context, x Tensor, rows int) Tensor {
	const op = "mul_mat_q6kx16"
	need(op, w, x)
	if w.Type() != TypeI8 || !w.IsContiguous() {
		shapeErr(op, "weight %s is %s; want a contiguous i8 tensor in the q6kx16 layout", shapeOf(w), w.Type())
	}
	if x.Type() != TypeF32 || x.Nb(0) != 4 {
		shapeErr(op, "input %s is %s with element stride %d; want f32 with contiguous rows", shapeOf(x), x.Type(), x.Nb(0))
	}
	_, size, err := q6kx16Shape(rows, x.Ne(0))
	if err != nil {
		shapeErr(op, "%v", err)
	}
	if w.NumElements() != size {
		shapeErr(op, "weight has %d bytes, want %d for %d × %d", w.NumElements(), size, rows, x.Ne(0))
	}
	xq := ctx.quantizeOnce(x, quantQ8x256)
	return ctx.node(op, C.idefics2_q6kx16_mul_mat(ctx.ptr, w.ptr, xq.ptr, C.int64_t(rows)))
}
