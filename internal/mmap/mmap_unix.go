//go:build unix

// Package mmap maps whole files read-only for the pure-Go file readers (gguf, safetensors).
package mmap

import (
	"errors"
	"math"
	"os"
	"syscall"
)

// ErrUnsupported is returned where files cannot be mapped; callers fall back to reading.
var ErrUnsupported = errors.New("mmap: not supported")

// File maps the whole file read-only and shared and returns the bytes and the function that unmaps them. It fails
// for empty files and files larger than the address space, where the caller falls back to reading.
func File(fh *os.File, size int64) ([]byte, func() error, error) {
	if size <= 0 || uint64(size) > math.MaxInt {
		return nil, nil, errors.New("mmap: size not mappable")
	}
	data, err := syscall.Mmap(int(fh.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return data, func() error { return syscall.Munmap(data) }, nil
}
