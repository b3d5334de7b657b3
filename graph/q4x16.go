package graph

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/gguf"
)

// Q4_0, Q4_K and Q6_K matrices on a CPU with AVX-512 VNNI take this project's own layouts (ggml/q4x16.h,
// ggml/q4kx16.h, ggml/q6kx16.h) instead of ggml's repacked ones (Q4_0, Q4_K) or its plain blocks (Q6_K, which ggml
// does not repack): 16 rows interleaved so that one VNNI instruction computes 16 rows' partial sums, several times
// fewer instructions per weight than ggml's AVX2 kernels, which are compute-bound on two cores.

// ownLayout is one of these layouts: the shapes it takes, its size, the repacking from the file's blocks and the
// product.
type ownLayout struct {
	name     string
	eligible func(rows, cols int) bool
	size     func(rows, cols int) int // bytes of a rows × cols matrix in the layout
	repack   func(dst, src []byte, rows, cols int) error
	mulMat   func(w ggml.Tensor, ctx *ggml.Context, x ggml.Tensor, rows int) ggml.Tensor
}

// ownLayouts maps a file's tensor type to its layout.
var ownLayouts = map[ggml.Type]*ownLayout{
	ggml.TypeQ4_0: {
		name:     "q4x16",
		eligible: ggml.Q4X16Eligible,
		size:     func(rows, cols int) int { return rows * cols / 32 * 18 }, // the Q4_0 size
		repack:   ggml.Q4X16Repack,
		mulMat:   ggml.Tensor.MulMatQ4X16,
	},
	ggml.TypeQ4_K: {
		name:     "q4kx16",
		eligible: ggml.Q4KX16Eligible,
		size:     ggml.Q4KX16Size,
		repack:   ggml.Q4KX16Repack,
		mulMat:   ggml.Tensor.MulMatQ4KX16,
	},
	// In Q4_K_M files: ffn_down and attn_v of about half the layers, and output.weight.
	ggml.TypeQ6_K: {
		name:     "q6kx16",
		eligible: ggml.Q6KX16Eligible,
		size:     ggml.Q6KX16Size,
		repack:   ggml.Q6KX16Repack,
		mulMat:   ggml.Tensor.MulMatQ6KX16,
	},
}

// ownWeight is a weight held in one of the layouts (an I8 tensor): its logical shape and the layout.
type ownWeight struct {
	cols, rows int
	layout     *ownLayout
}

// ownWeights maps weight tensors held in the layouts to their ownWeight.
var ownWeights sync.Map // ggml.Tensor → ownWeight

// useQ4X16 can be turned off by tests and benchmarks to compare with ggml's repacked layouts (UseQ4X16).
var useQ4X16 = true

// UseQ4X16 turns this project's layouts (q4x16 for Q4_0, q4kx16 for Q4_K, q6kx16 for Q6_K) on or off for weights
// loaded from now on (on by default; where the CPU lacks AVX-512 VNNI they are never used) and returns the previous
// setting. With it off, Q4_0 and Q4_K matrices take ggml's repacked layouts as before and Q6_K matrices its plain
// blocks. For comparisons; not safe to call while
// models load.
func UseQ4X16(on bool) bool {
	old := useQ4X16
	useQ4X16 = on
	return old
}

// ownLayoutOf returns the layout a tensor takes on this CPU, or nil: a Q4_0, Q4_K or Q6_K matrix used only by
// matrix products whose shape fits the layout (rows a multiple of 16).
func ownLayoutOf(ti gguf.TensorInfo) *ownLayout {
	if !useQ4X16 || !ggml.Q4X16Fast() || len(ti.Shape) != 2 {
		return nil
	}
	l := ownLayouts[ggml.Type(ti.Type)]
	if l == nil {
		return nil
	}
	switch ti.Name {
	case "token_embd.weight", "v.patch_embd.weight", "v.position_embd.weight", "mm.perceiver.latents":
		return nil
	}
	if !l.eligible(int(ti.Shape[1]), int(ti.Shape[0])) {
		return nil
	}
	return l
}

