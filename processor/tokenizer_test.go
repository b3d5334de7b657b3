package processor

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// tokDir is the real idefics2-8b tokenizer fixture (see its README.md).
var tokDir = filepath.Join("..", "testdata", "tokenizer")

// tokSPVocab is the layout of testdata/tokenizer/sentencepiece_vocab.json: what a GGUF stores.
type tokSPVocab struct {
	Tokens         []string  `json:"tokens"`
	Scores         []float32 `json:"scores"`
	Types          []int32   `json:"token_types"`
	UnkID          int32     `json:"unk_id"`
	BOSID          int32     `json:"bos_id"`
	EOSID          int32     `json:"eos_id"`
	PadID          int32     `json:"pad_id"`
	AddDummyPrefix bool      `json:"add_dummy_prefix"`
}

var (
	tokVocabOnce sync.Once
	tokVocabVal  Vocab
	tokVocabErr  error
)

// tokIdefics2Vocab builds the Vocab a converted idefics2-8b GGUF holds: add_bos true, add_eos
// false (tokenizer_config.json), add_space_prefix = SentencePiece's add_dummy_prefix.
func tokIdefics2Vocab(tb testing.TB) Vocab {
	tb.Helper()
	tokVocabOnce.Do(func() {
		raw, err := os.ReadFile(filepath.Join(tokDir, "sentencepiece_vocab.json"))
		if err != nil {
			tokVocabErr = err
			return
		}
		var sp tokSPVocab
		if err := json.Unmarshal(raw, &sp); err != nil {
			tokVocabErr = err
			return
		}
		tokVocabVal = Vocab{
			Tokens: sp.Tokens, Scores: sp.Scores, Types: sp.Types,
			BOS: sp.BOSID, EOS: sp.EOSID, UNK: sp.UnkID, PAD: sp.PadID,
			AddBOS: true, AddEOS: false, AddSpacePrefix: sp.AddDummyPrefix,
		}
	})
	if tokVocabErr != nil {
		tb.Fatalf("load vocab: %v", tokVocabErr)
	}
	return tokVocabVal
}

func tokIdefics2(tb testing.TB) *Tokenizer {
	tb.Helper()
	tk, err := NewTokenizer(tokIdefics2Vocab(tb))
	if err != nil {
		tb.Fatalf("NewTokenizer: %v", err)
	}
	return tk
}

// tokCase is one line of testdata/tokenizer/cases.jsonl.
type tokCase struct {
	ID                  string          `json:"id"`
	Category            string          `json:"category"`
	Kind                string          `json:"kind"`
	Text                string          `json:"text"`
	Prompt              string          `json:"prompt"`
	ImageSeqLen         int             `json:"image_seq_len"`
	DoImageSplitting    bool            `json:"do_image_splitting"`
	Messages            json.RawMessage `json:"messages"`
	AddGenerationPrompt bool            `json:"add_generation_prompt"`
	IDs                 []int32         `json:"ids"`
	IDsNoBOS            []int32         `json:"ids_no_bos"`
	Tokens              []string        `json:"tokens"`
	Decoded             string          `json:"decoded"`
	DecodedSkipSpecial  string          `json:"decoded_skip_special"`
	Roundtrip           bool            `json:"roundtrip"`
	External            *struct {
		Source     string  `json:"source"`
		Text       string  `json:"text"`
		IDsWithBOS []int32 `json:"ids_with_bos"`
		IDsNoBOS   []int32 `json:"ids_no_bos"`
	} `json:"external"`
}

func tokLoadCases(tb testing.TB) []tokCase {
	tb.Helper()
	f, err := os.Open(filepath.Join(tokDir, "cases.jsonl"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var cases []tokCase
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var c tokCase
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			tb.Fatalf("cases.jsonl line %d: %v", len(cases)+1, err)
		}
		cases = append(cases, c)
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return cases
}

func tokStreamDecode(tk *Tokenizer, ids []int32, skip bool) string {
	d := tk.NewStreamDecoder(skip)
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(d.Add(id))
	}
	b.WriteString(d.Flush())
	return b.String()
}

