package graph

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/gguf"
)

// tolRepack: the repacked kernels (ggml's and this project's) quantize activations as the plain dot products do
// (Q8_0 for Q4_0, Q8_K for Q4_K), and sum in another order; all read the same weights.
const tolRepack = 2e-3

// repackFile is a quantized file whose repacked layouts are compared with the plain one: the p1 fixture in Q4_0,
// and a checkpoint wide enough for Q4_K (wideCheckpoint) in Q4_K alone and in the Q4_K_M mix (some Q6_K matrices
// and a Q6_K output projection, which only this project's q6kx16 layout repacks).
type repackFile struct {
	typ      string
	ckpt     func(t *testing.T) string
	own      []string // this project's layouts for the file's matrix types, each taken by some tensor
	split    bool     // with ggml's layouts, output.weight (32003 rows) is split into a repacked head and a plain tail
	ownSplit bool     // the same with this project's layouts
}

var repackFiles = []repackFile{
	{"q4_0", func(*testing.T) string { return filepath.Join("..", "testdata", "hf", "checkpoints", "p1") }, []string{"q4x16"}, true, true},
	{"q4_k", wideCheckpoint, []string{"q4kx16"}, true, true},
	{"q4_k_m", wideCheckpoint, []string{"q4kx16", "q6kx16"}, false, true},
}

// TestRepackedWeightsSameLogits loads quantized files with and without the CPU's repacked layouts and compares the
// prompt logits: ggml's row-interleaved layouts (offered by CPU variants built with them) and this project's q4x16,
// q4kx16 and q6kx16 layouts (CPUs with AVX-512 VNNI). The test says which ran instead of passing vacuously.
func TestRepackedWeightsSameLogits(t *testing.T) {
	for _, rf := range repackFiles {
		t.Run(rf.typ, func(t *testing.T) { testRepackedSameLogits(t, rf) })
	}
}

func testRepackedSameLogits(t *testing.T, rf repackFile) {
	textPath, _ := fixtureModel(t, rf.ckpt(t), rf.typ)
	ids := []int32{1, 415, 2936, 9060, 285, 1142, 28705, 13, 7226, 11143, 28747}
	type result struct {
		logits      []float32
		packed, own int
		layouts     map[string]int // tensors per own layout
		split       bool
	}
	run := func(noRepack, own bool) result {
		defer UseQ4X16(UseQ4X16(own))
		m, err := Load(textPath, "", Options{Device: "cpu", Threads: 2, NoRepack: noRepack})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		var r result
		r.packed = len(m.tw.byName) - countPlain(m.tw)
		r.own = len(m.tw.own)
		r.layouts = map[string]int{}
		for _, t := range m.tw.own {
			if v, ok := ownWeights.Load(t); ok {
				r.layouts[v.(ownWeight).layout.name]++
			}
		}
		// output.weight has 32003 rows: its first 32000 are repacked, the last 3 stay plain.
		r.split = !m.decoder.Output.Tail.IsNil()
		s, err := m.NewSession(len(ids))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if r.logits, err = s.Eval(ids, nil, true); err != nil {
			t.Fatal(err)
		}
		return r
	}
	plain := run(true, false)
	if plain.packed != 0 {
		t.Fatalf("%d tensors repacked with repacking off", plain.packed)
	}
	d, _ := SelectDeviceForTest()
	for _, c := range []struct {
		name  string
		own   bool
		want  bool // the layout is available on this CPU
		split bool
	}{
		{"ggml", false, d.Features["REPACK"] == "1" && d.Features["AVX2"] == "1", rf.split},
		{strings.Join(rf.own, "+"), true, ggml.Q4X16Fast(), rf.ownSplit},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := run(false, c.own)
			switch {
			case c.want && r.packed == 0:
				t.Fatal("the CPU offers the layout but no tensor was repacked")
			case !c.own && r.own != 0:
				t.Fatalf("%d tensors took this project's layouts (%v) while they were off", r.own, r.layouts)
			case r.packed > 0 && r.split != c.split:
				t.Fatalf("output.weight (32003 rows) split into a repacked head and a plain tail: %v, want %v", r.split, c.split)
			}
			if c.own && c.want {
				for _, l := range rf.own {
					if r.layouts[l] == 0 {
						t.Fatalf("no tensor took the %s layout (%v)", l, r.layouts)
					}
				}
			}
			t.Logf("%d tensors repacked on %s (own layouts %v; output.weight split: %v)", r.packed, d.Variant, r.layouts, r.split)
			checkClose(t, "repacked vs plain logits", r.logits, plain.logits, tolRepack)
		})
	}
}

