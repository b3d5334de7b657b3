//go:build !unix

// Package mmap maps whole files read-only for the pure-Go file readers (gguf, safetensors).
package mmap

import (
	"errors"
	"os"
)

// ErrUnsupported is returned where files cannot be mapped; callers fall back to reading.
var ErrUnsupported = errors.New("mmap: not supported on this platform")

// File is not available on this platform: it always returns ErrUnsupported.
func File(fh *os.File, size int64) ([]byte, func() error, error) {
	return nil, nil, ErrUnsupported
}
