package ggml

// #cgo noescape ggml_backend_tensor_set
// #cgo noescape ggml_backend_tensor_get
// #include <stdlib.h>
// #include "ggml.h"
// #include "ggml-backend.h"
// #include "q4x16.h"
// #include "q4kx16.h"
// #include "nf4x16.h"
import "C"

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"unsafe"
)

// MaxDims is the number of dimensions of a ggml tensor (GGML_MAX_DIMS).
const MaxDims = 4

// ShapeError reports an op whose operands ggml would reject with an abort. Graph builders raise it with panic;
// Catch turns it back into an error so that no user input can reach a GGML_ASSERT.
type ShapeError struct {
	Op  string
	Msg string
}

func (e *ShapeError) Error() string { return "ggml: " + e.Op + ": " + e.Msg }

func shapeErr(op, format string, args ...any) {
	panic(&ShapeError{Op: op, Msg: fmt.Sprintf(format, args...)})
}

// Catch runs build and returns a *ShapeError raised inside it as an error (other panics propagate).
func Catch(build func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			var se *ShapeError
			if e, ok := r.(error); ok && errors.As(e, &se) {
				err = se
				return
			}
			panic(r)
		}
	}()
	build()
	return nil
}

// Context owns tensor and graph metadata (ggml_context). Contexts made by NewContext never allocate tensor data
// (no_alloc): data lives in backend buffers.
type Context struct {
	ptr      *C.struct_ggml_context
	capacity int
	count    int
	// quantized maps an input of this project's products (and the record format) to its quantized
	// activations, so that products sharing an input (q, k and v; gate and up) quantize it once.
	quantized map[quantKey]Tensor
}

// quantKey names one input tensor quantized to one record format.
type quantKey struct {
	x      *C.struct_ggml_tensor
	format quantFormat
}

// quantFormat is a record format of this project's products' activations.
type quantFormat int

const (
	quantQ8x32  quantFormat = iota // q4x16 (q4x16.h)
	quantQ8x256                    // q4kx16 and q6kx16 (q4kx16.h)
	quantNF4x16                    // nf4x16 (nf4x16.h)
)

// quantizeOnce returns x's activations quantized to format, made by the first call for x and format; x must be
// F32 with contiguous rows (the products check).
func (c *Context) quantizeOnce(x Tensor, format quantFormat) Tensor {
	k := quantKey{x.ptr, format}
	if xq, ok := c.quantized[k]; ok {
		return xq
	}
	var xq Tensor
	switch format {
	case quantQ8x32:
		xq = c.node("q8x32_quantize", C.idefics2_q8x32_quantize(c.ptr, x.ptr))
	case quantQ8x256:
		xq = c.node("q8x256_quantize", C.idefics2_q8x256_quantize(c.ptr, x.ptr))
	default:
		xq = c.node("nf4x16_quantize", C.idefics2_nf4x16_quantize_op(c.ptr, x.ptr))
	}
	if c.quantized == nil {
		c.quantized = map[quantKey]Tensor{}
	}
	c.quantized[k] = xq
	return xq
}

// NewContext makes a metadata-only context for up to maxTensors tensors and one graph of up to graphSize nodes
// (graphSize 0: no graph).
func NewContext(maxTensors, graphSize int) *Context {
	if maxTensors < 1 {
		maxTensors = 1
	}
	size := C.size_t(maxTensors)*C.ggml_tensor_overhead() + 1024
	if graphSize > 0 {
		size += C.ggml_graph_overhead_custom(C.size_t(graphSize), false)
	}
	ptr := C.ggml_init(C.struct_ggml_init_params{mem_size: size, mem_buffer: nil, no_alloc: true})
	if ptr == nil {
		panic("ggml: ggml_init failed")
	}
	c := &Context{ptr: ptr, capacity: maxTensors}
	return c
}

// Reset forgets every tensor and graph made in the context so it can be reused (ggml_reset); their handles must
// no longer be used.
func (c *Context) Reset() {
	if c.ptr != nil {
		C.ggml_reset(c.ptr)
		c.count = 0
		clear(c.quantized)
	}
}

// Close frees the context; tensors made in it must no longer be used. Idempotent.
func (c *Context) Close() {
	if c != nil && c.ptr != nil {
		C.ggml_free(c.ptr)
		c.ptr = nil
	}
}

