package convert

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/safetensors"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/convert")

// Fixture folders (committed test data; see testdata/hf/README.md and testdata/demo/README.md).
var (
	ckptDir  = filepath.Join("..", "testdata", "hf", "checkpoints")
	p1Dir    = filepath.Join(ckptDir, "p1")
	p2Dir    = filepath.Join(ckptDir, "p2")
	p2BF16   = filepath.Join(ckptDir, "p2-bf16-sharded")
	demoDir  = filepath.Join("..", "testdata", "demo", "checkpoint-bf16")
	tokDir   = filepath.Join("..", "testdata", "tokenizer")
	goldDir  = filepath.Join("..", "testdata", "convert")
	quietLog = discardLogger()
)

// convertTo converts dir with opts (InDir and Out filled in) into a fresh temp folder and returns
// the two opened outputs.
func convertTo(t *testing.T, dir string, opts Options) (model, mmproj *gguf.File, plan *Plan) {
	t.Helper()
	out := t.TempDir()
	opts.InDir = dir
	opts.Out = filepath.Join(out, "model.gguf")
	if opts.Logger == nil {
		opts.Logger = quietLog
	}
	p, err := NewPlan(opts)
	if err != nil {
		t.Fatalf("NewPlan(%s): %v", dir, err)
	}
	t.Cleanup(func() { p.Close() })
	var progressed int64
	if err := p.Run(context.Background(), func(n int64) { progressed += n }); err != nil {
		t.Fatalf("Run(%s): %v", dir, err)
	}
	if progressed != p.InputBytes() {
		t.Errorf("progress reported %d bytes, want InputBytes %d", progressed, p.InputBytes())
	}
	model, err = gguf.Open(p.Model.Path)
	if err != nil {
		t.Fatalf("open model: %v", err)
	}
	t.Cleanup(func() { model.Close() })
	mmproj, err = gguf.Open(p.MMProj.Path)
	if err != nil {
		t.Fatalf("open mmproj: %v", err)
	}
	t.Cleanup(func() { mmproj.Close() })
	return model, mmproj, p
}

// copyCheckpoint copies every file of src into a new temp folder.
func copyCheckpoint(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		copyFile(t, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()))
	}
	return dst
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// stTensor is a tensor to write into a test safetensors file.
type stTensor struct {
	dtype string
	shape []int64
	data  []byte
}

// readSafetensors loads every tensor of a single-file checkpoint.
func readSafetensors(t *testing.T, path string) map[string]stTensor {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]stTensor{}
	for _, n := range f.Names() {
		x, err := f.Tensor(n)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = stTensor{dtype: string(x.DType), shape: x.Shape, data: bytes.Clone(x.Data)}
	}
	return out
}

// writeSafetensors writes tensors as a safetensors file (names sorted, data contiguous).
func writeSafetensors(t *testing.T, path string, tensors map[string]stTensor) {
	t.Helper()
	names := make([]string, 0, len(tensors))
	for n := range tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var data []byte
	for _, n := range names {
		x := tensors[n]
		header[n] = map[string]any{"dtype": x.dtype, "shape": x.shape, "data_offsets": []int{len(data), len(data) + len(x.data)}}
		data = append(data, x.data...)
	}
	hj, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	for len(hj)%8 != 0 {
		hj = append(hj, ' ')
	}
	var buf bytes.Buffer
	binary.Write(&buf, binary.LittleEndian, uint64(len(hj)))
	buf.Write(hj)
	buf.Write(data)
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// editJSON rewrites a JSON file of dir through edit.
func editJSON(t *testing.T, dir, name string, edit func(m map[string]any)) {
	t.Helper()
	path := filepath.Join(dir, name)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// sub returns m[key] as an object.
func sub(m map[string]any, key string) map[string]any { return m[key].(map[string]any) }

// dirEntries lists the names in dir (including hidden temporary files).
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func f32Bytes(vals ...float32) []byte {
	b := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
