package ggml

// #include <stdlib.h>
// #include "ggml.h"
// #include "ggml-backend.h"
// #include "ggml-alloc.h"
//
// typedef void (*idefics2_set_threads_fn)(ggml_backend_t, int);
// static int idefics2_set_threads(ggml_backend_t b, int n) {
//     ggml_backend_dev_t dev = ggml_backend_get_device(b);
//     if (!dev) return 0;
//     ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
//     idefics2_set_threads_fn f = (idefics2_set_threads_fn) ggml_backend_reg_get_proc_address(reg, "ggml_backend_set_n_threads");
//     if (!f) return 0;
//     f(b, n);
//     return 1;
// }
// typedef ggml_backend_buffer_type_t * (*idefics2_extra_bufts_fn)(ggml_backend_dev_t);
// static ggml_backend_buffer_type_t idefics2_extra_buft(ggml_backend_dev_t dev, int i) {
//     ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
//     idefics2_extra_bufts_fn f = (idefics2_extra_bufts_fn) ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
//     if (!f) return NULL;
//     ggml_backend_buffer_type_t *l = f(dev);
//     for (int j = 0; l && l[j]; j++) { if (j == i) return l[j]; }
//     return NULL;
// }
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"
)

// Backend is an initialized compute backend on one device (ggml_backend_t).
type Backend struct {
	ptr    C.ggml_backend_t
	Device Device
}

// NewBackend initializes a backend on dev.
func NewBackend(dev Device) (*Backend, error) {
	if dev.ptr == nil {
		return nil, errors.New("ggml: no device")
	}
	b := C.ggml_backend_dev_init(dev.ptr, nil)
	if b == nil {
		return nil, fmt.Errorf("ggml: could not initialize device %s", dev.Name)
	}
	return &Backend{ptr: b, Device: dev}, nil
}

// Name is the backend's name.
func (b *Backend) Name() string { return C.GoString(C.ggml_backend_name(b.ptr)) }

// SetThreads sets the number of CPU threads (ignored by backends without the setting).
func (b *Backend) SetThreads(n int) bool {
	if n < 1 {
		n = 1
	}
	return C.idefics2_set_threads(b.ptr, C.int(n)) != 0
}

// Close frees the backend. Idempotent.
func (b *Backend) Close() {
	if b != nil && b.ptr != nil {
		C.ggml_backend_free(b.ptr)
		b.ptr = nil
	}
}

// BufferType is a kind of backend memory (ggml_backend_buffer_type_t).
type BufferType struct {
	ptr C.ggml_backend_buffer_type_t
}

// Name is the buffer type's name.
func (t BufferType) Name() string { return C.GoString(C.ggml_backend_buft_name(t.ptr)) }

// IsNil reports whether t is no buffer type.
func (t BufferType) IsNil() bool { return t.ptr == nil }

// IsHost reports whether buffers of this type live in host memory.
func (t BufferType) IsHost() bool { return bool(C.ggml_backend_buft_is_host(t.ptr)) }

// DefaultBufferType is the device's own memory.
func (b *Backend) DefaultBufferType() BufferType {
	return BufferType{C.ggml_backend_get_default_buffer_type(b.ptr)}
}

// ExtraBufferTypes lists the device's extra buffer types (on the CPU: the repacked/row-interleaved layouts).
func (b *Backend) ExtraBufferTypes() []BufferType {
	var out []BufferType
	for i := 0; i < 16; i++ {
		t := C.idefics2_extra_buft(b.Device.ptr, C.int(i))
		if t == nil {
			break
		}
		out = append(out, BufferType{t})
	}
	return out
}

// Buffer is backend memory holding tensors (ggml_backend_buffer_t).
type Buffer struct {
	ptr C.ggml_backend_buffer_t
	pin any // keeps host memory referenced by the buffer alive
}

// Size is the buffer's size in bytes.
func (b *Buffer) Size() int { return int(C.ggml_backend_buffer_get_size(b.ptr)) }