// ownSplitRows is splitRows for these layouts: the output projection keeps its last rows%16 rows (3 of Idefics2's
// 32003) in the file layout so that the rest can be repacked. 0: none.
func ownSplitRows(ti gguf.TensorInfo) int {
	if ti.Name != "output.weight" || len(ti.Shape) != 2 || ti.Shape[1]%16 == 0 || ti.Shape[1] < 16 {
		return 0
	}
	head := ti
	head.Name = "output.weight.head"
	head.Shape = []uint64{ti.Shape[0], ti.Shape[1] - ti.Shape[1]%16}
	if ownLayoutOf(head) == nil {
		return 0
	}
	return int(ti.Shape[1] % 16)
}

// loadOwn reads the matrices ts (for a split matrix, its head rows: ts[i].Shape gives the rows to take) into I8
// tensors of their layouts on the CPU backend b, and drops their pages from the file mapping.
func (w *Weights) loadOwn(f *gguf.File, ts []gguf.TensorInfo, b *ggml.Backend) error {
	groups := fusedGroupsOf(ts)
	w.qctx = ggml.NewContext(len(ts)+len(groups)+1, 0)
	err := ggml.Catch(func() {
		inGroup := map[string]bool{}
		// A group's members are consecutive views of one tensor: their 16-row groups follow each other, which
		// is the layout of the stacked matrix.
		for _, g := range groups {
			total := 0
			for _, m := range g.members {
				total += g.layout.size(int(m.Shape[1]), int(m.Shape[0]))
			}
			parent := w.qctx.NewTensor(ggml.TypeI8, total).SetName(g.name)
			var views []ggml.Tensor
			off := 0
			for _, m := range g.members {
				size := g.layout.size(int(m.Shape[1]), int(m.Shape[0]))
				t := parent.View(w.qctx, off, []int{size}, nil).SetName(m.Name)
				off += size
				w.byName[m.Name] = t
				inGroup[m.Name] = true
				views = append(views, t)
			}
			fg := fusedWeight{parent: parent, members: views, layout: g.layout}
			for _, m := range g.members {
				fg.rows = append(fg.rows, int(m.Shape[1]))
				fg.total += int(m.Shape[1])
			}
			w.fused = append(w.fused, fg)
		}
		for _, ti := range ts {
			if inGroup[ti.Name] {
				continue
			}
			size := ownLayoutOf(ti).size(int(ti.Shape[1]), int(ti.Shape[0]))
			t := w.qctx.NewTensor(ggml.TypeI8, size).SetName(ti.Name)
			w.byName[ti.Name] = t
		}
	})
	if err != nil {
		return fmt.Errorf("graph: %s: %w", f.Path, err)
	}
	buf, err := ggml.AllocTensors(w.qctx, b.DefaultBufferType())
	if err != nil {
		return fmt.Errorf("graph: %s: repacked weights: %w", f.Path, err)
	}
	w.qbuf = buf
	var scratch []byte
	for _, ti := range ts {
		t := w.byName[ti.Name]
		l := ownLayoutOf(ti)
		cols, rows := int(ti.Shape[0]), int(ti.Shape[1])
		src := int(ti.Size()) // of the head rows for a split matrix
		d, err := f.TensorData(ti.Name)
		if err == nil && len(d) < src {
			err = fmt.Errorf("holds %d bytes, want at least %d", len(d), src)
		}
		if err != nil {
			return fmt.Errorf("graph: %s: tensor %q: %w", f.Path, ti.Name, err)
		}
		size := l.size(rows, cols)
		// Repack straight into the CPU buffer; through a scratch copy only if it were not host memory.
		p, host := t.HostBytes()
		if !host {
			if cap(scratch) < size {
				scratch = make([]byte, size)
			}
			p = scratch[:size]
		}
		if err := l.repack(p, d[:src], rows, cols); err != nil {
			return fmt.Errorf("graph: %s: tensor %q: %w", f.Path, ti.Name, err)
		}
		if !host {
			if err := t.SetBytes(p); err != nil {
				return fmt.Errorf("graph: %s: tensor %q: %w", f.Path, ti.Name, err)
			}
		}
		if f.Mapped() {
			releasePages(d[:src])
		}
		ownWeights.Store(t, ownWeight{cols: cols, rows: rows, layout: l})
		w.own = append(w.own, t)
	}
	for _, fg := range w.fused {
		fusedWeights.Store(fg.members[0], fg)
	}
	buf.SetWeightsUsage()
	return nil
}

