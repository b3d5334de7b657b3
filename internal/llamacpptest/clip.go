//go:build llamacpp

package llamacpptest

/*
#include <stdlib.h>
#include "clip_peer.h"
*/
import "C"

import (
	"fmt"
	"unsafe"

	// llama.cpp's CLIP graph builders (tools/mtmd/models), compiled by cgo from the pinned ollama module;
	// clip_peer.cpp compiles clip.cpp itself.
	_ "github.com/ollama/ollama/llama/llama.cpp/tools/mtmd/models"
)

// ClipModel is an mmproj loaded by llama.cpp's CLIP encoder on the CPU (the first CPU device registered: call
// LoadCPUVariants first to compute with a SIMD variant), flash attention off.
type ClipModel struct {
	ctx *C.struct_clip_ctx
}

// LoadClip loads the vision part of the mmproj at path.
func LoadClip(path string) (*ClipModel, error) {
	C.peerClipQuiet()
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	ctx := C.peerClipInit(cpath)
	if ctx == nil {
		return nil, fmt.Errorf("llamacpptest: llama.cpp's clip_init could not load a vision encoder from %s", path)
	}
	return &ClipModel{ctx: ctx}, nil
}

// Close frees the encoder.
func (c *ClipModel) Close() {
	if c.ctx != nil {
		C.peerClipFree(c.ctx)
		c.ctx = nil
	}
}

// Encode runs the encoder and projector on one w × h image of interleaved, normalised RGB floats with threads
// CPU threads and returns the image's output embeddings (tokens × projection width, row-major).
func (c *ClipModel) Encode(threads int, rgb []float32, w, h int) ([]float32, error) {
	if len(rgb) != w*h*3 {
		return nil, fmt.Errorf("llamacpptest: image of %d floats, want %d × %d × 3", len(rgb), w, h)
	}
	n := int(C.peerClipOutFloats(c.ctx, C.int(w), C.int(h)))
	out := make([]float32, n)
	if C.peerClipEncode(c.ctx, C.int(threads), (*C.float)(unsafe.Pointer(&rgb[0])), C.int(w), C.int(h),
		(*C.float)(unsafe.Pointer(&out[0]))) == 0 {
		return nil, fmt.Errorf("llamacpptest: llama.cpp's clip_image_encode failed on a %d × %d image", w, h)
	}
	return out, nil
}