// Close frees the buffer. Idempotent.
func (b *Buffer) Close() {
	if b != nil && b.ptr != nil {
		C.ggml_backend_buffer_free(b.ptr)
		b.ptr = nil
		b.pin = nil
	}
}

// SetWeightsUsage marks the buffer as holding weights (schedulers then run ops on its device).
func (b *Buffer) SetWeightsUsage() {
	C.ggml_backend_buffer_set_usage(b.ptr, C.GGML_BACKEND_BUFFER_USAGE_WEIGHTS)
}

// Clear fills the buffer with byte v.
func (b *Buffer) Clear(v byte) { C.ggml_backend_buffer_clear(b.ptr, C.uint8_t(v)) }

// AllocTensors allocates every tensor of ctx that has no data yet in one new buffer of type t.
func AllocTensors(ctx *Context, t BufferType) (*Buffer, error) {
	if ctx.ptr == nil {
		return nil, errors.New("ggml: context is closed")
	}
	if C.ggml_get_first_tensor(ctx.ptr) == nil {
		return nil, errors.New("ggml: context has no tensors to allocate")
	}
	p := C.ggml_backend_alloc_ctx_tensors_from_buft(ctx.ptr, t.ptr)
	if p == nil {
		need := C.ggml_backend_alloc_ctx_tensors_from_buft_size(ctx.ptr, t.ptr)
		return nil, fmt.Errorf("ggml: could not allocate %d bytes of %s memory", uint64(need), t.Name())
	}
	return &Buffer{ptr: p}, nil
}

// AllocTensorsSize is the number of bytes AllocTensors would allocate for ctx in t.
func AllocTensorsSize(ctx *Context, t BufferType) int {
	return int(C.ggml_backend_alloc_ctx_tensors_from_buft_size(ctx.ptr, t.ptr))
}

// HostBuffer wraps host memory (e.g. a read-only mmap of a GGUF file) as a CPU buffer without copying; mem must
// stay mapped while the buffer is used. The buffer is suitable for the CPU backend only.
func HostBuffer(dev Device, mem []byte) (*Buffer, error) {
	if len(mem) == 0 {
		return nil, errors.New("ggml: empty host buffer")
	}
	var p C.ggml_backend_buffer_t
	if dev.ptr != nil {
		p = C.ggml_backend_dev_buffer_from_host_ptr(dev.ptr, unsafe.Pointer(&mem[0]), C.size_t(len(mem)), C.size_t(len(mem)))
	}
	if p == nil {
		p = C.ggml_backend_cpu_buffer_from_ptr(unsafe.Pointer(&mem[0]), C.size_t(len(mem)))
	}
	if p == nil {
		return nil, errors.New("ggml: could not wrap host memory as a buffer")
	}
	return &Buffer{ptr: p, pin: mem}, nil
}

// Place allocates tensor t inside a host buffer at the address of data (which must lie inside the buffer's
// memory, suitably aligned, and hold exactly t's bytes).
func (b *Buffer) Place(t Tensor, data []byte) error {
	if b.ptr == nil || t.ptr == nil {
		return errors.New("ggml: place: nil buffer or tensor")
	}
	if len(data) != t.Nbytes() {
		return fmt.Errorf("ggml: place %q: %d bytes for a tensor of %d", t.Name(), len(data), t.Nbytes())
	}
	base := uintptr(C.ggml_backend_buffer_get_base(b.ptr))
	size := uintptr(C.ggml_backend_buffer_get_size(b.ptr))
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(data)))
	if len(data) > 0 && (addr < base || addr+uintptr(len(data)) > base+size) {
		return fmt.Errorf("ggml: place %q: data outside the buffer", t.Name())
	}
	if C.ggml_backend_tensor_alloc(b.ptr, t.ptr, unsafe.Pointer(unsafe.SliceData(data))) != C.GGML_STATUS_SUCCESS {
		return fmt.Errorf("ggml: place %q failed", t.Name())
	}
	return nil
}

