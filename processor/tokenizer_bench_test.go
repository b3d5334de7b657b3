package processor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tokBenchText is a long mixed text: the fixture README (English, code, tables) plus every golden
// text, repeated to about 1 MB.
func tokBenchText(b *testing.B) string {
	b.Helper()
	raw, err := os.ReadFile(filepath.Join(tokDir, "README.md"))
	if err != nil {
		b.Fatal(err)
	}
	var sb strings.Builder
	sb.Write(raw)
	for _, c := range tokLoadCases(b) {
		sb.WriteString(c.Text)
		sb.WriteByte('\n')
	}
	unit := sb.String()
	return strings.Repeat(unit, 1<<20/len(unit)+1)
}

// BenchmarkTokenizerEncode reports encode throughput (MB/s of input text).
func BenchmarkTokenizerEncode(b *testing.B) {
	tk := tokIdefics2(b)
	text := tokBenchText(b)
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := tk.Encode(text, true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTokenizerEncodeNoCache reports encode throughput without the chunk cache (first sight
// of every word).
func BenchmarkTokenizerEncodeNoCache(b *testing.B) {
	tk := tokIdefics2(b)
	tk.noCache = true
	text := tokBenchText(b)
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := tk.Encode(text, true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTokenizerEncodeShort reports throughput on a chat-sized prompt.
func BenchmarkTokenizerEncodeShort(b *testing.B) {
	tk := tokIdefics2(b)
	text := "User:<image>What is in this image? Describe the colours, the objects and the mood.<end_of_utterance>\nAssistant:"
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		if _, err := tk.Encode(text, true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTokenizerDecode reports decode throughput (MB/s of output text).
func BenchmarkTokenizerDecode(b *testing.B) {
	tk := tokIdefics2(b)
	text := tokBenchText(b)
	ids, err := tk.Encode(text, true)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	for b.Loop() {
		tk.Decode(ids, true)
	}
}

// BenchmarkTokenizerNew reports the cost of building the tables for the 32003-piece vocabulary.
func BenchmarkTokenizerNew(b *testing.B) {
	v := tokIdefics2Vocab(b)
	for b.Loop() {
		if _, err := NewTokenizer(v); err != nil {
			b.Fatal(err)
		}
	}
}
