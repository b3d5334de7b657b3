package graph

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/idefics2-go/idefics2/convert"
	"github.com/idefics2-go/idefics2/synth"
)

var (
	fixtureMu    sync.Mutex
	fixtureCache = map[string][2]string{}
	fixtureDir   string
)

// fixtureModel converts an HF checkpoint to a GGUF pair of type typ once per test binary and returns the paths.
func fixtureModel(t *testing.T, ckpt, typ string) (string, string) {
	t.Helper()
	fixtureMu.Lock()
	defer fixtureMu.Unlock()
	abs, err := filepath.Abs(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	key := abs + "|" + typ
	if p, ok := fixtureCache[key]; ok {
		return p[0], p[1]
	}
	if fixtureDir == "" {
		fixtureDir = mustTempDir(t)
	}
	out := filepath.Join(fixtureDir, filepath.Base(abs)+"-"+typ+".gguf")
	plan, err := convert.NewPlan(convert.Options{InDir: abs, Out: out, Type: typ, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	defer plan.Close()
	if err := plan.Run(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	mm := convert.DefaultMMProjPath(out)
	fixtureCache[key] = [2]string{out, mm}
	return out, mm
}

// wideCheckpoint writes, once per test binary, a synthetic checkpoint with the tiny preset's layout but a text
// hidden size of 256 and MLP width of 512 (random weights), and returns its folder. The p1 fixture's 32-wide
// matrices cannot hold Q4_K (super-blocks of 256 columns); these can, so the Q4_K paths are exercised.
func wideCheckpoint(t *testing.T) string {
	t.Helper()
	fixtureMu.Lock()
	defer fixtureMu.Unlock()
	if fixtureDir == "" {
		fixtureDir = mustTempDir(t)
	}
	dir := filepath.Join(fixtureDir, "wide")
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
		return dir
	}
	cfg, err := synth.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Name = "synthetic-wide"
	cfg.Text.HiddenSize, cfg.Text.IntermediateSize = 256, 512
	cfg.Text.NumHeads, cfg.Text.NumKVHeads, cfg.Text.HeadDim = 4, 2, 64
	if err := synth.WriteCheckpoint(context.Background(), dir, cfg, 3, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}
