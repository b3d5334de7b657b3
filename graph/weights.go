package graph

import (
	"fmt"

	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/gguf"
)

// Weights are the tensors of one GGUF file placed on a backend as its Plan says: on the CPU, weights in the file's
// layout are used in place from the read-only memory map; other layouts are built once at load, after which the
// file's pages of those weights are released. On other devices every weight is copied once into device memory.
type Weights struct {
	file    *gguf.File
	plan    *Plan
	arenas  [numArenas]arena
	tensors map[string]ggml.Tensor // by file name; the head of a split matrix
	tails   map[string]ggml.Tensor // the plain rows of split matrices
	groups  map[string]*stackedGroup
	used    map[string]bool
}

// arena is one ggml context and the buffer that holds its tensors.
type arena struct {
	ctx *ggml.Context
	buf *ggml.Buffer
}

// The arenas weights are allocated in, by where their bytes come from.
const (
	arenaFile      = iota // the file's blocks (mapped in place on the CPU, else copied), split tails included
	arenaRepack           // ggml's repack buffer type: the file's blocks, rearranged by ggml as they are set
	arenaConverted        // built by this package: 16-row layouts, nf4x16, NF4 expanded to F16
	numArenas
)

// layoutArena is where each layout's tensors live.
var layoutArena = [...]int{
	LayoutFile: arenaFile, LayoutGGMLRepack: arenaRepack, LayoutNF4Stream: arenaFile,
	LayoutQ4X16: arenaConverted, LayoutQ4KX16: arenaConverted, LayoutQ6KX16: arenaConverted,
	LayoutNF4X16: arenaConverted, LayoutF16: arenaConverted,
}

// LoadWeights places every tensor of f on backend b for target t as the plan under policy p says.
func LoadWeights(f *gguf.File, b *ggml.Backend, t Target, p LayoutPolicy) (*Weights, error) {
	specs, err := tensorSpecs(f)
	if err != nil {
		return nil, err
	}
	w := &Weights{file: f, plan: PlanWeights(specs, t, p), tensors: map[string]ggml.Tensor{},
		tails: map[string]ggml.Tensor{}, groups: map[string]*stackedGroup{}, used: map[string]bool{}}
	var byArena [numArenas][]TensorSpec
	for _, ts := range specs {
		a := layoutArena[w.plan.Weights[ts.Name].Layout]
		byArena[a] = append(byArena[a], ts)
	}
	if err := w.load(byArena, b); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

func (w *Weights) load(byArena [numArenas][]TensorSpec, b *ggml.Backend) error {
	// Split matrices keep their tail rows in the file arena, whatever arena their head takes.
	var tails []TensorSpec
	for _, ts := range w.file.Tensors {
		if w.plan.Weights[ts.Name].TailRows > 0 {
			tails = append(tails, w.spec(ts.Name))
		}
	}
	if err := w.create(arenaFile, byArena[arenaFile], tails); err != nil {
		return err
	}
	if err := w.placeFile(b, byArena[arenaFile], tails); err != nil {
		return err
	}
	if len(byArena[arenaRepack]) > 0 {
		if err := w.create(arenaRepack, byArena[arenaRepack], nil); err != nil {
			return err
		}
		if err := w.fill(arenaRepack, b.ExtraBufferTypes()[0], byArena[arenaRepack], setRepacked); err != nil {
			return err
		}
	}
	if len(byArena[arenaConverted]) > 0 {
		if err := w.create(arenaConverted, byArena[arenaConverted], nil); err != nil {
			return err
		}
		return w.fill(arenaConverted, b.DefaultBufferType(), byArena[arenaConverted], setConverted)
	}
	return nil
}

// spec returns the TensorSpec of a file tensor (tensorSpecs has validated them all).
func (w *Weights) spec(name string) TensorSpec {
	ti, _ := w.file.Tensor(name)
	return TensorSpec{Name: name, Type: ggml.Type(ti.Type), Shape: shapeOf(ti)}
}

// Tail is the plain-layout tail of a matrix whose head took another layout (Placement.TailRows), or a nil tensor.
func (w *Weights) Tail(name string) ggml.Tensor { return w.tails[name] }

// Plan is the placement the weights follow.
func (w *Weights) Plan() *Plan { return w.plan }

// Close frees the tensors' contexts and device memory. Idempotent.
func (w *Weights) Close() {
	if w == nil {
		return
	}
	for i := range w.arenas {
		w.arenas[i].buf.Close()
		w.arenas[i].ctx.Close()
		w.arenas[i] = arena{}
	}
}

// Unused lists the file's tensors that no block bound.
func (w *Weights) Unused() []string {
	var out []string
	for _, ti := range w.file.Tensors {
		if !w.used[ti.Name] {
			out = append(out, ti.Name)
		}
	}
	return out
}

// fileErr wraps an error about tensor name of w's file.
func (w *Weights) fileErr(name string, err error) error {
	return &fileError{Path: w.file.Path, Msg: fmt.Sprintf("tensor %q", name), err: err}
}

// headBytes is the file data of a tensor's head: all of it, or its rows before the tail.
func (w *Weights) headBytes(name string) ([]byte, error) {
	d, err := w.file.TensorData(name)
	if err != nil {
		return nil, err
	}
	pl := w.plan.Weights[name]
	if pl.TailRows == 0 {
		return d, nil
	}
	return d[:len(d)/pl.Shape[1]*pl.Rows()], nil
}

// release drops the file's pages of data once it has been copied into another layout.
func (w *Weights) release(data []byte) {
	if w.file.Mapped() {
		releasePages(data)
	}
}

// setRepacked gives a tensor of ggml's repack buffer type the file's blocks; ggml rearranges them as it copies.
func setRepacked(w *Weights, t ggml.Tensor, name string) error {
	if !t.HasExtra() {
		return fmt.Errorf("cannot be repacked on this CPU")
	}
	d, err := w.headBytes(name)
	if err == nil {
		err = t.SetBytes(d)
	}
	w.release(d)
	return err
}
