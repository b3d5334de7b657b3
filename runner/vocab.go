package runner

import (
	"fmt"

	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/processor"
)

// GGUF keys of the tokenizer in a llama-type text file (llama.cpp's gguf-py constants).
const (
	keyTokens         = "tokenizer.ggml.tokens"
	keyScores         = "tokenizer.ggml.scores"
	keyTokenType      = "tokenizer.ggml.token_type"
	keyBOS            = "tokenizer.ggml.bos_token_id"
	keyEOS            = "tokenizer.ggml.eos_token_id"
	keyUNK            = "tokenizer.ggml.unknown_token_id"
	keyPAD            = "tokenizer.ggml.padding_token_id"
	keyEOT            = "tokenizer.ggml.eot_token_id"
	keyAddBOS         = "tokenizer.ggml.add_bos_token"
	keyAddEOS         = "tokenizer.ggml.add_eos_token"
	keyAddSpacePrefix = "tokenizer.ggml.add_space_prefix"
	keyChatTemplate   = "tokenizer.chat_template"
	keyTokenizerModel = "tokenizer.ggml.model"
)

// VocabFromGGUF builds the tokenizer vocabulary stored in a text GGUF's tokenizer.ggml.* keys. path names the file
// in errors. Scores default to 0 and token types to NORMAL when their keys are absent (llama.cpp's loader does the
// same); absent special ids are −1. The flags follow llama.cpp's defaults for a SentencePiece ("llama") vocabulary
// when absent: add_bos_token true, add_eos_token false, add_space_prefix true.
func VocabFromGGUF(md gguf.Metadata, path string) (processor.Vocab, error) {
	var v processor.Vocab
	if !md.Has(keyTokens) {
		return v, fmt.Errorf("runner: %s has no tokenizer (key %s); is it a text model converted with its tokenizer?", path, keyTokens)
	}
	if m, err := md.String(keyTokenizerModel); err == nil && m != "llama" {
		return v, fmt.Errorf("runner: %s: tokenizer model %q is not supported (want llama, a SentencePiece BPE vocabulary)", path, m)
	}
	toks, err := md.Strings(keyTokens)
	if err != nil {
		return v, fmt.Errorf("runner: %s: %w", path, err)
	}
	n := len(toks)
	v.Tokens = toks
	if md.Has(keyScores) {
		a, err := md.Array(keyScores)
		if err != nil {
			return v, fmt.Errorf("runner: %s: %w", path, err)
		}
		if v.Scores, err = arrayFloat32s(a); err != nil {
			return v, fmt.Errorf("runner: %s: key %q: %w", path, keyScores, err)
		}
	} else {
		v.Scores = make([]float32, n)
	}
	if md.Has(keyTokenType) {
		a, err := md.Array(keyTokenType)
		if err != nil {
			return v, fmt.Errorf("runner: %s: %w", path, err)
		}
		if v.Types, err = arrayInt32s(a); err != nil {
			return v, fmt.Errorf("runner: %s: key %q: %w", path, keyTokenType, err)
		}
	} else {
		v.Types = make([]int32, n)
		for i := range v.Types {
			v.Types[i] = processor.TokenTypeNormal
		}
	}
	if len(v.Scores) != n || len(v.Types) != n {
		return v, fmt.Errorf("runner: %s: %d tokens but %d scores and %d token types", path, n, len(v.Scores), len(v.Types))
	}
	for _, s := range []struct {
		key string
		dst *int32
	}{{keyBOS, &v.BOS}, {keyEOS, &v.EOS}, {keyUNK, &v.UNK}, {keyPAD, &v.PAD}} {
		id, err := optTokenID(md, s.key, n)
		if err != nil {
			return v, fmt.Errorf("runner: %s: %w", path, err)
		}
		*s.dst = id
	}
	for _, b := range []struct {
		key string
		dst *bool
		def bool
	}{{keyAddBOS, &v.AddBOS, true}, {keyAddEOS, &v.AddEOS, false}, {keyAddSpacePrefix, &v.AddSpacePrefix, true}} {
		*b.dst = b.def
		if md.Has(b.key) {
			if *b.dst, err = md.Bool(b.key); err != nil {
				return v, fmt.Errorf("runner: %s: %w", path, err)
			}
		}
	}
	if v.AddBOS && v.BOS < 0 {
		// A vocabulary without a BOS id cannot add one; llama.cpp silently skips it too.
		v.AddBOS = false
	}
	return v, nil
}

// optTokenID reads an optional token id key: −1 when absent, an error when present but not an id below n.
func optTokenID(md gguf.Metadata, key string, n int) (int32, error) {
	if !md.Has(key) {
		return -1, nil
	}
	id, err := md.Int(key)
	if err != nil {
		return -1, err
	}
	if id < 0 || id >= n {
		return -1, fmt.Errorf("key %q: token id %d is outside the vocabulary (%d tokens)", key, id, n)
	}
	return int32(id), nil
}

// arrayFloat32s converts a numeric GGUF array to float32 values.
func arrayFloat32s(a gguf.Array) ([]float32, error) {
	switch d := a.Data.(type) {
	case []float32:
		return d, nil
	case []float64:
		out := make([]float32, len(d))
		for i, x := range d {
			out[i] = float32(x)
		}
		return out, nil
	}
	ints, err := arrayInt64s(a)
	if err != nil {
		return nil, err
	}
	out := make([]float32, len(ints))
	for i, x := range ints {
		out[i] = float32(x)
	}
	return out, nil
}

// arrayInt32s converts an integer GGUF array to int32 values, refusing values that do not fit.
func arrayInt32s(a gguf.Array) ([]int32, error) {
	if d, ok := a.Data.([]int32); ok {
		return d, nil
	}
	ints, err := arrayInt64s(a)
	if err != nil {
		return nil, err
	}
	out := make([]int32, len(ints))
	for i, x := range ints {
		if x != int64(int32(x)) {
			return nil, fmt.Errorf("element %d: value %d does not fit in int32", i, x)
		}
		out[i] = int32(x)
	}
	return out, nil
}

func arrayInt64s(a gguf.Array) ([]int64, error) {
	var out []int64
	conv := func(n int, f func(i int) int64) []int64 {
		out = make([]int64, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	switch d := a.Data.(type) {
	case []int8:
		return conv(len(d), func(i int) int64 { return int64(d[i]) }), nil
	case []uint8:
		return conv(len(d), func(i int) int64 { return int64(d[i]) }), nil
	case []int16:
		return conv(len(d), func(i int) int64 { return int64(d[i]) }), nil
	case []uint16:
		return conv(len(d), func(i int) int64 { return int64(d[i]) }), nil
	case []int32:
		return conv(len(d), func(i int) int64 { return int64(d[i]) }), nil
	case []uint32:
		return conv(len(d), func(i int) int64 { return int64(d[i]) }), nil
	case []int64:
		return d, nil
	case []uint64:
		for i, x := range d {
			if x > 1<<62 {
				return nil, fmt.Errorf("element %d: value %d is too large", i, x)
			}
		}
		return conv(len(d), func(i int) int64 { return int64(d[i]) }), nil
	}
	return nil, fmt.Errorf("array of %s, want numbers", a.Elem)
}

// NewTokenizer builds the tokenizer of a text GGUF (see VocabFromGGUF).
func NewTokenizer(f *gguf.File) (*processor.Tokenizer, error) {
	v, err := VocabFromGGUF(f.Metadata, f.Path)
	if err != nil {
		return nil, err
	}
	t, err := processor.NewTokenizer(v)
	if err != nil {
		return nil, fmt.Errorf("runner: %s: %w", f.Path, err)
	}
	return t, nil
}
