package runner

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/idefics2-go/idefics2/constrain"
	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/processor"
)

// constraintVocab holds the model's vocabulary as the constraint engine sees it, built on first use.
type constraintVocab struct {
	once sync.Once
	v    *constrain.Vocabulary
	err  error
}

// ConstraintVocabulary is the byte text each token id adds to the decoded output, as processor's StreamDecoder
// writes it: "▁" is a space, a byte-fallback piece "<0xNN>" is that byte, and the first text of an output loses
// one leading space. Stop tokens may end a constrained output; special tokens, added tokens (<image>, …) and
// ids past the tokenizer (padding rows of the output matrix) are never produced under a constraint.
func (m *Model) ConstraintVocabulary() (*constrain.Vocabulary, error) {
	m.cvocab.once.Do(func() {
		m.cvocab.v, m.cvocab.err = newConstraintVocabulary(m.tok, m.g.Text.VocabSize, m.stopIDs, m.banned)
	})
	return m.cvocab.v, m.cvocab.err
}

// ConstraintVocabularyFromGGUF builds the constraint vocabulary (see Model.ConstraintVocabulary) of a text GGUF
// whose output has vocabSize rows, without loading the model.
func ConstraintVocabularyFromGGUF(f *gguf.File, vocabSize int) (*constrain.Vocabulary, error) {
	tok, err := NewTokenizer(f)
	if err != nil {
		return nil, err
	}
	_, stops, banned := tokenRoles(tok, f.Metadata)
	return newConstraintVocabulary(tok, vocabSize, stops, banned)
}

func newConstraintVocabulary(tok *processor.Tokenizer, n int, stops, banned []int32) (*constrain.Vocabulary, error) {
	texts := make([][]byte, n)
	kinds := make([]constrain.TokenKind, n)
	for id := range int32(n) {
		kinds[id] = constrain.TokenNever
		if int(id) >= tok.VocabSize() {
			continue
		}
		piece := tok.Piece(id)
		switch {
		case slices.Contains(stops, id):
			kinds[id] = constrain.TokenStop
			texts[id] = []byte(piece)
			continue
		case slices.Contains(banned, id) || tok.IsSpecial(id):
			continue
		}
		if b, ok := bytePiece(piece); ok {
			texts[id] = []byte{b}
			kinds[id] = constrain.TokenText
			continue
		}
		switch tok.TokenType(id) {
		case processor.TokenTypeUserDefined, processor.TokenTypeUnused:
			continue
		}
		texts[id] = []byte(strings.ReplaceAll(piece, "▁", " "))
		kinds[id] = constrain.TokenText
	}
	return constrain.NewVocabulary(texts, kinds, true)
}

// bytePiece recognises a byte-fallback piece "<0xNN>" by its spelling, as HF's ByteFallback decoder does.
func bytePiece(p string) (byte, bool) {
	if len(p) != 6 || !strings.HasPrefix(p, "<0x") || p[5] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(p[3:5], 16, 8)
	if err != nil {
		return 0, false
	}
	return byte(v), true
}

// constraint applies a grammar to one generation: before each sample the logits of tokens the grammar refuses
// become −∞, so penalties, temperature, top-k/p and greedy choice act among the allowed tokens only.
type constraint struct {
	m       *constrain.Matcher
	allowed []uint64
	spent   time.Duration
	steps   int
}

func (m *Model) newConstraint(g *constrain.Grammar) (*constraint, error) {
	if g == nil {
		return nil, nil
	}
	v, err := m.ConstraintVocabulary()
	if err != nil {
		return nil, fmt.Errorf("runner: constraint vocabulary: %w", err)
	}
	return &constraint{m: constrain.NewMatcher(g, v), allowed: make([]uint64, (v.Size()+63)/64)}, nil
}

// mask sets the logits of refused tokens to −∞ and returns the number allowed.
func (c *constraint) mask(logits []float32) int {
	t := time.Now()
	n := c.m.Fill(c.allowed)
	ninf := float32(math.Inf(-1))
	for i := range logits {
		if c.allowed[i>>6]&(1<<(i&63)) == 0 {
			logits[i] = ninf
		}
	}
	c.spent += time.Since(t)
	c.steps++
	return n
}