// TestTokenizerGoldenCases checks every case of cases.jsonl exactly: ids with and without BOS, the
// token strings, both decodings, and the streaming decoder.
func TestTokenizerGoldenCases(t *testing.T) {
	tk := tokIdefics2(t)
	cases := tokLoadCases(t)
	if len(cases) != 215 {
		t.Errorf("cases.jsonl has %d cases, want 215", len(cases))
	}
	for _, c := range cases {
		t.Run(c.ID, func(t *testing.T) {
			if c.Kind != "decode" {
				got, err := tk.Encode(c.Text, true)
				if err != nil {
					t.Fatalf("Encode(%q): %v", c.Text, err)
				}
				if !reflect.DeepEqual(got, c.IDs) {
					t.Errorf("Encode(%q, true)\n got %v\nwant %v", c.Text, got, c.IDs)
				}
				got, err = tk.Encode(c.Text, false)
				if err != nil {
					t.Fatalf("Encode(%q): %v", c.Text, err)
				}
				if !reflect.DeepEqual(got, c.IDsNoBOS) {
					t.Errorf("Encode(%q, false)\n got %v\nwant %v", c.Text, got, c.IDsNoBOS)
				}
				pieces := make([]string, len(c.IDsNoBOS))
				for i, id := range c.IDsNoBOS {
					pieces[i] = tk.Piece(id)
				}
				if !reflect.DeepEqual(pieces, c.Tokens) {
					t.Errorf("pieces\n got %q\nwant %q", pieces, c.Tokens)
				}
				if c.External != nil {
					if c.External.IDsWithBOS != nil && !reflect.DeepEqual(c.IDs, c.External.IDsWithBOS) {
						t.Errorf("external %s: ids %v, want %v", c.External.Source, c.IDs, c.External.IDsWithBOS)
					}
				}
				if c.Roundtrip != (tk.Decode(c.IDs, true) == c.Text) {
					t.Errorf("roundtrip = %v, want %v", !c.Roundtrip, c.Roundtrip)
				}
			}
			for _, skip := range []bool{false, true} {
				want := c.Decoded
				if skip {
					want = c.DecodedSkipSpecial
				}
				if got := tk.Decode(c.IDs, skip); got != want {
					t.Errorf("Decode(%v, skip=%v) = %q, want %q", c.IDs, skip, got, want)
				}
				if got := tokStreamDecode(tk, c.IDs, skip); got != want {
					t.Errorf("stream decode(%v, skip=%v) = %q, want %q", c.IDs, skip, got, want)
				}
			}
		})
	}
}

// TestTokenizerEncodeTable covers behaviour the goldens only touch indirectly.
func TestTokenizerEncodeTable(t *testing.T) {
	tk := tokIdefics2(t)
	tests := []struct {
		name string
		text string
		want []int32 // without BOS
	}{
		{"empty", "", []int32{}},
		{"newline after special", "<end_of_utterance>\nAssistant:", []int32{32002, 28705, 13, 7226, 11143, 28747}},
		{"space only", " ", []int32{259}},
		{"nul byte", "\x00", []int32{28705, 3}},
		{"invalid utf8 byte", "a\xffb", []int32{264, 258, 28726}},
		{"truncated sequence", "\xe5\x8f", []int32{28705, 232, 146}},
		{"leftmost longest special", "<s><s>", []int32{1, 1}},
		{"special inside word", "ab</s>cd", []int32{534, 2, 19958}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tk.Encode(tc.text, false)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) == 0 && len(tc.want) == 0 {
				return
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Encode(%q)\n got %v %q\nwant %v", tc.text, got, tokPieces(tk, got), tc.want)
			}
		})
	}
}

func tokPieces(tk *Tokenizer, ids []int32) []string {
	p := make([]string, len(ids))
	for i, id := range ids {
		p[i] = tk.Piece(id)
	}
	return p
}

