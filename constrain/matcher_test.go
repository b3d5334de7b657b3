package constrain

import (
	"errors"
	"testing"
)

// spVocabulary is a small SentencePiece-like vocabulary as runner/ presents one: "▁" already turned into a space,
// byte-fallback pieces <0xNN> as their single byte, special tokens marked.
func spVocabulary(t *testing.T) (*Vocabulary, map[string]int32) {
	t.Helper()
	texts := [][]byte{[]byte("<unk>"), []byte("<s>"), []byte("</s>")}
	kinds := []TokenKind{TokenNever, TokenNever, TokenStop}
	for b := range 256 {
		texts = append(texts, []byte{byte(b)})
		kinds = append(kinds, TokenText)
	}
	ids := map[string]int32{}
	for _, p := range []string{" {", "{", `"`, ` "`, `":`, `","`, `"}`, `}`, "shape", "colour", "name", "red", "circle", "é", " ", `"shape":"`, "<image>"} {
		ids[p] = int32(len(texts))
		texts = append(texts, []byte(p))
		kind := TokenText
		if p == "<image>" {
			kind = TokenNever
		}
		kinds = append(kinds, kind)
	}
	ids["<end_of_utterance>"] = int32(len(texts))
	texts = append(texts, []byte("<end_of_utterance>"))
	kinds = append(kinds, TokenStop)
	v, err := NewVocabulary(texts, kinds, true)
	if err != nil {
		t.Fatal(err)
	}
	return v, ids
}

func byteID(b byte) int32 { return 3 + int32(b) }

// checkMask compares Fill with Allowed for every token.
func checkMask(t *testing.T, m *Matcher, v *Vocabulary) []uint64 {
	t.Helper()
	allowed := make([]uint64, (v.Size()+63)/64)
	n := m.Fill(allowed)
	count := 0
	for id := range int32(v.Size()) {
		in := allowed[id>>6]&(1<<(id&63)) != 0
		if in {
			count++
		}
		if in != m.Allowed(id) {
			t.Fatalf("token %d %q: Fill says %v, Allowed says %v", id, v.texts[id], in, !in)
		}
	}
	if n != count {
		t.Fatalf("Fill returned %d, %d bits set", n, count)
	}
	return allowed
}

func has(allowed []uint64, id int32) bool { return allowed[id>>6]&(1<<(id&63)) != 0 }

