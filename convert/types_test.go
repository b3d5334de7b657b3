package convert

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/quant"
)

// hparams8B are idefics2-8b's hyper-parameters (IDEFICS2.md §2).
func hparams8B(tied bool) *hparams {
	return &hparams{
		name: "idefics2-8b", imageTokenID: 32001, tieEmbedding: tied,
		text: textParams{vocabSize: 32003, hiddenSize: 4096, ffnSize: 14336, numLayers: 32, numHeads: 32, numKVHeads: 8,
			headDim: 128, maxPositions: 32768, eps: 1e-5, ropeBase: 10000, slidingWindow: 4096, hiddenAct: "silu"},
		vision: visionParams{hiddenSize: 1152, ffnSize: 4304, numLayers: 27, numHeads: 16, numChannels: 3, imageSize: 980,
			patchSize: 14, eps: 1e-6, hiddenAct: "gelu_pytorch_tanh"},
		perceiver: perceiverParams{hiddenSize: 4096, numLatents: 64, numLayers: 3, numHeads: 16, numKVHeads: 4, headDim: 96,
			ffnSize: 16384, eps: 1e-5, hiddenAct: "silu"},
	}
}

// planTypes chooses the type of every tensor of h under scheme and vision type, by GGUF name.
func planTypes(t *testing.T, h *hparams, scheme string, vision quant.Type, overrides ...string) map[string]typeChoice {
	t.Helper()
	sc, err := ParseScheme(scheme)
	if err != nil {
		t.Fatal(err)
	}
	c := &typeChooser{scheme: sc, visionType: vision, numLayers: h.text.numLayers, tied: h.tieEmbedding}
	for _, s := range overrides {
		o, err := ParseOverride(s)
		if err != nil {
			t.Fatal(err)
		}
		c.overrides = append(c.overrides, o)
		c.used = append(c.used, false)
	}
	out := map[string]typeChoice{}
	for _, m := range expandTable(h) {
		shape := m.rule.shape(h)
		out[m.gguf] = c.choose(m, shape[len(shape)-1])
	}
	return out
}

func TestExpandTable8B(t *testing.T) {
	var model, mmproj int
	for _, m := range expandTable(hparams8B(false)) {
		if m.rule.out == outModel {
			model++
		} else {
			mmproj++
		}
	}
	// IDEFICS2.md §4: 290 text tensors + lm_head; 437 vision + 35 connector.
	if model != 291 || mmproj != 472 {
		t.Errorf("%d model and %d mmproj tensors, want 291 and 472", model, mmproj)
	}
	if n := len(expandTable(hparams8B(true))); n != 291+472-1 {
		t.Errorf("tied: %d tensors, want %d (no output.weight)", n, 291+472-1)
	}
	for _, m := range expandTable(hparams8B(false)) {
		if len(m.gguf) > 63 {
			t.Errorf("GGUF name %q is longer than ggml's 63 bytes", m.gguf)
		}
	}
}

func TestUseMoreBits(t *testing.T) {
	var got []int
	for i := 0; i < 32; i++ {
		if useMoreBits(i, 32) {
			got = append(got, i)
		}
	}
	// n/8 = 4, 7n/8 = 28: layers 0–3, 28–31 and 6, 9, …, 27.
	want := []int{0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}
	if !slices.Equal(got, want) {
		t.Errorf("use_more_bits layers %v, want %v", got, want)
	}
}

// TestMixRules checks the llama.cpp mix rules on the 8B shapes.
func TestMixRules(t *testing.T) {
	moreBits := func(l int) bool { return useMoreBits(l, 32) }
	tests := []struct {
		scheme string
		tied   bool
		check  func(name string, layer int) quant.Type
	}{
		{"q4_k_m", false, func(name string, l int) quant.Type {
			switch {
			case name == "output.weight":
				return quant.Q6_K
			case (strings.HasSuffix(name, "attn_v.weight") || strings.HasSuffix(name, "ffn_down.weight")) && moreBits(l):
				return quant.Q6_K
			}
			return quant.Q4_K
		}},
		{"q5_k_m", false, func(name string, l int) quant.Type {
			switch {
			case name == "output.weight":
				return quant.Q6_K
			case (strings.HasSuffix(name, "attn_v.weight") || strings.HasSuffix(name, "ffn_down.weight")) && moreBits(l):
				return quant.Q6_K
			}
			return quant.Q5_K
		}},
		{"q4_k_s", false, func(name string, l int) quant.Type {
			switch {
			case name == "output.weight":
				return quant.Q6_K
			case strings.HasSuffix(name, "attn_v.weight") && l < 4, strings.HasSuffix(name, "ffn_down.weight") && l < 4:
				return quant.Q5_K
			}
			return quant.Q4_K
		}},
		{"q4_k_m", true, func(name string, l int) quant.Type {
			switch {
			case name == "token_embd.weight":
				return quant.Q6_K // tied: takes the output rule
			case (strings.HasSuffix(name, "attn_v.weight") || strings.HasSuffix(name, "ffn_down.weight")) && moreBits(l):
				return quant.Q6_K
			}
			return quant.Q4_K
		}},
		{"q4_k", false, func(string, int) quant.Type { return quant.Q4_K }},
		{"q4_0", false, func(string, int) quant.Type { return quant.Q4_0 }},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/tied=%v", tc.scheme, tc.tied), func(t *testing.T) {
			h := hparams8B(tc.tied)
			types := planTypes(t, h, tc.scheme, quant.F16)
			for _, m := range expandTable(h) {
				if m.rule.out != outModel || m.rule.class != classText {
					continue
				}
				if got, want := types[m.gguf].final, tc.check(m.gguf, m.layer); got != want {
					t.Errorf("%s: %s, want %s", m.gguf, got, want)
				}
			}
		})
	}
}

