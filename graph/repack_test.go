package graph

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/convert"
	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/synth"
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
	own      []Layout // this project's layouts for the file's matrix types, each taken by some tensor
	ownCaps  Caps     // a CPU with any of these runs them (the placement plan's rows for the file's types; CapX16NEON only under LayoutsX16)
	split    bool     // with ggml's layouts, output.weight (32003 rows) is split into a repacked head and a plain tail
	ownSplit bool     // the same with this project's layouts
}

// x16Caps are the capabilities under which this project's q4x16, q4kx16 and q6kx16 layouts are placed.
const x16Caps = CapX16VNNI | CapX16AVX2 | CapX16NEON

var repackFiles = []repackFile{
	{"q4_0", func(*testing.T) string { return filepath.Join("..", "testdata", "hf", "checkpoints", "p1") }, []Layout{LayoutQ4X16}, x16Caps, true, true},
	{"q4_k", wideCheckpoint, []Layout{LayoutQ4KX16}, x16Caps, true, true},
	{"q4_k_m", wideCheckpoint, []Layout{LayoutQ4KX16, LayoutQ6KX16}, x16Caps, false, true},
}

// ownTaken reports whether policy p puts rf's matrices in this project's layouts on a target with caps: LayoutsBest
// where a measured path of their kernels runs, LayoutsX16 also where the NEON path does.
func (rf repackFile) ownTaken(p LayoutPolicy, caps Caps) bool {
	return (p == LayoutsBest && caps&rf.ownCaps&^CapX16NEON != 0) || (p == LayoutsX16 && caps&rf.ownCaps != 0)
}

// TestRepackedWeightsSameLogits loads quantized files with every layout policy and compares the prompt logits with
// those of the file's layout: ggml's row-interleaved layouts (CPU variants built with them) and this project's q4x16,
// q4kx16 and q6kx16 layouts (CPUs with AVX2 or AVX-512 VNNI; with NEON dot products under LayoutsX16). What each load must take is what this CPU's capabilities
// (Model.Target) allow, so the test checks the path this CPU takes and says which it was.
func TestRepackedWeightsSameLogits(t *testing.T) {
	for _, rf := range repackFiles {
		t.Run(rf.typ, func(t *testing.T) { testRepackedSameLogits(t, rf) })
	}
}

// loadResult is what one load placed, and its logits.
type loadResult struct {
	logits  []float32
	target  Target
	packed  int            // weights not in the file's layout
	layouts map[Layout]int // weights per layout
	split   bool           // output.weight has a plain tail
	groups  []string       // stacked groups
}

func loadPlaced(t *testing.T, textPath string, p LayoutPolicy, ids []int32) loadResult {
	t.Helper()
	m, err := Load(textPath, "", Options{Device: "cpu", Threads: 2, Layouts: p})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	checkFollowsPlan(t, m.tw)
	r := loadResult{target: m.Target, layouts: map[Layout]int{}}
	plan, _ := m.Plans()
	for _, pl := range plan.Weights {
		if pl.Kernel != KernelNone {
			r.layouts[pl.Layout]++
			if pl.Layout != LayoutFile {
				r.packed++
			}
		}
	}
	r.split = !m.decoder.Output.Tail.IsNil()
	for _, g := range plan.Groups {
		r.groups = append(r.groups, g.Name)
	}
	checkStepWeights(t, m)
	s, err := m.NewSequence(len(ids))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if r.logits, err = s.Eval(context.Background(), ids, nil, true, nil); err != nil {
		t.Fatal(err)
	}
	return r
}

// checkFollowsPlan checks that every loaded tensor has its placement's type and stored size, and that split
// matrices have their tails.
func checkFollowsPlan(t *testing.T, w *Weights) {
	t.Helper()
	for name, pl := range w.plan.Weights {
		tn := w.tensors[name]
		if tn.Type() != pl.Type {
			t.Fatalf("%s: placed as %s, want %s (%s)", name, tn.Type(), pl.Type, pl.Layout)
		}
		if got, want := tn.Ne4(), storedShape(pl); got[0] != want[0] {
			t.Fatalf("%s: stored shape %v, want %v (%s)", name, got, want, pl.Layout)
		}
		if tail := w.Tail(name); tail.IsNil() != (pl.TailRows == 0) || (!tail.IsNil() && tail.Ne(1) != pl.TailRows) {
			t.Fatalf("%s: tail %v, want %d rows", name, !tail.IsNil(), pl.TailRows)
		}
	}
}

