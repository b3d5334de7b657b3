package constrain

import (
	"math/rand/v2"
	"testing"
)

// byteVocabulary has one token per byte (ids 0–255) and a stop token (id 256): every output is reachable.
func byteVocabulary(t testing.TB) *Vocabulary {
	t.Helper()
	var texts [][]byte
	var kinds []TokenKind
	for b := range 256 {
		texts = append(texts, []byte{byte(b)})
		kinds = append(kinds, TokenText)
	}
	texts = append(texts, []byte("</s>"))
	kinds = append(kinds, TokenStop)
	v, err := NewVocabulary(texts, kinds, false)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

const byteStop = 256

// walk produces a random sentence of g one byte at a time from the allowed set, preferring structural bytes so
// that outputs stay short; ok is false when it ran past limit bytes.
func walk(t testing.TB, g *Grammar, v *Vocabulary, rng *rand.Rand, limit int) (out []byte, ok bool) {
	m := NewMatcher(g, v)
	allowed := make([]uint64, (v.Size()+63)/64)
	var ids []int32
	for len(out) < limit {
		if m.Fill(allowed) == 0 {
			t.Fatalf("no token allowed after %q (complete %v)", out, m.Complete())
		}
		ids = ids[:0]
		for id := range v.Size() {
			in := allowed[id>>6]&(1<<(id&63)) != 0
			if in {
				ids = append(ids, int32(id))
			}
			// Fill's result, often from the per-state cache, agrees with the direct check of each token.
			if in != m.Allowed(int32(id)) {
				t.Fatalf("after %q: token %d: Fill says %v, Allowed the opposite", out, id, in)
			}
		}
		// Stop with some probability when possible; otherwise prefer bytes that close structures.
		if m.Complete() && (rng.IntN(4) == 0 || len(ids) == 1) {
			if err := m.Accept(byteStop); err != nil {
				t.Fatal(err)
			}
			return out, true
		}
		var pick int32 = -1
		if rng.IntN(3) == 0 {
			for _, id := range ids {
				if id == '"' || id == '}' || id == ']' || id == ',' {
					pick = id
					break
				}
			}
		}
		if pick < 0 {
			for {
				pick = ids[rng.IntN(len(ids))]
				if pick != byteStop {
					break
				}
			}
		}
		if !m.Allowed(pick) {
			t.Fatalf("Fill allows %d but Allowed refuses it after %q", pick, out)
		}
		if err := m.Accept(pick); err != nil {
			t.Fatalf("after %q: %v", out, err)
		}
		out = append(out, byte(pick))
	}
	return out, false
}
