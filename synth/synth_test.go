package synth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/safetensors"
)

// TestPreset8B checks the idefics2-8b preset against the counts of IDEFICS2.md §4: 437 vision,
// 35 connector and 290 text tensors plus lm_head, and the parameter counts per part.
func TestPreset8B(t *testing.T) {
	cfg, err := Preset("idefics2-8b")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	params := map[string]int64{}
	count := map[string]int{}
	for _, ts := range cfg.Tensors() {
		part := "other"
		for _, p := range []string{"model.vision_model.", "model.connector.modality_projection.", "model.connector.perceiver_resampler.", "model.text_model.", "lm_head."} {
			if strings.HasPrefix(ts.Name, p) {
				part = p
			}
		}
		params[part] += ts.Elements()
		count[part]++
	}
	wantCount := map[string]int{
		"model.vision_model.": 437, "model.connector.modality_projection.": 3,
		"model.connector.perceiver_resampler.": 32, "model.text_model.": 290, "lm_head.": 1,
	}
	for k, want := range wantCount {
		if count[k] != want {
			t.Errorf("%s: %d tensors, want %d", k, count[k], want)
		}
	}
	// Millions of parameters, rounded to 0.1 M as IDEFICS2.md gives them (text includes lm_head).
	wantM := map[string]float64{
		"model.vision_model.": 417.8, "model.connector.modality_projection.": 91.8,
		"model.connector.perceiver_resampler.": 651.5,
	}
	for k, want := range wantM {
		if got := math.Round(float64(params[k])/1e5) / 10; got != want {
			t.Errorf("%s: %.1f M parameters, want %.1f M", k, got, want)
		}
	}
	text := float64(params["model.text_model."]+params["lm_head."]) / 1e9
	if math.Abs(text-7.242) > 0.0005 {
		t.Errorf("text: %.4f B parameters, want 7.242 B", text)
	}
	if got, want := cfg.DataBytes(), 2*(params["model.vision_model."]+params["model.connector.modality_projection."]+
		params["model.connector.perceiver_resampler."]+params["model.text_model."]+params["lm_head."]); got != want {
		t.Errorf("DataBytes %d, want %d", got, want)
	}
	shards := planShards(cfg.Tensors(), 2, cfg.MaxShardBytes)
	if len(shards) != 5 {
		t.Errorf("%d shards, want 5 (16.8 GB in shards of at most 4 GB)", len(shards))
	}
	for _, s := range shards {
		if s.bytes > cfg.MaxShardBytes {
			t.Errorf("%s: %d bytes, more than %d", s.file, s.bytes, cfg.MaxShardBytes)
		}
	}
}

func TestPlanShards(t *testing.T) {
	mk := func(sizes ...int64) []Tensor {
		var ts []Tensor
		for i, n := range sizes {
			ts = append(ts, Tensor{Name: string(rune('a' + i)), Shape: []int64{n}})
		}
		return ts
	}
	for _, tc := range []struct {
		name  string
		sizes []int64
		max   int64
		want  [][]string // tensor names per shard
		files []string
	}{
		{"single", []int64{1, 2, 3}, 100, [][]string{{"a", "b", "c"}}, []string{"model.safetensors"}},
		{"exact fit", []int64{2, 2, 4}, 4, [][]string{{"a", "b"}, {"c"}}, []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}},
		{"oversized tensor alone", []int64{1, 10, 1}, 4, [][]string{{"a"}, {"b"}, {"c"}}, []string{"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shards := planShards(mk(tc.sizes...), 1, tc.max)
			var got [][]string
			var files []string
			for _, s := range shards {
				var names []string
				for _, ts := range s.tensors {
					names = append(names, ts.Name)
				}
				got = append(got, names)
				files = append(files, s.file)
			}
			if !slices.EqualFunc(got, tc.want, slices.Equal) || !slices.Equal(files, tc.files) {
				t.Errorf("got %v %v, want %v %v", got, files, tc.want, tc.files)
			}
		})
	}
}

