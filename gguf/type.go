package gguf

import (
	"fmt"
	"math/bits"
	"strings"
)

// Type is a ggml tensor type id as stored in GGUF tensor infos (enum ggml_type in ggml.h of the
// pinned ollama module).
type Type uint32

// Tensor types. The ids are those of enum ggml_type; ids 4, 5 (Q4_2, Q4_3), 31–33 (Q4_0_4_4,
// Q4_0_4_8, Q4_0_8_8) and 36–38 (IQ4_NL_4_4, …) were removed from ggml and are not accepted.
const (
	TypeF32     Type = 0
	TypeF16     Type = 1
	TypeQ4_0    Type = 2
	TypeQ4_1    Type = 3
	TypeQ5_0    Type = 6
	TypeQ5_1    Type = 7
	TypeQ8_0    Type = 8
	TypeQ8_1    Type = 9
	TypeQ2_K    Type = 10
	TypeQ3_K    Type = 11
	TypeQ4_K    Type = 12
	TypeQ5_K    Type = 13
	TypeQ6_K    Type = 14
	TypeQ8_K    Type = 15
	TypeIQ2_XXS Type = 16
	TypeIQ2_XS  Type = 17
	TypeIQ3_XXS Type = 18
	TypeIQ1_S   Type = 19
	TypeIQ4_NL  Type = 20
	TypeIQ3_S   Type = 21
	TypeIQ2_S   Type = 22
	TypeIQ4_XS  Type = 23
	TypeI8      Type = 24
	TypeI16     Type = 25
	TypeI32     Type = 26
	TypeI64     Type = 27
	TypeF64     Type = 28
	TypeIQ1_M   Type = 29
	TypeBF16    Type = 30
	TypeTQ1_0   Type = 34
	TypeTQ2_0   Type = 35
	TypeMXFP4   Type = 39
)

// typeTraits is one row of ggml's type_traits table: the name ggml_type_name returns, the number
// of elements per block (ggml_blck_size) and the bytes per block (ggml_type_size).
type typeTraits struct {
	name      string
	blockSize int
	typeSize  int
}

// qkK is QK_K, the super-block size of the K-quants and i-quants (ggml-common.h).
const qkK = 256

// traits mirrors type_traits in ggml.c; the block sizes are sizeof(block_*) from ggml-common.h
// (checked against ggml_type_size/ggml_blck_size through cgo in ggml/gguf_c_test.go).
var traits = map[Type]typeTraits{
	TypeF32:     {"f32", 1, 4},
	TypeF16:     {"f16", 1, 2},
	TypeQ4_0:    {"q4_0", 32, 18},
	TypeQ4_1:    {"q4_1", 32, 20},
	TypeQ5_0:    {"q5_0", 32, 22},
	TypeQ5_1:    {"q5_1", 32, 24},
	TypeQ8_0:    {"q8_0", 32, 34},
	TypeQ8_1:    {"q8_1", 32, 36},
	TypeQ2_K:    {"q2_K", qkK, 84},
	TypeQ3_K:    {"q3_K", qkK, 110},
	TypeQ4_K:    {"q4_K", qkK, 144},
	TypeQ5_K:    {"q5_K", qkK, 176},
	TypeQ6_K:    {"q6_K", qkK, 210},
	TypeQ8_K:    {"q8_K", qkK, 292},
	TypeIQ2_XXS: {"iq2_xxs", qkK, 66},
	TypeIQ2_XS:  {"iq2_xs", qkK, 74},
	TypeIQ3_XXS: {"iq3_xxs", qkK, 98},
	TypeIQ1_S:   {"iq1_s", qkK, 50},
	TypeIQ4_NL:  {"iq4_nl", 32, 18},
	TypeIQ3_S:   {"iq3_s", qkK, 110},
	TypeIQ2_S:   {"iq2_s", qkK, 82},
	TypeIQ4_XS:  {"iq4_xs", qkK, 136},
	TypeI8:      {"i8", 1, 1},
	TypeI16:     {"i16", 1, 2},
	TypeI32:     {"i32", 1, 4},
	TypeI64:     {"i64", 1, 8},
	TypeF64:     {"f64", 1, 8},
	TypeIQ1_M:   {"iq1_m", qkK, 56},
	TypeBF16:    {"bf16", 1, 2},
	TypeTQ1_0:   {"tq1_0", qkK, 54},
	TypeTQ2_0:   {"tq2_0", qkK, 66},
	TypeMXFP4:   {"mxfp4", 32, 17},
}

