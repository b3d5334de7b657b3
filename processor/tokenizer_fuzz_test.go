package processor

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzTokenize checks that Encode and Decode never panic, that every id is in range, that the
// streaming decoder agrees with Decode, and that decode(encode(x)) == x for valid UTF-8 text with
// no special-token text and no literal "▁" (which decodes to a space).
func FuzzTokenize(f *testing.F) {
	tk := tokIdefics2(f)
	for _, c := range tokLoadCases(f) {
		if c.Kind != "decode" {
			f.Add(c.Text)
		}
	}
	f.Add("\xff\xfe<0x0A>\xe5\x8f")
	f.Add(strings.Repeat(" ", 300) + "x")
	f.Fuzz(func(t *testing.T, text string) {
		ids, err := tk.Encode(text, true)
		if err != nil {
			t.Fatalf("Encode(%q): %v", text, err)
		}
		for _, id := range ids {
			if id < 0 || int(id) >= tk.VocabSize() {
				t.Fatalf("Encode(%q): id %d out of range", text, id)
			}
		}
		for _, skip := range []bool{false, true} {
			full := tk.Decode(ids, skip)
			if s := tokStreamDecode(tk, ids, skip); s != full {
				t.Fatalf("stream %q != Decode %q for %q", s, full, text)
			}
			if !utf8.ValidString(full) {
				t.Fatalf("Decode produced invalid UTF-8 %q", full)
			}
		}
		if !utf8.ValidString(text) || strings.Contains(text, spaceMarker) {
			return
		}
		for _, sp := range []string{"<unk>", "<s>", "</s>", "<fake_token_around_image>", "<image>", "<end_of_utterance>"} {
			if strings.Contains(text, sp) {
				return
			}
		}
		if got := tk.Decode(ids, true); got != text {
			t.Fatalf("decode(encode(%q)) = %q", text, got)
		}
	})
}
