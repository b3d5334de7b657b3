package synth_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/idefics2-go/idefics2/convert"
	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/synth"
)

// convertTiny writes the tiny preset and converts it with the real converter to an f16 GGUF
// pair, returning the text and mmproj paths.
func convertTiny(t *testing.T) (textPath, mmprojPath string, cfg synth.Config) {
	t.Helper()
	cfg, err := synth.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	dir := filepath.Join(root, "ckpt")
	if err := synth.WriteCheckpoint(context.Background(), dir, cfg, 7, nil); err != nil {
		t.Fatal(err)
	}
	textPath = filepath.Join(root, "model.gguf")
	plan, err := convert.NewPlan(convert.Options{InDir: dir, Out: textPath, Type: "f16"})
	if err != nil {
		t.Fatal(err)
	}
	defer plan.Close()
	if err := plan.Run(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	return textPath, plan.MMProj.Path, cfg
}

// TestConvertTiny checks that the converter accepts the synthetic checkpoint and maps every
// tensor: the text file holds the decoder (9 tensors per layer, embeddings, norm, output) and the
// mmproj the vision tower and connector.
func TestConvertTiny(t *testing.T) {
	textPath, mmprojPath, cfg := convertTiny(t)
	for _, tc := range []struct {
		path string
		want int
	}{
		{textPath, 9*cfg.Text.NumLayers + 3},
		// Every other HF tensor (vision tower, connector) maps to one mmproj tensor.
		{mmprojPath, len(cfg.Tensors()) - (9*cfg.Text.NumLayers + 3)},
	} {
		f, err := gguf.Open(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(f.Tensors); got != tc.want {
			t.Errorf("%s: %d tensors, want %d", filepath.Base(tc.path), got, tc.want)
		}
		f.Close()
	}
}