func countPlain(w *Weights) int {
	n := 0
	for _, ti := range w.file.Tensors {
		if _, ok := w.byName[ti.Name]; ok && w.isPlain(ti.Name) {
			n++
		}
	}
	return n
}

func TestWeightTypeOK(t *testing.T) {
	cases := []struct {
		typ  ggml.Type
		dims int
		ok   bool
	}{
		{ggml.TypeF32, 1, true}, {ggml.TypeF16, 1, false}, {ggml.TypeI32, 1, false}, {ggml.TypeI8, 1, false},
		{ggml.TypeF16, 2, true}, {ggml.TypeBF16, 2, true}, {ggml.TypeQ4_0, 2, true}, {ggml.TypeQ6_K, 2, true},
		{ggml.TypeI32, 2, false}, {ggml.TypeF64, 2, false}, {ggml.TypeQ4_0, 1, false}, {ggml.TypeF16, 4, true},
	}
	for _, c := range cases {
		if got := weightTypeOK(c.typ, c.dims); got != c.ok {
			t.Errorf("weightTypeOK(%s, %d) = %v, want %v", c.typ, c.dims, got, c.ok)
		}
	}
}

// TestSplitTailWithoutMapping loads Q4_0, Q4_K and Q4_K_M files through a reader (no memory map: the
// read-on-demand path) with repacking and checks that output.weight's plain tail holds the file's last rows.
func TestSplitTailWithoutMapping(t *testing.T) {
	for _, rf := range repackFiles {
		if rf.split || rf.ownSplit {
			t.Run(rf.typ, func(t *testing.T) { testSplitTailWithoutMapping(t, rf) })
		}
	}
}

func testSplitTailWithoutMapping(t *testing.T, rf repackFile) {
	textPath, _ := fixtureModel(t, rf.ckpt(t), rf.typ)
	fh, err := os.Open(textPath)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Read(fh, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	dev, err := SelectDeviceForTest()
	if err != nil {
		t.Fatal(err)
	}
	b, err := ggml.NewBackend(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, own := range []bool{false, true} {
		t.Run(fmt.Sprintf("%s=%v", strings.Join(rf.own, "+"), own), func(t *testing.T) {
			defer UseQ4X16(UseQ4X16(own))
			w, err := LoadWeights(f, b, true)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			tail := w.Tail("output.weight")
			if split := (own && rf.ownSplit) || (!own && rf.split); !split {
				if !tail.IsNil() {
					t.Fatal("output.weight was split, want it whole")
				}
				return
			}
			if tail.IsNil() {
				if (own && !ggml.Q4X16Fast()) || (!own && (len(b.ExtraBufferTypes()) == 0 || dev.Features["AVX2"] != "1")) {
					t.Logf("no repacked layout on %s: nothing is split", dev.Variant)
					return
				}
				t.Fatal("output.weight (32003 rows) has no tail")
			}
			want, err := f.TensorData("output.weight")
			if err != nil {
				t.Fatal(err)
			}
			got, err := tail.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			if tail.Ne(1) != 3 || !bytes.Equal(got, want[len(want)-len(got):]) {
				t.Fatalf("tail of %d rows does not hold the file's last rows", tail.Ne(1))
			}
		})
	}
}
