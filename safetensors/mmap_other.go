//go:build !unix

package safetensors

import (
	"errors"
	"os"
)

// mmapFile is not implemented on this platform; Open reads the file into memory instead.
func mmapFile(*os.File, int64) ([]byte, func() error, error) {
	return nil, nil, errors.New("safetensors: mmap not supported on this platform")
}
