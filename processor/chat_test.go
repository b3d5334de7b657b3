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

// chatHFDir holds the Hugging Face reference fixtures.
var chatHFDir = filepath.Join("..", "testdata", "hf")

// chatIdefics2Template reads idefics2's chat template from the p1 checkpoint.
func chatIdefics2Template(tb testing.TB) string {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join(chatHFDir, "checkpoints", "p1", "chat_template.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var ct struct {
		ChatTemplate string `json:"chat_template"`
	}
	if err := json.Unmarshal(raw, &ct); err != nil {
		tb.Fatal(err)
	}
	return ct.ChatTemplate
}

// TestChatTemplateCopiesAgree checks that every copy of the chat template in the fixtures is the
// same text, so the parity tests below cover all of them.
func TestChatTemplateCopiesAgree(t *testing.T) {
	want := chatIdefics2Template(t)
	files := []string{
		filepath.Join(tokDir, "tokenizer_config.json"),
		filepath.Join(tokDir, "processor_config.json"),
	}
	for _, ck := range []string{"p1", "p2", "p2-bf16-sharded"} {
		for _, f := range []string{"chat_template.json", "processor_config.json"} {
			files = append(files, filepath.Join(chatHFDir, "checkpoints", ck, f))
		}
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var ct struct {
			ChatTemplate string `json:"chat_template"`
		}
		if err := json.Unmarshal(raw, &ct); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if ct.ChatTemplate != want {
			t.Errorf("%s: chat_template differs from p1/chat_template.json", f)
		}
	}
}

