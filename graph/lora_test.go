package graph

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	ggufparser "github.com/gpustack/gguf-parser-go"

	"github.com/idefics2-go/idefics2/convert"
	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/gguf"
)

// LoRA tolerances (max |a−b| / max |b| over full-prompt logits).
const (
	// tolLoRARoutes bounds merged-at-conversion against applied-at-run-time on F32 files: the same update, summed
	// as one weight (W + s·B·A rounded once) or as two products (W·x + s·B·(A·x)); only float32 rounding differs.
	tolLoRARoutes = 1e-4
	// maxLoRAQuantRatio bounds, on a quantized base, the run-time route's error against the exact (F32) merged model
	// relative to the merge-then-quantize route's error: the merge quantizes W + ΔW, the run-time route quantizes W
	// alone and adds ΔW in F32, so neither is the other's reference; both carry one rounding of W's blocks. On these
	// tiny random models Q8_0 files are a few percent from F32 (TestParityReducedPrecision), and the two routes
	// differ from each other by about as much (p1 Q8_0: 2.5e-2 apart, each about 3e-2 from exact).
	maxLoRAQuantRatio = 1.5
	// minCorrLoRAQ4 is the smallest correlation of a 4-bit base with a run-time adapter against the same base merged
	// and quantized: 4-bit steps are up to 1/8 of a block's range, and the merge's steps move with ΔW, so the routes
	// are compared by correlation, like quantized files against HF (minCorrQuant).
	minCorrLoRAQ4 = minCorrQuant
)

type loraManifest struct {
	Adapter    string `json:"adapter"`
	BaseCase   string `json:"base_case"`
	Checkpoint string `json:"checkpoint"`
}

var (
	adapterMu    sync.Mutex
	adapterCache = map[string][2]string{}
)

// fixtureAdapter exports a PEFT adapter folder as run-time adapter GGUF files once per test binary.
func fixtureAdapter(t *testing.T, ckpt, adapter string) (text, mmproj string) {
	t.Helper()
	adapterMu.Lock()
	defer adapterMu.Unlock()
	key := ckpt + "|" + adapter
	if p, ok := adapterCache[key]; ok {
		return p[0], p[1]
	}
	out := filepath.Join(mustTempDir(t), "adapter-"+filepath.Base(adapter)+".gguf")
	p, err := convert.NewAdapterPlan(convert.AdapterOptions{InDir: ckpt, Adapter: convert.LoRASpec{Dir: adapter, Scale: 1}, Out: out})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p.HasMMProj() {
		mmproj = p.MMProj.Path
	}
	adapterCache[key] = [2]string{out, mmproj}
	return out, mmproj
}

