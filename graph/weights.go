package graph

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/gguf"
)

// Weights are the tensors of one GGUF file placed on a backend: on the CPU they are used in place from the file's
// read-only memory map; on other devices they are copied once into device memory.
type Weights struct {
	file   *gguf.File
	ctx    *ggml.Context
	buf    *ggml.Buffer
	pctx   *ggml.Context // repacked tensors
	pbuf   *ggml.Buffer
	ectx   *ggml.Context // NF4 tensors expanded to F16
	ebuf   *ggml.Buffer
	qctx   *ggml.Context // Q4_0 and Q4_K matrices in this project's layouts (q4x16, q4kx16)
	qbuf   *ggml.Buffer
	own    []ggml.Tensor  // tensors registered in ownWeights
	fused  []fusedWeight  // stacked groups registered in fusedWeights
	tailN  map[string]int // rows of each split matrix's plain tail
	nctx   *ggml.Context  // NF4 tensors repacked to nf4x16
	nbuf   *ggml.Buffer
	nf4    []ggml.Tensor   // tensors registered in nf4Weights
	packed map[string]bool // tensors not in the file's layout (repacked or expanded)
	tails  map[string]ggml.Tensor
	byName map[string]ggml.Tensor
	used   map[string]bool
}

// repackable reports whether the CPU's repack (row-interleaved) buffer type takes this weight: matrices used only
// by mul_mat, of a type ggml repacks for this CPU (ggml_repack_get_optimal_repack_type: Q4_0, Q4_K and IQ4_NL with
// AVX2 and rows a multiple of 8). Tensors read by get_rows or reshaped (embeddings, the patch kernel, latents)
// must keep the plain layout.
func repackable(ti gguf.TensorInfo, dev ggml.Device) bool {
	if dev.Features["AVX2"] != "1" || len(ti.Shape) != 2 || ti.Shape[1]%8 != 0 {
		return false
	}
	switch ti.Name {
	case "token_embd.weight", "v.patch_embd.weight", "v.position_embd.weight", "mm.perceiver.latents":
		return false
	}
	switch ggml.Type(ti.Type) {
	case ggml.TypeQ4_0, ggml.TypeQ4_K, ggml.Type(20): // 20: IQ4_NL
		return true
	}
	return false
}

// splitRows is the number of trailing rows of a matrix that keep the file layout so that the rest can be
// repacked: the output projection (32003 rows for Idefics2's vocabulary, not a multiple of the repacked layout's
// 8-row groups) is multiplied as a repacked head and a plain tail of rows%8 rows (see Weights.Tail). 0: none.
func splitRows(ti gguf.TensorInfo, dev ggml.Device) int {
	if ti.Name != "output.weight" || len(ti.Shape) != 2 || ti.Shape[1]%8 == 0 || ti.Shape[1] < 8 {
		return 0
	}
	head := ti
	head.Shape = []uint64{ti.Shape[0], ti.Shape[1] - ti.Shape[1]%8}
	if !repackable(head, dev) {
		return 0
	}
	return int(ti.Shape[1] % 8)
}