func TestPyFloat(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want string
	}{
		{0, "0.0"}, {1, "1.0"}, {0.02, "0.02"}, {1e-5, "1e-05"}, {1e-6, "1e-06"}, {10000, "10000.0"},
		{1.0 / 255, "0.00392156862745098"}, {0.5, "0.5"}, {1e16, "1e+16"}, {2.5e-7, "2.5e-07"}, {1e-4, "0.0001"},
	} {
		got, err := pyFloat(tc.in).MarshalJSON()
		if err != nil || string(got) != tc.want {
			t.Errorf("pyFloat(%v) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

// TestNormalMoments checks the generator's mean, sd and kurtosis over a million draws.
func TestNormalMoments(t *testing.T) {
	r := rng{s: 7}
	const n = 1 << 20
	var s1, s2, s4 float64
	for i := 0; i < n; i++ {
		v := float64(r.normal())
		s1 += v
		s2 += v * v
		s4 += v * v * v * v
	}
	mean, variance := s1/n, s2/n
	kurt := s4/n/(variance*variance) - 3
	if math.Abs(mean) > 0.005 || math.Abs(variance-1) > 0.01 || math.Abs(kurt+0.07) > 0.03 {
		t.Errorf("mean %.4f, variance %.4f, excess kurtosis %.4f; want 0, 1, -0.07", mean, variance, kurt)
	}
}

// writeTiny writes the tiny preset with seed into a new folder and returns it.
func writeTiny(t *testing.T, seed uint64) string {
	t.Helper()
	cfg, err := Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "ckpt")
	var progressed int64
	if err := WriteCheckpoint(context.Background(), dir, cfg, seed, func(n int64) { progressed += n }); err != nil {
		t.Fatal(err)
	}
	if progressed != cfg.DataBytes() {
		t.Errorf("progress reported %d bytes, want %d", progressed, cfg.DataBytes())
	}
	return dir
}

// folderDigest hashes every file of dir (names and contents) in name order.
func folderDigest(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for _, e := range entries {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(h, e.Name()+"\x00")
		if _, err := io.Copy(h, f); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestWriteTinyLayout(t *testing.T) {
	dir := writeTiny(t, 1)
	cfg, _ := Preset("tiny")

	// Files as save_pretrained writes them, the tokenizer byte for byte the embedded copy.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{
		"chat_template.json", "config.json", "generation_config.json",
		"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
		"model.safetensors.index.json", "preprocessor_config.json", "processor_config.json",
		"special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
	}
	if !slices.Equal(names, want) {
		t.Fatalf("files %v, want %v", names, want)
	}
	if _, err := os.Stat(dir + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary folder left behind: %v", err)
	}
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		ref, err := os.ReadFile(filepath.Join("..", "testdata", "tokenizer", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, ref) {
			t.Errorf("%s differs from testdata/tokenizer/%s", name, name)
		}
	}
	// The JSON files the p1 fixture shares with the tiny preset (same sizes) are identical.
	for _, name := range []string{"preprocessor_config.json", "processor_config.json", "chat_template.json", "generation_config.json"} {
		got, _ := os.ReadFile(filepath.Join(dir, name))
		ref, err := os.ReadFile(filepath.Join("..", "testdata", "hf", "checkpoints", "p1", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, ref) {
			t.Errorf("%s differs from the p1 fixture's:\n%s\nwant\n%s", name, got, ref)
		}
	}
	// config.json is p1's but for the name and dtype.
	got, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	ref, _ := os.ReadFile(filepath.Join("..", "testdata", "hf", "checkpoints", "p1", "config.json"))
	ref = bytes.Replace(ref, []byte(`"torch_dtype": "float32"`), []byte(`"torch_dtype": "bfloat16"`), 1)
	ref = bytes.Replace(ref, []byte("{\n"), []byte("{\n  \"_name_or_path\": \"synthetic-tiny\",\n"), 1)
	if !bytes.Equal(got, ref) {
		t.Errorf("config.json differs from p1's:\n%s", got)
	}

	// The index names every tensor and its shard; its total is the data size.
	var index struct {
		Metadata struct {
			TotalSize int64 `json:"total_size"`
		} `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	data, err := os.ReadFile(filepath.Join(dir, indexFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &index); err != nil {
		t.Fatal(err)
	}
	if index.Metadata.TotalSize != cfg.DataBytes() {
		t.Errorf("index total_size %d, want %d", index.Metadata.TotalSize, cfg.DataBytes())
	}

	// Every tensor reads back with its shape and init.
	ckpt, err := safetensors.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ckpt.Close()
	tensors := cfg.Tensors()
	if got := ckpt.Names(); len(got) != len(tensors) {
		t.Fatalf("%d tensors in the checkpoint, want %d", len(got), len(tensors))
	}
	for _, want := range tensors {
		if _, ok := index.WeightMap[want.Name]; !ok {
			t.Errorf("%s: not in the index", want.Name)
		}
		tensor, err := ckpt.Tensor(want.Name)
		if err != nil {
			t.Fatal(err)
		}
		if tensor.DType != "BF16" || !slices.Equal(tensor.Shape, want.Shape) {
			t.Errorf("%s: %s %v, want BF16 %v", want.Name, tensor.DType, tensor.Shape, want.Shape)
		}
		vals, err := safetensors.ToFloat32(tensor)
		if err != nil {
			t.Fatal(err)
		}
		var s1, s2 float64
		for _, v := range vals {
			s1 += float64(v)
			s2 += float64(v) * float64(v)
		}
		n := float64(len(vals))
		mean, sd := s1/n, math.Sqrt(s2/n-(s1/n)*(s1/n))
		switch want.Init {
		case Ones, Zeros:
			c := float32(0)
			if want.Init == Ones {
				c = 1
			}
			if i := slices.IndexFunc(vals, func(v float32) bool { return v != c }); i >= 0 {
				t.Errorf("%s: value %d is %v, want %v", want.Name, i, vals[i], c)
			}
		case Normal:
			// Loose bounds: the smallest tensors have 128 values.
			if math.Abs(mean) > 0.01 || math.Abs(sd-0.02) > 0.006 {
				t.Errorf("%s: mean %.4f sd %.4f, want about 0 and 0.02", want.Name, mean, sd)
			}
		}
	}
}

// TestDeterministic writes the tiny preset twice with one seed (with 1 and with several workers)
// and once with another seed.
func TestDeterministic(t *testing.T) {
	a := folderDigest(t, writeTiny(t, 42))
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	b := folderDigest(t, writeTiny(t, 42))
	c := folderDigest(t, writeTiny(t, 43))
	if a != b {
		t.Errorf("same seed, different bytes: %s vs %s", a, b)
	}
	if a == c {
		t.Errorf("seeds 42 and 43 gave the same bytes")
	}
}

// TestChunkIndependence checks that a tensor's values do not depend on the shard layout: the
// same tensor written in a single-shard and in a sharded checkpoint has the same bytes.
func TestChunkIndependence(t *testing.T) {
	cfg, _ := Preset("tiny")
	cfg.MaxShardBytes = 1 << 40
	dir := filepath.Join(t.TempDir(), "one")
	if err := WriteCheckpoint(context.Background(), dir, cfg, 42, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	sharded := writeTiny(t, 42)
	one, err := safetensors.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	many, err := safetensors.OpenCheckpoint(sharded)
	if err != nil {
		t.Fatal(err)
	}
	defer many.Close()
	names := one.Names()
	sort.Strings(names)
	for _, name := range names {
		a, _ := one.Tensor(name)
		b, err := many.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Data, b.Data) {
			t.Errorf("%s: bytes differ between the single-shard and sharded checkpoints", name)
		}
	}
}

func TestBadInput(t *testing.T) {
	tiny, _ := Preset("tiny")
	modify := func(f func(c *Config)) Config {
		c := tiny
		f(&c)
		return c
	}
	existing := t.TempDir()
	staleTmp := filepath.Join(t.TempDir(), "ckpt")
	if err := os.Mkdir(staleTmp+".tmp", 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		dir  string
		cfg  Config
		want string
	}{
		{"existing folder", existing, tiny, "already exists"},
		{"stale temporary folder", staleTmp, tiny, "ckpt.tmp already exists"},
		{"empty folder name", "", tiny, "output folder is empty"},
		{"missing parent", filepath.Join(t.TempDir(), "no", "such", "ckpt"), tiny, "no such file"},
		{"zero hidden", "", modify(func(c *Config) { c.Text.HiddenSize = 0 }), "Text.HiddenSize: 0 is not positive"},
		{"negative layers", "", modify(func(c *Config) { c.Vision.NumLayers = -1 }), "Vision.NumLayers: -1 is not positive"},
		{"too many layers", "", modify(func(c *Config) { c.Text.NumLayers = 5000 }), "Text.NumLayers: 5000 layers"},
		{"huge size", "", modify(func(c *Config) { c.Text.IntermediateSize = 1 << 30 }), "Text.IntermediateSize"},
		{"huge tensor", "", modify(func(c *Config) {
			c.Vision.HiddenSize, c.Vision.NumChannels, c.Vision.PatchSize, c.Vision.ImageSize = 1<<24, 1<<24, 1<<24, 1<<24
		}), "patch_embedding.weight"},
		{"small vocab", "", modify(func(c *Config) { c.Text.VocabSize = 32000 }), "Text.VocabSize: 32000 is less than the 32003"},
		{"kv heads", "", modify(func(c *Config) { c.Text.NumKVHeads = 3 }), "Text.NumKVHeads: 3 does not divide"},
		{"perceiver kv heads", "", modify(func(c *Config) { c.Perceiver.NumKVHeads = 3 }), "Perceiver.NumKVHeads: 3 does not divide"},
		{"vision heads", "", modify(func(c *Config) { c.Vision.NumHeads = 5 }), "Vision.NumHeads: 5 does not divide"},
		{"image not patches", "", modify(func(c *Config) { c.Vision.ImageSize = 50 }), "Vision.ImageSize: 50 is not a multiple"},
		{"image_seq_len", "", modify(func(c *Config) { c.ImageSeqLen = 8 }), "ImageSeqLen: 8 differs from Perceiver.NumLatents 4"},
		{"edges", "", modify(func(c *Config) { c.ShortestEdge = 100 }), "ShortestEdge: 100 is more than LongestEdge 56"},
		{"eps NaN", "", modify(func(c *Config) { c.Text.RMSNormEps = math.NaN() }), "Text.RMSNormEps"},
		{"rope zero", "", modify(func(c *Config) { c.Text.RopeTheta = 0 }), "Text.RopeTheta"},
		{"std negative", "", modify(func(c *Config) { c.InitStd = -1 }), "InitStd"},
		{"std Inf", "", modify(func(c *Config) { c.InitStd = math.Inf(1) }), "InitStd"},
		{"dtype", "", modify(func(c *Config) { c.DType = "F16" }), `DType: "F16" is not supported`},
		{"shard bound", "", modify(func(c *Config) { c.MaxShardBytes = 0 }), "MaxShardBytes: 0 is not positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.dir
			if dir == "" && tc.want != "output folder is empty" {
				dir = filepath.Join(t.TempDir(), "ckpt")
			}
			err := WriteCheckpoint(context.Background(), dir, tc.cfg, 1, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "synth: ") {
				t.Fatalf("error %v, want one starting with \"synth: \" containing %q", err, tc.want)
			}
			if dir != existing && dir != staleTmp {
				if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s exists after a failed write", dir)
				}
			}
		})
	}
	if _, err := Preset("idefics2-70b"); err == nil || !strings.Contains(err.Error(), `unknown preset "idefics2-70b"`) {
		t.Errorf("Preset: error %v", err)
	}
}

// TestCancel checks that a cancelled write returns the context's error and leaves nothing behind.
func TestCancel(t *testing.T) {
	cfg, _ := Preset("tiny")
	for _, tc := range []struct {
		name  string
		after int64 // cancel once this many bytes were written (0: before starting)
	}{{"before", 0}, {"during", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.after == 0 {
				cancel()
			}
			dir := filepath.Join(t.TempDir(), "ckpt")
			var written int64
			err := WriteCheckpoint(ctx, dir, cfg, 1, func(n int64) {
				written += n
				if tc.after > 0 && written >= tc.after {
					cancel()
				}
			})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("error %v, want context.Canceled", err)
			}
			for _, p := range []string{dir, dir + ".tmp"} {
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s left behind", p)
				}
			}
		})
	}
}

// BenchmarkFill measures weight generation alone (MB/s of BF16 output, one goroutine).
func BenchmarkFill(b *testing.B) {
	buf := make([]byte, 2*chunkValues)
	ts := Tensor{Name: "w", Shape: []int64{chunkValues}, Init: Normal}
	b.SetBytes(int64(len(buf)))
	for i := 0; i < b.N; i++ {
		fill(buf, ts, 1, 0, chunkValues, "BF16", 0.02)
	}
}
