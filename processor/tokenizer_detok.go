package processor

import (
	"strings"
	"unicode/utf8"
)

// replacementChar is U+FFFD, written once per byte of an invalid byte run.
const replacementChar = "\uFFFD"

// Decode turns ids back into text with HF tokenizers' decoder chain for Llama/Mistral
// (Replace("▁" → " "), ByteFallback, Fuse, Strip(" ", 1, 0)):
//
//   - ids outside the vocabulary are dropped;
//   - special tokens (IsSpecial) are dropped when skipSpecial, otherwise kept as their text;
//   - "▁" becomes a space;
//   - a run of consecutive byte pieces "<0xNN>" becomes its UTF-8 text when the whole run is valid
//     UTF-8, otherwise one U+FFFD per byte (HF's Rust byte_fallback.rs; the JavaScript ports write
//     one U+FFFD per maximal invalid subsequence instead);
//   - the pieces are joined and one leading space is removed.
//
// A special token that is skipped does not interrupt a byte run, because HF filters skipped
// tokens before the decoder sees them.
func (t *Tokenizer) Decode(ids []int32, skipSpecial bool) string {
	var b strings.Builder
	var run []byte
	for _, id := range ids {
		if id < 0 || int(id) >= len(t.tokens) || (skipSpecial && t.special[id]) {
			continue
		}
		if bv := t.byteOf[id]; bv >= 0 {
			run = append(run, byte(bv))
			continue
		}
		run = flushByteRun(&b, run)
		writePiece(&b, t.tokens[id])
	}
	flushByteRun(&b, run)
	s := b.String()
	if strings.HasPrefix(s, " ") {
		s = s[1:]
	}
	return s
}

// writePiece writes piece with every "▁" replaced by a space.
func writePiece(b *strings.Builder, piece string) {
	for {
		j := strings.Index(piece, spaceMarker)
		if j < 0 {
			b.WriteString(piece)
			return
		}
		b.WriteString(piece[:j])
		b.WriteByte(' ')
		piece = piece[j+len(spaceMarker):]
	}
}

// flushByteRun writes run as HF's ByteFallback decoder does and returns run emptied.
func flushByteRun(b *strings.Builder, run []byte) []byte {
	if len(run) == 0 {
		return run
	}
	if utf8.Valid(run) {
		b.Write(run)
	} else {
		for range run {
			b.WriteString(replacementChar)
		}
	}
	return run[:0]
}

// StreamDecoder decodes ids one at a time, for printing generated text as it is produced. The
// concatenation of everything Add and Flush return equals Decode of all the ids added, so it never
// emits a broken UTF-8 sequence: a run of byte pieces is held back until a non-byte token (or
// Flush) ends it, because HF decides per whole run whether it becomes text or U+FFFDs. It is not
// safe for concurrent use.
type StreamDecoder struct {
	t           *Tokenizer
	skipSpecial bool
	run         []byte
	started     bool // some text has been produced (the one leading space is already handled)
	b           strings.Builder
}

// NewStreamDecoder returns a StreamDecoder with Decode's skipSpecial semantics.
func (t *Tokenizer) NewStreamDecoder(skipSpecial bool) *StreamDecoder {
	return &StreamDecoder{t: t, skipSpecial: skipSpecial}
}

// Add consumes one id and returns the text that is now final ("" while a byte run is pending or
// when the id produces no text).
func (d *StreamDecoder) Add(id int32) string {
	t := d.t
	if id < 0 || int(id) >= len(t.tokens) || (d.skipSpecial && t.special[id]) {
		return ""
	}
	if bv := t.byteOf[id]; bv >= 0 {
		d.run = append(d.run, byte(bv))
		return ""
	}
	d.b.Reset()
	d.run = flushByteRun(&d.b, d.run)
	writePiece(&d.b, t.tokens[id])
	return d.emit(d.b.String())
}

// Flush returns the text of a pending byte run (valid UTF-8 or one U+FFFD per byte) and resets the
// run; call it when the sequence ends.
func (d *StreamDecoder) Flush() string {
	d.b.Reset()
	d.run = flushByteRun(&d.b, d.run)
	return d.emit(d.b.String())
}

// Pending reports whether bytes are held back waiting for the end of a byte run.
func (d *StreamDecoder) Pending() bool { return len(d.run) > 0 }

// emit applies Decode's one-leading-space strip to the first non-empty text.
func (d *StreamDecoder) emit(s string) string {
	if s == "" || d.started {
		return s
	}
	d.started = true
	return strings.TrimPrefix(s, " ")
}
