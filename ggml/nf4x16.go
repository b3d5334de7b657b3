package ggml

// #include <stdint.h>
// #include "ggml.h"
// #include "ggml-backend.h"
// #include "nf4x16.h"
import "C"

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// Repacked NF4 on the CPU (nf4x16.c): the "nf4x16" layout of nf4x16.h, 16 rows interleaved per
// 64-column chunk, multiplied with activations quantized to int8 per 64 values. It runs the AVX-512
// VNNI path when NF4CurrentISA is NF4AVX512VNNI, the AVX2 path when it is NF4AVX2 or NF4AVX512 (with AVX-VNNI's
// vpdpbusd when it is NF4AVX2VNNI, or that instruction emulated for tests), and a scalar path otherwise; the scalar path is the reference (the vector paths give the same float32
// results bit for bit).

// Shape units of the nf4x16 layout (nf4x16.h).
const (
	NF4x16Rows = C.IDEFICS2_NF4X16_ROWS // rows per interleaved group
	NF4x16Cols = C.IDEFICS2_NF4X16_COLS // columns per chunk and values per activation record

	nf4x16Chunk = C.IDEFICS2_NF4X16_CHUNK // bytes per group and chunk
	nf4x16QRec  = C.IDEFICS2_NF4X16_QREC  // bytes per activation record
)

// NF4x16LUT returns the codebook as the kernel stores it: round(level·127) + 128 for each code.
func NF4x16LUT() [16]byte {
	var out [16]C.uint8_t
	C.idefics2_nf4x16_lut(&out[0])
	var b [16]byte
	for i, v := range out {
		b[i] = byte(v)
	}
	return b
}

// NF4x16Fast reports whether the nf4x16 product runs a vector path measured to beat the F32 stream kernel:
// AVX-512 VNNI, or AVX2 (NF4CurrentISA NF4AVX2, NF4AVX2VNNI or NF4AVX512; the emulated path is for tests).
// Otherwise callers keep the stream kernel (and the nf4x16 product runs its NEON path, NF4x16NEON, or the scalar
// reference, which exists to check the vector paths).
func NF4x16Fast() bool {
	switch NF4CurrentISA() {
	case NF4AVX512VNNI, NF4AVX512, NF4AVX2, NF4AVX2VNNI:
		return true
	}
	return false
}

// NF4x16NEON reports whether the nf4x16 product runs one of its NEON paths (dot products, or the int8 matrix multiply
// with them), which have not been measured against the stream kernel on an ARM CPU.
func NF4x16NEON() bool { isa := NF4CurrentISA(); return isa == NF4NEONDotProd || isa == NF4NEONI8MM }

// NF4x16Check returns nil when a rows × cols NF4 matrix in blocks of blockSize can be repacked to
// nf4x16: rows a multiple of 16, cols a multiple of 64 and of blockSize (no block straddles a
// row). The error names the argument that does not fit.
func NF4x16Check(rows, cols, blockSize int) error {
	if rows <= 0 || cols <= 0 || rows > int(^uint(0)>>1)/cols {
		return fmt.Errorf("ggml: nf4x16: bad shape %d rows × %d columns", rows, cols)
	}
	if _, err := NF4StreamSize(0, blockSize); err != nil {
		return err
	}
	if rows%NF4x16Rows != 0 {
		return fmt.Errorf("ggml: nf4x16: rows %d is not a multiple of %d", rows, NF4x16Rows)
	}
	if cols%NF4x16Cols != 0 {
		return fmt.Errorf("ggml: nf4x16: cols %d is not a multiple of %d", cols, NF4x16Cols)
	}
	if cols%blockSize != 0 {
		return fmt.Errorf("ggml: nf4x16: cols %d is not a multiple of the block size %d (blocks would straddle rows)", cols, blockSize)
	}
	return nil
}

