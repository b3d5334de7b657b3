package graph

import (
	"bytes"
	"context"
	"fmt"
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
		fused       []string // stacked groups (attn_qkv, ffn_gate_up)
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
		for _, fg := range m.tw.fused {
			r.fused = append(r.fused, fg.parent.Name())
		}
		checkStepWeights(t, m)
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
			if c.own && c.want {
				// Every layer's gate and up take one layout, so they are stacked; q, k and v too where v is not Q6_K.
				gateUp := 0
				for _, name := range r.fused {
					if strings.HasSuffix(name, ".ffn_gate_up") {
						gateUp++
					}
				}
				if gateUp == 0 {
					t.Fatalf("no gate and up projections stacked (groups %v)", r.fused)
				}
			}
			if !c.own && len(r.fused) != 0 {
				t.Fatalf("groups stacked with this project's layouts off: %v", r.fused)
			}
			t.Logf("%d tensors repacked on %s (own layouts %v; output.weight split: %v; stacked %v)", r.packed, d.Variant, r.layouts, r.split, r.fused)
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
	b := testBackend(t)
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
				if (own && !ggml.Q4X16Fast()) || (!own && (len(b.ExtraBufferTypes()) == 0 || b.Device.Features["AVX2"] != "1")) {
					t.Logf("no repacked layout on %s: nothing is split", b.Device.Variant)
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
	for _, t := range w.nf4 {
		if v, ok := nf4Weights.Load(t); ok {
			if v.(nf4Info).repacked {
				repacked++
			} else {
				stream++
			}
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
	run := func(noRepack bool) result {
		m, err := Load(textPath, mmPath, Options{Device: "cpu", Threads: 2, NoRepack: noRepack})
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
		if v, ok := nf4Weights.Load(m.decoder.Output.Weight); !ok || v.(nf4Info).repacked {
			t.Fatalf("output.weight (32003 rows, not a multiple of 16) is not an NF4 stream (registered %v)", ok)
		}
		// Parameters count NF4 matrices by their logical shapes: the model's own sizes.
		o := m.Text
		perLayer := 2*o.Hidden + 2*o.Hidden*o.Heads*o.HeadDim + 2*o.Hidden*o.KVHeads*o.HeadDim + 3*o.Hidden*o.FFN
		if got, want := m.TextParams(), int64(o.Layers*perLayer+o.Hidden+2*o.Hidden*o.VocabSize); got != want {
			t.Fatalf("TextParams %d, want %d", got, want)
		}
		checkStepWeights(t, m)
		s, err := m.NewSession(len(ids) + 1)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		// All the prompt's logits, then one step (Eval's last-token slice is a scratch buffer: cloned).
		if res.prompt, err = s.Eval(ids, nil, true); err != nil {
			t.Fatal(err)
		}
		step, err := s.Eval([]int32{argmax(res.prompt[len(res.prompt)-m.Text.VocabSize:])}, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		res.step = slices.Clone(step)
		feats, err := m.EncodeImage(img, false)
		if err != nil {
			t.Fatal(err)
		}
		res.image = feats.Embeddings
		return res
	}
	stream := run(true)
	packed := run(false)
	if stream.repacked != 0 {
		t.Fatalf("%d tensors repacked with repacking off", stream.repacked)
	}
	if !ggml.NF4x16Fast() {
		if packed.repacked != 0 {
			t.Fatalf("%d tensors repacked without the VNNI path", packed.repacked)
		}
		t.Logf("NF4 path %s has no AVX-512 VNNI: nothing repacked, both loads use the stream kernel", ggml.NF4CurrentISA())
	} else if packed.repacked == 0 {
		t.Fatal("the CPU has AVX-512 VNNI but no NF4 tensor was repacked")
	}
	t.Logf("repacking on: %d NF4 tensors in nf4x16, %d streams; off: %d streams", packed.repacked, packed.stream, stream.stream)
	checkClose(t, "nf4x16 vs stream prompt logits", packed.prompt, stream.prompt, tolNF4x16Logits)
	checkClose(t, "nf4x16 vs stream step logits", packed.step, stream.step, tolNF4x16Logits)
	checkClose(t, "nf4x16 vs stream image features", packed.image, stream.image, tolNF4x16Logits)
}

func TestNF4x16Ready(t *testing.T) {
	fast := ggml.NF4x16Fast()
	cases := []struct {
		name string
		info nf4Info
		want bool
	}{
		{"128 cols × 32 rows", nf4Info{shape: []int{128, 32}, blockSize: 64}, fast},
		{"4096 × 4096 in blocks of 4096", nf4Info{shape: []int{4096, 4096}, blockSize: 4096}, fast},
		{"rows not a multiple of 16", nf4Info{shape: []int{4096, 32003}, blockSize: 64}, false},
		{"cols not a multiple of 64", nf4Info{shape: []int{4304, 1152}, blockSize: 64}, false},
		{"blocks straddle rows", nf4Info{shape: []int{64, 32}, blockSize: 128}, false},
		{"one dimension", nf4Info{shape: []int{4096}, blockSize: 64}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := nf4x16Ready(c.info); got != c.want {
				t.Fatalf("nf4x16Ready(%v) = %v, want %v (VNNI path: %v)", c.info.shape, got, c.want, fast)
			}
		})
	}
}
