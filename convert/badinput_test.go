package convert

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadCheckpoints builds broken copies of p1 and checks that each gives an InputError naming
// the culprit, and that no output file (not even a temporary one) is left behind.
func TestBadCheckpoints(t *testing.T) {
	const weights = "model.safetensors"
	editTensors := func(t *testing.T, dir string, edit func(m map[string]stTensor)) {
		path := filepath.Join(dir, weights)
		m := readSafetensors(t, path)
		edit(m)
		writeSafetensors(t, path, m)
	}
	tests := []struct {
		name    string
		mutate  func(t *testing.T, dir string)
		opts    Options
		atRun   bool     // the error comes from Run, not NewPlan
		wantMsg []string // substrings of the message
	}{
		{
			name: "truncated safetensors",
			mutate: func(t *testing.T, dir string) {
				path := filepath.Join(dir, weights)
				st, _ := os.Stat(path)
				if err := os.Truncate(path, st.Size()/2); err != nil {
					t.Fatal(err)
				}
			},
			wantMsg: []string{"model.safetensors"},
		},
		{
			name: "shape disagrees with config",
			mutate: func(t *testing.T, dir string) {
				editJSON(t, dir, "config.json", func(m map[string]any) { sub(m, "vision_config")["intermediate_size"] = 96 })
			},
			wantMsg: []string{"model.vision_model.encoder.layers.0.mlp.fc1.weight", "shape [64 32], want [96 32]", "config.json"},
		},
		{
			name:    "missing tokenizer",
			mutate:  func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "tokenizer.json")) },
			wantMsg: []string{"no tokenizer", "tokenizer.json", "tokenizer.model"},
		},
		{
			name: "unknown model_type",
			mutate: func(t *testing.T, dir string) {
				editJSON(t, dir, "config.json", func(m map[string]any) { m["model_type"] = "llava" })
			},
			wantMsg: []string{"config.json", "model_type", "llava"},
		},
		{
			name: "unknown architecture",
			mutate: func(t *testing.T, dir string) {
				editJSON(t, dir, "config.json", func(m map[string]any) { m["architectures"] = []string{"Idefics3ForConditionalGeneration"} })
			},
			wantMsg: []string{"config.json", "architectures", "Idefics3ForConditionalGeneration"},
		},
		{
			name: "unknown text model",
			mutate: func(t *testing.T, dir string) {
				editJSON(t, dir, "config.json", func(m map[string]any) { sub(m, "text_config")["model_type"] = "llama" })
			},
			wantMsg: []string{"config.json", "text_config.model_type", "llama"},
		},
		{
			// Refused from the embedding's header before the vocabulary is padded to 16.7 million placeholders.
			name: "vocab_size beyond the embedding",
			mutate: func(t *testing.T, dir string) {
				editJSON(t, dir, "config.json", func(m map[string]any) { sub(m, "text_config")["vocab_size"] = 1 << 24 })
			},
			wantMsg: []string{"model.text_model.embed_tokens.weight", "32003 rows", "text_config.vocab_size", "16777216"},
		},
		{
			name: "missing config field",
			mutate: func(t *testing.T, dir string) {
				editJSON(t, dir, "config.json", func(m map[string]any) { delete(sub(m, "text_config"), "hidden_size") })
			},
			wantMsg: []string{"config.json", "text_config.hidden_size", "missing"},
		},
		{
			name:    "missing config",
			mutate:  func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "config.json")) },
			wantMsg: []string{"config.json", "missing"},
		},
		{
			name: "unknown tensor",
			mutate: func(t *testing.T, dir string) {
				editTensors(t, dir, func(m map[string]stTensor) {
					m["model.text_model.extra.weight"] = stTensor{dtype: "F32", shape: []int64{2}, data: f32Bytes(1, 2)}
				})
			},
			wantMsg: []string{"model.text_model.extra.weight", "unknown tensor", "model.safetensors"},
		},
		{
			name: "layer beyond config",
			mutate: func(t *testing.T, dir string) {
				editTensors(t, dir, func(m map[string]stTensor) {
					m["model.text_model.layers.7.input_layernorm.weight"] = m["model.text_model.layers.0.input_layernorm.weight"]
				})
			},
			wantMsg: []string{"model.text_model.layers.7.input_layernorm.weight", "layer 7", "2 layers"},
		},
		{
			name: "missing tensor",
			mutate: func(t *testing.T, dir string) {
				editTensors(t, dir, func(m map[string]stTensor) {
					delete(m, "model.connector.perceiver_resampler.layers.1.self_attn.k_proj.weight")
				})
			},
			wantMsg: []string{"model.connector.perceiver_resampler.layers.1.self_attn.k_proj.weight", "missing", "mm.perceiver.blk.1.attn_k.weight"},
		},
		{
			name: "missing lm_head",
			mutate: func(t *testing.T, dir string) {
				editTensors(t, dir, func(m map[string]stTensor) { delete(m, "lm_head.weight") })
			},
			wantMsg: []string{"lm_head.weight", "missing", "output.weight"},
		},
		{
			name: "unsupported dtype",
			mutate: func(t *testing.T, dir string) {
				editTensors(t, dir, func(m map[string]stTensor) {
					x := m["model.text_model.norm.weight"]
					x.dtype = "I32"
					m["model.text_model.norm.weight"] = x
				})
			},
			wantMsg: []string{"model.text_model.norm.weight", "dtype I32"},
		},
		{
			name: "image_seq_len differs from latents",
			mutate: func(t *testing.T, dir string) {
				editJSON(t, dir, "processor_config.json", func(m map[string]any) { m["image_seq_len"] = 5 })
			},
			wantMsg: []string{"processor_config.json", "image_seq_len 5", "resampler_n_latents 4"},
		},
		{
			name: "image token id disagrees with tokenizer",
			mutate: func(t *testing.T, dir string) {
				editJSON(t, dir, "config.json", func(m map[string]any) { m["image_token_id"] = 32000 })
			},
			wantMsg: []string{"config.json", "image_token_id 32000", "<image>"},
		},
		{
			name: "bos token not in vocabulary",
			mutate: func(t *testing.T, dir string) {
				editJSON(t, dir, "tokenizer_config.json", func(m map[string]any) { m["bos_token"] = "<start>" })
			},
			wantMsg: []string{"tokenizer_config.json", "bos_token", "<start>"},
		},
		{
			name:    "missing preprocessor config",
			mutate:  func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "preprocessor_config.json")) },
			wantMsg: []string{"preprocessor_config.json", "missing"},
		},
		{
			name: "malformed config",
			mutate: func(t *testing.T, dir string) {
				os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"model_type": "idefics2",`), 0o644)
			},
			wantMsg: []string{"config.json", "not a JSON object"},
		},
		{
			name: "tokenizer merge outside the vocab",
			mutate: func(t *testing.T, dir string) {
				editJSON(t, dir, "tokenizer.json", func(m map[string]any) {
					model := sub(m, "model")
					model["merges"] = append([]any{"▁ zzq"}, model["merges"].([]any)...)
				})
			},
			wantMsg: []string{"tokenizer.json", "model.merges[0]", "zzq"},
		},
		{
			name:    "bad type",
			opts:    Options{Type: "q3_k"},
			wantMsg: []string{"--type", "q3_k"},
		},
		{
			name:    "bad vision type",
			opts:    Options{VisionType: "q4_k_m"},
			wantMsg: []string{"--vision-type", "q4_k_m"},
		},
		{
			name:    "bad override",
			opts:    Options{Overrides: []string{"attn_q"}},
			wantMsg: []string{"--override", "REGEX=TYPE"},
		},
		{
			name:    "override matching nothing",
			opts:    Options{Overrides: []string{`^nothing$=q8_0`}},
			wantMsg: []string{"--override", "^nothing$", "matches no matrix"},
		},
		{
			name: "non-finite weight",
			mutate: func(t *testing.T, dir string) {
				editTensors(t, dir, func(m map[string]stTensor) {
					x := m["model.text_model.layers.1.mlp.up_proj.weight"]
					copy(x.data[40:], f32Bytes(float32(math.NaN())))
				})
			},
			atRun:   true,
			wantMsg: []string{"model.text_model.layers.1.mlp.up_proj.weight", "not finite"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyCheckpoint(t, p1Dir)
			if tc.mutate != nil {
				tc.mutate(t, dir)
			}
			out := t.TempDir()
			opts := tc.opts
			opts.InDir, opts.Out, opts.Logger = dir, filepath.Join(out, "model.gguf"), quietLog
			p, err := NewPlan(opts)
			if err == nil {
				defer p.Close()
				if !tc.atRun {
					t.Fatal("NewPlan: no error")
				}
				err = p.Run(context.Background(), nil)
				if err == nil {
					t.Fatal("Run: no error")
				}
			} else if tc.atRun {
				t.Fatalf("NewPlan: %v, want the error from Run", err)
			}
			if !IsInputError(err) {
				t.Errorf("error %q (%T) is not an InputError", err, err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "convert: ") {
				t.Errorf("message %q: want one line starting with \"convert: \"", msg)
			}
			for _, s := range tc.wantMsg {
				if !strings.Contains(msg, s) {
					t.Errorf("message %q does not mention %q", msg, s)
				}
			}
			if left := dirEntries(t, out); len(left) > 0 {
				t.Errorf("left behind in the output folder: %v", left)
			}
		})
	}
}

// TestExistingOutput checks that outputs are not replaced without Force and are with it.
func TestExistingOutput(t *testing.T) {
	out := t.TempDir()
	model := filepath.Join(out, "model.gguf")
	for _, name := range []string{"model.gguf", "mmproj-model.gguf"} {
		for _, existing := range []string{"model.gguf", "mmproj-model.gguf"} {
			os.Remove(filepath.Join(out, existing))
		}
		if err := os.WriteFile(filepath.Join(out, name), []byte("keep me"), 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := NewPlan(Options{InDir: p1Dir, Out: model, Type: "f16", Logger: quietLog})
		if err != nil {
			t.Fatal(err)
		}
		err = p.Run(context.Background(), nil)
		p.Close()
		if !errors.Is(err, ErrOutputExists) || !IsInputError(err) || !strings.Contains(err.Error(), name) {
			t.Fatalf("existing %s: error %v, want ErrOutputExists naming it", name, err)
		}
		if got, _ := os.ReadFile(filepath.Join(out, name)); string(got) != "keep me" {
			t.Fatalf("existing %s was modified", name)
		}
		if left := dirEntries(t, out); len(left) != 1 {
			t.Fatalf("folder holds %v, want only %s", left, name)
		}
	}
	p, err := NewPlan(Options{InDir: p1Dir, Out: model, Type: "f16", Force: true, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Run(context.Background(), nil); err != nil {
		t.Fatalf("with Force: %v", err)
	}
	if left := dirEntries(t, out); len(left) != 2 {
		t.Fatalf("folder holds %v, want the two outputs", left)
	}
}

// TestRunCancelled checks that a cancelled run leaves nothing behind.
func TestRunCancelled(t *testing.T) {
	out := t.TempDir()
	p, err := NewPlan(Options{InDir: p1Dir, Out: filepath.Join(out, "m.gguf"), Type: "q8_0", Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Run(ctx, nil); !errors.Is(err, context.Canceled) || IsInputError(err) {
		t.Fatalf("Run: %v, want context.Canceled (not an input error)", err)
	}
	if left := dirEntries(t, out); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}