// LoadWeights creates a ggml tensor for every tensor of f and gives it data on backend b. With repack on a CPU
// backend that offers a repacked layout, eligible quantized matrices are read once into that layout (about 1.7×
// faster generation) and their pages of the file mapping are released, so no second copy stays resident. NF4
// matrices are likewise repacked to this project's nf4x16 layout where the NF4 kernel runs it fast (nf4x16Ready).
func LoadWeights(f *gguf.File, b *ggml.Backend, repack bool) (*Weights, error) {
	w := &Weights{file: f, byName: map[string]ggml.Tensor{}, used: map[string]bool{}, tails: map[string]ggml.Tensor{}, tailN: map[string]int{}}
	var extra ggml.BufferType
	if repack && b.Device.Kind == ggml.DeviceCPU {
		if ts := b.ExtraBufferTypes(); len(ts) > 0 {
			extra = ts[0]
		}
	}
	// With AVX-512 VNNI, Q4_0 and Q4_K matrices take this project's layouts (graph/q4x16.go) rather than ggml's.
	ownOK := repack && b.Device.Kind == ggml.DeviceCPU
	var packed, split, own []gguf.TensorInfo
	if !extra.IsNil() || ownOK {
		for _, ti := range f.Tensors {
			switch {
			case ownOK && ownLayoutOf(ti) != nil:
				own = append(own, ti)
			case ownOK && ownSplitRows(ti) > 0:
				r := ownSplitRows(ti)
				head := ti
				head.Shape = []uint64{ti.Shape[0], ti.Shape[1] - uint64(r)}
				own = append(own, head)
				split = append(split, ti)
				w.tailN[ti.Name] = r
			case extra.IsNil():
			case repackable(ti, b.Device):
				packed = append(packed, ti)
			case splitRows(ti, b.Device) > 0:
				r := splitRows(ti, b.Device)
				head := ti
				head.Shape = []uint64{ti.Shape[0], ti.Shape[1] - uint64(r)}
				packed = append(packed, head)
				split = append(split, ti)
				w.tailN[ti.Name] = r
			}
		}
	}
	if len(own) > 0 {
		if err := w.loadOwn(f, own, b); err != nil {
			w.Close()
			return nil, err
		}
	}
	if len(packed) > 0 {
		if err := w.loadRepacked(f, packed, extra); err != nil {
			w.Close()
			return nil, err
		}
	}
	isPacked := map[string]bool{}
	for _, ti := range packed {
		isPacked[ti.Name] = true
	}
	for _, ti := range own {
		isPacked[ti.Name] = true
	}
	w.packed = isPacked
	// NF4 weights: the CPU multiplies them with the NF4 kernel, in place from the file (stream kernel) or, with
	// repack on, repacked to nf4x16 (int8 kernel); tensors read by get_rows or used as activations, and every NF4
	// tensor on other backends, are expanded to F16 once at load.
	layouts, err := nf4Layouts(f)
	if err != nil {
		w.Close()
		return nil, err
	}
	var expand, nf4x16 []gguf.TensorInfo
	for _, ti := range f.Tensors {
		info, ok := layouts[ti.Name]
		if !ok {
			continue
		}
		switch {
		case b.Device.Kind != ggml.DeviceCPU || !nf4Multiplied(ti.Name, info):
			expand = append(expand, ti)
			isPacked[ti.Name] = true
		case repack && nf4x16Ready(info):
			nf4x16 = append(nf4x16, ti)
			isPacked[ti.Name] = true
		}
	}
	if len(expand) > 0 {
		if err := w.loadExpanded(f, expand, layouts, b); err != nil {
			w.Close()
			return nil, err
		}
	}
	if len(nf4x16) > 0 {
		if err := w.loadNF4x16(f, nf4x16, layouts, b); err != nil {
			w.Close()
			return nil, err
		}
	}
	w.ctx = ggml.NewContext(len(f.Tensors)+1, 0)
	err = ggml.Catch(func() {
		for _, ti := range split {
			r := w.tailN[ti.Name]
			w.tails[ti.Name] = w.ctx.NewTensor(ggml.Type(ti.Type), int(ti.Shape[0]), r).SetName(ti.Name + ".tail")
		}
		for _, ti := range f.Tensors {
			if isPacked[ti.Name] {
				continue
			}
			typ := ggml.Type(ti.Type)
			if !typ.Valid() {
				panic(&ggml.ShapeError{Op: "load", Msg: fmt.Sprintf("tensor %q has type %d that ggml does not know", ti.Name, ti.Type)})
			}
			shape := make([]int, len(ti.Shape))
			for i, d := range ti.Shape {
				shape[i] = int(d)
			}
			t := w.ctx.NewTensor(typ, shape...).SetName(ti.Name)
			w.byName[ti.Name] = t
			if info, ok := layouts[ti.Name]; ok {
				nf4Weights.Store(t, info)
				w.nf4 = append(w.nf4, t)
			}
		}
	})
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("graph: %s: %w", f.Path, err)
	}
	if len(f.Tensors) == len(isPacked) && len(split) == 0 {
		return w, nil
	}
	data := f.DataSection()
	if b.Device.Kind == ggml.DeviceCPU && data != nil {
		buf, err := ggml.HostBuffer(b.Device, data)
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("graph: %s: %w", f.Path, err)
		}
		w.buf = buf
		for _, ti := range split {
			tail := w.tails[ti.Name]
			end := ti.Offset + ti.Size()
			if end > uint64(len(data)) {
				w.Close()
				return nil, fmt.Errorf("graph: %s: tensor %q ends beyond the data section", f.Path, ti.Name)
			}
			if err := buf.Place(tail, data[end-uint64(tail.Nbytes()):end]); err != nil {
				w.Close()
				return nil, fmt.Errorf("graph: %s: %w", f.Path, err)
			}
		}
		for _, ti := range f.Tensors {
			if isPacked[ti.Name] {
				continue
			}
			end := ti.Offset + ti.Size()
			if end > uint64(len(data)) {
				w.Close()
				return nil, fmt.Errorf("graph: %s: tensor %q ends beyond the data section", f.Path, ti.Name)
			}
			if err := buf.Place(w.byName[ti.Name], data[ti.Offset:end]); err != nil {
				w.Close()
				return nil, fmt.Errorf("graph: %s: %w", f.Path, err)
			}
		}
	} else {
		buf, err := ggml.AllocTensors(w.ctx, b.DefaultBufferType())
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("graph: %s: %w", f.Path, err)
		}
		w.buf = buf
		for _, ti := range split {
			// Without a mapping (files read on demand) the tail rows are copied like the plain tensors.
			tail := w.tails[ti.Name]
			d, err := f.TensorData(ti.Name)
			if err == nil {
				err = tail.SetBytes(d[len(d)-tail.Nbytes():])
			}
			if err != nil {
				w.Close()
				return nil, fmt.Errorf("graph: %s: tensor %q: %w", f.Path, ti.Name, err)
			}
		}
		for _, ti := range f.Tensors {
			if isPacked[ti.Name] {
				continue
			}
			d, err := f.TensorData(ti.Name)
			if err == nil {
				err = w.byName[ti.Name].SetBytes(d)
			}
			if err != nil {
				w.Close()
				return nil, fmt.Errorf("graph: %s: tensor %q: %w", f.Path, ti.Name, err)
			}
		}
	}
	w.buf.SetWeightsUsage()
	return w, nil
}

