package convert

import (
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/quant"
)

// The fuzz targets of this file cover the JSON files of a checkpoint folder that config.json's
// and tokenizer.json's targets (hparams_test.go, vocab_test.go) do not: tokenizer_config.json,
// special_tokens_map.json, added_tokens.json, preprocessor_config.json, processor_config.json,
// chat_template.json and generation_config.json. Each writes the fuzzed bytes into a folder that
// holds small valid versions of the other files and calls the same reader NewPlan calls, so the
// whole path from the bytes on disk is exercised. An empty input stands for an absent file. The
// property: an *InputError whose message starts with "convert: " and names the file, or a value
// that satisfies what the rest of the converter relies on; never a panic.

// fuzzVocabSize is text_config.vocab_size of the fuzzing folder: small, so that padding the
// vocabulary costs nothing, and large enough for fuzzTokenizerJSON and three added tokens.
const fuzzVocabSize = 16

// fuzzTokenizerJSON is a tiny Llama-style BPE tokenizer.json: ids 0..2 special, 3..9 pieces.
const fuzzTokenizerJSON = `{"model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": true,
 "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x41>": 3, "▁": 4, "a": 5, "b": 6, "ab": 7, "▁a": 8, "▁ab": 9},
 "merges": ["a b", "▁ a", "▁a b"]},
 "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}}`

// fuzzDir makes the fuzzing folder of one fuzzing process with the given files.
func fuzzDir(f *testing.F, files map[string]string) string {
	dir, err := os.MkdirTemp("", "convert-fuzz-")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	return dir
}

// putFile writes data as dir/name, or removes dir/name when data is empty.
func putFile(t *testing.T, dir, name string, data []byte) {
	path := filepath.Join(dir, name)
	if len(data) == 0 {
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// readSeed returns a file of the p1 fixture, or nil when it cannot be read.
func readSeed(name string) []byte {
	b, _ := os.ReadFile(filepath.Join(p1Dir, name))
	return b
}

// checkInputError fails unless err is an InputError starting with "convert: " that names one of
// files.
func checkInputError(t *testing.T, err error, files ...string) {
	t.Helper()
	msg := err.Error()
	if !IsInputError(err) || !strings.HasPrefix(msg, "convert: ") {
		t.Fatalf("error %q (%T) is not an InputError starting with \"convert: \"", msg, err)
	}
	for _, f := range files {
		if strings.Contains(msg, f) {
			return
		}
	}
	t.Fatalf("error %q names none of %v", msg, files)
}

// p1Seeds maps p1's added-token ids 32000..32002 into the fuzzing vocabulary.
var p1Seeds = strings.NewReplacer(`"32000"`, `"10"`, `"32001"`, `"11"`, `"32002"`, `"12"`)

// FuzzTokenizerConfig fuzzes tokenizer_config.json, special_tokens_map.json and
// added_tokens.json through buildVocab and readChatTemplate (the chat template falls back to
// tokenizer_config.json, as the folder has no chat_template.json or processor_config.json).
func FuzzTokenizerConfig(f *testing.F) {
	dir := fuzzDir(f, map[string]string{tokenizerJSONFile: fuzzTokenizerJSON})
	cfg := []byte(p1Seeds.Replace(string(readSeed(tokenizerConfigFile))))
	special := readSeed(specialTokensMapFile)
	f.Add(cfg, special, []byte(nil))
	f.Add(cfg, []byte(nil), []byte(`{"<image>": 11, "<x>": 13}`))
	f.Add([]byte(nil), special, []byte(nil))
	f.Add([]byte(`{"add_bos_token": true, "bos_token": {"content": "<s>"}, "eos_token": null, "add_eos_token": true}`), []byte(nil), []byte(nil))
	f.Add([]byte(`{"chat_template": [{"name": "default", "template": "{{ x }}"}, {"name": "tool_use", "template": ""}], "added_tokens_decoder": {"x": {}}}`), []byte(`{"bos_token": 7}`), []byte(`{"a": -1}`))
	f.Add([]byte(`{"added_tokens_decoder": {"3": {"content": "<y>", "special": true}}}`), []byte(`{"pad_token": "<y>"}`), []byte(`{"<y>": 3, "<z>": 15}`))
	f.Add([]byte(`{"added_tokens_decoder": {"16": {"content": "<y>"}}}`), []byte(`[]`), []byte(`null`))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, cfg, special, added []byte) {
		putFile(t, dir, tokenizerConfigFile, cfg)
		putFile(t, dir, specialTokensMapFile, special)
		putFile(t, dir, addedTokensFile, added)
		v, tokCfg, err := buildVocab(dir, fuzzVocabSize, log)
		if err != nil {
			checkInputError(t, err, tokenizerConfigFile, specialTokensMapFile, addedTokensFile)
			return
		}
		if len(v.tokens) != fuzzVocabSize || len(v.scores) != fuzzVocabSize || len(v.types) != fuzzVocabSize {
			t.Fatalf("vocabulary of %d tokens, %d scores, %d types, want %d", len(v.tokens), len(v.scores), len(v.types), fuzzVocabSize)
		}
		for _, id := range []int32{v.bos, v.eos, v.unk, v.pad, v.eot} {
			if id < -1 || id >= fuzzVocabSize {
				t.Fatalf("special id %d outside the vocabulary", id)
			}
		}
		if (v.addBOS && v.bos < 0) || (v.addEOS && v.eos < 0) {
			t.Fatalf("add_bos %v / add_eos %v without the token (%d, %d)", v.addBOS, v.addEOS, v.bos, v.eos)
		}
		if _, err := readChatTemplate(dir, tokCfg); err != nil {
			checkInputError(t, err, tokenizerConfigFile)
		}
	})
}

