package processor

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"
)

// ErrUnencodable is matched (errors.Is) by the error Encode returns for text that has a character
// outside the vocabulary when the vocabulary has neither its byte pieces nor an unknown token.
// NewTokenizer refuses such vocabularies, so a Tokenizer built by it never returns this.
var ErrUnencodable = errors.New("processor: tokenizer: text cannot be encoded")

// Encode turns text into token ids the way HF's LlamaTokenizerFast does (legacy normalizer):
//
//  1. The raw text is split on the special and user-defined tokens (types control, unknown and
//     user-defined: "<s>", "<image>", "<end_of_utterance>", …), leftmost match first and the
//     longest token at a position; each match becomes its id.
//  2. Each remaining non-empty segment is normalized on its own: a leading "▁" when
//     AddSpacePrefix, and every ASCII space replaced by "▁" (nothing else: no NFC, no whitespace
//     collapsing).
//  3. The segment is split into characters and merged by BPE: repeatedly the adjacent pair whose
//     concatenation is a vocabulary piece with the highest score. Ties (equal scores) are broken
//     as HF's rank order breaks them: lower merged-piece id, then lower left-piece id, then the
//     leftmost position. transformers derives the merge ranks from the same scores with exactly
//     this order, so this reproduces tokenizer.json's merges without storing them; on real
//     SentencePiece vocabularies only the whitespace pieces share a score.
//  4. A character without a piece becomes its UTF-8 bytes as "<0xNN>" pieces (byte fallback), or
//     the unknown token (consecutive unknowns fused into one) where a byte piece is missing.
//
// Invalid UTF-8 is not rejected: each byte that is not part of a valid sequence is encoded as its
// own byte piece (SentencePiece would substitute U+FFFD; keeping the byte keeps the ids lossless).
// Decode then renders such bytes as U+FFFD, as HF does for any invalid byte run.
//
// With addSpecial, BOS is prepended when the vocabulary's AddBOS is set and EOS appended when
// AddEOS is set (HF's add_special_tokens=True).
func (t *Tokenizer) Encode(text string, addSpecial bool) ([]int32, error) {
	ids := make([]int32, 0, len(text)/3+2)
	if addSpecial && t.addBOS {
		ids = append(ids, t.bos)
	}
	var err error
	start := 0
	for i := 0; i < len(text); {
		if cands := t.splitters[text[i]]; len(cands) > 0 {
			if m, ok := matchSplitter(cands, text[i:]); ok {
				if ids, err = t.encodeSegment(ids, text[start:i], start); err != nil {
					return nil, err
				}
				ids = append(ids, m.id)
				i += len(m.text)
				start = i
				continue
			}
		}
		i++
	}
	if ids, err = t.encodeSegment(ids, text[start:], start); err != nil {
		return nil, err
	}
	if addSpecial && t.addEOS {
		ids = append(ids, t.eos)
	}
	return ids, nil
}

func matchSplitter(cands []splitToken, s string) (splitToken, bool) {
	for _, c := range cands {
		if strings.HasPrefix(s, c.text) {
			return c, true
		}
	}
	return splitToken{}, false
}

// bpeSymbol is one node of the doubly linked list of symbols; merged-away symbols have size 0.
type bpeSymbol struct {
	start, size int
	prev, next  int
	id          int32 // piece id, −1 for a character without a piece (byte fallback)
}

// bpeCandidate is a possible merge of the symbol at left with its right neighbour.
type bpeCandidate struct {
	score  float32
	merged int32 // id of the merged piece
	leftID int32 // id of the left piece at the time the candidate was made
	left   int   // index of the left symbol
	size   int   // byte length of the merged piece; a mismatch later means the candidate is stale
}

// before reports whether a merges before b: higher score, then HF's rank tie-breaks (lower merged
// id, lower left id), then leftmost.
func (a *bpeCandidate) before(b *bpeCandidate) bool {
	if a.score != b.score {
		return a.score > b.score
	}
	if a.merged != b.merged {
		return a.merged < b.merged
	}
	if a.leftID != b.leftID {
		return a.leftID < b.leftID
	}
	return a.left < b.left
}

