package processor

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// tokRankReference is the slow reference encoder: HF tokenizers' BPE model driven by the merge
// ranks of testdata/tokenizer/tokenizer.json (no scores involved). Each step merges the adjacent
// pair with the lowest rank, leftmost on ties, by rescanning the whole word.
type tokRankReference struct {
	vocab map[string]int32
	ranks map[[2]string]int
	tk    *Tokenizer // for special-token splitting and byte ids only
}

func tokLoadRankReference(tb testing.TB, tk *Tokenizer) *tokRankReference {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join(tokDir, "tokenizer.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var j struct {
		Model struct {
			Vocab  map[string]int32 `json:"vocab"`
			Merges []string         `json:"merges"`
		} `json:"model"`
	}
	if err := json.Unmarshal(raw, &j); err != nil {
		tb.Fatal(err)
	}
	ref := &tokRankReference{vocab: j.Model.Vocab, ranks: make(map[[2]string]int, len(j.Model.Merges)), tk: tk}
	for i, m := range j.Model.Merges {
		l, r, ok := strings.Cut(m, " ")
		if !ok {
			tb.Fatalf("merge %d %q has no space", i, m)
		}
		ref.ranks[[2]string{l, r}] = i
	}
	return ref
}

func (ref *tokRankReference) encodeSegment(seg string) []int32 {
	norm := "▁" + strings.ReplaceAll(seg, " ", "▁")
	var syms []string
	for _, r := range norm {
		s := string(r)
		if _, ok := ref.vocab[s]; ok {
			syms = append(syms, s)
			continue
		}
		for _, b := range []byte(s) {
			syms = append(syms, bytePieceText(b))
		}
	}
	for {
		best, bestRank := -1, 0
		for i := 0; i+1 < len(syms); i++ {
			if rank, ok := ref.ranks[[2]string{syms[i], syms[i+1]}]; ok && (best < 0 || rank < bestRank) {
				best, bestRank = i, rank
			}
		}
		if best < 0 {
			break
		}
		syms[best] += syms[best+1]
		syms = append(syms[:best+1], syms[best+2:]...)
	}
	ids := make([]int32, len(syms))
	for i, s := range syms {
		ids[i] = ref.vocab[s]
	}
	return ids
}

func (ref *tokRankReference) encode(text string) []int32 {
	ids := []int32{}
	start := 0
	for i := 0; i < len(text); {
		if m, ok := matchSplitter(ref.tk.splitters[text[i]], text[i:]); ok {
			if start < i {
				ids = append(ids, ref.encodeSegment(text[start:i])...)
			}
			ids = append(ids, m.id)
			i += len(m.text)
			start = i
			continue
		}
		i++
	}
	if start < len(text) {
		ids = append(ids, ref.encodeSegment(text[start:])...)
	}
	return ids
}

// TestTokenizerMatchesMergeRanks checks the score-driven encoder against the merge-rank reference
// on the golden texts, whitespace runs and random piece soups, including ties among the
// whitespace-only pieces (all scored -1e9).
func TestTokenizerMatchesMergeRanks(t *testing.T) {
	tk := tokIdefics2(t)
	ref := tokLoadRankReference(t, tk)

	var texts []string
	for _, c := range tokLoadCases(t) {
		if c.Kind != "decode" {
			texts = append(texts, c.Text)
		}
	}
	for n := 1; n <= 48; n++ {
		sp := strings.Repeat(" ", n)
		texts = append(texts, sp, "a"+sp+"b", sp+"x", "\n"+sp+"if", strings.Repeat("▁", n)+"y", "a\t"+sp+"\t")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var pool []string
	for id := 3; id < tk.VocabSize(); id++ {
		if tk.types[id] == TokenTypeNormal {
			pool = append(pool, strings.ReplaceAll(tk.tokens[id], "▁", " "))
		}
	}
	extra := []string{" ", "  ", "\n", "é", "😂", "叫", "\u00a0", "<", ">", "0x"}
	for range 1500 {
		var b strings.Builder
		for range 2 + rng.IntN(20) {
			if rng.IntN(4) == 0 {
				b.WriteString(extra[rng.IntN(len(extra))])
			} else {
				b.WriteString(pool[rng.IntN(len(pool))])
			}
		}
		texts = append(texts, b.String())
	}

	for _, text := range texts {
		if !utf8.ValidString(text) {
			continue
		}
		got, err := tk.Encode(text, false)
		if err != nil {
			t.Fatalf("Encode(%q): %v", text, err)
		}
		want := ref.encode(text)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Encode(%q)\n got %v %q\nwant %v %q", text, got, tokPieces(tk, got), want, tokPieces(tk, want))
		}
	}
}
