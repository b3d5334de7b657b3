package ggml

// #include "ggml.h"
import "C"

import "fmt"

// Type is a ggml tensor element type; the values are ggml's `enum ggml_type` (also the GGUF tensor type ids).
type Type int

// Tensor types used by the model and its quantized files (values from ggml.h `enum ggml_type`).
const (
	TypeF32  Type = C.GGML_TYPE_F32
	TypeF16  Type = C.GGML_TYPE_F16
	TypeQ4_0 Type = C.GGML_TYPE_Q4_0
	TypeQ4_1 Type = C.GGML_TYPE_Q4_1
	TypeQ5_0 Type = C.GGML_TYPE_Q5_0
	TypeQ5_1 Type = C.GGML_TYPE_Q5_1
	TypeQ8_0 Type = C.GGML_TYPE_Q8_0
	TypeQ2_K Type = C.GGML_TYPE_Q2_K
	TypeQ3_K Type = C.GGML_TYPE_Q3_K
	TypeQ4_K Type = C.GGML_TYPE_Q4_K
	TypeQ5_K Type = C.GGML_TYPE_Q5_K
	TypeQ6_K Type = C.GGML_TYPE_Q6_K
	TypeQ8_K Type = C.GGML_TYPE_Q8_K
	TypeI8   Type = C.GGML_TYPE_I8
	TypeI16  Type = C.GGML_TYPE_I16
	TypeI32  Type = C.GGML_TYPE_I32
	TypeI64  Type = C.GGML_TYPE_I64
	TypeF64  Type = C.GGML_TYPE_F64
	TypeBF16 Type = C.GGML_TYPE_BF16
	// TypeIQ4_NL is a 4-bit non-linear type ggml's CPU repacks (in IQ4_NL files).
	TypeIQ4_NL Type = C.GGML_TYPE_IQ4_NL
)

// typeCount is GGML_TYPE_COUNT: ids at or above it are unknown to this ggml.
const typeCount = Type(C.GGML_TYPE_COUNT)

// Valid reports whether ggml knows the type and can size it (removed ids have block size 0).
func (t Type) Valid() bool {
	return t >= 0 && t < typeCount && C.ggml_blck_size(C.enum_ggml_type(t)) > 0
}

// String is ggml's name of the type ("f32", "q4_0", ...).
func (t Type) String() string {
	if !t.Valid() {
		return fmt.Sprintf("type(%d)", int(t))
	}
	return C.GoString(C.ggml_type_name(C.enum_ggml_type(t)))
}

// BlockSize is the number of elements in one block of the type (1 for plain types).
func (t Type) BlockSize() int {
	if !t.Valid() {
		return 0
	}
	return int(C.ggml_blck_size(C.enum_ggml_type(t)))
}

// TypeSize is the number of bytes in one block of the type.
func (t Type) TypeSize() int {
	if !t.Valid() {
		return 0
	}
	return int(C.ggml_type_size(C.enum_ggml_type(t)))
}

// RowSize is the byte size of a row of n elements; n must be a multiple of the block size.
func (t Type) RowSize(n int) (int, error) {
	bs := t.BlockSize()
	if bs == 0 {
		return 0, fmt.Errorf("ggml: unknown tensor type %d", int(t))
	}
	if n%bs != 0 {
		return 0, fmt.Errorf("ggml: row of %d elements is not a multiple of the %s block size %d", n, t, bs)
	}
	return n / bs * t.TypeSize(), nil
}

// IsQuantized reports whether the type is a block-quantized format.
func (t Type) IsQuantized() bool {
	return t.Valid() && t.BlockSize() > 1
}