// Types returns every tensor type this package knows, in id order.
func Types() []Type {
	out := make([]Type, 0, len(traits))
	for t := Type(0); t < 64; t++ {
		if _, ok := traits[t]; ok {
			out = append(out, t)
		}
	}
	return out
}

// Valid reports whether t is a tensor type this package knows.
func (t Type) Valid() bool {
	_, ok := traits[t]
	return ok
}

// String returns ggml's name of the type (ggml_type_name: "f32", "q4_K", …) or "type(N)" for an
// unknown id.
func (t Type) String() string {
	if tr, ok := traits[t]; ok {
		return tr.name
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// BlockSize returns the number of elements in one block (1 for plain types, 32 or 256 for
// quantized ones), or 0 for an unknown type.
func (t Type) BlockSize() int { return traits[t].blockSize }

// TypeSize returns the number of bytes in one block, or 0 for an unknown type.
func (t Type) TypeSize() int { return traits[t].typeSize }

// IsQuantized reports whether t stores elements in blocks of more than one element.
func (t Type) IsQuantized() bool { return traits[t].blockSize > 1 }

// RowSize returns the bytes of one row of ne0 elements (ggml_row_size). It fails when t is
// unknown or ne0 is not a multiple of the block size.
func (t Type) RowSize(ne0 uint64) (uint64, error) {
	tr, ok := traits[t]
	if !ok {
		return 0, fmt.Errorf("gguf: unknown tensor type %d", uint32(t))
	}
	if ne0%uint64(tr.blockSize) != 0 {
		return 0, fmt.Errorf("gguf: type %s: row of %d elements is not a multiple of the block size %d", t, ne0, tr.blockSize)
	}
	hi, lo := bits.Mul64(ne0/uint64(tr.blockSize), uint64(tr.typeSize))
	if hi != 0 {
		return 0, fmt.Errorf("gguf: type %s: row of %d elements overflows", t, ne0)
	}
	return lo, nil
}

// ParseType returns the type whose ggml name is s, ignoring case ("Q4_K", "q4_k", "bf16").
func ParseType(s string) (Type, error) {
	for _, t := range Types() {
		if strings.EqualFold(traits[t].name, s) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("gguf: unknown tensor type name %q", s)
}

// TensorBytes returns the data size in bytes of a tensor of type t and ggml shape ne, checking
// that the shape has 1 to 4 positive dimensions, that ne[0] is a multiple of the block size and
// that neither the element count nor the byte size overflows int64.
func TensorBytes(t Type, ne []uint64) (uint64, error) {
	if !t.Valid() {
		return 0, fmt.Errorf("gguf: unknown tensor type %d", uint32(t))
	}
	if len(ne) == 0 || len(ne) > MaxDims {
		return 0, fmt.Errorf("gguf: shape %s: %d dimensions, want 1 to %d", FormatShape(ne), len(ne), MaxDims)
	}
	elems := uint64(1)
	for i, d := range ne {
		if d == 0 || d > maxInt64 {
			return 0, fmt.Errorf("gguf: shape %s: dimension %d is %d, want 1 to 2^63-1", FormatShape(ne), i, d)
		}
		hi, lo := bits.Mul64(elems, d)
		if hi != 0 || lo > maxInt64 {
			return 0, fmt.Errorf("gguf: shape %s: element count overflows int64", FormatShape(ne))
		}
		elems = lo
	}
	row, err := t.RowSize(ne[0])
	if err != nil {
		return 0, fmt.Errorf("gguf: shape %s: %w", FormatShape(ne), stripPrefix(err))
	}
	hi, lo := bits.Mul64(row, elems/ne[0])
	if hi != 0 || lo > maxInt64 {
		return 0, fmt.Errorf("gguf: shape %s of type %s: byte size overflows int64", FormatShape(ne), t)
	}
	return lo, nil
}

// MaxDims is the largest number of dimensions a tensor may have (GGML_MAX_DIMS).
const MaxDims = 4

const maxInt64 = 1<<63 - 1

// stripPrefix lets an error from a helper be wrapped without repeating "gguf: ".
func stripPrefix(err error) error {
	return prefixless{err}
}

type prefixless struct{ err error }

// Error returns the wrapped message without its "gguf: " prefix.
func (p prefixless) Error() string { return strings.TrimPrefix(p.err.Error(), "gguf: ") }

// Unwrap returns the wrapped error.
func (p prefixless) Unwrap() error { return p.err }