// bpeWork holds the scratch space of one segment; pooled to keep Encode allocation-light.
type bpeWork struct {
	norm    []byte
	symbols []bpeSymbol
	heap    []bpeCandidate

	// lastUnkFused is set while the last id appended is an <unk> standing for unknown characters
	// that the next unknown character may fuse with.
	lastUnkFused bool
}

var bpeWorkPool = sync.Pool{New: func() any { return new(bpeWork) }}

// normalize appends the HF legacy normalization of seg (Prepend("▁") when addSpacePrefix, then
// Replace(" " → "▁")) to dst.
func (t *Tokenizer) normalize(dst []byte, seg string) []byte {
	if t.addSpacePrefix {
		dst = append(dst, spaceMarker...)
	}
	for {
		j := strings.IndexByte(seg, ' ')
		if j < 0 {
			return append(dst, seg...)
		}
		dst = append(dst, seg[:j]...)
		dst = append(dst, spaceMarker...)
		seg = seg[j+1:]
	}
}

// encodeSegment appends the ids of one text segment between special tokens; offset is the
// segment's byte offset in the caller's text (for error messages).
func (t *Tokenizer) encodeSegment(ids []int32, seg string, offset int) ([]int32, error) {
	if seg == "" {
		return ids, nil
	}
	w := bpeWorkPool.Get().(*bpeWork)
	defer bpeWorkPool.Put(w)
	w.norm = t.normalize(w.norm[:0], seg)
	w.lastUnkFused = false
	// One copy per segment: map lookups then use substrings of an immutable string.
	text := string(w.norm)

	var err error
	chunk := 0
	prev := rune(-1) // −1: the previous byte is not a valid character and joins nothing
	for i := 0; i < len(text); {
		r, n := utf8.DecodeRuneInString(text[i:])
		if r == utf8.RuneError && n == 1 {
			r = -1
		}
		if i > chunk {
			if !t.canJoin(prev, r) {
				if ids, err = t.bpeChunk(w, ids, text[chunk:i], offset); err != nil {
					return nil, err
				}
				chunk = i
			}
		}
		prev = r
		i += n
	}
	return t.bpeChunk(w, ids, text[chunk:], offset)
}

// Chunk cache limits: chunks up to chunkCacheMaxLen bytes, at most chunkCacheMax of them (a few
// MiB for the longest chunks).
const (
	chunkCacheMaxLen = 64
	chunkCacheMax    = 1 << 16
)

// bpeChunk runs BPE over text, a stretch of normalized text that no merge can extend beyond, and
// appends the resulting ids.
func (t *Tokenizer) bpeChunk(w *bpeWork, ids []int32, text string, offset int) ([]int32, error) {
	if len(text) == 1 && text[0] < utf8.RuneSelf {
		if id := t.charID[text[0]]; id >= 0 {
			w.lastUnkFused = false
			return append(ids, id), nil
		}
	}
	cacheable := len(text) <= chunkCacheMaxLen && !t.noCache
	if cacheable {
		if v, ok := t.cache.Load(text); ok {
			w.lastUnkFused = false
			return append(ids, v.([]int32)...), nil
		}
	}
	n0 := len(ids)
	ids, err := t.bpeChunkUncached(w, ids, text, offset)
	// Chunks that produced <unk> depend on the fusion state and are not cached.
	if err == nil && cacheable && !w.lastUnkFused && !containsID(ids[n0:], t.unk) && t.cacheSize.Load() < chunkCacheMax {
		if _, loaded := t.cache.LoadOrStore(strings.Clone(text), append([]int32(nil), ids[n0:]...)); !loaded {
			t.cacheSize.Add(1)
		}
	}
	return ids, err
}

func containsID(ids []int32, id int32) bool {
	if id < 0 {
		return false
	}
	for _, v := range ids {
		if v == id {
			return true
		}
	}
	return false
}

