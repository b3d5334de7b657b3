package convert

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// p1Config returns p1's config.json as a generic map.
func p1Config(t testing.TB) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(p1Dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func parseConfigMap(t *testing.T, m map[string]any) (*hparams, error) {
	t.Helper()
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	o, err := parseJSONObject(configFile, raw)
	if err != nil {
		return nil, err
	}
	return parseConfigObject("/x/my-model", o)
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(m map[string]any)
		check   func(t *testing.T, h *hparams)
		wantErr string
	}{
		{
			name: "p1 as is",
			check: func(t *testing.T, h *hparams) {
				if h.name != "my-model" || h.text.headDim != 8 || h.text.slidingWindow != 4096 || h.perceiver.hiddenSize != 32 ||
					h.perceiver.eps != 1e-5 || h.perceiver.ffnSize != 128 || h.vision.numPositions() != 16 {
					t.Errorf("unexpected %+v", h)
				}
			},
		},
		{
			name: "perceiver rms_norm_eps is used when present",
			edit: func(m map[string]any) { sub(m, "perceiver_config")["rms_norm_eps"] = 1e-6 },
			check: func(t *testing.T, h *hparams) {
				if h.perceiver.eps != 1e-6 {
					t.Errorf("perceiver eps %v, want 1e-6", h.perceiver.eps)
				}
			},
		},
		{
			name: "perceiver hidden_size differing from text: text values win",
			edit: func(m map[string]any) {
				sub(m, "perceiver_config")["rms_norm_eps"] = 1e-6
				sub(m, "perceiver_config")["hidden_size"] = 4096
			},
			check: func(t *testing.T, h *hparams) {
				if h.perceiver.eps != 1e-5 || h.perceiver.hiddenSize != 32 {
					t.Errorf("perceiver eps %v hidden %d, want 1e-5 and 32", h.perceiver.eps, h.perceiver.hiddenSize)
				}
			},
		},
		{
			name: "sliding_window null",
			edit: func(m map[string]any) { sub(m, "text_config")["sliding_window"] = nil },
			check: func(t *testing.T, h *hparams) {
				if h.text.slidingWindow != 0 {
					t.Errorf("sliding window %d, want 0", h.text.slidingWindow)
				}
			},
		},
		{
			name: "head_dim absent",
			edit: func(m map[string]any) { delete(sub(m, "text_config"), "head_dim") },
			check: func(t *testing.T, h *hparams) {
				if h.text.headDim != 8 {
					t.Errorf("head dim %d, want 8", h.text.headDim)
				}
			},
		},
		{
			name: "name from _name_or_path",
			edit: func(m map[string]any) { m["_name_or_path"] = "HuggingFaceM4/idefics2-8b" },
			check: func(t *testing.T, h *hparams) {
				if h.name != "idefics2-8b" {
					t.Errorf("name %q", h.name)
				}
			},
		},
		{name: "text_config missing", edit: func(m map[string]any) { delete(m, "text_config") }, wantErr: "config.json: text_config: missing"},
		{name: "vision_config not an object", edit: func(m map[string]any) { m["vision_config"] = 3 }, wantErr: "vision_config: not a JSON object"},
		{name: "negative size", edit: func(m map[string]any) { sub(m, "vision_config")["hidden_size"] = -4 }, wantErr: "vision_config.hidden_size: -4 is not positive"},
		{name: "string size", edit: func(m map[string]any) { sub(m, "text_config")["num_hidden_layers"] = "2" }, wantErr: "text_config.num_hidden_layers"},
		{name: "kv heads do not divide", edit: func(m map[string]any) { sub(m, "text_config")["num_key_value_heads"] = 3 }, wantErr: "num_key_value_heads: 3 does not divide"},
		{name: "odd head dim", edit: func(m map[string]any) { sub(m, "text_config")["head_dim"] = 7 }, wantErr: "head_dim: 7 is odd"},
		{name: "image size", edit: func(m map[string]any) { sub(m, "vision_config")["image_size"] = 57 }, wantErr: "image_size: 57 is not a multiple of patch_size 14"},
		{name: "image token outside vocab", edit: func(m map[string]any) { m["image_token_id"] = 40000 }, wantErr: "image_token_id: 40000 is outside"},
		{name: "activation", edit: func(m map[string]any) { sub(m, "text_config")["hidden_act"] = "gelu" }, wantErr: "hidden_act: \"gelu\" is not supported"},
		{name: "rope scaling", edit: func(m map[string]any) { sub(m, "text_config")["rope_scaling"] = map[string]any{"type": "linear"} }, wantErr: "rope_scaling: not supported"},
		{name: "zero eps", edit: func(m map[string]any) { sub(m, "text_config")["rms_norm_eps"] = 0 }, wantErr: "rms_norm_eps: 0 is not a positive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := p1Config(t)
			if tc.edit != nil {
				tc.edit(m)
			}
			h, err := parseConfigMap(t, m)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !IsInputError(err) {
					t.Fatalf("error %v, want an InputError containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, h)
		})
	}
}

// FuzzParseConfig: any config.json gives hyper-parameters or an error, never a panic.
func FuzzParseConfig(f *testing.F) {
	if raw, err := os.ReadFile(filepath.Join(p1Dir, "config.json")); err == nil {
		f.Add(raw)
	}
	f.Add([]byte(`{"model_type":"idefics2","text_config":{"model_type":"mistral","vocab_size":1,"hidden_size":2,"intermediate_size":1,"num_hidden_layers":1,"num_attention_heads":1,"num_key_value_heads":1},"vision_config":{"hidden_size":1,"intermediate_size":1,"num_hidden_layers":1,"num_attention_heads":1,"image_size":1,"patch_size":1},"perceiver_config":{}}`))
	f.Add([]byte(`{"text_config": null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := parseJSONObject(configFile, data)
		if err != nil {
			return
		}
		h, err := parseConfigObject("dir", o)
		if err != nil {
			return
		}
		if h.text.hiddenSize <= 0 || h.text.headDim <= 0 || h.text.numHeads%h.text.numKVHeads != 0 || h.vision.imageSize%h.vision.patchSize != 0 {
			t.Fatalf("accepted inconsistent hyper-parameters %+v", h)
		}
	})
}