func testRepackedSameLogits(t *testing.T, rf repackFile) {
	textPath, _ := fixtureModel(t, rf.ckpt(t), rf.typ)
	ids := []int32{1, 415, 2936, 9060, 285, 1142, 28705, 13, 7226, 11143, 28747}
	plain := loadPlaced(t, textPath, LayoutsFile, ids)
	if plain.packed != 0 {
		t.Fatalf("%d tensors repacked with the file's layouts asked for", plain.packed)
	}
	caps := plain.target.Caps
	for _, p := range []LayoutPolicy{LayoutsGGML, LayoutsBest, LayoutsX16} {
		t.Run(p.String(), func(t *testing.T) {
			r := loadPlaced(t, textPath, p, ids)
			own := rf.ownTaken(p, caps)
			ggmlOnly := !own && caps&CapGGMLRepack != 0
			var wantSplit bool
			switch {
			case own:
				for _, l := range rf.own {
					if r.layouts[l] == 0 {
						t.Fatalf("the CPU runs %s but no tensor took it (%v)", l, r.layouts)
					}
				}
				if !slices.ContainsFunc(r.groups, func(g string) bool { return strings.HasSuffix(g, ".ffn_gate_up") }) {
					t.Fatalf("no gate and up projections stacked (groups %v)", r.groups)
				}
				wantSplit = rf.ownSplit
			case ggmlOnly:
				if r.layouts[LayoutGGMLRepack] == 0 {
					t.Fatal("the CPU offers ggml's repacked layout but no tensor took it")
				}
				wantSplit = rf.split
			}
			for _, l := range []Layout{LayoutQ4X16, LayoutQ4KX16, LayoutQ6KX16} {
				if !own && r.layouts[l] != 0 {
					t.Fatalf("%d tensors took %s, which this policy or CPU (%s) excludes", r.layouts[l], l, caps)
				}
			}
			if !own && len(r.groups) != 0 {
				t.Fatalf("groups stacked without this project's layouts: %v", r.groups)
			}
			if !own && !ggmlOnly && r.packed != 0 {
				t.Fatalf("%d tensors repacked on a CPU with no repacked layout (%s)", r.packed, caps)
			}
			if r.split != wantSplit {
				t.Fatalf("output.weight (32003 rows) split into a repacked head and a plain tail: %v, want %v", r.split, wantSplit)
			}
			t.Logf("capabilities %s: %d tensors repacked (%v; output.weight split: %v; stacked %v)", caps, r.packed, r.layouts, r.split, r.groups)
			checkClose(t, "repacked vs plain logits", r.logits, plain.logits, tolRepack)
		})
	}
}

