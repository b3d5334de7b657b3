package graph

import (
	"fmt"
	"sync"

	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/gguf"
)

// Q4_0 matrices on a CPU with AVX-512 VNNI take this project's q4x16 layout (ggml/q4x16.h) instead of ggml's
// repacked one: 16 rows interleaved so that one VNNI instruction computes 16 rows' partial sums, several times
// fewer instructions per weight than ggml's AVX2 kernel for Q4_0, which is compute-bound on two cores.

// q4x16Weights maps weight tensors held in the q4x16 layout (I8 tensors) to their logical shape [cols, rows].
var q4x16Weights sync.Map // ggml.Tensor → [2]int

// useQ4X16 can be turned off by tests and benchmarks to compare with ggml's repacked Q4_0 (UseQ4X16).
var useQ4X16 = true

// UseQ4X16 turns the q4x16 layout on or off for weights loaded from now on (on by default; where the CPU lacks
// AVX-512 VNNI it is never used) and returns the previous setting. With it off, Q4_0 matrices take ggml's
// repacked layout as before. For comparisons; not safe to call while models load.
func UseQ4X16(on bool) bool {
	old := useQ4X16
	useQ4X16 = on
	return old
}

// q4x16Able reports whether a tensor takes the q4x16 layout on this CPU: a Q4_0 matrix used only by matrix
// products whose rows (outputs) are a multiple of 16.
func q4x16Able(ti gguf.TensorInfo) bool {
	if !useQ4X16 || !ggml.Q4X16Fast() || ggml.Type(ti.Type) != ggml.TypeQ4_0 || len(ti.Shape) != 2 {
		return false
	}
	switch ti.Name {
	case "token_embd.weight", "v.patch_embd.weight", "v.position_embd.weight", "mm.perceiver.latents":
		return false
	}
	return ggml.Q4X16Eligible(int(ti.Shape[1]), int(ti.Shape[0]))
}

// q4x16SplitRows is splitRows for the q4x16 layout: the output projection keeps its last rows%16 rows (3 of
// Idefics2's 32003) in the file layout so that the rest can be repacked. 0: none.
func q4x16SplitRows(ti gguf.TensorInfo) int {
	if ti.Name != "output.weight" || len(ti.Shape) != 2 || ti.Shape[1]%16 == 0 || ti.Shape[1] < 16 {
		return 0
	}
	head := ti
	head.Name = "output.weight.head"
	head.Shape = []uint64{ti.Shape[0], ti.Shape[1] - ti.Shape[1]%16}
	if !q4x16Able(head) {
		return 0
	}
	return int(ti.Shape[1] % 16)
}

// loadQ4X16 reads the Q4_0 matrices ts (for a split matrix, its head rows: ts[i].Shape gives the rows to take)
// into I8 tensors of the q4x16 layout on the CPU backend b, and drops their pages from the file mapping.
func (w *Weights) loadQ4X16(f *gguf.File, ts []gguf.TensorInfo, b *ggml.Backend) error {
	w.qctx = ggml.NewContext(len(ts)+1, 0)
	err := ggml.Catch(func() {
		for _, ti := range ts {
			size := int(ti.Shape[0]) * int(ti.Shape[1]) / 32 * 18
			t := w.qctx.NewTensor(ggml.TypeI8, size).SetName(ti.Name)
			w.byName[ti.Name] = t
		}
	})
	if err != nil {
		return fmt.Errorf("graph: %s: %w", f.Path, err)
	}
	buf, err := ggml.AllocTensors(w.qctx, b.DefaultBufferType())
	if err != nil {
		return fmt.Errorf("graph: %s: q4x16 weights: %w", f.Path, err)
	}
	w.qbuf = buf
	var scratch []byte
	for _, ti := range ts {
		t := w.byName[ti.Name]
		cols, rows := int(ti.Shape[0]), int(ti.Shape[1])
		size := cols * rows / 32 * 18
		d, err := f.TensorData(ti.Name)
		if err == nil && len(d) < size {
			err = fmt.Errorf("holds %d bytes, want at least %d", len(d), size)
		}
		if err != nil {
			return fmt.Errorf("graph: %s: tensor %q: %w", f.Path, ti.Name, err)
		}
		if cap(scratch) < size {
			scratch = make([]byte, size)
		}
		p := scratch[:size]
		if err := ggml.Q4X16Repack(p, d[:size], rows, cols); err != nil {
			return fmt.Errorf("graph: %s: tensor %q: %w", f.Path, ti.Name, err)
		}
		if err := t.SetBytes(p); err != nil {
			return fmt.Errorf("graph: %s: tensor %q: %w", f.Path, ti.Name, err)
		}
		releasePages(d[:size])
		q4x16Weights.Store(t, [2]int{cols, rows})
		w.q4 = append(w.q4, t)
	}
	buf.SetWeightsUsage()
	return nil
}
