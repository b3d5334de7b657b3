package gguf

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNotGGUF is matched (errors.Is) by the error for input that does not start with the magic
// "GGUF" (including legacy GGML/GGJT files and inputs shorter than four bytes).
var ErrNotGGUF = errors.New("gguf: not a GGUF file")

// ErrKeyNotFound is matched (errors.Is) by the error a typed metadata accessor returns for an
// absent key.
var ErrKeyNotFound = errors.New("gguf: key not found")

// ErrWrongType is matched (errors.Is) by the error a typed metadata accessor returns for a key
// whose value has another type.
var ErrWrongType = errors.New("gguf: wrong value type")

// FormatError reports malformed or truncated GGUF input: a field whose value the format does not
// allow or that is inconsistent with the file size.
type FormatError struct {
	Path   string // the file, "" when read through Read
	Offset int64  // byte offset of the offending field from the start of the file, -1 if none
	Field  string // what is wrong, e.g. `tensor "blk.0.attn_q": dimension 1` or `header: n_kv`
	Msg    string // why, e.g. "count 1000000 exceeds the 12 bytes left"
	Err    error  // underlying cause, e.g. ErrNotGGUF; may be nil
}

// Error formats the error as "gguf: PATH: FIELD: MSG (offset N)".
func (e *FormatError) Error() string {
	var b strings.Builder
	b.WriteString("gguf: ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if e.Offset >= 0 {
		fmt.Fprintf(&b, " (offset %d)", e.Offset)
	}
	return b.String()
}

// Unwrap returns the underlying cause.
func (e *FormatError) Unwrap() error { return e.Err }

// UnsupportedError reports well-formed input that this package does not handle: GGUF v1,
// big-endian files, newer versions, tensor types removed from or unknown to ggml.
type UnsupportedError struct {
	Path  string // the file, "" when read through Read
	Field string // what, e.g. `tensor "x": type` or "header: version"
	Msg   string // why, e.g. "type id 31 (removed from ggml)"
}

// Error formats the error as "gguf: PATH: FIELD: unsupported MSG".
func (e *UnsupportedError) Error() string {
	var b strings.Builder
	b.WriteString("gguf: ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString("unsupported ")
	b.WriteString(e.Msg)
	return b.String()
}
