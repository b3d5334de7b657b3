package convert

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/safetensors"
)

// Adapter fixtures (testdata/lora/README.md): PEFT adapters made on the p1 and p2 checkpoints.
var (
	loraDir  = filepath.Join("..", "testdata", "lora", "adapters")
	p1Seed   = filepath.Join(loraDir, "p1_seed_r8")
	p2RSLoRA = filepath.Join(loraDir, "p2_all_rslora")
)

// tolMerge bounds |merged − reference| / max|reference| for a merged F32 weight: the reference
// sums B·A in float64, the converter in float32 over at most r = 8 terms, then adds to W.
const tolMerge = 1e-6

func TestParseLoRASpec(t *testing.T) {
	tests := []struct {
		in      string
		want    LoRASpec
		wantErr string
	}{
		{in: "ad", want: LoRASpec{Dir: "ad", Scale: 1}},
		{in: "ad:0.5", want: LoRASpec{Dir: "ad", Scale: 0.5}},
		{in: "a:b/ad", want: LoRASpec{Dir: "a:b/ad", Scale: 1}},
		{in: "a:b/ad:-2", want: LoRASpec{Dir: "a:b/ad", Scale: -2}},
		{in: "ad:NaN", wantErr: "not a finite number"},
		{in: "ad:inf", wantErr: "not a finite number"},
		{in: ":1", wantErr: "empty adapter path"},
		{in: "", wantErr: "empty adapter path"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseLoRASpec(tt.in)
			if tt.wantErr != "" {
				if err == nil || !IsInputError(err) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseLoRASpec(%q) = %v, %v; want an InputError containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseLoRASpec(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

// refScale is PEFT's scale for a module of the fixture adapters, written out from each
// adapter_config.json by hand (not by the code under test).
func refScale(adapter, module string) float64 {
	if adapter == "p1_seed_r8" {
		return 8.0 / 8 // lora_alpha 8, r 8
	}
	// p2_all_rslora: lora_alpha 16, r 4, use_rslora; rank_pattern {down_proj: 2}; alpha_pattern {o_proj: 8}.
	switch {
	case strings.HasSuffix(module, ".down_proj"):
		return 16 / math.Sqrt(2)
	case strings.HasSuffix(module, ".o_proj"):
		return 8 / math.Sqrt(4)
	}
	return 16 / math.Sqrt(4)
}

// refMerged returns W + s·B·A for the HF weight name in float64 (PyTorch order), from the
// checkpoint and adapter files, or the modules_to_save copy; ok is false when the adapter
// leaves the weight alone.
func refMerged(t *testing.T, ckpt *safetensors.Checkpoint, ad map[string]stTensor, adapter, hf string) (vals []float64, ok bool) {
	t.Helper()
	floats := func(x stTensor) []float64 {
		v, err := safetensors.ToFloat32(safetensors.Tensor{DType: safetensors.DType(x.dtype), Shape: x.shape, Data: x.data})
		if err != nil {
			t.Fatal(err)
		}
		out := make([]float64, len(v))
		for i, f := range v {
			out[i] = float64(f)
		}
		return out
	}
	if x, saved := ad[peftKeyPrefix+hf]; saved {
		return floats(x), true
	}
	module := strings.TrimSuffix(hf, ".weight")
	ta, okA := ad[peftKeyPrefix+module+".lora_A.weight"]
	tb, okB := ad[peftKeyPrefix+module+".lora_B.weight"]
	if !okA || !okB {
		return nil, false
	}
	src, err := ckpt.Tensor(hf)
	if err != nil {
		t.Fatal(err)
	}
	w32, err := safetensors.ToFloat32(src)
	if err != nil {
		t.Fatal(err)
	}
	a, b := floats(ta), floats(tb)
	r, in, out := int(ta.shape[0]), int(ta.shape[1]), int(tb.shape[0])
	s := refScale(adapter, module)
	vals = make([]float64, len(w32))
	for o := 0; o < out; o++ {
		for i := 0; i < in; i++ {
			var d float64
			for k := 0; k < r; k++ {
				d += b[o*r+k] * a[k*in+i]
			}
			vals[o*in+i] = float64(w32[o*in+i]) + s*d
		}
	}
	return vals, true
}

// permuteRef applies the Q/K permutation to float64 rows (see expectedValues).
func permuteRef(vals []float64, ne0, heads int) []float64 {
	rows := len(vals) / ne0
	hd := rows / heads
	out := make([]float64, len(vals))
	for h := 0; h < heads; h++ {
		for j := 0; j < 2; j++ {
			for i := 0; i < hd/2; i++ {
				from, to := h*hd+j*(hd/2)+i, h*hd+2*i+j
				copy(out[to*ne0:(to+1)*ne0], vals[from*ne0:(from+1)*ne0])
			}
		}
	}
	return out
}

func f32Values(t *testing.T, f *gguf.File, name string) []float32 {
	t.Helper()
	data, err := f.TensorData(name)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
	}
	return out
}

// TestLoRAMerge converts p1 and p2 with their adapters merged (F32) and compares every written
// tensor with an independent float64 reference: W + s·B·A for adapted weights, the saved copy
// for modules_to_save, the checkpoint's own values for the rest.
func TestLoRAMerge(t *testing.T) {
	tests := []struct {
		name, ckpt, adapter string
		wantPairs           int
		wantSaved           []string
	}{
		{"p1_seed_r8", p1Dir, p1Seed, 31, nil},
		{"p2_all_rslora", p2Dir, p2RSLoRA, 49, []string{lmHeadName}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			model, mmproj, plan := convertTo(t, tt.ckpt, Options{Type: "f32", LoRA: []LoRASpec{{Dir: tt.adapter, Scale: 1}}})
			ad := readSafetensors(t, filepath.Join(tt.adapter, adapterWeightsFile))
			ckpt, err := safetensors.OpenCheckpoint(tt.ckpt)
			if err != nil {
				t.Fatal(err)
			}
			defer ckpt.Close()
			pairs, saved := 0, []string(nil)
			for _, o := range []struct {
				f *gguf.File
				p *OutputPlan
			}{{model, &plan.Model}, {mmproj, &plan.MMProj}} {
				for i := range o.p.Tensors {
					tp := &o.p.Tensors[i]
					hf := tp.Source
					if tp.saved != nil {
						hf = strings.TrimPrefix(tp.Source, peftKeyPrefix)
						saved = append(saved, hf)
					}
					ref, ok := refMerged(t, ckpt, ad, tt.name, hf)
					if !ok {
						if len(tp.deltas) > 0 {
							t.Errorf("%s: merged, but the adapter has no pair for %s", tp.Name, hf)
						}
						continue
					}
					if tp.saved == nil {
						pairs++
					}
					if tp.PermuteHeads > 0 {
						ref = permuteRef(ref, int(tp.Shape[0]), tp.PermuteHeads)
					}
					got := f32Values(t, o.f, tp.Name)
					var maxRef, maxErr float64
					worst := 0
					for k := range ref {
						maxRef = math.Max(maxRef, math.Abs(ref[k]))
						if e := math.Abs(float64(got[k]) - ref[k]); e > maxErr {
							maxErr, worst = e, k
						}
					}
					if maxErr > tolMerge*maxRef {
						t.Errorf("%s: max abs err %.3g at %d (got %v, want %v), max |ref| %.3g", tp.Name, maxErr, worst, got[worst], ref[worst], maxRef)
					}
				}
			}
			if pairs != tt.wantPairs || !slices.Equal(saved, tt.wantSaved) {
				t.Errorf("%d LoRA pairs merged, %v replaced; want %d, %v", pairs, saved, tt.wantPairs, tt.wantSaved)
			}
			for _, f := range []*gguf.File{model, mmproj} {
				names, err := f.Metadata.Strings("idefics2.adapters.names")
				if err != nil || !slices.Equal(names, []string{tt.name}) {
					t.Errorf("%s: idefics2.adapters.names = %v, %v; want [%s]", f.Path, names, err, tt.name)
				}
				sums, err := f.Metadata.Strings("idefics2.adapters.sha256")
				if err != nil || len(sums) != 1 || len(sums[0]) != 64 {
					t.Errorf("%s: idefics2.adapters.sha256 = %v, %v", f.Path, sums, err)
				}
			}
		})
	}
}

// TestLoRAScaleAndOrder checks that a user scale multiplies the delta and that two adapters add:
// p1 merged at 0.5 twice equals p1 merged once at 1, within float32 rounding.
func TestLoRAScaleAndOrder(t *testing.T) {
	once, _, _ := convertTo(t, p1Dir, Options{Type: "f32", LoRA: []LoRASpec{{Dir: p1Seed, Scale: 1}}})
	twice, _, _ := convertTo(t, p1Dir, Options{Type: "f32", LoRA: []LoRASpec{{Dir: p1Seed, Scale: 0.5}, {Dir: p1Seed, Scale: 0.5}}})
	base, _, _ := convertTo(t, p1Dir, Options{Type: "f32"})
	for _, name := range []string{"blk.0.attn_q.weight", "blk.1.ffn_down.weight"} {
		a, b, w := f32Values(t, once, name), f32Values(t, twice, name), f32Values(t, base, name)
		changed := false
		for i := range a {
			if math.Abs(float64(a[i]-b[i])) > 1e-6*math.Max(1, math.Abs(float64(a[i]))) {
				t.Fatalf("%s[%d]: once %v, twice at 0.5 %v", name, i, a[i], b[i])
			}
			changed = changed || a[i] != w[i]
		}
		if !changed {
			t.Errorf("%s: the adapter changed nothing", name)
		}
	}
}

// badAdapter is a broken copy of an adapter folder.
type badAdapterCase struct {
	name    string
	base    string // base checkpoint (default p1)
	src     string // adapter copied (default p1_seed_r8)
	mutate  func(t *testing.T, dir string)
	wantMsg []string
}

// editAdapterTensors rewrites adapter_model.safetensors through edit.
func editAdapterTensors(t *testing.T, dir string, edit func(m map[string]stTensor)) {
	path := filepath.Join(dir, adapterWeightsFile)
	m := readSafetensors(t, path)
	edit(m)
	writeSafetensors(t, path, m)
}

func rawConfigEdit(t *testing.T, dir, from, to string) {
	path := filepath.Join(dir, adapterConfigFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(raw), from, to, 1)
	if s == string(raw) {
		t.Fatalf("%q not in %s", from, path)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

var badAdapterCases = []badAdapterCase{
	{name: "wrong base shape", mutate: func(t *testing.T, dir string) {
		editAdapterTensors(t, dir, func(m map[string]stTensor) {
			k := "base_model.model.model.text_model.layers.0.mlp.up_proj.lora_A.weight"
			m[k] = stTensor{dtype: "F32", shape: []int64{8, 33}, data: make([]byte, 8*33*4)}
		})
	}, wantMsg: []string{"up_proj.lora_A.weight", "shape [8 33]", "[r, 32]"}},
	{name: "lora_B rows", mutate: func(t *testing.T, dir string) {
		editAdapterTensors(t, dir, func(m map[string]stTensor) {
			k := "base_model.model.model.text_model.layers.1.self_attn.v_proj.lora_B.weight"
			m[k] = stTensor{dtype: "F32", shape: []int64{16, 8}, data: make([]byte, 16*8*4)}
		})
	}, wantMsg: []string{"v_proj.lora_B.weight", "shape [16 8]", "want [8, 8]"}},
	{name: "unknown module", mutate: func(t *testing.T, dir string) {
		editAdapterTensors(t, dir, func(m map[string]stTensor) {
			m["base_model.model.model.text_model.layers.0.self_attn.qkv_proj.lora_A.weight"] = stTensor{dtype: "F32", shape: []int64{8, 32}, data: make([]byte, 8*32*4)}
			m["base_model.model.model.text_model.layers.0.self_attn.qkv_proj.lora_B.weight"] = stTensor{dtype: "F32", shape: []int64{32, 8}, data: make([]byte, 8*32*4)}
		})
	}, wantMsg: []string{"qkv_proj.lora_A.weight", "maps to no base weight"}},
	{name: "layer beyond the base", mutate: func(t *testing.T, dir string) {
		editAdapterTensors(t, dir, func(m map[string]stTensor) {
			m["base_model.model.model.text_model.layers.7.mlp.up_proj.lora_A.weight"] = stTensor{dtype: "F32", shape: []int64{8, 32}, data: make([]byte, 8*32*4)}
			m["base_model.model.model.text_model.layers.7.mlp.up_proj.lora_B.weight"] = stTensor{dtype: "F32", shape: []int64{64, 8}, data: make([]byte, 64*8*4)}
		})
	}, wantMsg: []string{"layers.7.mlp.up_proj.lora_A.weight", "maps to no base weight"}},
	{name: "stray key", mutate: func(t *testing.T, dir string) {
		editAdapterTensors(t, dir, func(m map[string]stTensor) {
			m["base_model.model.model.text_model.layers.0.mlp.up_proj.extra"] = stTensor{dtype: "F32", shape: []int64{1}, data: make([]byte, 4)}
		})
	}, wantMsg: []string{"up_proj.extra", "maps to no base tensor"}},
	{name: "missing partner", mutate: func(t *testing.T, dir string) {
		editAdapterTensors(t, dir, func(m map[string]stTensor) {
			delete(m, "base_model.model.model.text_model.layers.0.mlp.up_proj.lora_B.weight")
		})
	}, wantMsg: []string{"up_proj.lora_A.weight", "no lora_B partner"}},
	{name: "DoRA config", mutate: func(t *testing.T, dir string) {
		rawConfigEdit(t, dir, `"use_dora": false`, `"use_dora": true`)
	}, wantMsg: []string{adapterConfigFile, "use_dora", "DoRA"}},
	{name: "DoRA magnitude tensor", mutate: func(t *testing.T, dir string) {
		editAdapterTensors(t, dir, func(m map[string]stTensor) {
			m["base_model.model.model.text_model.layers.0.mlp.up_proj.lora_magnitude_vector"] = stTensor{dtype: "F32", shape: []int64{64}, data: make([]byte, 64*4)}
		})
	}, wantMsg: []string{"lora_magnitude_vector", "DoRA"}},
	{name: "bias all", mutate: func(t *testing.T, dir string) {
		rawConfigEdit(t, dir, `"bias": "none"`, `"bias": "all"`)
	}, wantMsg: []string{adapterConfigFile, "bias", `"all"`}},
	{name: "pickle", mutate: func(t *testing.T, dir string) {
		os.Remove(filepath.Join(dir, adapterWeightsFile))
		os.WriteFile(filepath.Join(dir, adapterPickleFile), []byte("\x80\x02}q\x00."), 0o644)
	}, wantMsg: []string{adapterPickleFile, "pickle", "safe_serialization"}},
	{name: "no weights", mutate: func(t *testing.T, dir string) {
		os.Remove(filepath.Join(dir, adapterWeightsFile))
	}, wantMsg: []string{adapterWeightsFile, "missing"}},
	{name: "truncated safetensors", mutate: func(t *testing.T, dir string) {
		path := filepath.Join(dir, adapterWeightsFile)
		st, _ := os.Stat(path)
		os.Truncate(path, st.Size()/2)
	}, wantMsg: []string{adapterWeightsFile}},
	{name: "rank 0", mutate: func(t *testing.T, dir string) {
		rawConfigEdit(t, dir, `"r": 8`, `"r": 0`)
	}, wantMsg: []string{adapterConfigFile, "r: 0 is not a rank"}},
	{name: "rank 0 tensor", mutate: func(t *testing.T, dir string) {
		editAdapterTensors(t, dir, func(m map[string]stTensor) {
			m["base_model.model.model.text_model.layers.0.mlp.up_proj.lora_A.weight"] = stTensor{dtype: "F32", shape: []int64{0, 32}}
			m["base_model.model.model.text_model.layers.0.mlp.up_proj.lora_B.weight"] = stTensor{dtype: "F32", shape: []int64{64, 0}}
		})
	}, wantMsg: []string{"up_proj.lora_A.weight", "shape [0 32]"}},
	{name: "alpha NaN", mutate: func(t *testing.T, dir string) {
		rawConfigEdit(t, dir, `"lora_alpha": 8`, `"lora_alpha": NaN`)
	}, wantMsg: []string{adapterConfigFile, "lora_alpha", "NaN"}},
	{name: "alpha Infinity in a pattern", src: "p2_all_rslora", base: "p2", mutate: func(t *testing.T, dir string) {
		rawConfigEdit(t, dir, `"o_proj": 8`, `"o_proj": -Infinity`)
	}, wantMsg: []string{adapterConfigFile, "alpha_pattern.o_proj", "-Infinity"}},
	{name: "NaN weights", mutate: func(t *testing.T, dir string) {
		editAdapterTensors(t, dir, func(m map[string]stTensor) {
			k := "base_model.model.model.text_model.layers.1.mlp.gate_proj.lora_B.weight"
			x := m[k]
			binary.LittleEndian.PutUint32(x.data[12:], math.Float32bits(float32(math.NaN())))
		})
	}, wantMsg: []string{"layers.1.mlp.gate_proj.lora_B.weight", "not finite"}},
	{name: "rank disagrees with rank_pattern", mutate: func(t *testing.T, dir string) {
		rawConfigEdit(t, dir, `"rank_pattern": {}`, `"rank_pattern": {"q_proj": 4}`)
	}, wantMsg: []string{"q_proj.lora_A.weight", "rank 8", "rank 4"}},
	{name: "module outside target_modules", mutate: func(t *testing.T, dir string) {
		rawConfigEdit(t, dir, `k_proj|q_proj|v_proj|o_proj`, `k_proj|q_proj|v_proj`)
	}, wantMsg: []string{"o_proj.lora_A.weight", "target_modules"}},
	{name: "module excluded", mutate: func(t *testing.T, dir string) {
		rawConfigEdit(t, dir, `"layers_pattern": null`, `"layers_pattern": null, "exclude_modules": ["o_proj"]`)
	}, wantMsg: []string{"o_proj.lora_A.weight", "exclude_modules"}},
	{name: "layer outside layers_to_transform", mutate: func(t *testing.T, dir string) {
		rawConfigEdit(t, dir, `"layers_to_transform": null`, `"layers_to_transform": [0]`)
	}, wantMsg: []string{"layers.1.", "layers_to_transform"}},
	{name: "LoftQ", mutate: func(t *testing.T, dir string) {
		rawConfigEdit(t, dir, `"init_lora_weights": "gaussian"`, `"init_lora_weights": "loftq"`)
	}, wantMsg: []string{adapterConfigFile, "init_lora_weights", "LoftQ"}},
	{name: "not LoRA", mutate: func(t *testing.T, dir string) {
		rawConfigEdit(t, dir, `"peft_type": "LORA"`, `"peft_type": "IA3"`)
	}, wantMsg: []string{adapterConfigFile, "peft_type", "IA3"}},
	{name: "no adapter_config.json", mutate: func(t *testing.T, dir string) {
		os.Remove(filepath.Join(dir, adapterConfigFile))
	}, wantMsg: []string{adapterConfigFile, "not a PEFT adapter folder"}},
	{name: "other base", base: "p2", wantMsg: []string{"base_model.model.model.connector.modality_projection.down_proj.lora_A.weight", "shape [8 64]", "[16 48]"}},
	{name: "lm_head copy of another vocabulary", src: "p2_all_rslora", base: "p2", mutate: func(t *testing.T, dir string) {
		editAdapterTensors(t, dir, func(m map[string]stTensor) {
			m["base_model.model.lm_head.weight"] = stTensor{dtype: "F32", shape: []int64{32010, 16}, data: make([]byte, 32010*16*4)}
		})
	}, wantMsg: []string{"lm_head.weight", "shape [32010 16]", "tokenizer"}},
}

// copyAdapter copies an adapter fixture into a writable temp folder.
func copyAdapter(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{adapterConfigFile, adapterWeightsFile} {
		copyFile(t, filepath.Join(loraDir, name, f), filepath.Join(dir, f))
	}
	return dir
}

// TestBadAdapters checks that each broken adapter is an InputError naming the culprit, from
// both the merge (NewPlan) and the run-time export (NewAdapterPlan), before anything is written.
func TestBadAdapters(t *testing.T) {
	for _, tt := range badAdapterCases {
		t.Run(tt.name, func(t *testing.T) {
			src, base := tt.src, tt.base
			if src == "" {
				src = "p1_seed_r8"
			}
			if base == "" {
				base = "p1"
			}
			dir := copyAdapter(t, src)
			if tt.mutate != nil {
				tt.mutate(t, dir)
			}
			out := t.TempDir()
			_, err := NewPlan(Options{InDir: filepath.Join(ckptDir, base), Out: filepath.Join(out, "m.gguf"), Type: "f32",
				LoRA: []LoRASpec{{Dir: dir, Scale: 1}}, Logger: quietLog})
			checkBadAdapterErr(t, "merge", err, tt.wantMsg)
			_, err = NewAdapterPlan(AdapterOptions{InDir: filepath.Join(ckptDir, base), Adapter: LoRASpec{Dir: dir, Scale: 1},
				Out: filepath.Join(out, "a.gguf"), Logger: quietLog})
			checkBadAdapterErr(t, "export", err, tt.wantMsg)
			if left := dirEntries(t, out); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
		})
	}
}

func checkBadAdapterErr(t *testing.T, route string, err error, want []string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", route)
	}
	if !IsInputError(err) {
		t.Errorf("%s: %v (%T) is not an InputError", route, err, err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q does not contain %q", route, err, w)
		}
	}
}

// TestAdapterModuleSelection checks target_modules forms that select the same modules as the
// fixture's regex: "all-linear", and layers_to_transform naming every layer.
func TestAdapterModuleSelection(t *testing.T) {
	for _, tt := range []struct{ name, from, to string }{
		{"all-linear", `"target_modules": ".*(text_model|modality_projection|perceiver_resampler).*(down_proj|gate_proj|up_proj|k_proj|q_proj|v_proj|o_proj).*$"`, `"target_modules": "all-linear"`},
		{"every layer", `"layers_to_transform": null`, `"layers_to_transform": [0, 1]`},
		{"exclusion of others", `"layers_pattern": null`, `"layers_pattern": null, "exclude_modules": ".*vision_model.*"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyAdapter(t, "p1_seed_r8")
			rawConfigEdit(t, dir, tt.from, tt.to)
			p, err := NewPlan(Options{InDir: p1Dir, Out: filepath.Join(t.TempDir(), "m.gguf"), LoRA: []LoRASpec{{Dir: dir, Scale: 1}}, Logger: quietLog})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if n := len(p.Adapters[0].Targets()); n != 31 {
				t.Errorf("%d targets, want 31", n)
			}
		})
	}
}

// TestAdapterFolderAsInput checks the hint for an adapter folder given where a checkpoint goes.
func TestAdapterFolderAsInput(t *testing.T) {
	_, err := NewPlan(Options{InDir: p1Seed, Out: filepath.Join(t.TempDir(), "m.gguf"), Logger: quietLog})
	checkBadAdapterErr(t, "merge", err, []string{p1Seed, "PEFT adapter folder", "--lora"})
	_, err = NewPlan(Options{InDir: p1Dir, Out: filepath.Join(t.TempDir(), "m.gguf"), LoRA: []LoRASpec{{Dir: p1Dir, Scale: 1}}, Logger: quietLog})
	checkBadAdapterErr(t, "checkpoint as adapter", err, []string{"model checkpoint, not a PEFT adapter folder"})
}

// TestLoRAMergeNonFiniteResult checks that a merge that overflows float32 fails at Run, naming
// the tensor, and leaves no output.
func TestLoRAMergeNonFiniteResult(t *testing.T) {
	dir := copyAdapter(t, "p1_seed_r8")
	editAdapterTensors(t, dir, func(m map[string]stTensor) {
		for _, k := range []string{"lora_A", "lora_B"} {
			x := m["base_model.model.model.text_model.layers.0.mlp.down_proj."+k+".weight"]
			for i := 0; i < len(x.data); i += 4 {
				binary.LittleEndian.PutUint32(x.data[i:], math.Float32bits(3e38))
			}
		}
	})
	out := t.TempDir()
	p, err := NewPlan(Options{InDir: p1Dir, Out: filepath.Join(out, "m.gguf"), Type: "f32", LoRA: []LoRASpec{{Dir: dir, Scale: 1}}, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	err = p.Run(context.Background(), nil)
	checkBadAdapterErr(t, "run", err, []string{"model.text_model.layers.0.mlp.down_proj.weight", "not finite", "p1_seed_r8"})
	if left := dirEntries(t, out); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestAdapterExport writes p2's adapter in llama.cpp's layout and checks it against the merge:
// for every adapted weight, W_merged − W_base (both F32 conversions) equals
// (alpha/r)·B·A computed from the exported tensors as llama.cpp computes the update.
func TestAdapterExport(t *testing.T) {
	for _, tt := range []struct {
		name, ckpt, adapter string
		wantMMProj          bool
	}{
		{"p1_seed_r8", p1Dir, p1Seed, true},
		{"p2_all_rslora", p2Dir, p2RSLoRA, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out := t.TempDir()
			p, err := NewAdapterPlan(AdapterOptions{InDir: tt.ckpt, Adapter: LoRASpec{Dir: tt.adapter, Scale: 1},
				Out: filepath.Join(out, "adapter.gguf"), Logger: quietLog})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if err := p.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			if p.HasMMProj() != tt.wantMMProj {
				t.Fatalf("HasMMProj %v, want %v", p.HasMMProj(), tt.wantMMProj)
			}
			merged, mmMerged, _ := convertTo(t, tt.ckpt, Options{Type: "f32", LoRA: []LoRASpec{{Dir: tt.adapter, Scale: 1}}})
			base, mmBase, _ := convertTo(t, tt.ckpt, Options{Type: "f32"})
			for _, part := range []struct {
				path         string
				arch         string
				merged, base *gguf.File
			}{{p.Text.Path, "llama", merged, base}, {p.MMProj.Path, "clip", mmMerged, mmBase}} {
				f, err := gguf.Open(part.path)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				checkAdapterFile(t, f, part.arch, part.merged, part.base)
			}
		})
	}
}

// tolExport bounds the difference between an exported pair's update and the merge's, relative to
// the largest weight: the merge rounds W + ΔW to float32 once, the export rounds B·fold.
const tolExport = 1e-6

func checkAdapterFile(t *testing.T, f *gguf.File, arch string, merged, base *gguf.File) {
	t.Helper()
	md := f.Metadata
	for key, want := range map[string]string{"general.type": "adapter", "adapter.type": "lora", "general.architecture": arch} {
		if got, err := md.String(key); err != nil || got != want {
			t.Errorf("%s: %s = %q, %v; want %q", f.Path, key, got, err, want)
		}
	}
	alpha, err := md.Float32("adapter.lora.alpha")
	if err != nil {
		t.Fatalf("%s: adapter.lora.alpha: %v", f.Path, err)
	}
	pairs := 0
	for _, ti := range f.Tensors {
		name, ok := strings.CutSuffix(ti.Name, ".lora_a")
		if !ok {
			if !strings.HasSuffix(ti.Name, ".lora_b") {
				t.Errorf("%s: tensor %q is neither lora_a nor lora_b", f.Path, ti.Name)
			}
			continue
		}
		tb, ok := f.Tensor(name + ".lora_b")
		if !ok {
			t.Fatalf("%s: %s has no lora_b", f.Path, ti.Name)
		}
		wt, ok := base.Tensor(name)
		if !ok {
			t.Fatalf("%s: %s: base has no %s", f.Path, ti.Name, name)
		}
		// llama.cpp's checks (llama-adapter.cpp): a.ne[0] = W.ne[0], b.ne[1] = W.ne[1], a.ne[1] = b.ne[0].
		if ti.Shape[0] != wt.Shape[0] || tb.Shape[1] != wt.Shape[1] || ti.Shape[1] != tb.Shape[0] {
			t.Fatalf("%s: shapes a %v, b %v for base %v", name, ti.Shape, tb.Shape, wt.Shape)
		}
		in, r, out := int(ti.Shape[0]), int(ti.Shape[1]), int(tb.Shape[1])
		a, b := f32Values(t, f, ti.Name), f32Values(t, f, tb.Name)
		wm, wb := f32Values(t, merged, name), f32Values(t, base, name)
		s := 1.0 // llama.cpp's get_scale with alpha 0: the run-time scale alone
		if alpha != 0 {
			s = float64(alpha) / float64(r)
		}
		var maxW, maxErr float64
		for o := 0; o < out; o++ {
			for i := 0; i < in; i++ {
				var d float64
				for k := 0; k < r; k++ {
					d += float64(b[o*r+k]) * float64(a[k*in+i])
				}
				want := float64(wm[o*in+i]) - float64(wb[o*in+i])
				maxW = math.Max(maxW, math.Abs(float64(wm[o*in+i])))
				maxErr = math.Max(maxErr, math.Abs(s*d-want))
			}
		}
		if maxErr > tolExport*maxW {
			t.Errorf("%s: update differs from the merge by %.3g (max |W| %.3g)", name, maxErr, maxW)
		}
		pairs++
	}
	if pairs == 0 {
		t.Errorf("%s: no LoRA pair", f.Path)
	}
}

// FuzzAdapterConfig fuzzes adapter_config.json through openAdapterConfig and the module
// matching that uses it: an InputError naming the file, or a config whose rank and alpha the
// merge can use; never a panic.
func FuzzAdapterConfig(f *testing.F) {
	for _, a := range []string{p1Seed, p2RSLoRA} {
		if b, err := os.ReadFile(filepath.Join(a, adapterConfigFile)); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"peft_type": "LORA", "r": 4, "lora_alpha": NaN, "target_modules": ["q_proj"]}`))
	f.Add([]byte(`{"peft_type": "LORA", "target_modules": "(", "rank_pattern": {"q_proj": 0}}`))
	f.Add([]byte(`{"peft_type": "LORA", "target_modules": ".*", "alpha_pattern": {"[": 1, "o_proj": -Infinity}, "modules_to_save": ["lm_head"]}`))
	f.Add([]byte(`{"peft_type": "LORA", "r": 1e9, "target_modules": [], "use_dora": "yes"}`))
	f.Add([]byte(`{"peft_type": "LORA", "r": 2, "target_modules": ["x"], "rank_pattern": {"a\"NaN": 3}}`))
	f.Add([]byte(`[]`))
	dir := fuzzDir(f, nil)
	modules := []string{"model.text_model.layers.0.self_attn.q_proj", "model.connector.perceiver_resampler.layers.0.mlp.down_proj", "lm_head"}
	f.Fuzz(func(t *testing.T, data []byte) {
		putFile(t, dir, adapterConfigFile, data)
		c, err := openAdapterConfig(dir)
		if err != nil {
			checkInputError(t, err, adapterConfigFile, dir)
			return
		}
		for _, m := range modules {
			r, alpha := c.moduleRankAlpha(m)
			if r <= 0 || r > maxAdapterRank || math.IsNaN(alpha) || math.IsInf(alpha, 0) || alpha == 0 {
				t.Fatalf("module %s: rank %d, alpha %v", m, r, alpha)
			}
			c.targetsModule(m)
			c.saves(m)
		}
	})
}

// TestLoRAOnBNB merges the p1 adapter into a bitsandbytes NF4 copy of p1 (a QLoRA adapter on its
// training base): each adapted weight is dequantized, the update added, and the sum written at
// --type (F32 here, checked against dequant + s·B·A in float64; NF4, whose adapted weights must
// be re-quantized rather than repacked).
func TestLoRAOnBNB(t *testing.T) {
	dir, nf := makeBNBCheckpoint(t, "float32")
	ad := readSafetensors(t, filepath.Join(p1Seed, adapterWeightsFile))
	model, _, plan := convertTo(t, dir, Options{Type: "f32", LoRA: []LoRASpec{{Dir: p1Seed, Scale: 1}}})
	checked := 0
	for i := range plan.Model.Tensors {
		tp := &plan.Model.Tensors[i]
		src, ok := nf[tp.Source]
		if !ok || len(tp.deltas) == 0 {
			continue
		}
		deq, err := src.Dequantize()
		if err != nil {
			t.Fatal(err)
		}
		module := strings.TrimSuffix(tp.Source, ".weight")
		ta, tb := ad[peftKeyPrefix+module+".lora_A.weight"], ad[peftKeyPrefix+module+".lora_B.weight"]
		a, _ := safetensors.ToFloat32(safetensors.Tensor{DType: safetensors.DType(ta.dtype), Shape: ta.shape, Data: ta.data})
		b, _ := safetensors.ToFloat32(safetensors.Tensor{DType: safetensors.DType(tb.dtype), Shape: tb.shape, Data: tb.data})
		r, in := int(ta.shape[0]), int(ta.shape[1])
		ref := make([]float64, len(deq))
		for k := range deq {
			o, c := k/in, k%in
			var d float64
			for j := 0; j < r; j++ {
				d += float64(b[o*r+j]) * float64(a[j*in+c])
			}
			ref[k] = float64(deq[k]) + d
		}
		if tp.PermuteHeads > 0 {
			ref = permuteRef(ref, in, tp.PermuteHeads)
		}
		got := f32Values(t, model, tp.Name)
		var maxRef, maxErr float64
		for k := range ref {
			maxRef = math.Max(maxRef, math.Abs(ref[k]))
			maxErr = math.Max(maxErr, math.Abs(float64(got[k])-ref[k]))
		}
		if maxErr > tolMerge*maxRef {
			t.Errorf("%s: max abs err %.3g, max |ref| %.3g", tp.Name, maxErr, maxRef)
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no adapted bitsandbytes weight")
	}
	_, _, nf4Plan := convertTo(t, dir, Options{Type: "nf4", LoRA: []LoRASpec{{Dir: p1Seed, Scale: 1}}})
	for i := range nf4Plan.Model.Tensors {
		tp := &nf4Plan.Model.Tensors[i]
		if _, ok := nf[tp.Source]; ok && len(tp.deltas) > 0 && (tp.Repacked() || !strings.Contains(tp.Note, "LoRA added, re-quantized")) {
			t.Errorf("%s: repacked %v, note %q; want re-quantized with the update", tp.Name, tp.Repacked(), tp.Note)
		}
	}
}

// FuzzParseLoRASpec: an InputError, or a spec with a folder and a finite scale that prints back
// to the input.
func FuzzParseLoRASpec(f *testing.F) {
	for _, s := range []string{"ad", "ad:0.5", "a:b/ad:-2", "ad:NaN", ":1", "", "ad:", "ad:1e400", "ad:0x1p-3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := ParseLoRASpec(s)
		if err != nil {
			if !IsInputError(err) {
				t.Fatalf("%q: %v is not an InputError", s, err)
			}
			return
		}
		if spec.Dir == "" || math.IsNaN(spec.Scale) || math.IsInf(spec.Scale, 0) {
			t.Fatalf("%q: %+v", s, spec)
		}
		if spec.Dir != s && !strings.HasPrefix(s, spec.Dir+":") {
			t.Fatalf("%q: folder %q is not the input's prefix", s, spec.Dir)
		}
	})
}
