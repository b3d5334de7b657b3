package graph

import (
	"path"
	"strconv"

	"github.com/idefics2-go/idefics2/ggml"
)

// Intermediates are named as llama.cpp's clip graph names them, under a prefix per part: "vis." (vision tower),
// "perceiver." (resampler layers), "conn." (connector outputs), "dec." (decoder). Within a layer
// ("dec.blk.3." …):
const (
	nameAttnNorm = iota // the normalized input of the attention
	nameAttnOut         // the attention's output projection, before the residual
	nameFFNInp          // the residual stream after the attention: the MLP block's input
	nameFFNOut          // the MLP's output, before the residual
	nameLayerOut        // the layer's output
	numLayerNames
)

var layerNameSuffixes = [numLayerNames]string{"attn_norm", "attn_out", "ffn_inp", "ffn_out", "layer_out"}

// layerNames are one layer's intermediate names, made once at load so that building a graph allocates no names.
type layerNames [numLayerNames]string

func newLayerNames(prefix string, layer int) layerNames {
	var n layerNames
	for i, s := range layerNameSuffixes {
		n[i] = prefix + ".blk." + strconv.Itoa(layer) + "." + s
	}
	return n
}

// Dump asks a computation for its named intermediates: every tensor whose name matches Pattern (path.Match syntax,
// e.g. "dec.blk.3.*", "vis.last_hidden_state") is passed to Emit after the graph runs, as float32 values with its
// shape in ggml order (innermost first).
type Dump struct {
	Pattern string
	Emit    func(name string, shape []int, data []float32) error
	// Seen, when set, is called with the name of every intermediate of the computation, matched or not.
	Seen func(name string)
}

// ValidDumpPattern reports a malformed pattern.
func ValidDumpPattern(pattern string) error {
	_, err := path.Match(pattern, "")
	return err
}

// namer names intermediates as a graph is built and keeps those a dump asks for. Its zero value names only; a
// nil namer names nothing, so that a generation step without a dump makes no per-layer calls into ggml for names
// nobody reads.
type namer struct {
	dump   *Dump
	tapped []tapped
}

type tapped struct {
	name string
	t    ggml.Tensor
}

// set names t and, when the dump asks for it, keeps a float32 copy of it alive as a graph output.
func (nm *namer) set(ctx *ggml.Context, t ggml.Tensor, name string) ggml.Tensor {
	if nm == nil {
		return t
	}
	t = t.SetName(name)
	if nm.dump == nil {
		return t
	}
	if nm.dump.Seen != nil {
		nm.dump.Seen(name)
	}
	if ok, _ := path.Match(nm.dump.Pattern, name); !ok {
		return t
	}
	out := t
	if out.Type() != ggml.TypeF32 {
		out = out.Cast(ctx, ggml.TypeF32)
	} else if !out.IsContiguous() {
		out = out.Cont(ctx)
	}
	nm.tapped = append(nm.tapped, tapped{name: name, t: out.SetOutput()})
	return t
}

// build adds the kept tensors to g.
func (nm *namer) build(g *ggml.Graph) {
	if nm == nil {
		return
	}
	for _, tp := range nm.tapped {
		g.Build(tp.t)
	}
}

// emit reads the kept tensors after the graph ran and passes them to the dump.
func (nm *namer) emit() error {
	if nm == nil || nm.dump == nil {
		return nil
	}
	for _, tp := range nm.tapped {
		v, err := tp.t.Float32s()
		if err != nil {
			return err
		}
		ne := tp.t.Ne4()
		shape := ne[:]
		for len(shape) > 1 && shape[len(shape)-1] == 1 {
			shape = shape[:len(shape)-1]
		}
		if err := nm.dump.Emit(tp.name, append([]int(nil), shape...), v); err != nil {
			return err
		}
	}
	return nil
}
