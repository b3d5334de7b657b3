package graph

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/gguf"
)

// tolRepack: the repacked kernels quantize activations to Q8_0 and sum in another order than the plain Q4_0 dot
// product; both read the same weights.
const tolRepack = 2e-3

// TestRepackedWeightsSameLogits loads a Q4_0 file with and without the CPU's repacked layout and compares the
// prompt logits (the repacked buffer is only offered by CPU variants built with it; the test says so when it is
// absent instead of passing vacuously).
func TestRepackedWeightsSameLogits(t *testing.T) {
	textPath, _ := fixtureModel(t, filepath.Join("..", "testdata", "hf", "checkpoints", "p1"), "q4_0")
	ids := []int32{1, 415, 2936, 9060, 285, 1142, 28705, 13, 7226, 11143, 28747}
	split := false
	run := func(noRepack bool) ([]float32, int) {
		m, err := Load(textPath, "", Options{Device: "cpu", Threads: 2, NoRepack: noRepack})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		packed := 0
		if m.tw.pctx != nil {
			packed = len(m.tw.byName) - countPlain(m.tw)
			// output.weight has 32003 rows: its first 32000 are repacked, the last 3 stay plain (splitRows).
			split = !m.decoder.Output.Tail.IsNil()
		}
		s, err := m.NewSession(len(ids))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		l, err := s.Eval(ids, nil, true)
		if err != nil {
			t.Fatal(err)
		}
		return l, packed
	}
	plain, _ := run(true)
	packed, n := run(false)
	d, _ := SelectDeviceForTest()
	if d.Features["REPACK"] == "1" && d.Features["AVX2"] == "1" && n == 0 {
		t.Fatal("the CPU offers repacking but no tensor was repacked")
	}
	if n > 0 && !split {
		t.Fatal("output.weight (32003 rows) was not split into a repacked head and a plain tail")
	}
	t.Logf("%d tensors repacked on %s (output.weight split: %v)", n, d.Variant, split)
	checkClose(t, "repacked vs plain logits", packed, plain, tolRepack)
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

// TestSplitTailWithoutMapping loads a Q4_0 file through a reader (no memory map: the read-on-demand path) with
// repacking and checks that output.weight's plain tail holds the file's last rows.
func TestSplitTailWithoutMapping(t *testing.T) {
	textPath, _ := fixtureModel(t, filepath.Join("..", "testdata", "hf", "checkpoints", "p1"), "q4_0")
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
	w, err := LoadWeights(f, b, true)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	tail := w.Tail("output.weight")
	if tail.IsNil() {
		if len(b.ExtraBufferTypes()) == 0 || dev.Features["AVX2"] != "1" {
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
}
