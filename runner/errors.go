package runner

import (
	"errors"
	"fmt"
)

// InputError marks an error caused by what the caller passed in — a missing or malformed file, a model given as
// mmproj, a prompt whose <image> markers do not match its images, an undecodable image, a prompt that does not fit
// the context — as opposed to a failure while computing. Front ends map it to "bad input" (exit code 2, HTTP 400).
type InputError struct {
	Err error
}

// Error returns the message of the wrapped error.
func (e *InputError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *InputError) Unwrap() error { return e.Err }

// IsInputError reports whether err is (or wraps) an *InputError.
func IsInputError(err error) bool {
	var ie *InputError
	return errors.As(err, &ie)
}

// inputErrorf formats an *InputError.
func inputErrorf(format string, args ...any) error {
	return &InputError{Err: fmt.Errorf(format, args...)}
}

// asInput wraps err as an *InputError (nil stays nil).
func asInput(err error) error {
	if err == nil || IsInputError(err) {
		return err
	}
	return &InputError{Err: err}
}

// ErrContextOverflow is matched (errors.Is) by the error Generate returns when a prompt does not fit the session's
// context and truncation was not asked for.
var ErrContextOverflow = errors.New("runner: prompt does not fit the context")

// overflowError is the *InputError for a prompt too long for the context.
type overflowError struct {
	promptTokens, ctxSize int
}

func (e *overflowError) Error() string {
	return fmt.Sprintf("runner: prompt of %d tokens does not fit the context size %d (raise the context size or allow truncation)",
		e.promptTokens, e.ctxSize)
}

func (e *overflowError) Is(target error) bool { return target == ErrContextOverflow }

// imagesGiven is "1 image given" or "N images given".
func imagesGiven(n int) string {
	if n == 1 {
		return "1 image given"
	}
	return fmt.Sprintf("%d images given", n)
}
