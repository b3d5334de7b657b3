package graph

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNotPair is matched (errors.Is) by the error Load returns when the text model and the mmproj do not belong
// together (hidden sizes, image token).
var ErrNotPair = errors.New("graph: the files are not a pair")

// ErrFileKind is matched by the error Load returns when a file is of the wrong kind (an mmproj given as the text
// model, a text model as the mmproj, another architecture).
var ErrFileKind = errors.New("graph: wrong kind of file")

// ErrBadOptions is matched by the error Load returns for Options out of range (threads, batch size, an unknown
// choice).
var ErrBadOptions = errors.New("graph: bad options")

// WeightError is a weight of a file that the model cannot use: missing, of the wrong shape or type, or not used by
// any block.
type WeightError struct {
	Path   string // the GGUF file
	Tensor string // the tensor's name in the file
	Got    string // what the file holds ("shape [64 32]", "type i32"); "" when the tensor is missing
	Want   string // what the model needs ("shape [64 64]"); "" when the model does not use the tensor
}

func (e *WeightError) Error() string {
	switch {
	case e.Got == "":
		return fmt.Sprintf("graph: %s: missing tensor %q (want %s)", e.Path, e.Tensor, e.Want)
	case e.Want == "":
		return fmt.Sprintf("graph: %s: tensor %q is not used by the model (%s)", e.Path, e.Tensor, e.Got)
	}
	return fmt.Sprintf("graph: %s: tensor %q has %s, want %s", e.Path, e.Tensor, e.Got, e.Want)
}

// weightErrors are every weight problem of one file; errors.As finds the first *WeightError.
type weightErrors []*WeightError

// maxReported is the most weight problems an error message lists.
const maxReported = 5

func (es weightErrors) Error() string {
	var parts []string
	for i, e := range es {
		if i == maxReported {
			parts = append(parts, fmt.Sprintf("and %d more", len(es)-maxReported))
			break
		}
		parts = append(parts, e.Error())
	}
	return strings.Join(parts, "; ")
}

func (es weightErrors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// errOrNil returns es as an error, nil when empty.
func (es weightErrors) errOrNil() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// fileError is a problem of one file's metadata (a hyper-parameter, the file's kind, the pair).
type fileError struct {
	Path string
	Msg  string
	kind error // ErrNotPair, ErrFileKind or nil
	err  error // wrapped cause, or nil
}

func (e *fileError) Error() string {
	switch e.kind {
	case ErrFileKind:
		return fmt.Sprintf("graph: %s %s", e.Path, e.Msg)
	case ErrNotPair:
		return fmt.Sprintf("graph: %s: %s: the files are not a pair", e.Path, e.Msg)
	}
	if e.err != nil {
		return fmt.Sprintf("graph: %s: %s: %v", e.Path, e.Msg, e.err)
	}
	return fmt.Sprintf("graph: %s: %s", e.Path, e.Msg)
}

func (e *fileError) Unwrap() []error {
	var out []error
	if e.kind != nil {
		out = append(out, e.kind)
	}
	if e.err != nil {
		out = append(out, e.err)
	}
	return out
}

// FileError is matched (errors.As) by every error Load returns about the content of a file (its metadata, its
// weights, the pair) rather than about the device; it gives the file's path.
type FileError interface {
	error
	File() string
}

func (e *fileError) File() string    { return e.Path }
func (e *WeightError) File() string  { return e.Path }
func (es weightErrors) File() string { return es[0].Path }

// fileErrorf is a *fileError about path.
func fileErrorf(path string, kind error, format string, args ...any) error {
	return &fileError{Path: path, Msg: fmt.Sprintf(format, args...), kind: kind}
}
