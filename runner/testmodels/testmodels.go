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

// Adapter exports a fixture LoRA adapter (testdata/lora/adapters/<name>) on its base checkpoint (by short name, see
// Checkpoint) as run-time adapter GGUF files, once per process, and returns the text part and the mmproj part ("" when
// the adapter has none). Its mmproj part lies next to the text part as mmproj-<name>.gguf.
func Adapter(name, base string) (text, mmproj string, err error) {
	mu.Lock()
	defer mu.Unlock()
	key := "adapter-" + name
	if p, ok := pairs[key]; ok {
		return p[0], p[1], nil
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "idefics2-testmodels-"); err != nil {
			return "", "", err
		}
	}
	text = filepath.Join(dir, name+".gguf")
	plan, err := convert.NewAdapterPlan(convert.AdapterOptions{InDir: Checkpoint(base), Out: text,
		Adapter: convert.LoRASpec{Dir: filepath.Join(Root(), "testdata", "lora", "adapters", name), Scale: 1}})
	if err != nil {
		return "", "", fmt.Errorf("testmodels: %s: %w", name, err)
	}
	defer plan.Close()
	if err := plan.Run(context.Background()); err != nil {
		return "", "", fmt.Errorf("testmodels: %s: %w", name, err)
	}
	if plan.HasMMProj() {
		mmproj = plan.MMProj.Path
	}
	pairs[key] = [2]string{text, mmproj}
	return text, mmproj, nil
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