// Scheduler runs graphs over one or more backends (ggml_backend_sched), allocating intermediate tensors in
// per-backend compute buffers it reuses between graphs. Weights stay in their own buffers; inputs may live on
// another device than the weights. The last backend must be the CPU.
type Scheduler struct {
	ptr      C.ggml_backend_sched_t
	backends []*Backend
	handles  unsafe.Pointer
	nodeCB   *nodeCallback // SetNodeCallback's, freed with the scheduler
}

// NewScheduler makes a scheduler for graphs of up to graphSize nodes.
func NewScheduler(backends []*Backend, graphSize int) (*Scheduler, error) {
	if len(backends) == 0 {
		return nil, errors.New("ggml: scheduler needs a backend")
	}
	n := len(backends)
	arr := C.malloc(C.size_t(n) * C.size_t(unsafe.Sizeof(C.ggml_backend_t(nil))))
	hs := unsafe.Slice((*C.ggml_backend_t)(arr), n)
	for i, b := range backends {
		if b == nil || b.ptr == nil {
			C.free(arr)
			return nil, errors.New("ggml: scheduler: closed backend")
		}
		hs[i] = b.ptr
	}
	p := C.ggml_backend_sched_new((*C.ggml_backend_t)(arr), nil, C.int(n), C.size_t(graphSize), false, true)
	if p == nil {
		C.free(arr)
		return nil, errors.New("ggml: could not create the scheduler")
	}
	return &Scheduler{ptr: p, backends: backends, handles: arr}, nil
}

// Close frees the scheduler and its compute buffers. Idempotent.
func (s *Scheduler) Close() {
	if s != nil && s.ptr != nil {
		if s.nodeCB != nil {
			s.nodeCB.free()
			s.nodeCB = nil
		}
		C.ggml_backend_sched_free(s.ptr)
		C.free(s.handles)
		s.ptr = nil
	}
}

// Reserve sizes the compute buffers for the worst-case graph g.
func (s *Scheduler) Reserve(g *Graph) error {
	if !C.ggml_backend_sched_reserve(s.ptr, g.ptr) {
		return errors.New("ggml: could not reserve compute buffers (out of memory?)")
	}
	return nil
}

// BufferSize is the size in bytes of the compute buffer for backend i.
func (s *Scheduler) BufferSize(i int) int {
	return int(C.ggml_backend_sched_get_buffer_size(s.ptr, s.backends[i].ptr))
}

// Alloc assigns memory to every tensor of g; call before setting input data.
func (s *Scheduler) Alloc(g *Graph) error {
	if !C.ggml_backend_sched_alloc_graph(s.ptr, g.ptr) {
		return errors.New("ggml: could not allocate the graph (out of memory?)")
	}
	return nil
}

// Compute runs g (allocated by Alloc) and waits for it.
func (s *Scheduler) Compute(g *Graph) error {
	st := C.ggml_backend_sched_graph_compute(s.ptr, g.ptr)
	runtime.KeepAlive(g)
	if st != C.GGML_STATUS_SUCCESS {
		return fmt.Errorf("ggml: graph compute failed with status %d", int(st))
	}
	return nil
}

// Reset releases the graph's allocation so the next graph can be allocated.
func (s *Scheduler) Reset() { C.ggml_backend_sched_reset(s.ptr) }

// SetTensorBackend pins a node to backend i.
func (s *Scheduler) SetTensorBackend(t Tensor, i int) {
	C.ggml_backend_sched_set_tensor_backend(s.ptr, t.ptr, s.backends[i].ptr)
}

// SupportsOp reports whether the backend can compute node t.
func (b *Backend) SupportsOp(t Tensor) bool { return bool(C.ggml_backend_supports_op(b.ptr, t.ptr)) }
