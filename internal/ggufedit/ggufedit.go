// Package ggufedit writes altered copies of GGUF files, for tests that need broken or mismatched inputs.
package ggufedit

import (
	"fmt"

	"github.com/idefics2-go/idefics2/gguf"
)

// Edit is what to change in a copy.
type Edit struct {
	KV     map[string]any       // metadata values replaced (or added)
	Types  map[string]gguf.Type // tensors given another type (data zeroed at the new size)
	Shapes map[string][]uint64  // tensors given another shape (data zeroed at the new size)
	Drop   map[string]bool      // tensors left out
	Add    map[string]Tensor    // extra tensors (zero data of their type and shape)
}

// Tensor is the type and shape of an added tensor.
type Tensor struct {
	Type  gguf.Type
	Shape []uint64
}

// Copy writes src with e applied to dst.
func Copy(src, dst string, e Edit) error {
	f, err := gguf.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	w, err := gguf.Create(dst)
	if err != nil {
		return err
	}
	defer w.Abort()
	done := map[string]bool{}
	for _, kv := range f.KV {
		v := any(kv.Value)
		if nv, ok := e.KV[kv.Key]; ok {
			v, done[kv.Key] = nv, true
		}
		if err := w.SetKV(kv.Key, v); err != nil {
			return err
		}
	}
	for k, v := range e.KV {
		if !done[k] {
			if err := w.SetKV(k, v); err != nil {
				return err
			}
		}
	}
	type out struct {
		name  string
		typ   gguf.Type
		shape []uint64
		data  []byte // nil: zeros
	}
	var outs []out
	for _, ti := range f.Tensors {
		if e.Drop[ti.Name] {
			continue
		}
		o := out{name: ti.Name, typ: ti.Type, shape: ti.Shape}
		nt, retype := e.Types[ti.Name]
		ns, reshape := e.Shapes[ti.Name]
		if retype {
			o.typ = nt
		}
		if reshape {
			o.shape = ns
		}
		if !retype && !reshape {
			if o.data, err = f.TensorData(ti.Name); err != nil {
				return err
			}
		}
		outs = append(outs, o)
	}
	for name, t := range e.Add {
		outs = append(outs, out{name: name, typ: t.Type, shape: t.Shape})
	}
	for _, o := range outs {
		if err := w.AddTensor(o.name, o.typ, o.shape); err != nil {
			return err
		}
	}
	for _, o := range outs {
		if o.data == nil {
			n := uint64(1)
			for _, d := range o.shape {
				n *= d
			}
			if n%uint64(o.typ.BlockSize()) != 0 {
				return fmt.Errorf("ggufedit: tensor %q: %d values are not whole blocks of %s", o.name, n, o.typ)
			}
			o.data = make([]byte, n/uint64(o.typ.BlockSize())*uint64(o.typ.TypeSize()))
		}
		if err := w.WriteTensor(o.name, o.data); err != nil {
			return err
		}
	}
	return w.Close()
}
