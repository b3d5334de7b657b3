package graph

import (
	"fmt"

	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/quant"
)

// x16Layouts are the byte size and the repacking of this project's 16-row layouts, by layout.
var x16Layouts = map[Layout]struct {
	size   func(rows, cols int) int
	repack func(dst, src []byte, rows, cols int) error
}{
	LayoutQ4X16:  {func(rows, cols int) int { return rows * cols / 32 * 18 }, ggml.Q4X16Repack}, // the Q4_0 size
	LayoutQ4KX16: {ggml.Q4KX16Size, ggml.Q4KX16Repack},
	LayoutQ6KX16: {ggml.Q6KX16Size, ggml.Q6KX16Repack},
}

// storedShape is the shape of the ggml tensor that holds a placed weight: the logical shape for ggml's own types,
// one dimension of bytes for this project's layouts.
func storedShape(pl Placement) []int {
	switch pl.Layout {
	case LayoutQ4X16, LayoutQ4KX16, LayoutQ6KX16:
		return []int{x16Layouts[pl.Layout].size(pl.Rows(), pl.Shape[0])}
	case LayoutNF4X16:
		return []int{ggml.NF4x16Size(pl.Shape[1], pl.Shape[0])}
	case LayoutNF4Stream:
		n := 1
		for _, d := range pl.Shape {
			n *= d
		}
		size, _ := quant.NF4StreamSize(n, pl.BlockSize) // checked by tensorSpecs
		return []int{size}
	}
	shape := append([]int(nil), pl.Shape...)
	if pl.TailRows > 0 {
		shape[1] = pl.Rows()
	}
	return shape
}

// create makes the tensors of arena a: one per spec (stacked groups as one tensor with a view per member) and a
// tail tensor per split spec in tails.
func (w *Weights) create(a int, specs, tails []TensorSpec) error {
	ar := &w.arenas[a]
	ar.ctx = ggml.NewContext(len(specs)+len(tails)+len(w.plan.Groups)+1, 0)
	return w.fileErrCatch(func() {
		made := map[string]bool{}
		for _, g := range w.plan.Groups {
			if layoutArena[g.Layout] != a {
				continue
			}
			sg := &stackedGroup{kernel: w.plan.Weights[g.Members[0]].Kernel}
			total := 0
			for _, m := range g.Members {
				total += storedShape(w.plan.Weights[m])[0]
			}
			sg.parent = ar.ctx.NewTensor(ggml.TypeI8, total).SetName(g.Name)
			off := 0
			for _, m := range g.Members {
				pl := w.plan.Weights[m]
				size := storedShape(pl)[0]
				w.tensors[m] = sg.parent.View(ar.ctx, off, []int{size}, nil).SetName(m)
				off += size
				sg.rows = append(sg.rows, pl.Rows())
				sg.total += pl.Rows()
				made[m] = true
			}
			w.groups[g.Name] = sg
		}
		for _, ts := range specs {
			if !made[ts.Name] {
				pl := w.plan.Weights[ts.Name]
				w.tensors[ts.Name] = ar.ctx.NewTensor(pl.Type, storedShape(pl)...).SetName(ts.Name)
			}
		}
		for _, ts := range tails {
			pl := w.plan.Weights[ts.Name]
			w.tails[ts.Name] = ar.ctx.NewTensor(ts.Type, ts.Shape[0], pl.TailRows).SetName(ts.Name + ".tail")
		}
	})
}

// fileErrCatch runs build and turns a ggml abort into an error about w's file.
func (w *Weights) fileErrCatch(build func()) error {
	if err := ggml.Catch(build); err != nil {
		return &fileError{Path: w.file.Path, Msg: "placing the weights", err: err}
	}
	return nil
}

