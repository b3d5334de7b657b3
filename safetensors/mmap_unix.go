//go:build unix

package safetensors

import (
	"errors"
	"math"
	"os"
	"syscall"
)

// mmapFile maps the whole file read-only and shared. It fails for empty files and files larger
// than the address space, where the caller falls back to reading.
func mmapFile(fh *os.File, size int64) ([]byte, func() error, error) {
	if size <= 0 || uint64(size) > math.MaxInt {
		return nil, nil, errors.New("safetensors: size not mappable")
	}
	data, err := syscall.Mmap(int(fh.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return data, func() error { return syscall.Munmap(data) }, nil
}
