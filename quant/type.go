package quant

import (
	"fmt"
	"strings"
)

// Type is a tensor storage type. Values equal ggml's enum ggml_type (ggml.h), so a Type can be
// written to a GGUF tensor-info record unchanged; the one exception is NF4, a project value that
// never appears in a file (NF4 tensors are stored as I8, see StorageType).
type Type uint32

// Storage types. The numbers are ggml's (ggml.h, enum ggml_type).
const (
	F32  Type = 0
	F16  Type = 1
	Q4_0 Type = 2
	Q4_1 Type = 3
	Q5_0 Type = 6
	Q5_1 Type = 7
	Q8_0 Type = 8
	Q4_K Type = 12
	Q5_K Type = 13
	Q6_K Type = 14
	Q8_K Type = 15
	I8   Type = 24
	BF16 Type = 30

	// NF4 is bitsandbytes' 4-bit NormalFloat with one float32 absmax per block of 64 values.
	// It is this project's value, outside ggml's range; in GGUF an NF4 tensor is an I8 tensor
	// holding the block stream described in docs/formats.md.
	NF4 Type = 1 << 16
)

// QK_K is the super-block size of ggml's K-quants (ggml-common.h).
const QK_K = 256

type typeInfo struct {
	name      string // ggml type_name (ggml.c type_traits), or "nf4"
	blockSize int    // values per block
	typeSize  int    // bytes per block
}

// typeInfos mirrors ggml.c type_traits (blck_size, type_size) for the supported types.
var typeInfos = map[Type]typeInfo{
	F32:  {"f32", 1, 4},
	F16:  {"f16", 1, 2},
	Q4_0: {"q4_0", 32, 18},
	Q4_1: {"q4_1", 32, 20},
	Q5_0: {"q5_0", 32, 22},
	Q5_1: {"q5_1", 32, 24},
	Q8_0: {"q8_0", 32, 34},
	Q4_K: {"q4_K", QK_K, 144},
	Q5_K: {"q5_K", QK_K, 176},
	Q6_K: {"q6_K", QK_K, 210},
	Q8_K: {"q8_K", QK_K, 292},
	I8:   {"i8", 1, 1},
	BF16: {"bf16", 1, 2},
	NF4:  {"nf4", NF4BlockSize, 4 + NF4BlockSize/2},
}

// String returns ggml's name of the type ("q4_K", "bf16", …), or "nf4"; unknown values print
// as "type(N)".
func (t Type) String() string {
	if info, ok := typeInfos[t]; ok {
		return info.name
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// Valid reports whether t is one of the types this package knows.
func (t Type) Valid() bool {
	_, ok := typeInfos[t]
	return ok
}

// BlockSize returns the number of values per block (1 for F32, F16, BF16 and I8; 32 for the
// legacy quants; 256 for K-quants; 64 for NF4), or 0 for an unknown type.
func (t Type) BlockSize() int { return typeInfos[t].blockSize }

// TypeSize returns the number of bytes per block, or 0 for an unknown type. For NF4 it is the
// size of one record of the GGUF block stream (4-byte absmax + 32 bytes of codes).
func (t Type) TypeSize() int { return typeInfos[t].typeSize }

// RowSize returns the number of bytes n values occupy (ggml_row_size). n must be a
// non-negative multiple of the block size.
func (t Type) RowSize(n int) (int, error) {
	info, ok := typeInfos[t]
	if !ok {
		return 0, &UnsupportedError{What: t.String()}
	}
	if n < 0 {
		return 0, fmt.Errorf("quant: %s: negative element count %d", t, n)
	}
	if n%info.blockSize != 0 {
		return 0, fmt.Errorf("quant: %s: element count %d is not a multiple of block size %d", t, n, info.blockSize)
	}
	blocks := n / info.blockSize
	if blocks > maxInt/info.typeSize {
		return 0, fmt.Errorf("quant: %s: element count %d overflows the byte size", t, n)
	}
	return blocks * info.typeSize, nil
}

// IsQuantized reports whether t is a block-quantized type (not F32, F16, BF16 or I8).
func (t Type) IsQuantized() bool {
	switch t {
	case F32, F16, BF16, I8:
		return false
	}
	return t.Valid()
}

// StorageType returns the ggml type a tensor of type t is written as in GGUF: t itself, except
// NF4, which is stored as I8 (a byte stream, see docs/formats.md).
func (t Type) StorageType() Type {
	if t == NF4 {
		return I8
	}
	return t
}

// CanEncode reports whether Quantize supports t.
func (t Type) CanEncode() bool {
	switch t {
	case F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, Q8_K, NF4:
		return true
	}
	return false
}

// ParseType parses a type name, case-insensitively: "f32", "f16", "bf16", "q4_0", "q4_1",
// "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k", "q8_k", "i8", "nf4". Mixes such as "q4_k_m"
// are file types chosen per tensor by the converter, not storage types, and are rejected.
func ParseType(s string) (Type, error) {
	want := strings.ToLower(strings.TrimSpace(s))
	for t, info := range typeInfos {
		if strings.ToLower(info.name) == want {
			return t, nil
		}
	}
	return 0, &UnsupportedError{What: fmt.Sprintf("type name %q", s)}
}

const maxInt = int(^uint(0) >> 1)
