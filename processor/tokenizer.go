package processor

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// Token types as stored in the GGUF key tokenizer.ggml.token_type; the values are SentencePiece's
// ModelProto.SentencePiece.Type enum, which llama.cpp's llama_token_type copies (0 = undefined).
const (
	TokenTypeUndefined   int32 = 0
	TokenTypeNormal      int32 = 1
	TokenTypeUnknown     int32 = 2
	TokenTypeControl     int32 = 3
	TokenTypeUserDefined int32 = 4
	TokenTypeUnused      int32 = 5
	TokenTypeByte        int32 = 6
)

// spaceMarker is SentencePiece's meta symbol U+2581 ("▁") that stands for a space inside pieces.
const spaceMarker = "\u2581"

// Vocab is a SentencePiece-style vocabulary as a llama-type GGUF stores it: parallel per-id slices
// (tokenizer.ggml.tokens, .scores, .token_type), the special ids (tokenizer.ggml.bos_token_id, …;
// −1 when the key is absent) and the flags tokenizer.ggml.add_bos_token, .add_eos_token and
// .add_space_prefix.
type Vocab struct {
	Tokens []string  // piece text per id; byte pieces are spelled "<0xNN>"
	Scores []float32 // SentencePiece score per id; a higher score merges earlier
	Types  []int32   // TokenType* per id

	BOS, EOS, UNK, PAD int32 // special ids, −1 if absent

	AddBOS         bool // Encode with addSpecial prepends BOS
	AddEOS         bool // Encode with addSpecial appends EOS
	AddSpacePrefix bool // each text segment between special tokens gets a leading "▁"
}

// ErrVocab is matched (errors.Is) by every error NewTokenizer returns for an unusable Vocab.
var ErrVocab = errors.New("processor: tokenizer: invalid vocabulary")

// VocabError reports why NewTokenizer rejected a Vocab: the field (and index, −1 when none) at fault.
type VocabError struct {
	Field string // e.g. "Scores", "Types[17]", "BOS"
	Msg   string // why, e.g. "length 31999, want 32003 (len(Tokens))"
}

// Error formats the error as "processor: tokenizer: vocab FIELD: MSG".
func (e *VocabError) Error() string {
	return fmt.Sprintf("processor: tokenizer: vocab %s: %s", e.Field, e.Msg)
}

// Unwrap makes every VocabError match ErrVocab.
func (e *VocabError) Unwrap() error { return ErrVocab }

// Tokenizer is a SentencePiece-style BPE tokenizer with byte fallback (Llama/Mistral) that encodes
// and decodes exactly as Hugging Face's LlamaTokenizerFast does with the tokenizer.json that
// transformers' LlamaConverter derives from the same SentencePiece model (see testdata/tokenizer/
// README.md). It is immutable after construction and safe for concurrent use.
type Tokenizer struct {
	tokens []string
	scores []float32
	types  []int32

	pieceID map[string]int32 // piece text → lowest id with that text
	byteID  [256]int32       // byte → id of its "<0xNN>" piece, −1 if absent
	byteOf  []int16          // id → byte value if the piece is spelled "<0xNN>", else −1
	special []bool           // id → dropped by Decode when skipping special tokens

	// splitters are the tokens matched in raw text before normalization (control, user-defined and
	// unknown types), grouped by first byte, longest first so that the first prefix match at a
	// position is the longest one.
	splitters [256][]splitToken

	// joinable holds every pair of adjacent characters (first rune << 32 | second rune) inside a
	// mergeable piece. A boundary between two characters that form no such pair can never be
	// crossed by a merge, so Encode runs BPE on the pieces between such boundaries separately:
	// the result is the same as one BPE over the whole segment, with small heaps.
	joinable map[uint64]struct{}
	// asciiJoinable is joinable for two ASCII characters as a bitset indexed a*128+b.
	asciiJoinable [utf8.RuneSelf * utf8.RuneSelf / 64]uint64

	// cache memoizes the ids of short chunks (words such as "▁the"), which recur constantly;
	// bounded by chunkCacheMax entries, after which new chunks are simply not remembered.
	cache     sync.Map // string → []int32
	cacheSize atomic.Int64
	noCache   bool // benchmarks only: measure the BPE itself

	// merges maps a pair of piece ids (left << 32 | right) to the mergeable piece spelled by their
	// concatenation: the same pairs transformers' SentencePiece converter lists as merges.
	merges map[uint64]int32

	// charID maps an ASCII character to its piece id (−1 if none); other characters go through
	// pieceID.
	charID [utf8.RuneSelf]int32

	bos, eos, unk, pad             int32
	addBOS, addEOS, addSpacePrefix bool
}