// mergedModel converts ckpt with adapters merged (convert --lora) into a fresh pair.
func mergedModel(t *testing.T, ckpt, typ string, adapters ...string) (string, string) {
	t.Helper()
	out := filepath.Join(mustTempDir(t), "merged-"+typ+".gguf")
	var specs []convert.LoRASpec
	for _, a := range adapters {
		specs = append(specs, convert.LoRASpec{Dir: a, Scale: 1})
	}
	p, err := convert.NewPlan(convert.Options{InDir: ckpt, Out: out, Type: typ, LoRA: specs, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Run(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	return out, convert.DefaultMMProjPath(out)
}

// evalCase loads a pair (with adapters) and returns the full-prompt logits of a case and its greedy tokens.
func evalCase(t *testing.T, text, mmproj string, adapters []Adapter, caseDir string, ids []int32, steps int) ([]float32, []int32) {
	t.Helper()
	m, err := Load(text, mmproj, Options{Device: testDevice(), Threads: 2, Adapters: adapters})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	images := encodeCase(t, m, caseDir)
	s, err := m.NewSequence(len(ids) + steps + 1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	logits, err := s.Eval(context.Background(), ids, images, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	vocab := m.Text.VocabSize
	next := argmax(logits[len(logits)-vocab:])
	var gen []int32
	for i := 0; i < steps; i++ {
		gen = append(gen, next)
		l, err := s.Eval(context.Background(), []int32{next}, nil, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		next = argmax(l)
	}
	return logits, gen
}

func loadIDs(t *testing.T, path string) []int32 {
	f, _ := loadNpy(t, path)
	out := make([]int32, len(f))
	for i, v := range f {
		out[i] = int32(v)
	}
	return out
}

// TestLoRAParityHF runs every LoRA fixture case through both routes on F32 files: merged at conversion and applied
// at run time must each match Hugging Face's merged model (logits where the case keeps them, greedy tokens always)
// and agree with each other within tolLoRARoutes.
func TestLoRAParityHF(t *testing.T) {
	cases, err := filepath.Glob(filepath.Join("..", "testdata", "lora", "cases", "*"))
	if err != nil || len(cases) == 0 {
		t.Fatalf("no LoRA cases: %v", err)
	}
	for _, dir := range cases {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
			if err != nil {
				t.Fatal(err)
			}
			var man loraManifest
			if err := json.Unmarshal(raw, &man); err != nil {
				t.Fatal(err)
			}
			ckpt := filepath.Join(dir, man.Checkpoint)
			adapter := filepath.Join(dir, man.Adapter)
			baseCase := filepath.Join(dir, man.BaseCase)
			ids := loadIDs(t, filepath.Join(dir, "input_ids.npy"))
			wantGen := loadIDs(t, filepath.Join(dir, "generated_ids.npy"))

			mText, mMM := mergedModel(t, ckpt, "f32", adapter)
			merged, mergedGen := evalCase(t, mText, mMM, nil, baseCase, ids, len(wantGen))
			bText, bMM := fixtureModel(t, ckpt, "f32")
			aText, aMM := fixtureAdapter(t, ckpt, adapter)
			run, runGen := evalCase(t, bText, bMM, []Adapter{{Path: aText, MMProjPath: aMM, Scale: 1}}, baseCase, ids, len(wantGen))

			if _, err := os.Stat(filepath.Join(dir, "logits.npy")); err == nil {
				want, _ := loadNpy(t, filepath.Join(dir, "logits.npy"))
				checkClose(t, "merged vs HF", merged, want, tolExact())
				checkClose(t, "run-time vs HF", run, want, tolExact())
			}
			checkClose(t, "run-time vs merged", run, merged, tolLoRARoutes)
			for name, got := range map[string][]int32{"merged": mergedGen, "run-time": runGen} {
				for i := range wantGen {
					if got[i] != wantGen[i] {
						t.Errorf("%s: greedy tokens %v, HF %v", name, got, wantGen)
						break
					}
				}
			}
		})
	}
}

// TestLoRAQuantizedBases applies the p1 adapter at run time to quantized bases (Q8_0, Q4_0 in whatever layout the
// plan picks on this CPU, NF4) and compares each with the same base merged and quantized by convert --lora.
func TestLoRAQuantizedBases(t *testing.T) {
	lora := filepath.Join("..", "testdata", "lora")
	dir := filepath.Join(lora, "cases", "p1_seed_r8__p1_chelsea_split")
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var man loraManifest
	if err := json.Unmarshal(raw, &man); err != nil {
		t.Fatal(err)
	}
	ckpt, adapter, baseCase := filepath.Join(dir, man.Checkpoint), filepath.Join(dir, man.Adapter), filepath.Join(dir, man.BaseCase)
	ids := loadIDs(t, filepath.Join(dir, "input_ids.npy"))
	steps := 8
	aText, aMM := fixtureAdapter(t, ckpt, adapter)
	eText, eMM := mergedModel(t, ckpt, "f32", adapter)
	exact, _ := evalCase(t, eText, eMM, nil, baseCase, ids, 0)
	for _, typ := range []string{"q8_0", "q4_0", "nf4"} {
		t.Run(typ, func(t *testing.T) {
			mText, mMM := mergedModel(t, ckpt, typ, adapter)
			merged, mergedGen := evalCase(t, mText, mMM, nil, baseCase, ids, steps)
			bText, bMM := fixtureModel(t, ckpt, typ)
			run, runGen := evalCase(t, bText, bMM, []Adapter{{Path: aText, MMProjPath: aMM, Scale: 1}}, baseCase, ids, steps)
			base, _ := evalCase(t, bText, bMM, nil, baseCase, ids, 0)
			rel, abs, _ := relErr(run, merged)
			corr := pearson(run, merged)
			relBase, _, _ := relErr(base, merged)
			relRun, _, _ := relErr(run, exact)
			relMerged, _, _ := relErr(merged, exact)
			t.Logf("%s: run-time vs merged: max abs %.4g, rel %.4g, corr %.6f (base without adapter: rel %.4g); vs exact: run-time %.4g, merged %.4g; greedy %v / %v",
				typ, abs, rel, corr, relBase, relRun, relMerged, runGen, mergedGen)
			if rel >= relBase {
				t.Errorf("run-time adapter is no closer to the merged model (rel %.4g) than the bare base (%.4g)", rel, relBase)
			}
			if relRun > maxLoRAQuantRatio*relMerged {
				t.Errorf("run-time route %.4g from the exact merged model, more than %.1f× the merge's %.4g", relRun, maxLoRAQuantRatio, relMerged)
			}
			switch typ {
			case "q8_0":
				for i := range mergedGen {
					if runGen[i] != mergedGen[i] {
						t.Fatalf("greedy tokens %v, merged %v", runGen, mergedGen)
					}
				}
			default:
				if corr < minCorrLoRAQ4 {
					t.Errorf("correlation %.4f < %.2f", corr, minCorrLoRAQ4)
				}
			}
		})
	}
}

// writePEFTAdapter writes a PEFT LoRA adapter folder with random pairs of rank r for every linear layer of the text
// model of a checkpoint whose layer sizes are given, as save_pretrained lays it out.
func writePEFTAdapter(t *testing.T, dir string, layers, hidden, kv, ffn, r int, alpha float64, seed int64) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`{"peft_type": "LORA", "r": %d, "lora_alpha": %g, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], "bias": "none", "use_rslora": false, "use_dora": false, "rank_pattern": {}, "alpha_pattern": {}}`, r, alpha)
	if err := os.WriteFile(filepath.Join(dir, "adapter_config.json"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(seed))
	type tensor struct {
		name  string
		shape [2]int
	}
	var ts []tensor
	for l := 0; l < layers; l++ {
		p := fmt.Sprintf("base_model.model.model.text_model.layers.%d.", l)
		for _, m := range []struct {
			name    string
			out, in int
		}{{"self_attn.q_proj", hidden, hidden}, {"self_attn.k_proj", kv, hidden}, {"self_attn.v_proj", kv, hidden}, {"self_attn.o_proj", hidden, hidden},
			{"mlp.gate_proj", ffn, hidden}, {"mlp.up_proj", ffn, hidden}, {"mlp.down_proj", hidden, ffn}} {
			ts = append(ts, tensor{p + m.name + ".lora_A.weight", [2]int{r, m.in}}, tensor{p + m.name + ".lora_B.weight", [2]int{m.out, r}})
		}
	}
	header := map[string]any{}
	var data []byte
	for _, x := range ts {
		n := x.shape[0] * x.shape[1]
		header[x.name] = map[string]any{"dtype": "F32", "shape": x.shape, "data_offsets": []int{len(data), len(data) + 4*n}}
		for i := 0; i < n; i++ {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(float32(rng.NormFloat64()*0.03)))
		}
	}
	hj, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	for len(hj)%8 != 0 {
		hj = append(hj, ' ')
	}
	buf := binary.LittleEndian.AppendUint64(nil, uint64(len(hj)))
	buf = append(append(buf, hj...), data...)
	if err := os.WriteFile(filepath.Join(dir, "adapter_model.safetensors"), buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLoRAQ4KBase applies a rank-8 adapter at run time to a Q4_K base wide enough for Q4_K super-blocks (and for
// this project's 16-row layouts where the CPU runs them) and compares it with the Q4_K merge.
func TestLoRAQ4KBase(t *testing.T) {
	ckpt := wideCheckpoint(t)
	adapter := filepath.Join(mustTempDir(t), "wide-r8")
	writePEFTAdapter(t, adapter, 2, 256, 128, 512, 8, 16, 5)
	ids := []int32{1, 415, 2936, 9060, 285, 1142, 28705, 28770, 28770, 28774}
	aText, aMM := fixtureAdapter(t, ckpt, adapter)
	if aMM != "" {
		t.Errorf("a text-only adapter wrote an mmproj part %s", aMM)
	}
	for _, typ := range []string{"f32", "q4_k"} {
		t.Run(typ, func(t *testing.T) {
			mText, _ := mergedModel(t, ckpt, typ, adapter)
			merged, _ := evalCase(t, mText, "", nil, "", ids, 0)
			bText, _ := fixtureModel(t, ckpt, typ)
			run, _ := evalCase(t, bText, "", []Adapter{{Path: aText, Scale: 1}}, "", ids, 0)
			rel, abs, _ := relErr(run, merged)
			corr := pearson(run, merged)
			t.Logf("%s: run-time vs merged: max abs %.4g, rel %.4g, corr %.6f", typ, abs, rel, corr)
			if typ == "f32" && rel > tolLoRARoutes {
				t.Errorf("rel err %.4g > %.g", rel, tolLoRARoutes)
			}
			if corr < minCorrLoRAQ4 {
				t.Errorf("correlation %.4f < %.2f", corr, minCorrLoRAQ4)
			}
		})
	}
}

// TestAdapterInterop reads run-time adapter files with ggml's C GGUF reader and with gguf-parser-go, and checks them
// against the base model as llama.cpp's adapter loader does (llama-adapter.cpp): general.type "adapter",
// adapter.type "lora", adapter.lora.alpha an f32, and for every "<name>.lora_a"/".lora_b" pair a base tensor
// <name> with a.ne[0] = W.ne[0], b.ne[1] = W.ne[1] and a.ne[1] = b.ne[0].
func TestAdapterInterop(t *testing.T) {
	lora := filepath.Join("..", "testdata", "lora", "adapters")
	for _, c := range []struct{ ckpt, adapter string }{{"p1", "p1_seed_r8"}, {"p2", "p2_all_rslora"}} {
		t.Run(c.adapter, func(t *testing.T) {
			ckpt := filepath.Join("..", "testdata", "hf", "checkpoints", c.ckpt)
			bText, bMM := fixtureModel(t, ckpt, "q8_0")
			aText, aMM := fixtureAdapter(t, ckpt, filepath.Join(lora, c.adapter))
			for _, pair := range [][2]string{{aText, bText}, {aMM, bMM}} {
				info, err := ggml.ReadGGUFInfo(pair[0])
				if err != nil {
					t.Fatal(err)
				}
				base, err := ggml.ReadGGUFInfo(pair[1])
				if err != nil {
					t.Fatal(err)
				}
				kv := map[string]ggml.GGUFKV{}
				for _, x := range info.KV {
					kv[x.Key] = x
				}
				if v := kv["general.type"].Value; v != "adapter" {
					t.Errorf("%s: general.type %v", pair[0], v)
				}
				if v := kv["adapter.type"].Value; v != "lora" {
					t.Errorf("%s: adapter.type %v", pair[0], v)
				}
				if x := kv["adapter.lora.alpha"]; x.Type != ggml.GGUFTypeFloat32 {
					t.Errorf("%s: adapter.lora.alpha of type %d, want f32", pair[0], x.Type)
				}
				if kv["general.architecture"].Value != baseArch(base) {
					t.Errorf("%s: architecture %v, base %v", pair[0], kv["general.architecture"].Value, baseArch(base))
				}
				baseTensors := map[string]ggml.GGUFTensorInfo{}
				for _, ti := range base.Tensors {
					baseTensors[ti.Name] = ti
				}
				ours := map[string]ggml.GGUFTensorInfo{}
				for _, ti := range info.Tensors {
					ours[ti.Name] = ti
				}
				pairs := 0
				for name, a := range ours {
					w, ok := strings.CutSuffix(name, ".lora_a")
					if !ok {
						continue
					}
					b, okB := ours[w+".lora_b"]
					wt, okW := baseTensors[w]
					if !okB || !okW {
						t.Fatalf("%s: %s: lora_b present %v, base tensor present %v", pair[0], name, okB, okW)
					}
					if a.Ne[0] != wt.Ne[0] || b.Ne[1] != wt.Ne[1] || a.Ne[1] != b.Ne[0] {
						t.Errorf("%s: a %v, b %v, base %v", w, a.Ne, b.Ne, wt.Ne)
					}
					pairs++
				}
				if 2*pairs != len(ours) || pairs == 0 {
					t.Errorf("%s: %d pairs among %d tensors", pair[0], pairs, len(ours))
				}
				if pair[0] != aText {
					continue // gguf-parser-go reads llama.cpp's files; the mmproj part is this project's
				}
				theirs, err := ggufparser.ParseGGUFFile(pair[0])
				if err != nil {
					t.Fatalf("gguf-parser-go: %s: %v", pair[0], err)
				}
				if len(theirs.TensorInfos) != len(info.Tensors) || theirs.TensorDataStartOffset != int64(info.DataOffset) {
					t.Errorf("gguf-parser-go: %d tensors at %d, ggml %d at %d", len(theirs.TensorInfos), theirs.TensorDataStartOffset, len(info.Tensors), info.DataOffset)
				}
				if v, ok := theirs.Header.MetadataKV.Get("adapter.lora.alpha"); !ok || v.ValueFloat32() != kv["adapter.lora.alpha"].Value {
					t.Errorf("gguf-parser-go: adapter.lora.alpha %v, ggml %v", v.Value, kv["adapter.lora.alpha"].Value)
				}
			}
		})
	}
}

func baseArch(info *ggml.GGUFInfo) any {
	for _, kv := range info.KV {
		if kv.Key == "general.architecture" {
			return kv.Value
		}
	}
	return nil
}

// TestBadAdapterFiles checks that an adapter that does not fit the model is refused at load, naming the file and
// tensor.
func TestBadAdapterFiles(t *testing.T) {
	lora := filepath.Join("..", "testdata", "lora", "adapters")
	p1 := filepath.Join("..", "testdata", "hf", "checkpoints", "p1")
	p2 := filepath.Join("..", "testdata", "hf", "checkpoints", "p2")
	p1Text, p1MM := fixtureModel(t, p1, "f32")
	a1Text, a1MM := fixtureAdapter(t, p1, filepath.Join(lora, "p1_seed_r8"))
	a2Text, a2MM := fixtureAdapter(t, p2, filepath.Join(lora, "p2_all_rslora"))
	truncated := filepath.Join(mustTempDir(t), "truncated.gguf")
	data, err := os.ReadFile(a1Text)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(truncated, data[:len(data)-100], 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		mmproj  string
		adapter Adapter
		is      error
		want    []string
	}{
		{"other base", p1MM, Adapter{Path: a2Text, Scale: 1}, nil, []string{a2Text, "blk.0.attn_q.weight.lora_a/.lora_b", "[32, r] and [r, 32]"}},
		{"other base mmproj", p1MM, Adapter{Path: a1Text, MMProjPath: a2MM, Scale: 1}, ErrNotAdapter, []string{a2MM, "made from adapter"}},
		{"a model as adapter", p1MM, Adapter{Path: p1Text, Scale: 1}, ErrNotAdapter, []string{p1Text, "general.type"}},
		{"text adapter as mmproj adapter", p1MM, Adapter{Path: a1Text, MMProjPath: a1Text, Scale: 1}, ErrNotAdapter, []string{a1Text, "general.architecture"}},
		{"mmproj adapter without mmproj", "", Adapter{Path: a1Text, MMProjPath: a1MM, Scale: 1}, ErrNotAdapter, []string{a1MM, "needs the model's mmproj"}},
		{"truncated", p1MM, Adapter{Path: truncated, Scale: 1}, nil, []string{"truncated.gguf"}},
		{"scale NaN", p1MM, Adapter{Path: a1Text, Scale: float32(math.NaN())}, ErrNotAdapter, []string{"scale"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Load(p1Text, tt.mmproj, Options{Device: "cpu", Threads: 1, Adapters: []Adapter{tt.adapter}})
			if err == nil {
				m.Close()
				t.Fatal("no error")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// writeAdapterGGUF writes an adapter file with the given tensors (all F32, zero) for load tests.
func writeAdapterGGUF(t *testing.T, path string, tensors map[string][]uint64) {
	t.Helper()
	w, err := gguf.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range [][2]string{{"general.architecture", "llama"}, {"general.type", "adapter"}, {"adapter.type", "lora"}} {
		if err := w.SetKV(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.SetKV("adapter.lora.alpha", float32(8)); err != nil {
		t.Fatal(err)
	}
	names := slices.Sorted(maps.Keys(tensors))
	for _, name := range names {
		if err := w.AddTensor(name, gguf.TypeF32, tensors[name]); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range names {
		shape := tensors[name]
		n := uint64(4)
		for _, d := range shape {
			n *= d
		}
		if err := w.WriteTensor(name, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestAdapterUnknownTensor checks that an adapter tensor for a weight the base lacks, and a pair without its
// partner, are refused naming the tensor.
func TestAdapterUnknownTensor(t *testing.T) {
	p1Text, _ := fixtureModel(t, filepath.Join("..", "testdata", "hf", "checkpoints", "p1"), "f32")
	dir := mustTempDir(t)
	for _, tt := range []struct {
		name    string
		tensors map[string][]uint64
		want    string
	}{
		{"unknown weight", map[string][]uint64{"blk.9.attn_q.weight.lora_a": {32, 4}, "blk.9.attn_q.weight.lora_b": {4, 32}}, "blk.9.attn_q.weight.lora_a"},
		{"no partner", map[string][]uint64{"blk.0.attn_q.weight.lora_a": {32, 4}}, "blk.0.attn_q.weight.lora_b"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".gguf")
			writeAdapterGGUF(t, path, tt.tensors)
			m, err := Load(p1Text, "", Options{Device: "cpu", Threads: 1, Adapters: []Adapter{{Path: path, Scale: 1}}})
			if err == nil {
				m.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %q", err, tt.want)
			}
		})
	}
}

// TestLoRAStackedGroups applies an adapter to a Q4_0 base whose Q/K/V and gate/up matrices the plan stacks (one
// product per group) where this CPU runs the 16-row layouts, and compares it with the file's layout, where every
// matrix is multiplied on its own: the adapters' updates must land on the right members.
func TestLoRAStackedGroups(t *testing.T) {
	ckpt := wideCheckpoint(t)
	adapter := filepath.Join(mustTempDir(t), "wide-r4")
	writePEFTAdapter(t, adapter, 2, 256, 128, 512, 4, 8, 9)
	aText, _ := fixtureAdapter(t, ckpt, adapter)
	bText, _ := fixtureModel(t, ckpt, "q4_0")
	ids := []int32{1, 415, 2936, 9060, 285, 1142, 28705, 28770}
	var logits [2][]float32
	for i, layouts := range []LayoutPolicy{LayoutsBest, LayoutsFile} {
		// The two layouts' products differ by their accumulation rounding (~1e-7). Attention that keeps the query in
		// F32 (the fused decode kernel, on every CPU with a vector path) carries that difference into the next
		// layer's Q8_0 activation quantization, where it can move a value across a rounding boundary (a jump of up
		// to half a step, 1/254 of its block's largest value), and such jumps compound over the layers. ggml's
		// products round the query to F16 first, which absorbs differences this small, so with them the
		// comparison measures the layouts alone.
		m, err := Load(bText, "", Options{Device: testDevice(), Threads: 2, Layouts: layouts, TextAttn: AttnGGML,
			Adapters: []Adapter{{Path: aText, Scale: 1}}})
		if err != nil {
			t.Fatal(err)
		}
		text, _ := m.Plans()
		t.Logf("%s: %d stacked groups", layouts, len(text.Groups))
		s, err := m.NewSequence(len(ids) + 1)
		if err != nil {
			t.Fatal(err)
		}
		if logits[i], err = s.Eval(context.Background(), ids, nil, true, nil); err != nil {
			t.Fatal(err)
		}
		s.Close()
		m.Close()
	}
	// The 16-row layouts multiply Q4_0 with int8 activations like ggml's own Q4_0 product; the two layouts agree to
	// the rounding of their accumulations.
	checkClose(t, "stacked vs separate", logits[0], logits[1], 1e-3)
}
