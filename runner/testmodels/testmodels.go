// Package testmodels is test support for runner/ and cmd/idefics2-run: it converts the repository's tiny Hugging
// Face fixture checkpoints into GGUF pairs, once per test process, with the convert package (never a development
// tool), into a temporary folder that Cleanup removes.
package testmodels

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/idefics2-go/idefics2/convert"
)

var (
	mu    sync.Mutex
	dir   string
	pairs = map[string][2]string{}
)

// Root returns the repository root (found from this source file).
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Checkpoint returns the path of a fixture checkpoint by short name: p1, p2, p2-bf16-sharded or demo.
func Checkpoint(name string) string {
	if name == "demo" {
		return filepath.Join(Root(), "testdata", "demo", "checkpoint-bf16")
	}
	return filepath.Join(Root(), "testdata", "hf", "checkpoints", name)
}

// Pair converts the named fixture checkpoint (see Checkpoint) to GGUF at type typ (f32, f16, …) and returns the
// model and mmproj paths. Conversions are cached for the life of the process; call Cleanup from TestMain.
func Pair(name, typ string) (model, mmproj string, err error) {
	mu.Lock()
	defer mu.Unlock()
	key := name + "-" + typ
	if p, ok := pairs[key]; ok {
		return p[0], p[1], nil
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "idefics2-testmodels-"); err != nil {
			return "", "", err
		}
	}
	model = filepath.Join(dir, key+".gguf")
	plan, err := convert.NewPlan(convert.Options{InDir: Checkpoint(name), Out: model, Type: typ, Threads: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return "", "", fmt.Errorf("testmodels: %s: %w", name, err)
	}
	defer plan.Close()
	if err := plan.Run(context.Background(), nil); err != nil {
		return "", "", fmt.Errorf("testmodels: %s: %w", name, err)
	}
	mmproj = convert.DefaultMMProjPath(model)
	pairs[key] = [2]string{model, mmproj}
	return model, mmproj, nil
}

// Cleanup removes the converted files.
func Cleanup() {
	mu.Lock()
	defer mu.Unlock()
	if dir != "" {
		os.RemoveAll(dir)
		dir = ""
		pairs = map[string][2]string{}
	}
}
