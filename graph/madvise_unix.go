//go:build unix

package graph

import (
	"os"
	"syscall"
	"unsafe"
)

// releasePages tells the kernel that the whole pages inside d (a slice of a read-only file mapping) are no longer
// needed, so they leave this process's resident set (they stay in the page cache and are re-read on access).
func releasePages(d []byte) {
	if len(d) == 0 {
		return
	}
	ps := uintptr(os.Getpagesize())
	start := uintptr(unsafe.Pointer(unsafe.SliceData(d)))
	first := (start + ps - 1) &^ (ps - 1)
	last := (start + uintptr(len(d))) &^ (ps - 1)
	if last <= first {
		return
	}
	_ = syscall.Madvise(d[first-start:last-start], syscall.MADV_DONTNEED)
}