func TestTokenizerEdgeCases(t *testing.T) {
	v, ids := spVocabulary(t)
	g, err := CompileJSONSchema([]byte(`{"type":"object","properties":{"shape":{"enum":["circle","€"]},"colour":{"type":"string"}},"required":["shape","colour"],"additionalProperties":false}`))
	if err != nil {
		t.Fatal(err)
	}
	type step struct {
		token   int32
		allowed []int32 // must be allowed before the step
		refused []int32 // must be refused before the step
	}
	stop, eou := int32(2), ids["<end_of_utterance>"]
	steps := []step{
		// The first token's leading space is dropped by the decoder: " {" is "{".
		{ids[" {"], []int32{ids["{"], ids[" "]}, []int32{stop, eou, ids[`"`], 0, 1, ids["<image>"]}},
		// One token closes nothing yet but writes a whole key and opens its value string.
		{ids[`"shape":"`], []int32{ids[`"`], ids[` "`], byteID('"')}, []int32{ids["}"], ids["shape"]}},
		// A multi-byte character of an enum value spelled by three byte-fallback tokens.
		{byteID(0xE2), []int32{ids["circle"]}, []int32{ids["red"], byteID(0xC3)}},
		{byteID(0x82), nil, []int32{ids[`"`], byteID('"'), byteID(0xE2)}},
		{byteID(0xAC), nil, []int32{byteID(0x82)}},
		// A token that closes the string and opens the next key.
		{ids[`","`], []int32{ids[`"`]}, []int32{ids[`"}`]}},
		{ids["colour"], nil, []int32{ids["shape"]}},
		{ids[`":`], nil, nil},
		{ids[` "`], nil, []int32{ids["red"]}},
		// A byte-fallback character inside a free string: é as C3 A9; after the lead byte only a continuation byte.
		{byteID(0xC3), []int32{ids["é"], ids["red"]}, nil},
		{byteID(0xA9), nil, []int32{byteID('"'), ids[`"}`], byteID(0xC3), byteID('a')}},
		{ids["é"], []int32{ids[`"}`]}, []int32{stop}},
		{ids[`"}`], nil, []int32{stop, eou}},
		{eou, []int32{stop, eou}, []int32{ids[" "], ids["}"]}},
	}
	m := NewMatcher(g, v)
	for i, s := range steps {
		allowed := checkMask(t, m, v)
		for _, id := range s.allowed {
			if !has(allowed, id) {
				t.Errorf("step %d: token %q refused, want allowed", i, v.texts[id])
			}
		}
		for _, id := range s.refused {
			if has(allowed, id) {
				t.Errorf("step %d: token %q allowed, want refused", i, v.texts[id])
			}
		}
		if !has(allowed, s.token) {
			t.Fatalf("step %d: token %q refused", i, v.texts[s.token])
		}
		if err := m.Accept(s.token); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	// After a stop nothing is allowed.
	if err := m.Accept(stop); err == nil {
		t.Error("a second stop token was accepted")
	}
}

func TestAcceptRefuses(t *testing.T) {
	v, ids := spVocabulary(t)
	g, err := ParseGBNF(`root ::= "{" "}"`)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMatcher(g, v)
	var te *TokenError
	if err := m.Accept(2); !errors.As(err, &te) {
		t.Errorf("stop before the end: %v, want a *TokenError", err)
	}
	if err := m.Accept(ids["<image>"]); !errors.As(err, &te) {
		t.Errorf("a never-allowed token: %v, want a *TokenError", err)
	}
	if err := m.Accept(int32(v.Size())); err == nil {
		t.Error("an id outside the vocabulary was accepted")
	}
	// A refused token leaves the state as it was.
	if err := m.Accept(ids["}"]); err == nil {
		t.Error("} accepted first")
	}
	if err := m.Accept(ids[" {"]); err != nil {
		t.Error(err)
	}
	if m.Complete() {
		t.Error("complete after {")
	}
}

func TestNewVocabularyBadInput(t *testing.T) {
	if _, err := NewVocabulary(nil, nil, false); err == nil {
		t.Error("empty vocabulary accepted")
	}
	if _, err := NewVocabulary([][]byte{{'a'}}, nil, false); err == nil {
		t.Error("texts and kinds of different lengths accepted")
	}
}

// BenchmarkFill measures the mask of a 32000-token vocabulary inside a JSON string, where nearly every token is
// allowed (the worst case of the trie walk); "walk" computes it each time, "cached" finds it in the Matcher's
// per-state cache, as the next character of the string does.
func BenchmarkFill(b *testing.B) {
	for _, cached := range []bool{false, true} {
		name := "walk"
		if cached {
			name = "cached"
		}
		b.Run(name, func(b *testing.B) { benchmarkFill(b, cached) })
	}
}

func benchmarkFill(b *testing.B, cached bool) {
	texts, kinds := syntheticVocabulary(32000)
	v, err := NewVocabulary(texts, kinds, true)
	if err != nil {
		b.Fatal(err)
	}
	g, err := CompileJSONSchema([]byte(`{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}`))
	if err != nil {
		b.Fatal(err)
	}
	m := NewMatcher(g, v)
	if !m.AcceptBytes([]byte(`{"name": "ab`)) {
		b.Fatal("prefix refused")
	}
	allowed := make([]uint64, (v.Size()+63)/64)
	b.ReportAllocs()
	for b.Loop() {
		if !cached {
			m.masks = nil
		}
		m.Fill(allowed)
	}
}

// syntheticVocabulary is n tokens of mixed texts: bytes, words with and without a leading space, punctuation runs.
func syntheticVocabulary(n int) ([][]byte, []TokenKind) {
	texts := [][]byte{[]byte("<unk>"), []byte("<s>"), []byte("</s>")}
	kinds := []TokenKind{TokenNever, TokenNever, TokenStop}
	for b := range 256 {
		texts = append(texts, []byte{byte(b)})
		kinds = append(kinds, TokenText)
	}
	letters := "etaoinshrdlucmfwypvbgkqjxz"
	punct := []string{`"`, `",`, `":`, `"}`, `{`, `}`, `[`, `]`, `,`, `.`, `\n`, `é`, `€`}
	seed := uint32(12345)
	rnd := func(k int) int {
		seed = seed*1664525 + 1013904223
		return int(seed>>8) % k
	}
	for len(texts) < n {
		var w []byte
		if rnd(2) == 0 {
			w = append(w, ' ')
		}
		if rnd(8) == 0 {
			w = append(w, punct[rnd(len(punct))]...)
		} else {
			for range 1 + rnd(8) {
				w = append(w, letters[rnd(len(letters))])
			}
		}
		texts = append(texts, w)
		kinds = append(kinds, TokenText)
	}
	return texts, kinds
}
