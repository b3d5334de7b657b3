package convert

import (
	"bufio"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/processor"
)

// vocabFromGGUF builds the runtime tokenizer's Vocab from a converted model.gguf, the way the
// runtime does: every tokenizer.ggml.* key by name.
func vocabFromGGUF(t *testing.T, md gguf.Metadata) processor.Vocab {
	t.Helper()
	tokens, err := md.Strings("tokenizer.ggml.tokens")
	if err != nil {
		t.Fatal(err)
	}
	scores, err := md.Float32s("tokenizer.ggml.scores")
	if err != nil {
		t.Fatal(err)
	}
	types, err := md.Int32s("tokenizer.ggml.token_type")
	if err != nil {
		t.Fatal(err)
	}
	id := func(key string) int32 {
		v, err := md.Uint32(key)
		if err != nil {
			return -1
		}
		return int32(v)
	}
	flag := func(key string) bool {
		v, err := md.Bool(key)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	return processor.Vocab{
		Tokens: tokens, Scores: scores, Types: types,
		BOS: id("tokenizer.ggml.bos_token_id"), EOS: id("tokenizer.ggml.eos_token_id"),
		UNK: id("tokenizer.ggml.unknown_token_id"), PAD: id("tokenizer.ggml.padding_token_id"),
		AddBOS: flag("tokenizer.ggml.add_bos_token"), AddEOS: flag("tokenizer.ggml.add_eos_token"),
		AddSpacePrefix: flag("tokenizer.ggml.add_space_prefix"),
	}
}

// tokenizerCase is the part of a testdata/tokenizer/cases.jsonl line this test uses.
type tokenizerCase struct {
	ID   string  `json:"id"`
	Kind string  `json:"kind"`
	Text string  `json:"text"`
	IDs  []int32 `json:"ids"`
}

func loadTokenizerCases(t *testing.T) []tokenizerCase {
	t.Helper()
	f, err := os.Open(filepath.Join(tokDir, "cases.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []tokenizerCase
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var c tokenizerCase
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatal(err)
		}
		if c.Kind != "decode" {
			out = append(out, c)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkEncodeParity encodes every golden case (encode, processor and chat kinds: each has the
// text and the HF ids with BOS) with the tokenizer the GGUF vocabulary describes.
func checkEncodeParity(t *testing.T, md gguf.Metadata) {
	t.Helper()
	tk, err := processor.NewTokenizer(vocabFromGGUF(t, md))
	if err != nil {
		t.Fatal(err)
	}
	cases := loadTokenizerCases(t)
	if len(cases) < 200 {
		t.Fatalf("only %d golden cases", len(cases))
	}
	fails := 0
	for _, c := range cases {
		got, err := tk.Encode(c.Text, true)
		if err != nil {
			t.Errorf("%s: %v", c.ID, err)
			continue
		}
		if !slices.Equal(got, c.IDs) {
			fails++
			if fails <= 5 {
				t.Errorf("%s: %q\n got %v\nwant %v", c.ID, c.Text, got, c.IDs)
			}
		}
	}
	if fails > 0 {
		t.Errorf("%d of %d cases differ", fails, len(cases))
	}
}

// TestGGUFTokenizerParity converts p1 (which has only tokenizer.json, so scores come from the
// merges) and checks that the runtime tokenizer built from the GGUF gives exactly the HF ids.
func TestGGUFTokenizerParity(t *testing.T) {
	model, _, _ := convertTo(t, p1Dir, Options{Type: "q8_0"})
	checkEncodeParity(t, model.Metadata)
	types, _ := model.Metadata.Int32s("tokenizer.ggml.token_type")
	tokens, _ := model.Metadata.Strings("tokenizer.ggml.tokens")
	for id, want := range map[int]int32{0: tokenControl, 1: tokenControl, 2: tokenControl, 3: tokenByte, 258: tokenByte,
		259: tokenNormal, 32000: tokenControl, 32001: tokenControl, 32002: tokenControl} {
		if types[id] != want {
			t.Errorf("token %d %q: type %d, want %d", id, tokens[id], types[id], want)
		}
	}
}

// TestTokenizerModelVocab adds the real SentencePiece model to a copy of p1: pieces, scores and
// types then come from the protobuf and must equal the reference dump, and encoding must still
// match the goldens.
func TestTokenizerModelVocab(t *testing.T) {
	dir := copyCheckpoint(t, p1Dir)
	copyFile(t, filepath.Join(tokDir, "tokenizer.model"), filepath.Join(dir, "tokenizer.model"))
	model, _, _ := convertTo(t, dir, Options{Type: "f16"})
	md := model.Metadata

	raw, err := os.ReadFile(filepath.Join(tokDir, "sentencepiece_vocab.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Tokens         []string  `json:"tokens"`
		Scores         []float32 `json:"scores"`
		Types          []int32   `json:"token_types"`
		AddDummyPrefix bool      `json:"add_dummy_prefix"`
	}
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	tokens, _ := md.Strings("tokenizer.ggml.tokens")
	scores, _ := md.Float32s("tokenizer.ggml.scores")
	types, _ := md.Int32s("tokenizer.ggml.token_type")
	if len(tokens) != len(ref.Tokens) {
		t.Fatalf("%d tokens, want %d", len(tokens), len(ref.Tokens))
	}
	for i := range tokens {
		added := i <= 2 || i >= 32000 // listed in added_tokens: llama.cpp's CONTROL / −1000
		wantScore, wantType := ref.Scores[i], ref.Types[i]
		if added {
			wantScore, wantType = addedTokenScore, tokenControl
		}
		if tokens[i] != ref.Tokens[i] || scores[i] != wantScore || types[i] != wantType {
			t.Fatalf("token %d: %q %v %d, want %q %v %d", i, tokens[i], scores[i], types[i], ref.Tokens[i], wantScore, wantType)
		}
	}
	if sp, _ := md.Bool("tokenizer.ggml.add_space_prefix"); sp != ref.AddDummyPrefix {
		t.Errorf("add_space_prefix %v, want %v", sp, ref.AddDummyPrefix)
	}
	checkEncodeParity(t, md)
}

// TestScoresFromMerges checks the derived scores on a small BPE model.
func TestScoresFromMerges(t *testing.T) {
	tests := []struct {
		name   string
		merges string
		want   map[string]float32
	}{
		{
			name:   "string merges",
			merges: `["a b", "ab c", "b c", "a bc"]`,
			// "abc" comes first from merge 1; "a bc" (rank 3) does not lower it.
			want: map[string]float32{"a": 0, "b": 0, "c": 0, "ab": 0, "abc": -1, "bc": -2, "xyz": -4},
		},
		{
			name:   "array merges",
			merges: `[["b", "c"], ["a", "bc"]]`,
			want:   map[string]float32{"bc": 0, "abc": -1, "ab": -2, "xyz": -2},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pieces := map[string]int{"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5, "xyz": 6}
			tokens := make([]string, len(pieces))
			types := make([]int32, len(pieces))
			for p, id := range pieces {
				tokens[id], types[id] = p, tokenNormal
			}
			model, err := parseJSONObject("tokenizer.json", []byte(`{"merges": `+tc.merges+`}`))
			if err != nil {
				t.Fatal(err)
			}
			scores, err := scoresFromMerges(model, pieces, tokens, types)
			if err != nil {
				t.Fatal(err)
			}
			for p, want := range tc.want {
				if got := scores[pieces[p]]; got != want || (want == 0 && math.Signbit(float64(got))) {
					t.Errorf("score(%q) = %v, want %v", p, got, want)
				}
			}
		})
	}
}

// TestSentencePieceBad checks that malformed protobufs give errors, never panics.
func TestSentencePieceBad(t *testing.T) {
	good, err := os.ReadFile(filepath.Join(tokDir, "tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"truncated", good[:len(good)/2+3]},
		{"bad wire type", []byte{0x0b}},
		{"huge length", []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"piece without text", []byte{0x0a, 0x05, 0x15, 0, 0, 0, 0}},
		{"bad piece type", []byte{0x0a, 0x05, 0x0a, 0x01, 'a', 0x18, 0x09}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseSentencePiece(tc.data); err == nil {
				t.Fatal("no error")
			}
		})
	}
	m, err := parseSentencePiece(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.pieces) != 32000 || m.modelType != spModelBPE || !m.byteFallback || m.unkID != 0 || m.bosID != 1 || m.eosID != 2 || m.padID != -1 || !m.addDummyPrefix {
		t.Errorf("model flags: %d pieces, type %d, byte_fallback %v, ids %d/%d/%d/%d, dummy prefix %v",
			len(m.pieces), m.modelType, m.byteFallback, m.unkID, m.bosID, m.eosID, m.padID, m.addDummyPrefix)
	}
}

// FuzzParseSentencePiece: any input gives a model or an error, never a panic.
func FuzzParseSentencePiece(f *testing.F) {
	if good, err := os.ReadFile(filepath.Join(tokDir, "tokenizer.model")); err == nil {
		f.Add(good[:4096])
	}
	f.Add([]byte{0x0a, 0x07, 0x0a, 0x01, 'a', 0x15, 0, 0, 0x80, 0xbf})
	f.Add([]byte{0x12, 0x03, 0x18, 0x02, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseSentencePiece(data)
		if err == nil && (len(m.pieces) == 0 || len(m.pieces) != len(m.scores) || len(m.pieces) != len(m.types)) {
			t.Fatalf("inconsistent model: %d pieces, %d scores, %d types", len(m.pieces), len(m.scores), len(m.types))
		}
	})
}

// FuzzTokenizerJSON: any tokenizer.json gives a consistent vocabulary or an error, never a panic.
func FuzzTokenizerJSON(f *testing.F) {
	f.Add([]byte(`{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "<0x41>": 3}, "merges": ["a b"], "byte_fallback": true, "unk_token": "a"},
		"normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}]}}`))
	f.Add([]byte(`{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}, "pre_tokenizer": {"type": "Metaspace", "prepend_scheme": "first"}}`))
	f.Add([]byte(`{"model": {"type": "Unigram"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tokJSON, err := parseJSONObject(tokenizerJSONFile, data)
		if err != nil {
			return
		}
		model, err := tokenizerJSONModel(tokJSON)
		if err != nil {
			return
		}
		v := &vocab{}
		if err := v.fromTokenizerJSON(tokJSON, model); err != nil {
			return
		}
		if len(v.tokens) == 0 || len(v.scores) != len(v.tokens) || len(v.types) != len(v.tokens) {
			t.Fatalf("inconsistent vocabulary: %d tokens, %d scores, %d types", len(v.tokens), len(v.scores), len(v.types))
		}
	})
}
