//go:build cgo

package synth_test

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/idefics2-go/idefics2/graph"
)

// TestLoadTiny loads the converted synthetic pair with the runtime, checks the hyper-parameters it
// reads against the preset, and runs the decoder and the image encoder once (finite outputs).
// Needs the cgo environment of `make env`.
func TestLoadTiny(t *testing.T) {
	textPath, mmprojPath, cfg := convertTiny(t)
	m, err := graph.Load(textPath, mmprojPath, graph.Options{Device: "cpu", Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"text layers", m.Text.Layers, cfg.Text.NumLayers},
		{"text hidden", m.Text.Hidden, cfg.Text.HiddenSize},
		{"text kv heads", m.Text.KVHeads, cfg.Text.NumKVHeads},
		{"vocab", m.Text.VocabSize, cfg.Text.VocabSize},
		{"vision layers", m.Vision.Layers, cfg.Vision.NumLayers},
		{"vision hidden", m.Vision.Hidden, cfg.Vision.HiddenSize},
		{"latents", m.Connector.Latents, cfg.Perceiver.NumLatents},
		{"perceiver depth", m.Connector.Depth, cfg.Perceiver.Depth},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d", c.name, c.got, c.want)
		}
	}
	if !m.HasVision {
		t.Fatal("no vision model loaded")
	}

	s, err := m.NewSequence(16)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	logits, err := s.Eval(context.Background(), []int32{1, 415, 2936}, nil, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkFinite(t, "logits", logits, cfg.Text.VocabSize)

	// One image of the preset's full size through the vision tower, the connector and the
	// perceiver.
	r := rand.New(rand.NewPCG(1, 2))
	side := cfg.Vision.ImageSize
	in := graph.ImageInput{Pixels: make([]float32, 3*side*side), H: side, W: side, RealH: side, RealW: side}
	for i := range in.Pixels {
		in.Pixels[i] = float32(2*r.Float64() - 1)
	}
	feats, err := m.EncodeImage(in, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkFinite(t, "image features", feats.Embeddings, cfg.ImageSeqLen*cfg.Text.HiddenSize)
}

func checkFinite(t *testing.T, what string, v []float32, n int) {
	t.Helper()
	if len(v) != n {
		t.Fatalf("%s: %d values, want %d", what, len(v), n)
	}
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			t.Fatalf("%s: value %d is %v", what, i, x)
		}
	}
}