// NF4x16Size is the byte size of a rows × cols matrix in the nf4x16 layout: 36 bytes per 64
// values, the stream's size for blocks of 64 (scales are repeated per 64 columns, so larger blocks
// take more room than their stream). The shape must pass NF4x16Check.
func NF4x16Size(rows, cols int) int { return rows / NF4x16Rows * (cols / NF4x16Cols) * nf4x16Chunk }

// nf4x16CheckStream checks the shape and the stream's size.
func nf4x16CheckStream(stream []byte, rows, cols, blockSize int) error {
	if err := NF4x16Check(rows, cols, blockSize); err != nil {
		return err
	}
	size, err := NF4StreamSize(rows*cols, blockSize)
	if err != nil {
		return err
	}
	if len(stream) != size {
		return fmt.Errorf("ggml: nf4x16: stream is %d bytes, want %d for %d × %d in blocks of %d", len(stream), size, rows, cols, blockSize)
	}
	return nil
}

// nf4x16Repack repacks stream into dst (NF4x16Size bytes) on up to GOMAXPROCS goroutines, each
// taking a range of groups.
func nf4x16Repack(dst unsafe.Pointer, stream []byte, rows, cols, blockSize int) {
	groups := rows / NF4x16Rows
	threads := max(1, min(runtime.GOMAXPROCS(0), groups))
	var wg sync.WaitGroup
	for th := 0; th < threads; th++ {
		g0, g1 := groups*th/threads, groups*(th+1)/threads
		wg.Add(1)
		go func() {
			defer wg.Done()
			C.idefics2_nf4x16_repack((*C.uint8_t)(unsafe.Pointer(&stream[0])), (*C.uint8_t)(dst), C.int64_t(cols), C.int(blockSize),
				C.int64_t(g0), C.int64_t(g1))
		}()
	}
	wg.Wait()
	runtime.KeepAlive(stream)
}

// NF4Repack returns the rows × cols NF4 block stream (blocks of blockSize) in the nf4x16 layout.
func NF4Repack(stream []byte, rows, cols, blockSize int) ([]byte, error) {
	if err := nf4x16CheckStream(stream, rows, cols, blockSize); err != nil {
		return nil, err
	}
	out := make([]byte, NF4x16Size(rows, cols))
	nf4x16Repack(unsafe.Pointer(&out[0]), stream, rows, cols, blockSize)
	return out, nil
}

// SetNF4x16 fills t, an I8 tensor of NF4x16Size(rows, cols) bytes, with the rows × cols NF4 block
// stream repacked to nf4x16. In a host buffer it repacks straight into the tensor's memory (no
// second copy); elsewhere it repacks into a temporary and copies that.
func (t Tensor) SetNF4x16(stream []byte, rows, cols, blockSize int) error {
	if err := nf4x16CheckStream(stream, rows, cols, blockSize); err != nil {
		return err
	}
	var host bool
	err := Catch(func() {
		if t.ptr != nil && t.Type() != TypeI8 {
			shapeErr("set_nf4x16", "tensor %q is %s, not i8", t.Name(), t.Type())
		}
		t.checkIO("set_nf4x16", NF4x16Size(rows, cols))
		host = t.ptr.view_src == nil && t.ptr.data != nil && bool(C.ggml_backend_buffer_is_host(t.ptr.buffer))
	})
	if err != nil {
		return err
	}
	if host {
		nf4x16Repack(t.ptr.data, stream, rows, cols, blockSize)
		return nil
	}
	packed, err := NF4Repack(stream, rows, cols, blockSize)
	if err != nil {
		return err
	}
	return t.SetBytes(packed)
}

