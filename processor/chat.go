package processor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/idefics2-go/idefics2/internal/jinja"
)

// Content part types of a chat message, as in transformers' chat message format.
const (
	PartText  = "text"
	PartImage = "image"
)

// ContentPart is one item of a message's content: text, or an image placeholder that the
// template renders as "<image>" (the pixels travel separately, in order).
type ContentPart struct {
	Type string `json:"type"`           // PartText or PartImage
	Text string `json:"text,omitempty"` // the text of a PartText part
}

// Message is one chat turn in transformers' format: {"role": "user", "content": [{"type":
// "image"}, {"type": "text", "text": "…"}]}. In JSON the content may also be a plain string,
// which becomes a single text part (idefics2's template indexes content as a list; with a plain
// string transformers would silently render no text).
type Message struct {
	Role    string        `json:"role"`
	Content []ContentPart `json:"content"`
}

// UnmarshalJSON accepts content as a list of parts or as a plain string.
func (m *Message) UnmarshalJSON(b []byte) error {
	var raw struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("processor: chat message: %w", err)
	}
	m.Role = raw.Role
	m.Content = nil
	c := bytes.TrimSpace(raw.Content)
	switch {
	case len(c) == 0 || bytes.Equal(c, []byte("null")):
	case c[0] == '"':
		var s string
		if err := json.Unmarshal(c, &s); err != nil {
			return fmt.Errorf("processor: chat message content: %w", err)
		}
		m.Content = []ContentPart{{Type: PartText, Text: s}}
	default:
		if err := json.Unmarshal(c, &m.Content); err != nil {
			return fmt.Errorf("processor: chat message content: %w", err)
		}
	}
	return nil
}

// ChatTemplateError reports a chat template that does not parse or fails while rendering.
type ChatTemplateError struct {
	Line, Col int    // place in the template (1-based; Col in characters)
	Msg       string // what went wrong
	// Rejected is set when the template itself refused the conversation with
	// raise_exception(…): the messages are invalid, not the template.
	Rejected bool
	Err      error // the underlying template engine error
}

// Error formats the error as "processor: chat template: line L col C: MSG".
func (e *ChatTemplateError) Error() string {
	return fmt.Sprintf("processor: chat template: line %d col %d: %s", e.Line, e.Col, e.Msg)
}

// Unwrap returns the template engine's error.
func (e *ChatTemplateError) Unwrap() error { return e.Err }

func chatError(err error) error {
	var je *jinja.Error
	if !errors.As(err, &je) {
		return fmt.Errorf("processor: chat template: %w", err)
	}
	var re *jinja.RaiseError
	return &ChatTemplateError{Line: je.Line, Col: je.Col, Msg: je.Msg, Rejected: errors.As(err, &re), Err: err}
}

// ChatTemplate is a parsed chat template (the Jinja source of tokenizer.chat_template or of
// chat_template.json), reusable and safe for concurrent use.
type ChatTemplate struct {
	t *jinja.Template
}

// ParseChatTemplate parses a Jinja chat template in the environment transformers'
// apply_chat_template uses (trim_blocks, lstrip_blocks, loop controls, its tojson filter and the
// raise_exception and strftime_now functions).
func ParseChatTemplate(src string) (*ChatTemplate, error) {
	return parseChatTemplate(src, jinja.DefaultOptions())
}

// parseChatTemplate is ParseChatTemplate with explicit engine options (tests lower the limits).
func parseChatTemplate(src string, opt jinja.Options) (*ChatTemplate, error) {
	t, err := jinja.Parse(src, opt)
	if err != nil {
		return nil, chatError(err)
	}
	return &ChatTemplate{t: t}, nil
}

// Render renders msgs as transformers' apply_chat_template(messages, add_generation_prompt,
// tokenize=False, **vars) does. The template sees messages (a list of {"role", "content"} dicts
// whose content is a list of {"type": "text", "text": …} and {"type": "image"} dicts),
// add_generation_prompt, tools and documents (None unless vars sets them: transformers always
// passes both, so "tools is defined" holds), and vars (typically the special tokens of
// Tokenizer.ChatTemplateVars, or any template-specific variable).
func (c *ChatTemplate) Render(msgs []Message, addGenerationPrompt bool, vars map[string]any) (string, error) {
	ctx := make(map[string]any, len(vars)+4)
	ctx["tools"] = nil
	ctx["documents"] = nil
	for k, v := range vars {
		if k == "messages" || k == "add_generation_prompt" {
			return "", fmt.Errorf("processor: chat template: variable %q is set from the arguments and cannot be passed in vars", k)
		}
		ctx[k] = v
	}
	list := make([]any, len(msgs))
	for i, m := range msgs {
		parts := make([]any, len(m.Content))
		for j, p := range m.Content {
			d := jinja.NewDict()
			switch p.Type {
			case PartText:
				_ = d.Set("type", PartText) // strings always convert
				_ = d.Set("text", p.Text)
			case PartImage:
				_ = d.Set("type", PartImage)
			default:
				return "", fmt.Errorf("processor: chat message %d content %d: part type %q, want %q or %q", i, j, p.Type, PartText, PartImage)
			}
			parts[j] = d
		}
		d := jinja.NewDict()
		_ = d.Set("role", m.Role)
		if err := d.Set("content", parts); err != nil {
			return "", fmt.Errorf("processor: chat message %d: %w", i, err)
		}
		list[i] = d
	}
	ctx["messages"] = list
	ctx["add_generation_prompt"] = addGenerationPrompt
	out, err := c.t.Render(ctx)
	if err != nil {
		return "", chatError(err)
	}
	return out, nil
}

// RenderChat parses tmpl and renders msgs with it; see ChatTemplate.Render.
func RenderChat(tmpl string, msgs []Message, addGenerationPrompt bool, vars map[string]any) (string, error) {
	c, err := ParseChatTemplate(tmpl)
	if err != nil {
		return "", err
	}
	return c.Render(msgs, addGenerationPrompt, vars)
}

// ChatTemplateVars returns the special-token variables transformers passes to chat templates
// (its special_tokens_map): bos_token, eos_token, unk_token and pad_token (those the vocabulary
// has) as their text, and additional_special_tokens, the other control tokens in id order (for
// idefics2: <fake_token_around_image>, <image>, <end_of_utterance>).
func (t *Tokenizer) ChatTemplateVars() map[string]any {
	vars := map[string]any{}
	named := map[int32]bool{}
	for name, id := range map[string]int32{"bos_token": t.bos, "eos_token": t.eos, "unk_token": t.unk, "pad_token": t.pad} {
		if id >= 0 {
			vars[name] = t.tokens[id]
			named[id] = true
		}
	}
	extra := []string{}
	for id, ty := range t.types {
		if ty == TokenTypeControl && !named[int32(id)] && t.tokens[id] != "" {
			extra = append(extra, t.tokens[id])
		}
	}
	vars["additional_special_tokens"] = extra
	return vars
}