// TestTokenizerBOSEOS checks addSpecial against the AddBOS/AddEOS flags.
func TestTokenizerBOSEOS(t *testing.T) {
	v := tokIdefics2Vocab(t)
	tests := []struct {
		name           string
		addBOS, addEOS bool
		addSpecial     bool
		want           []int32
	}{
		{"bos", true, false, true, []int32{1, 22557}},
		{"bos and eos", true, true, true, []int32{1, 22557, 2}},
		{"eos only", false, true, true, []int32{22557, 2}},
		{"none requested", true, true, false, []int32{22557}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v2 := v
			v2.AddBOS, v2.AddEOS = tc.addBOS, tc.addEOS
			tk, err := NewTokenizer(v2)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tk.Encode("Hello", tc.addSpecial)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestTokenizerNoSpacePrefix checks AddSpacePrefix false: no "▁" is prepended to segments.
func TestTokenizerNoSpacePrefix(t *testing.T) {
	v := tokIdefics2Vocab(t)
	v.AddSpacePrefix = false
	tk, err := NewTokenizer(v)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tk.Encode("Hello world", false)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"Hello", "▁world"}; !reflect.DeepEqual(tokPieces(tk, got), want) {
		t.Errorf("pieces %q, want %q", tokPieces(tk, got), want)
	}
}

// TestTokenizerBadVocab is the bad-input table for NewTokenizer.
func TestTokenizerBadVocab(t *testing.T) {
	base := func() Vocab {
		return Vocab{
			Tokens: []string{"<unk>", "<s>", "a"},
			Scores: []float32{0, 0, -1},
			Types:  []int32{2, 3, 1},
			BOS:    1, EOS: -1, UNK: 0, PAD: -1,
			AddBOS: true, AddSpacePrefix: true,
		}
	}
	nan := float32(0)
	nan = nan / nan
	tests := []struct {
		name   string
		mutate func(*Vocab)
		substr string
	}{
		{"empty", func(v *Vocab) { *v = Vocab{} }, "vocab Tokens: empty"},
		{"scores length", func(v *Vocab) { v.Scores = v.Scores[:2] }, "vocab Scores: length 2, want 3"},
		{"types length", func(v *Vocab) { v.Types = nil }, "vocab Types: length 0, want 3"},
		{"nan score", func(v *Vocab) { v.Scores[2] = nan }, "vocab Scores[2]: NaN"},
		{"bad type", func(v *Vocab) { v.Types[1] = 9 }, "vocab Types[1]: token type 9"},
		{"bos range", func(v *Vocab) { v.BOS = 3 }, "vocab BOS: id 3 outside [-1, 3)"},
		{"unk range", func(v *Vocab) { v.UNK = -2 }, "vocab UNK: id -2"},
		{"add bos without bos", func(v *Vocab) { v.BOS = -1 }, "vocab AddBOS"},
		{"add eos without eos", func(v *Vocab) { v.AddEOS = true }, "vocab AddEOS"},
		{"no fallback", func(v *Vocab) { v.UNK = -1 }, "neither the 256 byte pieces"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := base()
			tc.mutate(&v)
			_, err := NewTokenizer(v)
			if err == nil {
				t.Fatal("no error")
			}
			var ve *VocabError
			if !errors.As(err, &ve) || !errors.Is(err, ErrVocab) {
				t.Errorf("error %T %v is not a *VocabError matching ErrVocab", err, err)
			}
			if !strings.Contains(err.Error(), tc.substr) || !strings.HasPrefix(err.Error(), "processor: ") {
				t.Errorf("error %q does not contain %q", err, tc.substr)
			}
		})
	}
}

// TestTokenizerUnknownFallback checks a vocabulary without byte pieces: unknown characters become
// one fused <unk> per run, as HF's fuse_unk does.
func TestTokenizerUnknownFallback(t *testing.T) {
	tk, err := NewTokenizer(Vocab{
		Tokens: []string{"<unk>", "▁", "a", "b", "▁a", "ab"},
		Scores: []float32{0, -5, -1, -2, -3, -4},
		Types:  []int32{2, 1, 1, 1, 1, 1},
		BOS:    -1, EOS: -1, UNK: 0, PAD: -1,
		AddSpacePrefix: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		text string
		want []int32
	}{
		{"ab", []int32{4, 3}}, // "▁a" (score -3) merges before "ab" (-4)
		{"a", []int32{4}},
		{"axyzb", []int32{4, 0, 3}},
		{"x", []int32{1, 0}},
		{"a<unk>b", []int32{4, 0, 1, 3}},
		{"x<unk>y", []int32{1, 0, 0, 1, 0}},
		{"xa yz", []int32{1, 0, 2, 1, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.text, func(t *testing.T) {
			got, err := tk.Encode(tc.text, true)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Encode(%q) = %v, want %v", tc.text, got, tc.want)
			}
		})
	}
}

// TestTokenizerStreamDecoder checks that bytes are held back until their run ends and that the
// streamed text equals Decode.
func TestTokenizerStreamDecoder(t *testing.T) {
	tk := tokIdefics2(t)
	// "▁Hi" then 🦙 as four byte pieces, then "!" and an invalid run at the end.
	ids := []int32{15359, 243, 162, 169, 156, 28808, 232, 146}
	d := tk.NewStreamDecoder(true)
	var parts []string
	for _, id := range ids {
		parts = append(parts, d.Add(id))
		if d.Pending() != (tk.byteOf[id] >= 0) {
			t.Errorf("Pending() after %d = %v", id, d.Pending())
		}
	}
	parts = append(parts, d.Flush())
	want := []string{"Hi", "", "", "", "", "🦙!", "", "", "\uFFFD\uFFFD"}
	if !reflect.DeepEqual(parts, want) {
		t.Errorf("parts %q, want %q", parts, want)
	}
	if got, full := strings.Join(parts, ""), tk.Decode(ids, true); got != full {
		t.Errorf("stream %q != Decode %q", got, full)
	}
}

// TestTokenizerAccessors checks the small lookup helpers.
func TestTokenizerAccessors(t *testing.T) {
	tk := tokIdefics2(t)
	for piece, want := range map[string]int32{"<image>": 32001, "<fake_token_around_image>": 32000, "<end_of_utterance>": 32002, "<0x0A>": 13} {
		if id, ok := tk.TokenID(piece); !ok || id != want {
			t.Errorf("TokenID(%q) = %d, %v; want %d", piece, id, ok, want)
		}
	}
	if _, ok := tk.TokenID("no such piece"); ok {
		t.Error("TokenID of a missing piece reported ok")
	}
	if tk.VocabSize() != 32003 || tk.Piece(-1) != "" || tk.Piece(32003) != "" || tk.Piece(22557) != "▁Hello" {
		t.Error("VocabSize/Piece mismatch")
	}
	if !tk.IsSpecial(32001) || !tk.IsSpecial(0) || tk.IsSpecial(13) || tk.IsSpecial(99999) {
		t.Error("IsSpecial mismatch")
	}
	if tk.BOS() != 1 || tk.EOS() != 2 || tk.UNK() != 0 || tk.TokenType(3) != TokenTypeByte {
		t.Error("special id accessors mismatch")
	}
}
