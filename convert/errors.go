package convert

import (
	"errors"
	"fmt"
)

// InputError reports a problem with what the caller supplied: the checkpoint folder (a missing or
// malformed file, a config field, a tensor that is missing, unknown or of the wrong shape) or the
// options (an unknown type name, a bad override, an output that already exists). Errors that are
// not InputErrors are run-time failures (I/O while writing, cancellation).
//
// cmd/convert maps InputError to exit status 2 and everything else to 1.
type InputError struct {
	Err error
}

// Error returns the message of the wrapped error, which names the culprit.
func (e *InputError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *InputError) Unwrap() error { return e.Err }

// ErrOutputExists is matched (errors.Is) by the error for an output file that already exists when
// Options.Force is not set.
var ErrOutputExists = errors.New("convert: output exists")

// inputErrorf formats an InputError; %w verbs wrap as with fmt.Errorf.
func inputErrorf(format string, args ...any) error {
	return &InputError{Err: fmt.Errorf(format, args...)}
}

// asInput marks err as an InputError unless it already is one or is nil.
func asInput(err error) error {
	if err == nil {
		return nil
	}
	var ie *InputError
	if errors.As(err, &ie) {
		return err
	}
	return &InputError{Err: err}
}

// IsInputError reports whether err is (or wraps) an InputError.
func IsInputError(err error) bool {
	var ie *InputError
	return errors.As(err, &ie)
}
