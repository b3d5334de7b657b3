package graph

import (
	"fmt"

	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/quant"
)

// nf4Layouts reads the NF4 layout keys of f for every tensor that has them.
func nf4Layouts(f *gguf.File) (map[string]*NF4Layout, error) {
	out := map[string]*NF4Layout{}
	for _, ti := range f.Tensors {
		key := quant.NF4ShapeKey(ti.Name)
		if !f.Metadata.Has(key) {
			continue
		}
		arr, err := f.Metadata.Array(key)
		if err != nil {
			return nil, &fileError{Path: f.Path, Msg: "NF4 layout", err: err}
		}
		var shape []int
		n := 1
		for _, v := range arrayInts(arr) {
			if v <= 0 || v > 1<<40 || n > (1<<50)/v {
				return nil, fileErrorf(f.Path, nil, "key %q holds a bad dimension", key)
			}
			shape = append(shape, v)
			n *= v
		}
		bs, err := f.Metadata.Int(quant.NF4BlockSizeKey(ti.Name))
		if err != nil {
			return nil, &fileError{Path: f.Path, Msg: "NF4 layout", err: err}
		}
		size, err := quant.NF4StreamSize(n, bs)
		if err != nil {
			return nil, &fileError{Path: f.Path, Msg: fmt.Sprintf("NF4 tensor %q", ti.Name), err: err}
		}
		if len(shape) != arr.Len() || ggml.Type(ti.Type) != ggml.TypeI8 || ti.NumElements() != uint64(size) || len(shape) == 0 || len(shape) > 4 {
			return nil, fileErrorf(f.Path, nil, "NF4 tensor %q is %v %d bytes, want i8 of %d bytes for shape %v",
				ti.Name, ti.Type, ti.NumElements(), size, shape)
		}
		out[ti.Name] = &NF4Layout{Shape: shape, BlockSize: bs}
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

// expandNF4 writes an NF4 stream's values into the F16 tensor t (embeddings read by get_rows, and backends without
// the NF4 kernel), a chunk of blocks at a time, so that no full-size temporary is made (a 32003 × 4096 embedding
// would take 0.5 GB as float32 and 0.26 GB as F16 on the Go heap, which keeps them after the load).
func expandNF4(t ggml.Tensor, data []byte, shape []int, blockSize int) error {
	n := 1
	for _, d := range shape {
		n *= d
	}
	size, err := quant.NF4StreamSize(n, blockSize)
	if err != nil {
		return err
	}
	if len(data) != size {
		return fmt.Errorf("nf4 stream: %d bytes for %d values in blocks of %d, want %d", len(data), n, blockSize, size)
	}
	if t.Nbytes() != 2*n {
		return fmt.Errorf("expanded tensor holds %d bytes, want %d", t.Nbytes(), 2*n)
	}
	const chunkBlocks = 4096
	rec := 4 + blockSize/2 // bytes per block record: float32 absmax and the codes (quant.EncodeStream)
	var f16 []byte
	for v0 := 0; v0 < n; v0 += chunkBlocks * blockSize {
		nv := min(chunkBlocks*blockSize, n-v0)
		b0 := v0 / blockSize
		b1 := (v0 + nv + blockSize - 1) / blockSize
		v, err := quant.DequantizeNF4Stream(data[b0*rec:b1*rec], nv, blockSize)
		if err != nil {
			return err
		}
		if cap(f16) < 2*nv {
			f16 = make([]byte, 2*nv)
		}
		f16 = f16[:2*nv]
		if err := quant.F32ToF16Slice(f16, v); err != nil {
			return err
		}
		if err := t.SetBytesAt(f16, 2*v0); err != nil {
			return err
		}
	}
	return nil
}