// Tail is the plain-layout tail of a matrix whose head was repacked (see splitRows), or a nil tensor.
func (w *Weights) Tail(name string) ggml.Tensor { return w.tails[name] }

// isPlain reports whether the named tensor is in the file's layout (not repacked, not expanded).
func (w *Weights) isPlain(name string) bool { return !w.packed[name] }

// loadRepacked reads the tensors ts into a buffer of the repacked type and drops their pages from the mapping.
func (w *Weights) loadRepacked(f *gguf.File, ts []gguf.TensorInfo, bt ggml.BufferType) error {
	w.pctx = ggml.NewContext(len(ts)+1, 0)
	err := ggml.Catch(func() {
		for _, ti := range ts {
			w.byName[ti.Name] = w.pctx.NewTensor(ggml.Type(ti.Type), int(ti.Shape[0]), int(ti.Shape[1])).SetName(ti.Name)
		}
	})
	if err != nil {
		return fmt.Errorf("graph: %s: %w", f.Path, err)
	}
	buf, err := ggml.AllocTensors(w.pctx, bt)
	if err != nil {
		return fmt.Errorf("graph: %s: repacked weights: %w", f.Path, err)
	}
	w.pbuf = buf
	for _, ti := range ts {
		t := w.byName[ti.Name]
		if !t.HasExtra() {
			return fmt.Errorf("graph: %s: tensor %q cannot be repacked on this CPU", f.Path, ti.Name)
		}
		d, err := f.TensorData(ti.Name)
		if err == nil && uint64(len(d)) > ti.Size() {
			d = d[:ti.Size()] // the head of a split matrix (splitRows)
		}
		if err == nil {
			err = t.SetBytes(d)
		}
		if err != nil {
			return fmt.Errorf("graph: %s: tensor %q: %w", f.Path, ti.Name, err)
		}
		releasePages(d)
	}
	buf.SetWeightsUsage()
	return nil
}