// placeFile gives the file arena's tensors (specs) and the split tails their data: on the CPU, in place from the
// file's mapping; elsewhere (or for a file read without a mapping) copied into a buffer of the device.
func (w *Weights) placeFile(b *ggml.Backend, specs, tails []TensorSpec) error {
	if len(specs)+len(tails) == 0 {
		return nil
	}
	ar := &w.arenas[arenaFile]
	data := w.file.DataSection()
	inPlace := b.Device.Kind == ggml.DeviceCPU && data != nil
	var err error
	if inPlace {
		ar.buf, err = ggml.HostBuffer(b.Device, data)
	} else {
		ar.buf, err = ggml.AllocTensors(ar.ctx, b.DefaultBufferType())
	}
	if err != nil {
		return &fileError{Path: w.file.Path, Msg: "weights buffer", err: err}
	}
	set := func(t ggml.Tensor, name string, fromEnd bool) error {
		d, err := w.file.TensorData(name)
		if err != nil {
			return err
		}
		if fromEnd { // a tail: the tensor's last rows
			d = d[len(d)-t.Nbytes():]
		}
		if inPlace {
			return ar.buf.Place(t, d)
		}
		return t.SetBytes(d)
	}
	for _, ts := range specs {
		if err := set(w.tensors[ts.Name], ts.Name, false); err != nil {
			return w.fileErr(ts.Name, err)
		}
	}
	for _, ts := range tails {
		if err := set(w.tails[ts.Name], ts.Name, true); err != nil {
			return w.fileErr(ts.Name, err)
		}
	}
	ar.buf.SetWeightsUsage()
	return nil
}

// fill allocates arena a's tensors in a buffer of type bt and sets each with set.
func (w *Weights) fill(a int, bt ggml.BufferType, specs []TensorSpec, set func(w *Weights, t ggml.Tensor, name string) error) error {
	ar := &w.arenas[a]
	buf, err := ggml.AllocTensors(ar.ctx, bt)
	if err != nil {
		return &fileError{Path: w.file.Path, Msg: "weights buffer", err: err}
	}
	ar.buf = buf
	for _, ts := range specs {
		if err := set(w, w.tensors[ts.Name], ts.Name); err != nil {
			return w.fileErr(ts.Name, err)
		}
	}
	buf.SetWeightsUsage()
	return nil
}

// setConverted builds a weight's layout from the file's blocks: a 16-row layout, nf4x16, or NF4 expanded to F16.
func setConverted(w *Weights, t ggml.Tensor, name string) error {
	pl := w.plan.Weights[name]
	d, err := w.headBytes(name)
	if err != nil {
		return err
	}
	defer w.release(d)
	switch pl.Layout {
	case LayoutNF4X16:
		return t.SetNF4x16(d, pl.Shape[1], pl.Shape[0], pl.BlockSize)
	case LayoutF16:
		return expandNF4(t, d, pl.Shape, pl.BlockSize)
	}
	l := x16Layouts[pl.Layout]
	// Repack straight into the tensor's memory; through a copy only where it is not host memory.
	p, host := t.HostBytes()
	if !host {
		p = make([]byte, t.Nbytes())
	}
	if err := l.repack(p, d, pl.Rows(), pl.Shape[0]); err != nil {
		return err
	}
	if !host {
		return t.SetBytes(p)
	}
	return nil
}

// stackedGroup is a stacked group as loaded: the whole tensor, the kernel that multiplies it and its members' rows.
type stackedGroup struct {
	parent ggml.Tensor
	kernel Kernel
	rows   []int
	total  int
}

// shapeOf is a tensor's shape as ints (ggml order).
func shapeOf(ti *gguf.TensorInfo) []int {
	s := make([]int, len(ti.Shape))
	for i, d := range ti.Shape {
		s[i] = int(d)
	}
	return s
}

// tensorSpecs describes f's tensors for the plan: types ggml knows, NF4 tensors with their layout keys checked.
func tensorSpecs(f *gguf.File) ([]TensorSpec, error) {
	nf4, err := nf4Layouts(f)
	if err != nil {
		return nil, err
	}
	var errs weightErrors
	specs := make([]TensorSpec, 0, len(f.Tensors))
	for i := range f.Tensors {
		ti := &f.Tensors[i]
		typ := ggml.Type(ti.Type)
		if !typ.Valid() {
			errs = append(errs, &WeightError{Path: f.Path, Tensor: ti.Name, Got: fmt.Sprintf("type %d", ti.Type), Want: "a type ggml knows"})
			continue
		}
		specs = append(specs, TensorSpec{Name: ti.Name, Type: typ, Shape: shapeOf(ti), NF4: nf4[ti.Name]})
	}
	return specs, errs.errOrNil()
}
