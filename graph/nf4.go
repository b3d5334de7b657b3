package graph

import (
	"fmt"
	"sync"

	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/quant"
)

// nf4Info describes an NF4 weight stored as an I8 block stream (docs/formats.md): its logical ggml shape and
// block size, and whether the loader repacked it to the nf4x16 layout (ggml.MulMatNF4x16).
type nf4Info struct {
	shape     []int
	blockSize int
	repacked  bool
}

// nf4Weights maps weight tensors kept as NF4 streams to their layout, so Linear.Forward can call the NF4 kernel.
var nf4Weights sync.Map // ggml.Tensor → nf4Info

// nf4Layouts reads the NF4 layout keys of f for every tensor that has them.
func nf4Layouts(f *gguf.File) (map[string]nf4Info, error) {
	out := map[string]nf4Info{}
	for _, ti := range f.Tensors {
		key := quant.NF4ShapeKey(ti.Name)
		if !f.Metadata.Has(key) {
			continue
		}
		arr, err := f.Metadata.Array(key)
		if err != nil {
			return nil, fmt.Errorf("graph: %s: %w", f.Path, err)
		}
		var shape []int
		n := 1
		for _, v := range arrayInts(arr) {
			if v <= 0 || v > 1<<40 || n > (1<<50)/v {
				return nil, fmt.Errorf("graph: %s: key %q holds a bad dimension", f.Path, key)
			}
			shape = append(shape, v)
			n *= v
		}
		bs, err := f.Metadata.Int(quant.NF4BlockSizeKey(ti.Name))
		if err != nil {
			return nil, fmt.Errorf("graph: %s: %w", f.Path, err)
		}
		size, err := quant.NF4StreamSize(n, bs)
		if err != nil {
			return nil, fmt.Errorf("graph: %s: tensor %q: %w", f.Path, ti.Name, err)
		}
		if len(shape) != arr.Len() || ggml.Type(ti.Type) != ggml.TypeI8 || ti.NumElements() != uint64(size) || len(shape) == 0 || len(shape) > 4 {
			return nil, fmt.Errorf("graph: %s: NF4 tensor %q is %v %d bytes, want i8 of %d bytes for shape %v",
				f.Path, ti.Name, ti.Type, ti.NumElements(), size, shape)
		}
		out[ti.Name] = nf4Info{shape: shape, blockSize: bs}
	}
	return out, nil
}

// arrayInts returns an integer array's values (−1 for values that do not fit; nil for other arrays).
func arrayInts(a gguf.Array) []int {
	var out []int
	switch d := a.Data.(type) {
	case []uint64:
		for _, x := range d {
			if x > 1<<62 {
				out = append(out, -1)
			} else {
				out = append(out, int(x))
			}
		}
	case []int64:
		for _, x := range d {
			out = append(out, int(x))
		}
	case []uint32:
		for _, x := range d {
			out = append(out, int(x))
		}
	case []int32:
		for _, x := range d {
			out = append(out, int(x))
		}
	}
	return out
}

// dequantNF4 expands an NF4 stream to F16 bytes (for embeddings read by get_rows and for backends without the
// NF4 kernel).
func dequantNF4(data []byte, info nf4Info) ([]byte, error) {
	n := 1
	for _, d := range info.shape {
		n *= d
	}
	v, err := quant.DequantizeNF4Stream(data, n, info.blockSize)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 2*len(v))
	if err := quant.F32ToF16Slice(b, v); err != nil {
		return nil, err
	}
	return b, nil
}