// TestVisionFallbacks checks the row-length fallbacks of IDEFICS2.md §10.4 on the 8B shapes.
func TestVisionFallbacks(t *testing.T) {
	h := hparams8B(false)
	tests := []struct {
		vision quant.Type
		want   map[string]quant.Type
	}{
		{quant.Q4_K, map[string]quant.Type{
			"v.blk.0.attn_q.weight":              quant.Q5_0, // 1152 is not a multiple of 256
			"v.blk.0.ffn_up.weight":              quant.Q5_0,
			"v.blk.0.ffn_down.weight":            quant.F16, // 4304 is not a multiple of 32
			"mm.gate.weight":                     quant.Q5_0,
			"mm.down.weight":                     quant.Q4_K, // 14336
			"mm.perceiver.blk.0.attn_out.weight": quant.Q4_K, // 1536
			"mm.perceiver.blk.2.ffn_down.weight": quant.Q4_K, // 16384
			"v.patch_embd.weight":                quant.F32,
			"v.position_embd.weight":             quant.F32,
			"mm.perceiver.latents":               quant.F32,
			"v.blk.3.ln1.bias":                   quant.F32,
		}},
		{quant.Q6_K, map[string]quant.Type{"v.blk.0.attn_q.weight": quant.Q8_0, "v.blk.0.ffn_down.weight": quant.F16}},
		{quant.Q5_K, map[string]quant.Type{"v.blk.0.attn_q.weight": quant.Q5_1}},
		{quant.Q4_0, map[string]quant.Type{"v.blk.0.attn_q.weight": quant.Q4_0, "v.blk.0.ffn_down.weight": quant.F16}},
		{quant.NF4, map[string]quant.Type{"v.blk.0.ffn_down.weight": quant.NF4}},
		{quant.BF16, map[string]quant.Type{"v.blk.0.ffn_down.weight": quant.BF16}},
	}
	for _, tc := range tests {
		t.Run(tc.vision.String(), func(t *testing.T) {
			types := planTypes(t, h, "q4_k_m", tc.vision)
			for name, want := range tc.want {
				if got := types[name].final; got != want {
					t.Errorf("%s: %s, want %s (note %q)", name, got, want, types[name].note)
				}
			}
		})
	}
}

func TestOverrides(t *testing.T) {
	h := hparams8B(false)
	types := planTypes(t, h, "q4_k_m", quant.F16, `attn_v\.weight$=q8_0`, `^mm\.=q4_0`, `ffn_down=f32`)
	for name, want := range map[string]quant.Type{
		"blk.0.attn_v.weight":     quant.Q8_0, // first match wins over the mix rule
		"v.blk.0.attn_v.weight":   quant.Q8_0,
		"blk.5.ffn_down.weight":   quant.F32,
		"mm.gate.weight":          quant.Q4_0,
		"v.blk.0.ffn_down.weight": quant.F32,
		"blk.0.attn_norm.weight":  quant.F32, // norms never change
		"blk.0.attn_q.weight":     quant.Q4_K,
	} {
		if got := types[name].final; got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
	}
}