type splitToken struct {
	text string
	id   int32
}

// NewTokenizer validates v and builds the lookup tables. The slices of v are copied.
//
// A Vocab is rejected when the per-id slices differ in length, a score is NaN, a type is outside
// 0..6, a special id is out of range, AddBOS/AddEOS is set without the id, or when text outside the
// vocabulary could not be encoded at all (neither the 256 byte pieces nor an unknown token).
func NewTokenizer(v Vocab) (*Tokenizer, error) {
	n := len(v.Tokens)
	if n == 0 {
		return nil, &VocabError{Field: "Tokens", Msg: "empty"}
	}
	if n > math.MaxInt32 {
		return nil, &VocabError{Field: "Tokens", Msg: fmt.Sprintf("%d entries exceed the int32 id range", n)}
	}
	if len(v.Scores) != n {
		return nil, &VocabError{Field: "Scores", Msg: fmt.Sprintf("length %d, want %d (len(Tokens))", len(v.Scores), n)}
	}
	if len(v.Types) != n {
		return nil, &VocabError{Field: "Types", Msg: fmt.Sprintf("length %d, want %d (len(Tokens))", len(v.Types), n)}
	}
	for i, s := range v.Scores {
		if math.IsNaN(float64(s)) {
			return nil, &VocabError{Field: fmt.Sprintf("Scores[%d]", i), Msg: "NaN"}
		}
	}
	for i, ty := range v.Types {
		if ty < TokenTypeUndefined || ty > TokenTypeByte {
			return nil, &VocabError{Field: fmt.Sprintf("Types[%d]", i), Msg: fmt.Sprintf("token type %d not in 0..6", ty)}
		}
	}
	for _, f := range []struct {
		name string
		id   int32
	}{{"BOS", v.BOS}, {"EOS", v.EOS}, {"UNK", v.UNK}, {"PAD", v.PAD}} {
		if f.id < -1 || int(f.id) >= n {
			return nil, &VocabError{Field: f.name, Msg: fmt.Sprintf("id %d outside [-1, %d)", f.id, n)}
		}
	}
	if v.AddBOS && v.BOS < 0 {
		return nil, &VocabError{Field: "AddBOS", Msg: "set but the vocabulary has no BOS id"}
	}
	if v.AddEOS && v.EOS < 0 {
		return nil, &VocabError{Field: "AddEOS", Msg: "set but the vocabulary has no EOS id"}
	}

	t := &Tokenizer{
		tokens:         append([]string(nil), v.Tokens...),
		scores:         append([]float32(nil), v.Scores...),
		types:          append([]int32(nil), v.Types...),
		pieceID:        make(map[string]int32, n),
		byteOf:         make([]int16, n),
		special:        make([]bool, n),
		bos:            v.BOS,
		eos:            v.EOS,
		unk:            v.UNK,
		pad:            v.PAD,
		addBOS:         v.AddBOS,
		addEOS:         v.AddEOS,
		addSpacePrefix: v.AddSpacePrefix,
	}
	for i := range t.byteID {
		t.byteID[i] = -1
	}
	for i, p := range t.tokens {
		id := int32(i)
		if _, dup := t.pieceID[p]; !dup {
			t.pieceID[p] = id
		}
		t.byteOf[i] = -1
		if b, ok := parseBytePiece(p); ok {
			// HF's ByteFallback decoder recognises byte pieces by their spelling alone.
			t.byteOf[i] = int16(b)
			// The encoder looks pieces up by the spelling HF's BPE model writes: "<0x%02X>".
			if p == bytePieceText(b) && t.byteID[b] < 0 {
				t.byteID[b] = id
			}
		}
		switch t.types[i] {
		case TokenTypeControl, TokenTypeUnknown:
			t.special[i] = true
		}
		switch t.types[i] {
		case TokenTypeControl, TokenTypeUnknown, TokenTypeUserDefined:
			if p != "" && t.pieceID[p] == id {
				t.splitters[p[0]] = append(t.splitters[p[0]], splitToken{text: p, id: id})
			}
		}
	}
	for c := range t.charID {
		t.charID[c] = -1
		if id, ok := t.pieceID[string(rune(c))]; ok {
			t.charID[c] = id
		}
	}
	t.joinable = make(map[uint64]struct{}, 4*n)
	t.merges = make(map[uint64]int32, 2*n)
	for i, p := range t.tokens {
		id := int32(i)
		if t.pieceID[p] != id || !t.mergeable(id) {
			continue
		}
		prev := rune(-1)
		for k, r := range p {
			if prev >= 0 {
				t.joinable[runePair(prev, r)] = struct{}{}
				if prev < utf8.RuneSelf && r < utf8.RuneSelf {
					k := prev*utf8.RuneSelf + r
					t.asciiJoinable[k/64] |= 1 << (k % 64)
				}
				li, okl := t.pieceID[p[:k]]
				ri, okr := t.pieceID[p[k:]]
				if okl && okr {
					t.merges[idPair(li, ri)] = id
				}
			}
			prev = r
		}
	}
	for i := range t.splitters {
		s := t.splitters[i]
		sort.SliceStable(s, func(a, b int) bool { return len(s[a].text) > len(s[b].text) })
	}
	if !t.hasAllBytes() && t.unk < 0 {
		return nil, &VocabError{Field: "Tokens", Msg: "neither the 256 byte pieces <0x00>..<0xFF> nor an unknown token (UNK): text outside the vocabulary could not be encoded"}
	}
	return t, nil
}