func (c *Context) take(op string) {
	if c.ptr == nil {
		shapeErr(op, "context is closed")
	}
	c.count++
	if c.count > c.capacity {
		shapeErr(op, "context holds at most %d tensors", c.capacity)
	}
}

// Tensor is a handle to a ggml tensor. Its zero value is "no tensor" (IsNil).
type Tensor struct {
	ptr *C.struct_ggml_tensor
}

// IsNil reports whether t refers to no tensor.
func (t Tensor) IsNil() bool { return t.ptr == nil }

// NewTensor makes a tensor of type typ and shape (ggml order, 1 to 4 dims).
func (c *Context) NewTensor(typ Type, shape ...int) Tensor {
	if len(shape) < 1 || len(shape) > MaxDims {
		shapeErr("new_tensor", "%d dimensions, want 1 to 4", len(shape))
	}
	if !typ.Valid() {
		shapeErr("new_tensor", "unknown type %d", int(typ))
	}
	var ne [MaxDims]C.int64_t
	total := int64(1)
	for i, d := range shape {
		if d < 0 || (d > 0 && total > math.MaxInt64/int64(d)) {
			shapeErr("new_tensor", "bad shape %v", clone(shape))
		}
		ne[i] = C.int64_t(d)
		total *= int64(d)
	}
	if shape[0]%typ.BlockSize() != 0 {
		shapeErr("new_tensor", "ne0 %d is not a multiple of the %s block size %d", shape[0], typ, typ.BlockSize())
	}
	c.take("new_tensor")
	// The fixed-arity constructors take the sizes by value, so no Go memory is handed to C (which would move ne
	// to the heap on every call).
	t := C.enum_ggml_type(typ)
	switch len(shape) {
	case 1:
		return Tensor{C.ggml_new_tensor_1d(c.ptr, t, ne[0])}
	case 2:
		return Tensor{C.ggml_new_tensor_2d(c.ptr, t, ne[0], ne[1])}
	case 3:
		return Tensor{C.ggml_new_tensor_3d(c.ptr, t, ne[0], ne[1], ne[2])}
	}
	return Tensor{C.ggml_new_tensor_4d(c.ptr, t, ne[0], ne[1], ne[2], ne[3])}
}

// Name is the tensor's name.
func (t Tensor) Name() string { return C.GoString(&t.ptr.name[0]) }

// SetName names the tensor (ggml keeps at most 63 bytes) and returns it.
func (t Tensor) SetName(name string) Tensor {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	C.ggml_set_name(t.ptr, cs)
	return t
}

// Type is the element type.
func (t Tensor) Type() Type { return Type(t.ptr._type) }

// Ne returns dimension i (ggml order).
func (t Tensor) Ne(i int) int { return int(t.ptr.ne[i]) }

// Nb returns the stride in bytes of dimension i.
func (t Tensor) Nb(i int) int { return int(t.ptr.nb[i]) }

// Shape is [ne0, ne1, ne2, ne3] trimmed of trailing 1s (at least one dim).
func (t Tensor) Shape() []int {
	n := MaxDims
	for n > 1 && t.ptr.ne[n-1] == 1 {
		n--
	}
	s := make([]int, n)
	for i := range s {
		s[i] = int(t.ptr.ne[i])
	}
	return s
}

// Ne4 is the full four-dimensional shape.
func (t Tensor) Ne4() [4]int {
	return [4]int{int(t.ptr.ne[0]), int(t.ptr.ne[1]), int(t.ptr.ne[2]), int(t.ptr.ne[3])}
}

// NumElements is the product of the dimensions.
func (t Tensor) NumElements() int { return int(C.ggml_nelements(t.ptr)) }

// Nbytes is the byte size of the tensor data.
func (t Tensor) Nbytes() int { return int(C.ggml_nbytes(t.ptr)) }

// IsContiguous reports whether the tensor's elements are laid out without gaps in ggml order.
func (t Tensor) IsContiguous() bool { return bool(C.ggml_is_contiguous(t.ptr)) }

// SetInput marks the tensor as a graph input (so schedulers allocate it before compute).
func (t Tensor) SetInput() Tensor { C.ggml_set_input(t.ptr); return t }

// SetOutput marks the tensor as a graph output (its buffer is not reused by later nodes).
func (t Tensor) SetOutput() Tensor { C.ggml_set_output(t.ptr); return t }

