package runner

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/png"
	"os"
	"strings"
	"testing"
)

// FuzzStopper: whatever the chunks and stop strings, the released text is a prefix of the input with no stop
// string in it, and is all of the input when no stop string occurs.
func FuzzStopper(f *testing.F) {
	f.Add("abc|XY|Z", "XYZ")
	f.Add("ca|fé!|x", "é!")
	f.Add("aaa|a", "aa")
	f.Fuzz(func(t *testing.T, chunks, stop string) {
		var stops []string
		if stop != "" {
			stops = strings.Split(stop, "|")
			for _, s := range stops {
				if s == "" {
					return
				}
			}
		}
		s := newStopper(stops)
		var released strings.Builder
		hit := false
		parts := strings.Split(chunks, "|")
		for _, c := range parts {
			out, h := s.add(c, false)
			released.WriteString(out)
			if hit = h; h {
				break
			}
		}
		if !hit {
			out, h := s.add("", true)
			released.WriteString(out)
			hit = h
		}
		in := strings.Join(parts, "")
		got := released.String()
		if got != s.text() || !strings.HasPrefix(in, got) {
			t.Fatalf("released %q, text %q, input %q", got, s.text(), in)
		}
		for _, x := range stops {
			if strings.Contains(got, x) {
				t.Fatalf("released %q holds stop %q", got, x)
			}
		}
		if !hit && got != in {
			t.Fatalf("no stop hit but released %q of %q", got, in)
		}
		if hit {
			found := false
			for _, x := range stops {
				found = found || strings.HasPrefix(in[len(got):], x)
			}
			if !found {
				t.Fatalf("hit but %q does not follow with a stop string (%q)", in[len(got):], stops)
			}
		}
	})
}

// fuzzImages are the images a FuzzChatPrompt input can pick: a real picture, a 1×1 PNG, junk bytes, no bytes, a
// PNG whose header claims 100000×100000 pixels and one that claims 0×5.
func fuzzImages(t testing.TB) []Image {
	demo, err := os.ReadFile(testdata("demo", "images", "demo_00.png"))
	if err != nil {
		t.Fatal(err)
	}
	var one bytes.Buffer
	if err := png.Encode(&one, image.NewRGBA(image.Rect(0, 0, 1, 1))); err != nil {
		t.Fatal(err)
	}
	return []Image{
		{Name: "demo_00.png", Data: demo},
		{Name: "1x1.png", Data: one.Bytes()},
		{Name: "junk.png", Data: []byte("not a picture")},
		{Name: "empty.png", Data: nil},
		{Name: "huge.png", Data: pngWithSize(one.Bytes(), 100000, 100000)},
		{Name: "zero.png", Data: pngWithSize(one.Bytes(), 0, 5)},
	}
}

// pngWithSize rewrites the IHDR width and height of a PNG file (and the chunk's CRC) without touching its pixels.
func pngWithSize(b []byte, w, h uint32) []byte {
	out := append([]byte(nil), b...)
	// 8-byte signature, 4-byte length, "IHDR", then width and height; the CRC covers type and data (13 bytes).
	binary.BigEndian.PutUint32(out[16:], w)
	binary.BigEndian.PutUint32(out[20:], h)
	binary.BigEndian.PutUint32(out[29:], crc32.ChecksumIEEE(out[12:29]))
	return out
}

// fuzzMessages turns fuzz bytes into chat messages: 0x00 separates messages, whose first byte picks the role
// (including an empty and an unknown one); 0x01 separates parts; a part that starts with 0x02 is an image whose
// next byte picks one of imgs, any other part is text (arbitrary bytes, invalid UTF-8 included).
func fuzzMessages(data []byte, imgs []Image) []Message {
	roles := []string{"user", "assistant", "system", "user", "", "tool"}
	var msgs []Message
	for _, seg := range bytes.Split(data, []byte{0}) {
		if len(seg) == 0 {
			continue
		}
		m := Message{Role: roles[int(seg[0])%len(roles)]}
		for _, p := range bytes.Split(seg[1:], []byte{1}) {
			if len(p) > 0 && p[0] == 2 {
				k := 0
				if len(p) > 1 {
					k = int(p[1]) % len(imgs)
				}
				m.Content = append(m.Content, ImagePart(imgs[k]))
				continue
			}
			m.Content = append(m.Content, TextPart(string(p)))
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// FuzzChatPrompt builds prompts from arbitrary messages (roles, text with template syntax, <image> markers and
// invalid UTF-8, good and bad images) on the tiny p1 model: ChatPrompt returns an *InputError, or a prompt whose
// tokens are in the vocabulary, start with BOS, and hold exactly image_seq_len <image> tokens per (sub-)image.
func FuzzChatPrompt(f *testing.F) {
	for _, s := range []string{
		"\x06hello",
		"\x06\x02\x06\x01What is this?",
		"\x08system rules\x00\x06hi <image> there\x01\x02\x07\x00\x07ok",
		"\x06\x02\x06\x01a\x00\x07b\x00\x06\x02\x06\x01c",
		"\x06<image>\x01\x02\x09",
		"\x06{{ bos_token }}{% for m in messages %}\x01\x02\x0a",
		"\x06\xff\xfe\xc3(<end_of_utterance>\x01\x02\x0b",
		"\x0ano role\x00\x0btool",
		"\x06<fake_token_around_image><image><image>",
		"\x06\x01\x01",
	} {
		f.Add([]byte(s), false)
	}
	f.Add([]byte("\x06\x02\x06\x01two\x01\x02\x07"), true)
	m := loadModel(f, "p1")
	imgs := fuzzImages(f)
	vocab := m.Tokenizer().VocabSize()
	seqLen := m.seqLen
	f.Fuzz(func(t *testing.T, data []byte, noSplit bool) {
		if len(data) > 4096 {
			return
		}
		msgs := fuzzMessages(data, imgs)
		nImages := 0
		for _, msg := range msgs {
			for _, p := range msg.Content {
				if p.Type == PartImage {
					nImages++
				}
			}
		}
		p, err := m.ChatPrompt(msgs, PromptOptions{NoSplit: noSplit})
		if err != nil {
			if !IsInputError(err) || !strings.HasPrefix(err.Error(), "runner: ") && !strings.HasPrefix(err.Error(), "processor: ") {
				t.Fatalf("error %v (input error %v) is not a runner/processor input error", err, IsInputError(err))
			}
			return
		}
		if len(p.Tokens) == 0 || p.Tokens[0] != m.Tokenizer().BOS() || p.NumImages != nImages || (nImages > 0) != (p.Images != nil) {
			t.Fatalf("prompt: %d tokens, %d images (want %d), batch %v", len(p.Tokens), p.NumImages, nImages, p.Images != nil)
		}
		nImg := 0
		for _, id := range p.Tokens {
			if id < 0 || int(id) >= vocab {
				t.Fatalf("token id %d outside the vocabulary of %d", id, vocab)
			}
			if id == m.imageTokenID {
				nImg++
			}
		}
		want := 0
		if p.Images != nil {
			want = p.Images.N * seqLen
		}
		if nImg != want {
			t.Fatalf("%d image tokens, want %d", nImg, want)
		}
	})
}
