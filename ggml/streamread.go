package ggml

// #include <stdlib.h>
// #include "streamread.h"
import "C"

import (
	"fmt"
	"time"
	"unsafe"
)

// StreamRead reads every byte of regions once with threads threads (1 to 256), each taking an equal share of the
// total in order, and returns the time the pass took and a checksum of the bytes. It measures the memory's read
// rate on exactly the bytes a decoding step must read (the model's weights), which bounds generation speed. The
// regions must be memory outside the Go heap (backend buffers, file mappings) or stay alive during the call.
func StreamRead(regions [][]byte, threads int) (time.Duration, uint64, error) {
	if threads < 1 || threads > 256 {
		return 0, 0, fmt.Errorf("ggml: stream read: %d threads; want 1 to 256", threads)
	}
	n := 0
	for _, r := range regions {
		if len(r) > 0 {
			n++
		}
	}
	if n == 0 {
		return 0, 0, nil
	}
	// The pointer lists live in C memory: they point into memory cgo's checks cannot see through.
	ptrs := (*[1 << 30]*C.uint8_t)(C.malloc(C.size_t(n) * C.size_t(unsafe.Sizeof((*C.uint8_t)(nil)))))[:n:n]
	sizes := (*[1 << 30]C.size_t)(C.malloc(C.size_t(n) * C.size_t(unsafe.Sizeof(C.size_t(0)))))[:n:n]
	defer C.free(unsafe.Pointer(&ptrs[0]))
	defer C.free(unsafe.Pointer(&sizes[0]))
	i := 0
	for _, r := range regions {
		if len(r) > 0 {
			ptrs[i], sizes[i] = (*C.uint8_t)(unsafe.Pointer(&r[0])), C.size_t(len(r))
			i++
		}
	}
	var sum C.uint64_t
	t0 := time.Now()
	rc := C.idefics2_stream_read(&ptrs[0], &sizes[0], C.int(n), C.int(threads), &sum)
	d := time.Since(t0)
	if rc != 0 {
		return 0, 0, fmt.Errorf("ggml: stream read: could not start %d threads", threads)
	}
	return d, uint64(sum), nil
}