// runePair is the joinable key of two adjacent characters.
func runePair(a, b rune) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// canJoin reports whether a merge may cross the boundary between characters a and b.
func (t *Tokenizer) canJoin(a, b rune) bool {
	if a < 0 || b < 0 {
		return false
	}
	if a < utf8.RuneSelf && b < utf8.RuneSelf {
		k := a*utf8.RuneSelf + b
		return t.asciiJoinable[k/64]&(1<<(k%64)) != 0
	}
	_, ok := t.joinable[runePair(a, b)]
	return ok
}

// idPair is the merges key of two adjacent pieces.
func idPair(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

func (t *Tokenizer) hasAllBytes() bool {
	for _, id := range t.byteID {
		if id < 0 {
			return false
		}
	}
	return true
}

// bytePieceText spells byte b as SentencePiece's byte-fallback piece, e.g. "<0x0A>".
func bytePieceText(b byte) string {
	const hex = "0123456789ABCDEF"
	return string([]byte{'<', '0', 'x', hex[b>>4], hex[b&15], '>'})
}

// parseBytePiece recognises a byte-fallback piece the way HF tokenizers' ByteFallback decoder does:
// six bytes "<0x" + two hex digits (either case) + ">".
func parseBytePiece(p string) (byte, bool) {
	if len(p) != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>' {
		return 0, false
	}
	hi, ok1 := pieceHexDigit(p[3])
	lo, ok2 := pieceHexDigit(p[4])
	if !ok1 || !ok2 {
		return 0, false
	}
	return hi<<4 | lo, true
}

func pieceHexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// VocabSize is the number of ids (len(Vocab.Tokens)).
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// TokenID returns the lowest id whose piece is exactly piece, e.g. TokenID("<image>").
func (t *Tokenizer) TokenID(piece string) (int32, bool) {
	id, ok := t.pieceID[piece]
	return id, ok
}

// Piece returns the piece text of id ("▁Hello", "<0x0A>", "<image>"), or "" for an id outside the
// vocabulary.
func (t *Tokenizer) Piece(id int32) string {
	if id < 0 || int(id) >= len(t.tokens) {
		return ""
	}
	return t.tokens[id]
}

// TokenType returns the TokenType* of id, or TokenTypeUndefined for an id outside the vocabulary.
func (t *Tokenizer) TokenType(id int32) int32 {
	if id < 0 || int(id) >= len(t.types) {
		return TokenTypeUndefined
	}
	return t.types[id]
}

// IsSpecial reports whether id is a special token (type control or unknown: <s>, </s>, <unk>,
// <image>, …), i.e. one that Decode drops when skipping special tokens, as HF's
// skip_special_tokens does for added tokens marked special.
func (t *Tokenizer) IsSpecial(id int32) bool {
	return id >= 0 && int(id) < len(t.special) && t.special[id]
}

// BOS returns the beginning-of-sequence id, −1 if the vocabulary has none.
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS returns the end-of-sequence id, −1 if the vocabulary has none.
func (t *Tokenizer) EOS() int32 { return t.eos }

// UNK returns the unknown-token id, −1 if the vocabulary has none.
func (t *Tokenizer) UNK() int32 { return t.unk }

// PAD returns the padding id, −1 if the vocabulary has none.
func (t *Tokenizer) PAD() int32 { return t.pad }