// Allocated reports whether the tensor has been given memory in a backend buffer (graph inputs the graph does not
// use are never allocated).
func (t Tensor) Allocated() bool { return t.ptr != nil && t.ptr.buffer != nil }

// HasData reports whether the tensor has storage (allocated in a buffer or a view of allocated data).
func (t Tensor) HasData() bool {
	return t.ptr.data != nil || (t.ptr.view_src != nil && t.ptr.view_src.data != nil)
}

func (t Tensor) checkIO(op string, nbytes int) {
	if t.ptr == nil {
		shapeErr(op, "nil tensor")
	}
	if t.ptr.buffer == nil {
		shapeErr(op, "tensor %q has no buffer", t.Name())
	}
	if nbytes != t.Nbytes() {
		shapeErr(op, "tensor %q holds %d bytes, got %d", t.Name(), t.Nbytes(), nbytes)
	}
}

// HostBytes returns the tensor's storage as a byte slice when it lies in host memory (a CPU buffer), so that a
// loader can write into it directly; ok is false for device memory or an unallocated tensor. The slice is valid
// while the buffer lives.
func (t Tensor) HostBytes() (b []byte, ok bool) {
	if t.ptr == nil || t.ptr.buffer == nil || t.ptr.data == nil || !bool(C.ggml_backend_buffer_is_host(t.ptr.buffer)) {
		return nil, false
	}
	return unsafe.Slice((*byte)(t.ptr.data), t.Nbytes()), true
}

// StorageBytes returns the bytes the tensor occupies in CPU memory, in whatever layout its buffer keeps them
// (ggml's repacked CPU layouts included), for reading only: to measure how fast its memory can be read. ok is false
// for device memory or an unallocated tensor.
func (t Tensor) StorageBytes() (b []byte, ok bool) {
	if t.ptr == nil || t.ptr.buffer == nil || t.ptr.data == nil {
		return nil, false
	}
	if !bool(C.ggml_backend_buffer_is_host(t.ptr.buffer)) {
		dev := C.ggml_backend_buft_get_device(C.ggml_backend_buffer_get_type(t.ptr.buffer))
		if dev == nil || C.ggml_backend_dev_type(dev) != C.GGML_BACKEND_DEVICE_TYPE_CPU {
			return nil, false
		}
	}
	return unsafe.Slice((*byte)(t.ptr.data), C.ggml_backend_buffer_get_alloc_size(t.ptr.buffer, t.ptr)), true
}

// SetBytes copies raw data into the tensor (which must be allocated in a backend buffer).
func (t Tensor) SetBytes(data []byte) error {
	return Catch(func() {
		t.checkIO("set", len(data))
		if len(data) > 0 {
			C.ggml_backend_tensor_set(t.ptr, unsafe.Pointer(&data[0]), 0, C.size_t(len(data)))
		}
	})
}

// SetBytesAt copies raw data into the tensor's bytes [offset, offset+len(data)), so that a large tensor can be
// filled piece by piece.
func (t Tensor) SetBytesAt(data []byte, offset int) error {
	return Catch(func() {
		if t.ptr == nil {
			shapeErr("set", "nil tensor")
		}
		if t.ptr.buffer == nil {
			shapeErr("set", "tensor %q has no buffer", t.Name())
		}
		if offset < 0 || offset+len(data) > t.Nbytes() {
			shapeErr("set", "tensor %q holds %d bytes; cannot write %d at offset %d", t.Name(), t.Nbytes(), len(data), offset)
		}
		if len(data) > 0 {
			C.ggml_backend_tensor_set(t.ptr, unsafe.Pointer(&data[0]), C.size_t(offset), C.size_t(len(data)))
		}
	})
}

// SetFloat32 copies float32 values into an F32 tensor.
func (t Tensor) SetFloat32(v []float32) error {
	if t.ptr != nil && t.Type() != TypeF32 {
		return &ShapeError{Op: "set", Msg: fmt.Sprintf("tensor %q is %s, not f32", t.Name(), t.Type())}
	}
	var p []byte
	if len(v) > 0 {
		p = unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
	}
	err := t.SetBytes(p)
	runtime.KeepAlive(v)
	return err
}

// SetInt32 copies int32 values into an I32 tensor.
func (t Tensor) SetInt32(v []int32) error {
	if t.ptr != nil && t.Type() != TypeI32 {
		return &ShapeError{Op: "set", Msg: fmt.Sprintf("tensor %q is %s, not i32", t.Name(), t.Type())}
	}
	var p []byte
	if len(v) > 0 {
		p = unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
	}
	err := t.SetBytes(p)
	runtime.KeepAlive(v)
	return err
}