// Matrices that read the same input (a layer's q, k and v projections; its gate and up projections) are stacked
// into one tensor when they take the same layout and width: one product per group instead of one per matrix, so
// fewer ops, barriers and restarts of the memory stream per token. The members stay usable one by one (views).

// fusedSets are the member names of a group, as suffixes of "blk.N.", and the group's name suffix.
var fusedSets = []struct {
	name    string
	members []string
}{
	{"attn_qkv", []string{"attn_q.weight", "attn_k.weight", "attn_v.weight"}},
	{"ffn_gate_up", []string{"ffn_gate.weight", "ffn_up.weight"}},
}

// fusedGroup is one group to stack: its tensors in order and their layout.
type fusedGroup struct {
	name    string
	members []gguf.TensorInfo
	layout  *ownLayout
}

// fusedGroupsOf finds the groups among the matrices ts (those taking this project's layouts): every member present,
// whole (not split), in one layout, with the same number of columns.
func fusedGroupsOf(ts []gguf.TensorInfo) []fusedGroup {
	byName := map[string]gguf.TensorInfo{}
	for _, ti := range ts {
		byName[ti.Name] = ti
	}
	var out []fusedGroup
	for _, ti := range ts {
		prefix, ok := blockPrefix(ti.Name)
		if !ok {
			continue
		}
		for _, set := range fusedSets {
			if ti.Name != prefix+set.members[0] {
				continue
			}
			g := fusedGroup{name: prefix + set.name, layout: ownLayoutOf(ti)}
			for _, m := range set.members {
				mi, ok := byName[prefix+m]
				if !ok || ownLayoutOf(mi) != g.layout || len(mi.Shape) != 2 || mi.Shape[0] != ti.Shape[0] {
					g.layout = nil
					break
				}
				g.members = append(g.members, mi)
			}
			if g.layout != nil {
				out = append(out, g)
			}
		}
	}
	return out
}

// blockPrefix returns "blk.N." for a tensor of decoder layer N.
func blockPrefix(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "blk.")
	if !ok {
		return "", false
	}
	i := strings.IndexByte(rest, '.')
	if i <= 0 {
		return "", false
	}
	if _, err := strconv.Atoi(rest[:i]); err != nil {
		return "", false
	}
	return name[:4+i+1], true
}

// fusedWeight is a stacked group as loaded: the whole tensor, its members (views, in order), their rows.
type fusedWeight struct {
	parent  ggml.Tensor
	members []ggml.Tensor
	rows    []int
	total   int
	layout  *ownLayout
}

// fusedWeights maps a group's first member to its fusedWeight.
var fusedWeights sync.Map // ggml.Tensor → fusedWeight

// maxFused is the most members a stacked group has (fusedSets).
const maxFused = 3

// fusedProduct multiplies x by the stacked matrices of ls when they form one loaded group, in order and without
// biases or split tails, and returns the member products as views of one result ([rows_i, n] each, rows strided by
// the stacked width; ys[i] for i < len(ls)); ok is false otherwise. It allocates no Go memory (decode steps).
func fusedProduct(ctx *ggml.Context, x ggml.Tensor, ls ...Linear) (ys [maxFused]ggml.Tensor, ok bool) {
	if len(ls) == 0 || len(ls) > maxFused {
		return ys, false
	}
	v, found := fusedWeights.Load(ls[0].Weight)
	if !found {
		return ys, false
	}
	fg := v.(fusedWeight)
	if len(fg.members) != len(ls) || x.Ne(2) != 1 || x.Ne(3) != 1 {
		return ys, false
	}
	for i, l := range ls {
		if l.Weight != fg.members[i] || !l.Bias.IsNil() || !l.Tail.IsNil() {
			return ys, false
		}
	}
	if !x.IsContiguous() {
		x = x.Cont(ctx)
	}
	y := fg.layout.mulMat(fg.parent, ctx, x, fg.total) // [total, n…]
	off := 0
	for i, r := range fg.rows {
		ys[i] = y.View(ctx, off*4, []int{r, y.Ne(1)}, []int{y.Nb(1)})
		off += r
	}
	return ys, true
}