// TestChatGoldenCases renders the chat cases of cases.jsonl and checks the text and its ids.
func TestChatGoldenCases(t *testing.T) {
	tmpl := chatIdefics2Template(t)
	tk := tokIdefics2(t)
	n := 0
	for _, c := range tokLoadCases(t) {
		if c.Kind != "chat" {
			continue
		}
		n++
		t.Run(c.ID, func(t *testing.T) {
			var msgs []Message
			if err := json.Unmarshal(c.Messages, &msgs); err != nil {
				t.Fatal(err)
			}
			got, err := RenderChat(tmpl, msgs, c.AddGenerationPrompt, tk.ChatTemplateVars())
			if err != nil {
				t.Fatal(err)
			}
			if got != c.Text {
				t.Fatalf("render\n got %q\nwant %q", got, c.Text)
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
	if n != 8 {
		t.Errorf("%d chat cases, want 8", n)
	}
}

// TestChatTemplatePublic checks testdata/hf/cases/chat_template_public: transformers'
// apply_chat_template renderings and their token ids (before image expansion).
func TestChatTemplatePublic(t *testing.T) {
	dir := filepath.Join(chatHFDir, "cases", "chat_template_public")
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		ChatTemplate  string `json:"chat_template"`
		Conversations []struct {
			Messages            []Message `json:"messages"`
			AddGenerationPrompt bool      `json:"add_generation_prompt"`
			Rendered            string    `json:"rendered"`
			Tokens              []string  `json:"tokens"`
			InputIDsFile        string    `json:"input_ids_file"`
		} `json:"conversations"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if m.ChatTemplate != chatIdefics2Template(t) {
		t.Error("manifest chat_template differs from p1/chat_template.json")
	}
	tmpl, err := ParseChatTemplate(m.ChatTemplate)
	if err != nil {
		t.Fatal(err)
	}
	tk := tokIdefics2(t)
	if len(m.Conversations) == 0 {
		t.Fatal("no conversations")
	}
	for _, conv := range m.Conversations {
		t.Run(conv.InputIDsFile, func(t *testing.T) {
			got, err := tmpl.Render(conv.Messages, conv.AddGenerationPrompt, tk.ChatTemplateVars())
			if err != nil {
				t.Fatal(err)
			}
			if got != conv.Rendered {
				t.Fatalf("render\n got %q\nwant %q", got, conv.Rendered)
			}
			ids, err := tk.Encode(got, true)
			if err != nil {
				t.Fatal(err)
			}
			if p := tokPieces(tk, ids); !reflect.DeepEqual(p, conv.Tokens) {
				t.Errorf("tokens\n got %q\nwant %q", p, conv.Tokens)
			}
			arr, err := npy.Read(filepath.Join(dir, conv.InputIDsFile))
			if err != nil {
				t.Fatal(err)
			}
			want, err := arr.Int64s()
			if err != nil {
				t.Fatal(err)
			}
			if !chatEqualIDs(ids, want) {
				t.Errorf("ids\n got %v\nwant %v", ids, want)
			}
		})
	}
}

func chatEqualIDs(got []int32, want []int64) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if int64(got[i]) != want[i] {
			return false
		}
	}
	return true
}

// TestChatMessageJSON checks the accepted shapes of message content.
func TestChatMessageJSON(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		want    Message
		wantErr string
	}{
		{"parts", `{"role":"user","content":[{"type":"image"},{"type":"text","text":"hi"}]}`,
			Message{Role: "user", Content: []ContentPart{{Type: "image"}, {Type: "text", Text: "hi"}}}, ""},
		{"string", `{"role":"assistant","content":"plain"}`,
			Message{Role: "assistant", Content: []ContentPart{{Type: "text", Text: "plain"}}}, ""},
		{"null", `{"role":"user","content":null}`, Message{Role: "user"}, ""},
		{"number", `{"role":"user","content":3}`, Message{}, "processor: chat message content"},
		{"broken", `{"role":`, Message{}, "unexpected end of JSON input"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var m Message
			err := json.Unmarshal([]byte(tc.json), &m)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m, tc.want) {
				t.Errorf("got %+v, want %+v", m, tc.want)
			}
		})
	}
}

// TestChatBadInput is the bad-input table for RenderChat.
func TestChatBadInput(t *testing.T) {
	good := []Message{{Role: "user", Content: []ContentPart{{Type: PartText, Text: "hi"}}}}
	tests := []struct {
		name     string
		tmpl     string
		msgs     []Message
		vars     map[string]any
		substr   string
		line     int
		rejected bool
	}{
		{"syntax", "{% for m in messages %}\n{{ m.role }", good, nil, `line 2 col 11: unexpected "}"`, 2, false},
		{"unclosed", "{% for m in messages %}\n{{ m.role ", good, nil, "line 2 col 1: unclosed variable tag", 2, false},
		{"unknown tag", "x {% frobnicate %}", good, nil, "line 1 col 6: unknown tag 'frobnicate'", 1, false},
		{"raise", "{% if messages|length < 2 %}{{ raise_exception('need two turns') }}{% endif %}", good, nil, "raise_exception: need two turns", 1, true},
		{"undefined use", "{{ messages[0].nope.deeper }}", good, nil, "'dict object' has no attribute 'nope'", 1, false},
		{"bad part", "{{ 1 }}", []Message{{Role: "user", Content: []ContentPart{{Type: "video"}}}}, nil, `processor: chat message 0 content 0: part type "video"`, 0, false},
		{"reserved var", "{{ 1 }}", good, map[string]any{"messages": 1}, `variable "messages" is set from the arguments`, 0, false},
		{"unconvertible var", "{{ 1 }}", good, map[string]any{"x": struct{}{}}, "not supported", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := RenderChat(tc.tmpl, tc.msgs, true, tc.vars)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), "processor: ") || !strings.Contains(err.Error(), tc.substr) {
				t.Errorf("error %q does not contain %q", err, tc.substr)
			}
			var ce *ChatTemplateError
			if tc.line == 0 {
				return
			}
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not a *ChatTemplateError", err)
			}
			if ce.Line != tc.line || ce.Rejected != tc.rejected {
				t.Errorf("line %d rejected %v, want %d %v", ce.Line, ce.Rejected, tc.line, tc.rejected)
			}
		})
	}
}

// TestChatTemplateVars checks the special-token variables.
func TestChatTemplateVars(t *testing.T) {
	got := tokIdefics2(t).ChatTemplateVars()
	want := map[string]any{"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
		"additional_special_tokens": []string{"<fake_token_around_image>", "<image>", "<end_of_utterance>"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	out, err := RenderChat("{{ bos_token }}{% for m in messages %}[{{ m.role }}]{% endfor %}{{ eos_token }}{{ tools is defined }}{{ tools is none }}{{ additional_special_tokens[1] }}",
		[]Message{{Role: "user"}}, false, got)
	if err != nil || out != "<s>[user]</s>TrueTrue<image>" {
		t.Errorf("render %q, %v", out, err)
	}
}

// BenchmarkChatRender reports the cost of rendering idefics2's template for a 3-turn chat with a
// parsed template.
func BenchmarkChatRender(b *testing.B) {
	tmpl, err := ParseChatTemplate(chatIdefics2Template(b))
	if err != nil {
		b.Fatal(err)
	}
	msgs := []Message{
		{Role: "user", Content: []ContentPart{{Type: PartImage}, {Type: PartText, Text: "What do we see in this image?"}}},
		{Role: "assistant", Content: []ContentPart{{Type: PartText, Text: "In this image, we can see the city of New York."}}},
		{Role: "user", Content: []ContentPart{{Type: PartImage}, {Type: PartText, Text: "And how about this image?"}}},
	}
	vars := map[string]any{"bos_token": "<s>", "eos_token": "</s>"}
	for b.Loop() {
		if _, err := tmpl.Render(msgs, true, vars); err != nil {
			b.Fatal(err)
		}
	}
}
