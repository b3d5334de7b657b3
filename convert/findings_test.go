package convert

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFloat32Bounds: floats that GGUF stores as f32 must stay positive and finite after
// rounding (the class of FuzzPreprocessorConfig's finding image_std 1e70 → +Inf).
func TestFloat32Bounds(t *testing.T) {
	for _, tc := range []struct {
		name    string
		section string // "" for the top level
		key     string
		value   float64
		wantErr bool
	}{
		{"text eps too large", "text_config", "rms_norm_eps", 1e70, true},
		{"text eps rounds to zero", "text_config", "rms_norm_eps", 1e-50, true},
		{"rope_theta too large", "text_config", "rope_theta", 3.5e38, true},
		{"rope_theta largest float32", "text_config", "rope_theta", 3.4e38, false},
		{"vision eps too large", "vision_config", "layer_norm_eps", 1e300, true},
		{"vision eps smallest float32", "vision_config", "layer_norm_eps", 1e-45, false},
		{"perceiver eps rounds to zero", "perceiver_config", "rms_norm_eps", 1e-46, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := p1Config(t)
			m[tc.section].(map[string]any)[tc.key] = tc.value
			_, err := parseConfigMap(t, m)
			if tc.wantErr {
				if err == nil || !IsInputError(err) || !strings.Contains(err.Error(), tc.section+"."+tc.key) {
					t.Fatalf("error %v, want an InputError naming %s.%s", err, tc.section, tc.key)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestPreprocessorFloat32: image_mean / image_std are checked after rounding to float32.
func TestPreprocessorFloat32(t *testing.T) {
	h, err := parseConfig(p1Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, json, wantErr string
	}{
		{"std overflows", `{"image_std": [1e70, 1, 1]}`, "image_std: value 1e+70 at index 0"},
		{"std rounds to zero", `{"image_std": [1, 1e-50, 1]}`, "image_std: value 1e-50 at index 1"},
		{"mean overflows", `{"image_mean": [0, 0, -1e39]}`, "image_mean: value -1e+39 at index 2"},
		{"large but finite", `{"image_mean": [3e38, 0, 0], "image_std": [1e-45, 1, 1]}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, data := range map[string]string{
				preprocessorConfigFile: tc.json,
				processorConfigFile:    `{"image_seq_len": 4}`,
			} {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := parsePreprocessor(dir, h)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestAddBOSWithoutBOS: a folder with only tokenizer.json (no tokenizer_config.json, no
// TemplateProcessing) keeps LlamaTokenizer's add_bos_token=True; without a known BOS token that
// is refused rather than written to the GGUF (FuzzTokenizerConfig's finding).
func TestAddBOSWithoutBOS(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, tokenizerJSONFile), []byte(fuzzTokenizerJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := buildVocab(dir, fuzzVocabSize, nil)
	if err == nil || !IsInputError(err) || !strings.Contains(err.Error(), "add_bos_token defaults to true") {
		t.Fatalf("error %v, want an InputError about add_bos_token", err)
	}
	// With the BOS token named in special_tokens_map.json it converts.
	if err := os.WriteFile(filepath.Join(dir, specialTokensMapFile), []byte(`{"bos_token": "<s>"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	v, _, err := buildVocab(dir, fuzzVocabSize, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !v.addBOS || v.bos != 1 {
		t.Errorf("add_bos %v, bos %d; want true, 1", v.addBOS, v.bos)
	}
}

// TestAddedTokenBeyondVocab: an added token id past text_config.vocab_size is refused before
// the vocabulary is padded up to it, naming the file that listed it.
func TestAddedTokenBeyondVocab(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{
		tokenizerJSONFile:    fuzzTokenizerJSON,
		specialTokensMapFile: `{"bos_token": "<s>"}`,
		addedTokensFile:      `{"<big>": 16000000}`,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err := buildVocab(dir, fuzzVocabSize, nil)
	want := `convert: added_tokens.json: added token "<big>": id 16000000 is outside config.json text_config.vocab_size 16`
	if err == nil || err.Error() != want {
		t.Fatalf("error %v, want %q", err, want)
	}
}
