package gguf

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkOpenVocab measures Open on a file whose metadata holds an idefics2-sized vocabulary
// (32003 tokens with scores and types), the bulk of a text GGUF's header.
func BenchmarkOpenVocab(b *testing.B) {
	const n = 32003
	tokens := make([]string, n)
	scores := make([]float32, n)
	types := make([]int32, n)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("▁tok%d", i)
		scores[i] = float32(-i)
		types[i] = 1
	}
	path := filepath.Join(b.TempDir(), "vocab.gguf")
	w, err := Create(path)
	if err != nil {
		b.Fatal(err)
	}
	for _, kv := range []KV{
		{"tokenizer.ggml.tokens", Value{ValueArray, Array{ValueString, tokens}}},
		{"tokenizer.ggml.scores", Value{ValueArray, Array{ValueFloat32, scores}}},
		{"tokenizer.ggml.token_type", Value{ValueArray, Array{ValueInt32, types}}},
	} {
		if err := w.SetKV(kv.Key, kv.Value); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	st, _ := os.Stat(path)
	b.SetBytes(st.Size())
	b.ResetTimer()
	for b.Loop() {
		f, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}