// loadExpanded creates F16 tensors of the logical shapes of the NF4 tensors ts and fills them with the
// dequantized values.
func (w *Weights) loadExpanded(f *gguf.File, ts []gguf.TensorInfo, layouts map[string]nf4Info, b *ggml.Backend) error {
	w.ectx = ggml.NewContext(len(ts)+1, 0)
	err := ggml.Catch(func() {
		for _, ti := range ts {
			w.byName[ti.Name] = w.ectx.NewTensor(ggml.TypeF16, layouts[ti.Name].shape...).SetName(ti.Name)
		}
	})
	if err != nil {
		return fmt.Errorf("graph: %s: %w", f.Path, err)
	}
	buf, err := ggml.AllocTensors(w.ectx, b.DefaultBufferType())
	if err != nil {
		return fmt.Errorf("graph: %s: expanded NF4 weights: %w", f.Path, err)
	}
	w.ebuf = buf
	for _, ti := range ts {
		d, err := f.TensorData(ti.Name)
		if err == nil {
			err = expandNF4(w.byName[ti.Name], d, layouts[ti.Name])
		}
		if err != nil {
			return fmt.Errorf("graph: %s: tensor %q: %w", f.Path, ti.Name, err)
		}
		if f.Mapped() {
			releasePages(d)
		}
	}
	buf.SetWeightsUsage()
	return nil
}

// nf4x16Ready reports whether an NF4 matrix multiplied on the CPU is repacked to nf4x16: its shape takes the layout
// (rows a multiple of 16, columns of 64 and of the block size) and the NF4 kernel runs the layout's AVX-512 VNNI
// path. Without VNNI the layout's scalar path would be slower than the stream kernel, which keeps the tensor.
func nf4x16Ready(info nf4Info) bool {
	return len(info.shape) == 2 && ggml.NF4x16Fast() && ggml.NF4x16Check(info.shape[1], info.shape[0], info.blockSize) == nil
}

// loadNF4x16 reads the NF4 tensors ts once, repacks them to nf4x16 into a CPU buffer and drops their pages from
// the mapping (as loadRepacked does), so that one copy of the weights stays resident.
func (w *Weights) loadNF4x16(f *gguf.File, ts []gguf.TensorInfo, layouts map[string]nf4Info, b *ggml.Backend) error {
	w.nctx = ggml.NewContext(len(ts)+1, 0)
	err := ggml.Catch(func() {
		for _, ti := range ts {
			info := layouts[ti.Name]
			info.repacked = true
			t := w.nctx.NewTensor(ggml.TypeI8, ggml.NF4x16Size(info.shape[1], info.shape[0])).SetName(ti.Name)
			w.byName[ti.Name] = t
			nf4Weights.Store(t, info)
			w.nf4 = append(w.nf4, t)
		}
	})
	if err != nil {
		return fmt.Errorf("graph: %s: %w", f.Path, err)
	}
	buf, err := ggml.AllocTensors(w.nctx, b.DefaultBufferType())
	if err != nil {
		return fmt.Errorf("graph: %s: repacked NF4 weights: %w", f.Path, err)
	}
	w.nbuf = buf
	for _, ti := range ts {
		info := layouts[ti.Name]
		d, err := f.TensorData(ti.Name)
		if err == nil {
			err = w.byName[ti.Name].SetNF4x16(d, info.shape[1], info.shape[0], info.blockSize)
		}
		if err != nil {
			return fmt.Errorf("graph: %s: tensor %q: %w", f.Path, ti.Name, err)
		}
		if f.Mapped() {
			releasePages(d)
		}
	}
	buf.SetWeightsUsage()
	return nil
}

// nf4Multiplied reports whether an NF4 tensor is a matrix used only by matrix products (so the NF4 kernel can
// take it as is).
func nf4Multiplied(name string, info nf4Info) bool {
	switch name {
	case "token_embd.weight", "v.patch_embd.weight", "v.position_embd.weight", "mm.perceiver.latents":
		return false
	}
	return len(info.shape) == 2
}

// Close frees the tensors' contexts and device memory. Idempotent.
func (w *Weights) Close() {
	if w == nil {
		return
	}
	for _, t := range w.nf4 {
		nf4Weights.Delete(t)
	}
	w.nf4 = nil
	for _, t := range w.own {
		ownWeights.Delete(t)
	}
	for _, fg := range w.fused {
		fusedWeights.Delete(fg.members[0])
	}
	w.fused = nil
	w.own = nil
	w.qbuf.Close()
	w.qctx.Close()
	w.nbuf.Close()
	w.nctx.Close()
	w.ebuf.Close()
	w.ectx.Close()
	w.buf.Close()
	w.ctx.Close()
	w.pbuf.Close()
	w.pctx.Close()
}