// Bytes copies the tensor data out.
func (t Tensor) Bytes() ([]byte, error) {
	out := make([]byte, 0)
	err := Catch(func() {
		n := t.Nbytes()
		t.checkIO("get", n)
		out = make([]byte, n)
		if n > 0 {
			C.ggml_backend_tensor_get(t.ptr, unsafe.Pointer(&out[0]), 0, C.size_t(n))
		}
	})
	return out, err
}

// Float32s copies an F32 (or F16) tensor out as float32 values.
func (t Tensor) Float32s() ([]float32, error) {
	var out []float32
	err := Catch(func() {
		switch t.Type() {
		case TypeF32:
			out = make([]float32, t.NumElements())
			t.checkIO("get", 4*len(out))
			if len(out) > 0 {
				C.ggml_backend_tensor_get(t.ptr, unsafe.Pointer(&out[0]), 0, C.size_t(4*len(out)))
			}
		case TypeF16:
			h := make([]C.ggml_fp16_t, t.NumElements())
			t.checkIO("get", 2*len(h))
			out = make([]float32, len(h))
			if len(h) > 0 {
				C.ggml_backend_tensor_get(t.ptr, unsafe.Pointer(&h[0]), 0, C.size_t(2*len(h)))
				C.ggml_fp16_to_fp32_row(&h[0], (*C.float)(unsafe.Pointer(&out[0])), C.int64_t(len(h)))
			}
		default:
			shapeErr("get", "tensor %q is %s; want f32 or f16", t.Name(), t.Type())
		}
	})
	return out, err
}

// ReadFloat32 copies an F32 tensor into dst (len(dst) must equal the element count), allocating nothing.
func (t Tensor) ReadFloat32(dst []float32) error {
	return Catch(func() {
		if t.Type() != TypeF32 {
			shapeErr("get", "tensor %q is %s; want f32", t.Name(), t.Type())
		}
		t.checkIO("get", 4*len(dst))
		if len(dst) > 0 {
			C.ggml_backend_tensor_get(t.ptr, unsafe.Pointer(&dst[0]), 0, C.size_t(4*len(dst)))
		}
	})
}

// Int32s copies an I32 tensor out.
func (t Tensor) Int32s() ([]int32, error) {
	var out []int32
	err := Catch(func() {
		if t.Type() != TypeI32 {
			shapeErr("get", "tensor %q is %s; want i32", t.Name(), t.Type())
		}
		out = make([]int32, t.NumElements())
		t.checkIO("get", 4*len(out))
		if len(out) > 0 {
			C.ggml_backend_tensor_get(t.ptr, unsafe.Pointer(&out[0]), 0, C.size_t(4*len(out)))
		}
	})
	return out, err
}

// Graph is a computation graph (ggml_cgraph) built in a Context.
type Graph struct {
	ptr *C.struct_ggml_cgraph
}

// NewGraph makes a graph of up to size nodes in c (the context must have been made with a graphSize ≥ size).
func (c *Context) NewGraph(size int) *Graph {
	g := &Graph{}
	c.InitGraph(g, size)
	return g
}

// InitGraph makes a new graph of up to size nodes in c and stores it in g (reusing g's memory; no allocation).
func (c *Context) InitGraph(g *Graph, size int) {
	if c.ptr == nil {
		shapeErr("new_graph", "context is closed")
	}
	g.ptr = C.ggml_new_graph_custom(c.ptr, C.size_t(size), false)
}

// Build adds t and everything it depends on to the graph.
func (g *Graph) Build(t Tensor) {
	C.ggml_build_forward_expand(g.ptr, t.ptr)
}

// NumNodes is the number of compute nodes in the graph.
func (g *Graph) NumNodes() int { return int(C.ggml_graph_n_nodes(g.ptr)) }

// Node returns node i (negative counts from the end).
func (g *Graph) Node(i int) Tensor { return Tensor{C.ggml_graph_node(g.ptr, C.int(i))} }

// HasExtra reports whether a buffer's init hook attached backend-specific data to the tensor (the CPU repack
// buffer does so exactly for the tensors it can repack).
func (t Tensor) HasExtra() bool { return t.ptr != nil && t.ptr.extra != nil }