func TestParseOverride(t *testing.T) {
	tests := []struct {
		in      string
		pattern string
		typ     quant.Type
		wantErr string
	}{
		{in: "attn_v=q8_0", pattern: "attn_v", typ: quant.Q8_0},
		{in: `blk\.(0|1)\..*=Q6_K`, pattern: `blk\.(0|1)\..*`, typ: quant.Q6_K},
		{in: "a=b=f16", pattern: "a=b", typ: quant.F16},
		{in: "x=nf4", pattern: "x", typ: quant.NF4},
		{in: "attn_v", wantErr: "REGEX=TYPE"},
		{in: "=q8_0", wantErr: "REGEX=TYPE"},
		{in: "attn_v=", wantErr: "REGEX=TYPE"},
		{in: "(=q8_0", wantErr: "error parsing regexp"},
		{in: "attn_v=q4_k_m", wantErr: `type "q4_k_m": unknown`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			o, err := ParseOverride(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !IsInputError(err) {
					t.Fatalf("error %v, want an InputError containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.Pattern.String() != tc.pattern || o.Type != tc.typ {
				t.Errorf("got %q=%s, want %q=%s", o.Pattern, o.Type, tc.pattern, tc.typ)
			}
		})
	}
}

func TestFallbackType(t *testing.T) {
	tests := []struct {
		t    quant.Type
		ne0  int
		want quant.Type
	}{
		{quant.Q4_K, 4096, quant.Q4_K},
		{quant.Q4_K, 1152, quant.Q5_0},
		{quant.Q5_K, 1152, quant.Q5_1},
		{quant.Q6_K, 1152, quant.Q8_0},
		{quant.Q4_K, 4304, quant.F16},
		{quant.Q4_0, 4304, quant.F16},
		{quant.Q8_0, 112, quant.F16},
		{quant.Q8_0, 96, quant.Q8_0},
		{quant.NF4, 4304, quant.NF4},
		{quant.F16, 3, quant.F16},
		{quant.BF16, 3, quant.BF16},
		{quant.F32, 7, quant.F32},
	}
	for _, tc := range tests {
		if got := fallbackType(tc.t, tc.ne0); got != tc.want {
			t.Errorf("fallbackType(%s, %d) = %s, want %s", tc.t, tc.ne0, got, tc.want)
		}
	}
}

func TestPermuteRows(t *testing.T) {
	tests := []struct {
		headDim, heads, ne0 int
		want                []float32 // source row of each output row
	}{
		{headDim: 4, heads: 1, ne0: 1, want: []float32{0, 2, 1, 3}},
		{headDim: 8, heads: 1, ne0: 1, want: []float32{0, 4, 1, 5, 2, 6, 3, 7}},
		{headDim: 4, heads: 2, ne0: 2, want: []float32{0, 0, 2, 2, 1, 1, 3, 3, 4, 4, 6, 6, 5, 5, 7, 7}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("hd%d/heads%d/ne0%d", tc.headDim, tc.heads, tc.ne0), func(t *testing.T) {
			in := make([]float32, tc.headDim*tc.heads*tc.ne0)
			for i := range in {
				in[i] = float32(i / tc.ne0)
			}
			if got := permuteRows(in, tc.ne0, tc.headDim); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSchemeFileTypes pins general.file_type per --type (llama.h enum llama_ftype).
func TestSchemeFileTypes(t *testing.T) {
	want := map[string]gguf.FileType{"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7, "q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9,
		"q4_k": 14, "q5_k": 16, "q6_k": 18, "nf4": gguf.FileTypeNF4, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17}
	for _, name := range SchemeNames() {
		s, err := ParseScheme(strings.ToUpper(name))
		if err != nil {
			t.Fatal(err)
		}
		if s.FileType != want[name] {
			t.Errorf("%s: file type %d, want %d", name, s.FileType, want[name])
		}
		delete(want, name)
	}
	if len(want) > 0 {
		t.Errorf("schemes missing: %v", want)
	}
}

// TestPlanOverridesOnFixture checks that overrides reach the plan of a real checkpoint.
func TestPlanOverridesOnFixture(t *testing.T) {
	p, err := NewPlan(Options{InDir: p1Dir, Out: filepath.Join(t.TempDir(), "m.gguf"), Type: "q8_0",
		VisionType: "bf16", Overrides: []string{`^blk\.1\.ffn_up=f32`}, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, o := range []*OutputPlan{&p.Model, &p.MMProj} {
		for _, tp := range o.Tensors {
			var want quant.Type
			switch {
			case tp.Name == "blk.1.ffn_up.weight" || len(tp.Shape) == 1 || tp.Name == "v.patch_embd.weight" ||
				tp.Name == "v.position_embd.weight" || tp.Name == "mm.perceiver.latents":
				want = quant.F32
			case o == &p.MMProj:
				want = quant.BF16
			default:
				want = quant.Q8_0
			}
			if tp.Type != want {
				t.Errorf("%s: %s, want %s", tp.Name, tp.Type, want)
			}
		}
	}
}