// fuzzHParams returns the hyper-parameters of p1 (config.json), which the processor files are
// checked against.
func fuzzHParams(f *testing.F) *hparams {
	h, err := parseConfig(p1Dir)
	if err != nil {
		f.Fatal(err)
	}
	return h
}

// checkPreproc checks what mmprojMetadata and the runtime rely on.
func checkPreproc(t *testing.T, h *hparams, p *preprocParams) {
	t.Helper()
	switch {
	case p.shortestEdge <= 0 || p.longestEdge < p.shortestEdge || p.longestEdge > maxConfigInt:
		t.Fatalf("size %d..%d accepted", p.shortestEdge, p.longestEdge)
	case !(p.rescaleFactor > 0) || math.IsInf(p.rescaleFactor, 0):
		t.Fatalf("rescale_factor %v accepted", p.rescaleFactor)
	case p.resample < 0 || p.resample > 5:
		t.Fatalf("resample %d accepted", p.resample)
	case len(p.imageMean) != h.vision.numChannels || len(p.imageStd) != h.vision.numChannels:
		t.Fatalf("%d means and %d stds accepted for %d channels", len(p.imageMean), len(p.imageStd), h.vision.numChannels)
	case p.imageSeqLen != h.perceiver.numLatents:
		t.Fatalf("image_seq_len %d accepted with %d latents", p.imageSeqLen, h.perceiver.numLatents)
	}
	for i := range p.imageMean {
		m, s := float64(p.imageMean[i]), float64(p.imageStd[i])
		if math.IsNaN(m) || math.IsInf(m, 0) || math.IsNaN(s) || math.IsInf(s, 0) || s == 0 {
			t.Fatalf("image_mean %v / image_std %v accepted", p.imageMean, p.imageStd)
		}
	}
	if _, err := mmprojMetadata(h, p, fileTypeOf(quant.F16)); err != nil {
		t.Fatalf("accepted settings give no metadata: %v", err)
	}
}

// FuzzPreprocessorConfig fuzzes preprocessor_config.json through parsePreprocessor, next to
// p1's processor_config.json.
func FuzzPreprocessorConfig(f *testing.F) {
	h := fuzzHParams(f)
	dir := fuzzDir(f, map[string]string{processorConfigFile: string(readSeed(processorConfigFile))})
	f.Add(readSeed(preprocessorConfigFile))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"image_processor_type": "SiglipImageProcessor"}`))
	f.Add([]byte(`{"size": {"shortest_edge": 980, "longest_edge": 378}, "resample": 9}`))
	f.Add([]byte(`{"image_mean": [0.5, 0.5], "image_std": [0, 1, 2], "rescale_factor": -1}`))
	f.Add([]byte(`{"image_std": [1e999, 1, 1], "do_pad": "yes", "size": null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		putFile(t, dir, preprocessorConfigFile, data)
		p, err := parsePreprocessor(dir, h)
		if err != nil {
			checkInputError(t, err, preprocessorConfigFile)
			return
		}
		checkPreproc(t, h, p)
	})
}

// FuzzProcessorConfig fuzzes processor_config.json and chat_template.json through
// parsePreprocessor and readChatTemplate, next to p1's preprocessor_config.json.
func FuzzProcessorConfig(f *testing.F) {
	h := fuzzHParams(f)
	dir := fuzzDir(f, map[string]string{preprocessorConfigFile: string(readSeed(preprocessorConfigFile))})
	f.Add(readSeed(processorConfigFile), readSeed(chatTemplateFile))
	f.Add(readSeed(processorConfigFile), []byte(nil))
	f.Add([]byte(nil), []byte(nil))
	f.Add([]byte(`{"image_seq_len": 4, "chat_template": [{"name": "default", "template": "x"}]}`), []byte(`{"chat_template": null}`))
	f.Add([]byte(`{"image_seq_len": 64}`), []byte(`{"chat_template": [{"name": "rag"}]}`))
	f.Add([]byte(`{"image_seq_len": -4, "chat_template": 3}`), []byte(`"chat_template"`))
	f.Fuzz(func(t *testing.T, processor, chat []byte) {
		putFile(t, dir, processorConfigFile, processor)
		putFile(t, dir, chatTemplateFile, chat)
		p, err := parsePreprocessor(dir, h)
		if err != nil {
			checkInputError(t, err, processorConfigFile)
		} else {
			checkPreproc(t, h, p)
		}
		if _, err := readChatTemplate(dir, nil); err != nil {
			checkInputError(t, err, processorConfigFile, chatTemplateFile)
		}
	})
}

// FuzzGenerationConfig fuzzes generation_config.json through readGenerationEOS.
func FuzzGenerationConfig(f *testing.F) {
	dir := fuzzDir(f, nil)
	f.Add(readSeed(generationConfigFile))
	f.Add([]byte(`{"eos_token_id": [2, 32002]}`))
	f.Add([]byte(`{"eos_token_id": null}`))
	f.Add([]byte(`{"eos_token_id": "2"}`))
	f.Add([]byte(`{"eos_token_id": 1e30}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		putFile(t, dir, generationConfigFile, data)
		ids, err := readGenerationEOS(dir)
		if err != nil {
			checkInputError(t, err, generationConfigFile)
			return
		}
		if len(data) == 0 && ids != nil {
			t.Fatalf("ids %v without the file", ids)
		}
	})
}
