package processor

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/internal/npy"
)

// TestPromptGoldenCases checks the processor cases of cases.jsonl: the expanded text and its ids.
func TestPromptGoldenCases(t *testing.T) {
	tk := tokIdefics2(t)
	n := 0
	for _, c := range tokLoadCases(t) {
		if c.Kind != "processor" {
			continue
		}
		n++
		t.Run(c.ID, func(t *testing.T) {
			got, err := ExpandImageTokens(c.Prompt, strings.Count(c.Prompt, TokenImage), c.ImageSeqLen, c.DoImageSplitting)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.Text {
				t.Fatalf("expand(%q, %d, %v)\n got %q\nwant %q", c.Prompt, c.ImageSeqLen, c.DoImageSplitting, got, c.Text)
			}
			ids, err := tk.Encode(got, true)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(ids, c.IDs) {
				t.Errorf("ids\n got %v\nwant %v", ids, c.IDs)
			}
		})
	}
	if n != 10 {
		t.Errorf("%d processor cases, want 10", n)
	}
}

// TestPromptHFInputIDs checks the full processor text path (expand, then encode with BOS) against
// input_ids.npy of the Hugging Face model and processor cases.
func TestPromptHFInputIDs(t *testing.T) {
	tk := tokIdefics2(t)
	tests := []struct {
		cas    string
		seqLen int
		split  bool
	}{
		{"p1_chelsea_split", 4, true},    // p1: processor_config image_seq_len 4, splitting on
		{"p1_text_only", 4, true},        //
		{"p2_text_only", 8, false},       // p2: image_seq_len 8, splitting off
		{"p2_two_images", 8, false},      //
		{"proc8b_coins_split", 64, true}, // the real idefics2-8b settings
	}
	for _, tc := range tests {
		t.Run(tc.cas, func(t *testing.T) {
			dir := filepath.Join(chatHFDir, "cases", tc.cas)
			raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
			if err != nil {
				t.Fatal(err)
			}
			var m struct {
				Inputs struct {
					Prompt string            `json:"prompt"`
					Images []json.RawMessage `json:"images"`
				} `json:"inputs"`
			}
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			text, err := ExpandImageTokens(m.Inputs.Prompt, len(m.Inputs.Images), tc.seqLen, tc.split)
			if err != nil {
				t.Fatal(err)
			}
			ids, err := tk.Encode(text, true)
			if err != nil {
				t.Fatal(err)
			}
			arr, err := npy.Read(filepath.Join(dir, "input_ids.npy"))
			if err != nil {
				t.Fatal(err)
			}
			want, err := arr.Int64s()
			if err != nil {
				t.Fatal(err)
			}
			if len(arr.Shape) != 2 || arr.Shape[0] != 1 {
				t.Fatalf("input_ids shape %v, want (1, n)", arr.Shape)
			}
			if !chatEqualIDs(ids, want) {
				t.Errorf("ids (%d)\n got %v\nwant %v (%d)", len(ids), ids, want, len(want))
			}
		})
	}
}

// TestPromptTokenCounts checks the counts of IDEFICS2.md §7 with image_seq_len 64.
func TestPromptTokenCounts(t *testing.T) {
	tk := tokIdefics2(t)
	fake, _ := tk.TokenID(TokenFakeImage)
	img, _ := tk.TokenID(TokenImage)
	tests := []struct {
		prompt         string
		images         int
		split          bool
		wantFake, want int // fake tokens, image tokens
	}{
		{"<image>", 1, false, 2, 64},
		{"<image>", 1, true, 6, 320},
		{"<image><image>", 2, false, 3, 128},
		{"<image> <image>", 2, false, 4, 128},
		{"<image><image>", 2, true, 11, 640},
	}
	for _, tc := range tests {
		t.Run(tc.prompt, func(t *testing.T) {
			text, err := ExpandImageTokens(tc.prompt, tc.images, 64, tc.split)
			if err != nil {
				t.Fatal(err)
			}
			ids, err := tk.Encode(text, false)
			if err != nil {
				t.Fatal(err)
			}
			var nf, ni int
			for _, id := range ids {
				switch id {
				case fake:
					nf++
				case img:
					ni++
				}
			}
			if nf != tc.wantFake || ni != tc.want {
				t.Errorf("%d fake + %d image tokens, want %d + %d", nf, ni, tc.wantFake, tc.want)
			}
		})
	}
}

// TestPromptReplaceSemantics checks the single non-overlapping pass of the fake-token collapse.
func TestPromptReplaceSemantics(t *testing.T) {
	const f = TokenFakeImage
	got, err := ExpandImageTokens(f+f+f+"x", 0, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := f + f + "x"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	got, err = ExpandImageTokens("a"+f+"<image>b", 1, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := "a" + f + "<image><image>" + f + "b"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestPromptBadInput is the bad-input table for ExpandImageTokens.
func TestPromptBadInput(t *testing.T) {
	tests := []struct {
		name           string
		prompt         string
		images, seqLen int
		substr         string
		count          bool
	}{
		{"too few images", "<image><image>", 1, 64, "the prompt has 2 <image> markers but 1 image was given", true},
		{"too many images", "hello", 1, 64, "the prompt has 0 <image> markers but 1 image was given", true},
		{"negative images", "x", -1, 64, "-1 images", false},
		{"zero seq len", "<image>", 1, 0, "image_seq_len 0", false},
		{"huge seq len", "<image>", 1, 1 << 30, "exceeds", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ExpandImageTokens(tc.prompt, tc.images, tc.seqLen, true)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), "processor: prompt") || !strings.Contains(err.Error(), tc.substr) {
				t.Errorf("error %q does not contain %q", err, tc.substr)
			}
			if errors.Is(err, ErrPromptImages) != tc.count {
				t.Errorf("errors.Is(err, ErrPromptImages) = %v, want %v", !tc.count, tc.count)
			}
		})
	}
}