// checkStepWeights checks that Model.StepWeights covers the bytes of every tensor a decoding step reads (all but the
// token embeddings of a file with an output projection), in whatever layout they were loaded.
func checkStepWeights(t *testing.T, m *Model) {
	t.Helper()
	regions, ok := m.StepWeights()
	if !ok {
		t.Fatal("StepWeights: weights not in CPU memory on the CPU backend")
	}
	want := int64(0)
	tied := true
	for _, ti := range m.TextFile.Tensors {
		if ti.Name == "output.weight" {
			tied = false
		}
	}
	for _, ti := range m.TextFile.Tensors {
		if ti.Name != "token_embd.weight" || tied {
			want += int64(ti.Size())
		}
	}
	if got := m.StepFileBytes(); got != want {
		t.Fatalf("StepFileBytes %d, want %d", got, want)
	}
	got := int64(0)
	for _, r := range regions {
		got += int64(len(r))
	}
	// This project's layouts may be a little larger than the file's blocks (q4kx16: +2.8%, unpacked scales).
	if got < want || got > want+want/20 {
		t.Fatalf("StepWeights: %d regions of %d bytes, want the %d bytes of the step's tensors", len(regions), got, want)
	}
	if _, sum, err := ggml.StreamRead(regions, 2); err != nil || (sum == 0 && got > 0) {
		t.Fatalf("StreamRead over the step's weights: sum %#x, %v", sum, err)
	}
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
	b := testBackend(t)
	target := targetOf(b)
	for _, p := range []LayoutPolicy{LayoutsGGML, LayoutsBest, LayoutsX16} {
		t.Run(p.String(), func(t *testing.T) {
			w, err := LoadWeights(f, b, target, p)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			checkFollowsPlan(t, w)
			tail := w.Tail("output.weight")
			own := rf.ownTaken(p, target.Caps)
			ggmlOnly := !own && target.Caps&CapGGMLRepack != 0
			if split := (own && rf.ownSplit) || (ggmlOnly && rf.split); !split {
				if !tail.IsNil() {
					t.Fatal("output.weight was split, want it whole")
				}
				t.Logf("capabilities %s, policy %s: output.weight whole", target.Caps, p)
				return
			}
			if tail.IsNil() {
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

// nf4SynthModel writes a synthetic checkpoint whose matrices take the nf4x16 layout (widths that are multiples of 64
// and 16; only output.weight, 32003 rows, does not) and converts it to an NF4 pair.
func nf4SynthModel(t *testing.T) (textPath, mmPath string) {
	t.Helper()
	cfg, err := synth.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Text.HiddenSize, cfg.Text.IntermediateSize = 128, 256
	cfg.Text.NumHeads, cfg.Text.NumKVHeads, cfg.Text.HeadDim = 4, 2, 32
	cfg.Vision.HiddenSize, cfg.Vision.IntermediateSize = 64, 128
	cfg.Perceiver.HeadDim = 32
	root := t.TempDir()
	dir := filepath.Join(root, "ckpt")
	if err := synth.WriteCheckpoint(context.Background(), dir, cfg, 11, nil); err != nil {
		t.Fatal(err)
	}
	textPath = filepath.Join(root, "nf4.gguf")
	plan, err := convert.NewPlan(convert.Options{InDir: dir, Out: textPath, Type: "nf4", VisionType: "nf4"})
	if err != nil {
		t.Fatal(err)
	}
	defer plan.Close()
	if err := plan.Run(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	return textPath, plan.MMProj.Path
}

// nf4Repacked counts the weights of w held in the nf4x16 layout and in the stream layout.
func nf4Repacked(w *Weights) (repacked, stream int) {
	for _, pl := range w.plan.Weights {
		switch pl.Layout {
		case LayoutNF4X16:
			repacked++
		case LayoutNF4Stream:
			stream++
		}
	}
	return repacked, stream
}

// tolNF4x16Logits bounds the logits and image features of the nf4x16 path against the stream path (which computes
// the dequantized NF4 matrices' products to float32 rounding), as max |a−b| / max |b|. The nf4x16 kernel rounds
// the codebook to 1/127 of absmax and the activations to int8 per 64 values, about 0.8% of each product's norm
// (ggml/nf4x16_test.go); over the products of this synthetic model (2 decoder layers; 2 vision layers, connector
// and 2 perceiver layers) that measures 1.6e-2 on the prompt's logits (14 tokens, the multi-vector kernel),
// 1.5e-2 on a generation step's and 2.0e-2 on the image features. A wrong layout, scale or sign gives errors of
// order 1.
const tolNF4x16Logits = 4e-2

// TestNF4RepackedSameLogits loads an NF4 pair with repacking on (matrices in the nf4x16 layout, int8 kernel) and
// off (the F32 stream kernel) and compares the logits of every prompt position, of a generation step and the
// image features. Where the
// CPU lacks AVX-512 VNNI nothing is repacked, and the test says so.
func TestNF4RepackedSameLogits(t *testing.T) {
	textPath, mmPath := nf4SynthModel(t)
	ids := []int32{1, 415, 2936, 9060, 285, 1142, 28705, 13, 7226, 11143, 28747, 12, 18, 33}
	side := 56
	r := rand.New(rand.NewPCG(3, 4))
	img := ImageInput{Pixels: make([]float32, 3*side*side), H: side, W: side, RealH: side, RealW: side}
	for i := range img.Pixels {
		img.Pixels[i] = float32(2*r.Float64() - 1)
	}
	type result struct {
		prompt, step, image []float32
		repacked, stream    int
	}
	run := func(p LayoutPolicy) result {
		m, err := Load(textPath, mmPath, Options{Device: "cpu", Threads: 2, Layouts: p})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		var res result
		for _, w := range []*Weights{m.tw, m.vw} {
			p, s := nf4Repacked(w)
			res.repacked += p
			res.stream += s
		}
		checkFollowsPlan(t, m.tw)
		checkFollowsPlan(t, m.vw)
		if l := m.decoder.Output; l.kernel != KernelNF4 {
			t.Fatalf("output.weight (32003 rows, not a multiple of 16) is multiplied by %s, want the NF4 stream kernel", l.kernel)
		}
		// Parameters count NF4 matrices by their logical shapes: the model's own sizes.
		o := m.Text
		perLayer := 2*o.Hidden + 2*o.Hidden*o.Heads*o.HeadDim + 2*o.Hidden*o.KVHeads*o.HeadDim + 3*o.Hidden*o.FFN
		if got, want := m.TextParams(), int64(o.Layers*perLayer+o.Hidden+2*o.Hidden*o.VocabSize); got != want {
			t.Fatalf("TextParams %d, want %d", got, want)
		}
		checkStepWeights(t, m)
		s, err := m.NewSequence(len(ids) + 1)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		// All the prompt's logits, then one step (Eval's last-token slice is a scratch buffer: cloned).
		if res.prompt, err = s.Eval(context.Background(), ids, nil, true, nil); err != nil {
			t.Fatal(err)
		}
		step, err := s.Eval(context.Background(), []int32{argmax(res.prompt[len(res.prompt)-m.Text.VocabSize:])}, nil, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		res.step = slices.Clone(step)
		feats, err := m.EncodeImage(img, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		res.image = feats.Embeddings
		return res
	}
	stream := run(LayoutsFile)
	if stream.repacked != 0 {
		t.Fatalf("%d tensors repacked with repacking off", stream.repacked)
	}
	caps := targetOf(testBackend(t)).Caps
	// LayoutsBest takes nf4x16 where a measured vector path of it runs; LayoutsX16 also takes its NEON path.
	for _, c := range []struct {
		policy LayoutPolicy
		caps   Caps
	}{{LayoutsBest, CapNF4X16}, {LayoutsX16, CapNF4X16 | CapNF4X16NEON}} {
		t.Run(c.policy.String(), func(t *testing.T) {
			packed := run(c.policy)
			if caps&c.caps == 0 {
				if packed.repacked != 0 {
					t.Fatalf("%d tensors repacked without an nf4x16 vector path (%s)", packed.repacked, caps)
				}
				t.Logf("NF4 path %s: nothing repacked, both loads use the stream kernel", ggml.NF4CurrentISA())
			} else if packed.repacked == 0 {
				t.Fatalf("the CPU has an nf4x16 vector path (%s) but no NF4 tensor was repacked", caps)
			}
			t.Logf("repacking on: %d NF4 tensors in nf4x16, %d streams; off: %d streams", packed.repacked, packed.stream, stream.stream)
			checkClose(t, "nf4x16 vs stream prompt logits", packed.prompt, stream.prompt, tolNF4x16Logits)
			checkClose(t, "nf4x16 vs stream step logits", packed.step, stream.step, tolNF4x16Logits)
			checkClose(t, "nf4x16 vs stream image features", packed.image, stream.image, tolNF4x16Logits)
		})
	}
}
