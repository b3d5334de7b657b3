package graph

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/idefics2-go/idefics2/ggml"
)

// binder binds a file's weights to the fields of a block, checking each weight where it is bound: its name, its
// shape from the hyper-parameters (as llama.cpp's create_tensor(name, {ne…}) states it) and its type. Problems are
// collected, so that one load reports every misshapen weight of a file.
type binder struct {
	w        *Weights
	prefix   string
	errs     *weightErrors
	adapters []*adapterWeights // run-time LoRA adapters whose pairs the linear layers take
}

// newBinder binds the tensors of w under prefix ("v", "mm", "" for the text model).
func newBinder(w *Weights, prefix string) binder {
	return binder{w: w, prefix: prefix, errs: new(weightErrors)}
}

// at is the binder of a sub-block: name segments joined with dots, an index for a layer ("blk", 3 → "blk.3").
func (b binder) at(seg string, index ...int) binder {
	p := join(b.prefix, seg)
	for _, i := range index {
		p = join(p, strconv.Itoa(i))
	}
	b.prefix = p
	return b
}

func join(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "." + b
}

// tensor binds the required tensor seg of logical shape dims (ggml order).
func (b binder) tensor(seg string, dims ...int) ggml.Tensor {
	t, _ := b.bind(seg, false, dims)
	return t
}

// bind looks the tensor up, checks it and marks it used; a nil tensor for an absent optional one.
func (b binder) bind(seg string, optional bool, dims []int) (ggml.Tensor, Placement) {
	name := join(b.prefix, seg)
	w := b.w
	pl, ok := w.plan.Weights[name]
	if !ok {
		if !optional {
			b.fail(name, "", fmt.Sprintf("shape %v", dims))
		}
		return ggml.Tensor{}, Placement{}
	}
	w.used[name] = true
	ti, _ := w.file.Tensor(name)
	if pl.Layout == LayoutFile && !weightTypeOK(ggml.Type(ti.Type), len(dims)) {
		b.fail(name, "type "+ggml.Type(ti.Type).String(), fmt.Sprintf("a type the model can use for a %d-D weight (f32 for vectors; float or block-quantized for matrices)", len(dims)))
		return ggml.Tensor{}, Placement{}
	}
	if !sameShape(pl.Shape, dims) {
		b.fail(name, fmt.Sprintf("shape %v", pl.Shape), fmt.Sprintf("shape %v", dims))
		return ggml.Tensor{}, Placement{}
	}
	return w.tensors[name], pl
}

func (b binder) fail(name, got, want string) {
	*b.errs = append(*b.errs, &WeightError{Path: b.w.file.Path, Tensor: name, Got: got, Want: want})
}

// sameShape compares shapes with trailing ones ignored.
func sameShape(got, want []int) bool {
	trim := func(s []int) []int {
		for len(s) > 1 && s[len(s)-1] == 1 {
			s = s[:len(s)-1]
		}
		return s
	}
	return slices.Equal(trim(got), trim(want))
}

// linear binds a projection seg of in inputs and out outputs (seg.weight [in, out]) with its kernel from the plan,
// and seg.bias [out] when bias.
func (b binder) linear(seg string, in, out int, bias bool) Linear {
	return b.linearOpt(seg, in, out, bias, false)
}

func (b binder) linearOpt(seg string, in, out int, bias, optional bool) Linear {
	var l Linear
	var pl Placement
	l.Weight, pl = b.bind(join(seg, "weight"), optional, []int{in, out})
	if l.Weight.IsNil() {
		return Linear{}
	}
	l.kernel, l.rows, l.blockSize = pl.Kernel, pl.Rows(), pl.BlockSize
	name := join(b.prefix, join(seg, "weight"))
	l.loras = b.loras(name, in, out)
	l.Tail = b.w.tails[name]
	if pl.Group != "" {
		l.group, l.member = b.w.groups[pl.Group], pl.Member
	}
	if bias {
		l.Bias = b.tensor(join(seg, "bias"), out)
	}
	return l
}

// layerNorm binds seg.weight and seg.bias of width n.
func (b binder) layerNorm(seg string, n int) LayerNorm {
	return LayerNorm{Weight: b.tensor(join(seg, "weight"), n), Bias: b.tensor(join(seg, "bias"), n)}
}

// rmsNorm binds seg.weight of width n.
func (b binder) rmsNorm(seg string, n int) RMSNorm {
	return RMSNorm{Weight: b.tensor(join(seg, "weight"), n)}
}

// err returns the problems found by b and every binder derived from it.
func (b binder) err() error { return b.errs.errOrNil() }

// weightTypeOK reports whether ggml's ops accept a weight of type t in the file's layout: vectors (norms, biases)
// in F32, matrices and the patch kernel and embeddings in float or block-quantized types (integer types would abort
// in ggml). NF4 weights (I8 block streams) are placed by their own layouts and not checked here.
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

// checkUnused reports the file's tensors no block bound.
func (w *Weights) checkUnused() error {
	var errs weightErrors
	for _, name := range w.Unused() {
		ti, _ := w.file.Tensor(name)
		errs = append(errs, &WeightError{Path: w.file.Path, Tensor: name, Got: fmt.Sprintf("%s %v", ggml.Type(ti.Type), shapeOf(ti))})
	}
	return errs.errOrNil()
}