// NF4x16MatMul multiplies the rows × cols matrix w, in the nf4x16 layout, with ntok = len(x)/cols
// vectors x (quantized to int8 records first, as the graph op does) and returns y in ggml's
// mul_mat layout [rows, ntok]. It runs the kernel directly on threads goroutines, outside any graph.
func NF4x16MatMul(w []byte, rows, cols int, x []float32, threads int) ([]float32, error) {
	if err := NF4x16Check(rows, cols, NF4x16Cols); err != nil {
		return nil, err
	}
	if len(w) != NF4x16Size(rows, cols) {
		return nil, fmt.Errorf("ggml: nf4x16 matmul: weights are %d bytes, want %d for %d × %d", len(w), NF4x16Size(rows, cols), rows, cols)
	}
	if len(x)%cols != 0 {
		return nil, fmt.Errorf("ggml: nf4x16 matmul: %d input values are not a whole number of vectors of %d", len(x), cols)
	}
	ntok := len(x) / cols
	y := make([]float32, rows*ntok)
	if ntok == 0 {
		return y, nil
	}
	nrec := cols / NF4x16Cols
	xq := nf4x16Quantize(x)
	groups := rows / NF4x16Rows
	threads = max(1, min(threads, groups))
	var wg sync.WaitGroup
	for th := 0; th < threads; th++ {
		g0, g1 := groups*th/threads, groups*(th+1)/threads
		wg.Add(1)
		go func() {
			defer wg.Done()
			C.idefics2_nf4x16_matmul((*C.uint8_t)(unsafe.Pointer(&w[0])), C.int64_t(cols),
				(*C.uint8_t)(unsafe.Pointer(&xq[0])), C.int64_t(ntok), C.int64_t(nrec*nf4x16QRec),
				(*C.float)(unsafe.Pointer(&y[0])), C.int64_t(rows), C.int64_t(g0), C.int64_t(g1))
		}()
	}
	wg.Wait()
	runtime.KeepAlive(w)
	runtime.KeepAlive(x)
	return y, nil
}

// nf4x16Quantize returns the activation records of x (len(x) a multiple of 64).
func nf4x16Quantize(x []float32) []byte {
	nrec := len(x) / NF4x16Cols
	q := make([]byte, nrec*nf4x16QRec)
	if nrec > 0 {
		C.idefics2_nf4x16_quantize((*C.float)(unsafe.Pointer(&x[0])), (*C.uint8_t)(unsafe.Pointer(&q[0])), C.int64_t(nrec))
	}
	runtime.KeepAlive(x)
	return q
}

// MulMatNF4x16 is ggml_mul_mat for an NF4 weight repacked to nf4x16 (SetNF4x16): w is the I8
// tensor of a rows × cols matrix (cols = x.Ne(0)), x is F32 [cols, n1, n2, n3] with contiguous rows,
// and the result is F32 [rows, n1, n2, n3]. It adds two CPU-only custom ops: one quantizes x to
// int8 records (made once per x and context: products sharing an input, like the attention's
// query, key and value, share its records) and one multiplies, threads splitting the 16-row groups.
func (w Tensor) MulMatNF4x16(ctx *Context, x Tensor, rows int) Tensor {
	need("mul_mat_nf4x16", w, x)
	if w.Type() != TypeI8 || !w.IsContiguous() {
		shapeErr("mul_mat_nf4x16", "weight %s is %s; want a contiguous i8 nf4x16 matrix", shapeOf(w), w.Type())
	}
	if x.Type() != TypeF32 || x.Nb(0) != 4 {
		shapeErr("mul_mat_nf4x16", "input %s is %s with element stride %d; want f32 with contiguous rows", shapeOf(x), x.Type(), x.Nb(0))
	}
	cols := x.Ne(0)
	if err := NF4x16Check(rows, cols, NF4x16Cols); err != nil {
		shapeErr("mul_mat_nf4x16", "%v", err)
	}
	if w.NumElements() != NF4x16Size(rows, cols) {
		shapeErr("mul_mat_nf4x16", "weight has %d bytes, want %d for %d × %d", w.NumElements(), NF4x16Size(rows, cols), rows, cols)
	}
	xq := ctx.quantizeOnce(x, quantNF4x16)
	return ctx.node("mul_mat_nf4x16", C.idefics2_nf4x16_mul_mat(ctx.ptr, w.ptr, xq.ptr, C.int64_t(rows)))
}