func (t *Tokenizer) bpeChunkUncached(w *bpeWork, ids []int32, text string, offset int) ([]int32, error) {
	syms := w.symbols[:0]
	for i := 0; i < len(text); {
		r, n := utf8.DecodeRuneInString(text[i:])
		id := int32(-1)
		switch {
		case r < utf8.RuneSelf:
			id = t.charID[r]
		case r != utf8.RuneError || n > 1:
			if v, ok := t.pieceID[text[i:i+n]]; ok {
				id = v
			}
		}
		syms = append(syms, bpeSymbol{start: i, size: n, prev: len(syms) - 1, next: len(syms) + 1, id: id})
		i += n
	}
	syms[len(syms)-1].next = -1
	w.symbols = syms

	if len(syms) > 1 {
		h := w.heap[:0]
		for i := 0; i+1 < len(syms); i++ {
			h = t.pushCandidate(h, syms, i)
		}
		for len(h) > 0 {
			c := h[0]
			h = heapPop(h)
			l := &syms[c.left]
			if l.size == 0 || l.next < 0 {
				continue
			}
			r := &syms[l.next]
			if l.size+r.size != c.size {
				continue // stale: one side has merged with something else since
			}
			l.size += r.size
			l.id = c.merged
			r.size = 0
			l.next = r.next
			if r.next >= 0 {
				syms[r.next].prev = c.left
			}
			if l.prev >= 0 {
				h = t.pushCandidate(h, syms, l.prev)
			}
			h = t.pushCandidate(h, syms, c.left)
		}
		w.heap = h
	}

	for i := 0; i >= 0; i = syms[i].next {
		s := syms[i]
		if s.id >= 0 {
			ids = append(ids, s.id)
			w.lastUnkFused = false
			continue
		}
		char := text[s.start : s.start+s.size]
		allBytes := true
		for k := 0; k < len(char); k++ {
			if t.byteID[char[k]] < 0 {
				allBytes = false
				break
			}
		}
		switch {
		case allBytes:
			for k := 0; k < len(char); k++ {
				ids = append(ids, t.byteID[char[k]])
			}
		case t.unk >= 0:
			// HF's BPE model with fuse_unk: a run of unknown characters is one <unk>. The run may
			// straddle chunks, so look at the last id emitted rather than at this chunk alone.
			if !w.lastUnkFused {
				ids = append(ids, t.unk)
			}
			w.lastUnkFused = true
			continue
		default:
			return nil, fmt.Errorf("%w: character %q in the text segment at byte %d has no piece, no byte pieces and no unknown token",
				ErrUnencodable, char, offset)
		}
		w.lastUnkFused = false
	}
	return ids, nil
}

// pushCandidate adds the merge of symbol i with its right neighbour when their concatenation is a
// mergeable piece. Characters without a piece never merge (HF turns them into byte pieces before
// merging, and merges never involve byte pieces).
func (t *Tokenizer) pushCandidate(h []bpeCandidate, syms []bpeSymbol, i int) []bpeCandidate {
	l := &syms[i]
	if l.next < 0 || l.id < 0 {
		return h
	}
	r := &syms[l.next]
	if r.id < 0 {
		return h
	}
	merged, ok := t.merges[idPair(l.id, r.id)]
	if !ok {
		return h
	}
	return heapPush(h, bpeCandidate{
		score:  t.scores[merged],
		merged: merged,
		leftID: l.id,
		left:   i,
		size:   l.size + r.size,
	})
}

// mergeable reports whether BPE may produce piece id: normal (and user-defined or untyped)
// pieces, never control, unknown, unused or byte pieces, which SentencePiece's BPE never merges to.
func (t *Tokenizer) mergeable(id int32) bool {
	switch t.types[id] {
	case TokenTypeControl, TokenTypeUnknown, TokenTypeUnused, TokenTypeByte:
		return false
	}
	return true
}

func heapPush(h []bpeCandidate, c bpeCandidate) []bpeCandidate {
	h = append(h, c)
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !h[i].before(&h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	return h
}

func heapPop(h []bpeCandidate) []bpeCandidate {
	n := len(h) - 1
	h[0] = h[n]
	h = h[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && h[r].before(&h[l]) {
			m = r
		}
		if !h[m].before(&h[i]) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	return h
}
