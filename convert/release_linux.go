package convert

import (
	"os"
	"syscall"
	"unsafe"
)

// madvPageout is MADV_PAGEOUT (Linux 5.4+, include/uapi/asm-generic/mman-common.h), which the
// syscall package does not name.
const madvPageout = 21

// releasePages asks the kernel to reclaim the pages wholly inside b (MADV_PAGEOUT), which the
// conversion has finished reading. For the read-only, file-backed checkpoint mapping this drops
// them from the resident set (the file still holds the data), so the converter's RSS stays
// bounded instead of growing to the checkpoint size. MADV_PAGEOUT never changes contents, unlike
// MADV_DONTNEED, which would zero anonymous memory: b may be heap memory where the safetensors
// reader could not map the file. Errors (older kernels) are ignored: the call is only a hint.
func releasePages(b []byte) {
	page := uintptr(os.Getpagesize())
	if len(b) < int(page) {
		return
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	end := start + uintptr(len(b))
	first := (start + page - 1) &^ (page - 1)
	last := end &^ (page - 1)
	if last <= first {
		return
	}
	off := first - start
	_ = syscall.Madvise(b[off:off+(last-first)], madvPageout)
}