// Bind fills the ggml.Tensor fields of the struct pointed to by dst by name. A field's `gguf:"seg"` tag gives its
// name segment, joined to prefix with dots; slices of structs (allocated by the caller to their length) add the
// index (`blk.0`, `blk.1`, …); struct fields without a tag share the parent's prefix. A tag option "optional"
// allows the tensor to be absent.
func (w *Weights) Bind(prefix string, dst any) error {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		panic("graph: Bind needs a pointer to a struct")
	}
	return w.bind(v.Elem(), prefix)
}

var tensorType = reflect.TypeOf(ggml.Tensor{})

func join(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "." + b
}

func (w *Weights) bind(v reflect.Value, prefix string) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag, opts, _ := strings.Cut(f.Tag.Get("gguf"), ",")
		if tag == "-" {
			continue
		}
		name := join(prefix, tag)
		fv := v.Field(i)
		switch {
		case f.Type == tensorType:
			tn, ok := w.byName[name]
			if !ok {
				if opts == "optional" {
					continue
				}
				return fmt.Errorf("graph: %s: missing tensor %q", w.file.Path, name)
			}
			w.used[name] = true
			fv.Set(reflect.ValueOf(tn))
		case f.Type.Kind() == reflect.Struct:
			if err := w.bind(fv, name); err != nil {
				return err
			}
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			for j := 0; j < fv.Len(); j++ {
				if err := w.bind(fv.Index(j), join(name, strconv.Itoa(j))); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Unused lists the file's tensors that no Bind consumed.
func (w *Weights) Unused() []string {
	var out []string
	for n := range w.byName {
		if !w.used[n] {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// weightTypeOK reports whether ggml's ops accept a weight of type t: vectors (norms, biases) and the patch kernel
// and embeddings in float types, matrices in float or block-quantized types (integer types would abort in ggml).
func weightTypeOK(t ggml.Type, dims int) bool {
	switch t {
	case ggml.TypeF32:
		return true
	case ggml.TypeF16, ggml.TypeBF16:
		return dims >= 2
	case ggml.TypeI8, ggml.TypeI16, ggml.TypeI32, ggml.TypeI64, ggml.TypeF64:
		return false
	}
	return dims == 2 && t.IsQuantized()
}

// shapeCheck collects shape mismatches of bound tensors.
type shapeCheck struct {
	path string
	errs []string
}

// want checks that t has exactly the shape dims (ggml order); an absent optional tensor is skipped.
func (c *shapeCheck) want(name string, t ggml.Tensor, dims ...int) {
	if t.IsNil() {
		return
	}
	got := t.Ne4()
	if v, ok := nf4Weights.Load(t); ok {
		got = [4]int{1, 1, 1, 1}
		copy(got[:], v.(nf4Info).shape)
	} else if v, ok := ownWeights.Load(t); ok {
		got = [4]int{v.(ownWeight).cols, v.(ownWeight).rows, 1, 1}
	} else if !weightTypeOK(t.Type(), len(dims)) {
		c.errs = append(c.errs, fmt.Sprintf("tensor %q has type %s, which the model cannot use for a %d-D weight", name, t.Type(), len(dims)))
		return
	}
	exp := [4]int{1, 1, 1, 1}
	copy(exp[:], dims)
	if got != exp {
		c.errs = append(c.errs, fmt.Sprintf("tensor %q has shape %v, want %v", name, trim(got), dims))
	}
}

func trim(s [4]int) []int {
	n := 4
	for n > 1 && s[n-1] == 1 {
		n--
	}
	return s[:n]
}

func (c *shapeCheck) err() error {
	if len(c.errs) == 0 {
		return nil
	}
	if len(c.errs) > 5 {
		c.errs = append(c.errs[:5], fmt.Sprintf("and %d more", len(c.errs)-5))
	}
	return fmt.Errorf("graph: %s: %s", c.path, strings.Join(c.errs, "; "))
}
