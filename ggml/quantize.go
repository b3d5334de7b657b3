package ggml

// #include <stdint.h>
// #include <string.h>
// #include "ggml.h"
//
// // Reference Q8_K row functions of ggml-quants.c (declared in the internal ggml-quants.h, which
// // is not on the include path). ggml_quantize_chunk and the type traits do not cover Q8_K.
// void quantize_row_q8_K_ref(const float * x, void * y, int64_t k);
// void dequantize_row_q8_K(const void * x, float * y, int64_t k);
//
// static size_t idefics2_quantize_chunk(int type, const float * src, void * dst, int64_t nrows, int64_t n_per_row) {
//     ggml_quantize_init((enum ggml_type) type);
//     return ggml_quantize_chunk((enum ggml_type) type, src, dst, 0, nrows, n_per_row, NULL);
// }
// static int idefics2_to_float(int type, const void * x, float * y, int64_t n) {
//     const struct ggml_type_traits * tr = ggml_get_type_traits((enum ggml_type) type);
//     if (tr->to_float == NULL) return -1;
//     tr->to_float(x, y, n);
//     return 0;
// }
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// quantizeChunkTypes are the types ggml_quantize_chunk encodes without an importance matrix and
// that this binding accepts; Q8_K is routed to quantize_row_q8_K_ref instead.
var quantizeChunkTypes = map[Type]bool{
	TypeF32: true, TypeF16: true, TypeBF16: true,
	TypeQ4_0: true, TypeQ4_1: true, TypeQ5_0: true, TypeQ5_1: true, TypeQ8_0: true,
	TypeQ2_K: true, TypeQ3_K: true, TypeQ4_K: true, TypeQ5_K: true, TypeQ6_K: true, TypeQ8_K: true,
}

// QuantizeChunk encodes nrows rows of ncols float32 values as ggml type typ with ggml's reference
// quantizer, ggml_quantize_chunk(typ, src, dst, 0, nrows, ncols, NULL) (Q8_K, which that function
// does not handle, goes through quantize_row_q8_K_ref). It exists to check the pure-Go encoders
// in package quant against ggml byte for byte. Shapes are checked here so that no input reaches a
// GGML_ASSERT.
func QuantizeChunk(typ int, src []float32, nrows, ncols int) ([]byte, error) {
	t := Type(typ)
	if !quantizeChunkTypes[t] {
		return nil, fmt.Errorf("ggml: quantize: type %s is not supported", t)
	}
	if nrows < 0 || ncols <= 0 {
		return nil, fmt.Errorf("ggml: quantize: bad shape %d rows × %d columns", nrows, ncols)
	}
	if ncols > len(src) || nrows > len(src)/ncols || nrows*ncols != len(src) {
		return nil, fmt.Errorf("ggml: quantize: %d values for %d rows × %d columns", len(src), nrows, ncols)
	}
	rowSize, err := t.RowSize(ncols)
	if err != nil {
		return nil, fmt.Errorf("ggml: quantize: %w", err)
	}
	dst := make([]byte, nrows*rowSize)
	if nrows == 0 {
		return dst, nil
	}
	if t == TypeQ8_K {
		C.quantize_row_q8_K_ref((*C.float)(unsafe.Pointer(&src[0])), unsafe.Pointer(&dst[0]), C.int64_t(len(src)))
	} else {
		got := C.idefics2_quantize_chunk(C.int(t), (*C.float)(unsafe.Pointer(&src[0])), unsafe.Pointer(&dst[0]), C.int64_t(nrows), C.int64_t(ncols))
		if int(got) != len(dst) {
			return nil, fmt.Errorf("ggml: quantize: ggml wrote %d bytes, want %d", int(got), len(dst))
		}
	}
	runtime.KeepAlive(src)
	return dst, nil
}

// DequantizeRow decodes n values of ggml type typ from data with ggml's to_float for the type
// (ggml_get_type_traits(typ)->to_float; dequantize_row_q8_K for Q8_K). data must be exactly the
// row size of n values.
func DequantizeRow(typ int, data []byte, n int) ([]float32, error) {
	t := Type(typ)
	if !t.Valid() {
		return nil, fmt.Errorf("ggml: dequantize: unknown type %d", typ)
	}
	if n < 0 {
		return nil, fmt.Errorf("ggml: dequantize: negative element count %d", n)
	}
	size, err := t.RowSize(n)
	if err != nil {
		return nil, fmt.Errorf("ggml: dequantize: %w", err)
	}
	if len(data) != size {
		return nil, fmt.Errorf("ggml: dequantize: %s: %d values need %d bytes, got %d", t, n, size, len(data))
	}
	out := make([]float32, n)
	if n == 0 {
		return out, nil
	}
	if t == TypeQ8_K {
		C.dequantize_row_q8_K(unsafe.Pointer(&data[0]), (*C.float)(unsafe.Pointer(&out[0])), C.int64_t(n))
	} else if C.idefics2_to_float(C.int(t), unsafe.Pointer(&data[0]), (*C.float)(unsafe.Pointer(&out[0])), C.int64_t(n)) != 0 {
		return nil, fmt.Errorf("ggml: dequantize: type %s has no to_float", t)
	}
	runtime.KeepAlive(data)
	return out, nil
}
