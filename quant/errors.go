package quant

import "fmt"

// NonFiniteError reports a NaN or ±Inf input value; no format here encodes them meaningfully,
// and a weight that is not finite means a broken checkpoint.
type NonFiniteError struct {
	Index int     // position in the source slice
	Value float32 // the offending value
}

func (e *NonFiniteError) Error() string {
	return fmt.Sprintf("quant: non-finite value %v at index %d", e.Value, e.Index)
}

// UnsupportedError reports a valid request this package does not implement (a type without an
// encoder, a bitsandbytes quant type other than nf4, a block size bitsandbytes does not allow).
type UnsupportedError struct {
	What string
}

func (e *UnsupportedError) Error() string {
	return "quant: unsupported " + e.What
}

// FormatError reports malformed input data: a byte slice of the wrong length, a bitsandbytes
// quant state that is not valid JSON or is inconsistent with its tensors.
type FormatError struct {
	Subject string // what was being read, e.g. `tensor "model.layers.0.mlp.up_proj.weight.absmax"`
	Detail  string
}

func (e *FormatError) Error() string {
	return "quant: " + e.Subject + ": " + e.Detail
}

func formatErrorf(subject, format string, args ...any) error {
	return &FormatError{Subject: subject, Detail: fmt.Sprintf(format, args...)}
}
