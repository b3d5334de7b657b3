package processor

import (
	"errors"
	"testing"

	"github.com/idefics2-go/idefics2/internal/jinja"
)

// FuzzChatTemplate renders arbitrary templates over a small conversation whose text is fuzzed
// too: it must return a string or an error (a *ChatTemplateError for template failures), never
// panic or run away; the limits are lowered so that each input stays fast.
func FuzzChatTemplate(f *testing.F) {
	f.Add(chatIdefics2Template(f), "What is in this image?", true)
	f.Add("{% for m in messages %}{{ m.role|upper }}: {{ m.content[0].text|trim|tojson }}{% endfor %}", " hi ", false)
	f.Add("{% set ns = namespace(n=0) %}{% for m in messages if m.role != 'x' %}{% set ns.n = ns.n + loop.index %}{% endfor %}{{ ns.n }}", "", true)
	f.Add("{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}", "x", true)
	f.Add("{{ (messages * 1000)|length }}{% for i in range(100000) %}{{ i }}{% endfor %}", "x", false)
	f.Add("{{ 'a' * 100000000 }}{{ raise_exception(messages[0]['content'][1]['text']) }}", "boom", true)
	f.Add("{%- if x -%}\n  {{ y | default('d') }}\n{%- endif %}{# c #}{% raw %}{{{% endraw %}", "", false)
	opt := jinja.DefaultOptions()
	opt.MaxSteps = 200_000
	opt.MaxOutput = 1 << 20
	opt.MaxCallDepth = 20
	f.Fuzz(func(t *testing.T, src, text string, addGen bool) {
		c, err := parseChatTemplate(src, opt)
		if err != nil {
			var ce *ChatTemplateError
			if !errors.As(err, &ce) {
				t.Fatalf("parse error %T %v is not a *ChatTemplateError", err, err)
			}
			return
		}
		msgs := []Message{
			{Role: "user", Content: []ContentPart{{Type: PartImage}, {Type: PartText, Text: text}}},
			{Role: "assistant", Content: []ContentPart{{Type: PartText, Text: text + text}}},
		}
		out, err := c.Render(msgs, addGen, map[string]any{"bos_token": "<s>", "eos_token": "</s>"})
		if err != nil {
			var ce *ChatTemplateError
			if !errors.As(err, &ce) {
				t.Fatalf("render error %T %v is not a *ChatTemplateError", err, err)
			}
			return
		}
		if len(out) > opt.MaxOutput {
			t.Fatalf("output of %d bytes exceeds MaxOutput %d", len(out), opt.MaxOutput)
		}
	})
}
