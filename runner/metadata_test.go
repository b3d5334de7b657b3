package runner

import (
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/processor"
)

// md builds metadata from key/value pairs (values as gguf.NewValue takes them).
func md(t *testing.T, kv ...any) gguf.Metadata {
	t.Helper()
	var kvs []gguf.KV
	for i := 0; i < len(kv); i += 2 {
		v, err := gguf.NewValue(kv[i+1])
		if err != nil {
			t.Fatalf("key %v: %v", kv[i], err)
		}
		kvs = append(kvs, gguf.KV{Key: kv[i].(string), Value: v})
	}
	m, err := gguf.NewMetadata(kvs)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func tinyVocabKV() []any {
	return []any{
		keyTokenizerModel, "llama",
		keyTokens, []string{"<unk>", "<s>", "</s>", "▁a", "b"},
		keyScores, []float32{0, 0, 0, -1, -2},
		keyTokenType, []int32{2, 3, 3, 1, 1},
		keyBOS, uint32(1), keyEOS, uint32(2), keyUNK, uint32(0),
	}
}

func TestVocabFromGGUF(t *testing.T) {
	v, err := VocabFromGGUF(md(t, tinyVocabKV()...), "x.gguf")
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Tokens) != 5 || v.BOS != 1 || v.EOS != 2 || v.UNK != 0 || v.PAD != -1 || !v.AddBOS || v.AddEOS || !v.AddSpacePrefix {
		t.Fatalf("vocab %+v", v)
	}
	if _, err := processor.NewTokenizer(v); err != nil {
		t.Fatal(err)
	}
	// Flags and other integer widths.
	kv := append(tinyVocabKV(), keyAddBOS, false, keyAddSpacePrefix, false, keyPAD, int32(0))
	kv[5] = []uint8{2, 3, 3, 1, 1} // token_type as u8
	v, err = VocabFromGGUF(md(t, kv...), "x.gguf")
	if err != nil {
		t.Fatal(err)
	}
	if v.AddBOS || v.AddSpacePrefix || v.PAD != 0 || v.Types[3] != 1 {
		t.Fatalf("vocab %+v", v)
	}
}

func TestVocabFromGGUFBad(t *testing.T) {
	base := tinyVocabKV()
	with := func(key string, val any) []any {
		out := append([]any(nil), base...)
		for i := 0; i < len(out); i += 2 {
			if out[i] == key {
				if val == nil {
					return append(out[:i:i], out[i+2:]...)
				}
				out[i+1] = val
				return out
			}
		}
		return append(out, key, val)
	}
	tests := []struct {
		name string
		kv   []any
		want string
	}{
		{"no tokens", with(keyTokens, nil), "has no tokenizer"},
		{"tokens not strings", with(keyTokens, []int32{1, 2}), keyTokens},
		{"other tokenizer", with(keyTokenizerModel, "gpt2"), `tokenizer model "gpt2"`},
		{"scores short", with(keyScores, []float32{0}), "1 scores"},
		{"scores strings", with(keyScores, []string{"a", "b", "c", "d", "e"}), keyScores},
		{"types too wide", with(keyTokenType, []int64{1, 1, 1, 1, 1 << 40}), keyTokenType},
		{"bos out of range", with(keyBOS, uint32(99)), keyBOS},
		{"bos a string", with(keyBOS, "1"), keyBOS},
		{"add_bos not bool", with(keyAddBOS, uint32(1)), keyAddBOS},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := VocabFromGGUF(md(t, tc.kv...), "x.gguf")
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "x.gguf") {
				t.Fatalf("err %v, want one naming x.gguf and %q", err, tc.want)
			}
		})
	}
}

func TestImageConfigFromGGUF(t *testing.T) {
	c, err := ImageConfigFromGGUF(md(t,
		keyImageMean, []float32{0.1, 0.2, 0.3}, keyImageStd, []float32{0.5, 0.5, 0.5},
		keyShortestEdge, uint32(42), keyLongestEdge, uint32(112), keyRescaleFactor, 1.0/255, keyResample, uint32(2),
		"idefics2.preproc.do_image_splitting", true, "idefics2.preproc.do_pad", false), "m.gguf")
	if err != nil {
		t.Fatal(err)
	}
	want := processor.DefaultImageConfig()
	want.ImageMean = [3]float32{0.1, 0.2, 0.3}
	want.ShortestEdge, want.LongestEdge = 42, 112
	want.DoImageSplitting, want.DoPad = true, false
	if c != want {
		t.Fatalf("got %+v\nwant %+v", c, want)
	}
	// Nothing stored: the class defaults; the llama.cpp key as a fallback for the longest edge.
	c, err = ImageConfigFromGGUF(md(t, keyPreprocImageSize, uint32(700)), "m.gguf")
	if err != nil || c.LongestEdge != 700 || c.ShortestEdge != 378 {
		t.Fatalf("got %+v, %v", c, err)
	}
}

func TestImageConfigFromGGUFBad(t *testing.T) {
	tests := []struct {
		name string
		kv   []any
		want string
	}{
		{"split not bool", []any{"idefics2.preproc.do_image_splitting", uint32(1)}, "do_image_splitting"},
		{"edge a string", []any{keyLongestEdge, "980"}, keyLongestEdge},
		{"edge huge", []any{keyLongestEdge, uint64(1 << 40)}, keyLongestEdge},
		{"mean of two", []any{keyImageMean, []float32{0.5, 0.5}}, keyImageMean},
		{"std zero", []any{keyImageStd, []float32{0, 1, 1}}, "image_std"},
		{"resample nearest", []any{keyResample, uint32(0)}, "m.gguf"},
		{"rescale a string", []any{keyRescaleFactor, "x"}, keyRescaleFactor},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ImageConfigFromGGUF(md(t, tc.kv...), "m.gguf")
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "m.gguf") {
				t.Fatalf("err %v, want one naming m.gguf and %q", err, tc.want)
			}
		})
	}
}
