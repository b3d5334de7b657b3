package graph

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/idefics2-go/idefics2/convert"
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
