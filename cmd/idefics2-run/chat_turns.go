package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/idefics2-go/idefics2/internal/cli"
	"github.com/idefics2-go/idefics2/runner"
)

// chatReply writes the outcome of each chat message. On a terminal the answer streams and an error is one line on
// stderr. Under a pipe every message gets exactly one result on stdout, its answer or one "error: …" line (the
// error also goes to stderr), so that a script reading the answers stays in step.
type chatReply struct {
	out         *bufio.Writer
	stderr      io.Writer
	interactive bool
}

// failed reports err for the current message and returns its exit code.
func (c chatReply) failed(err error) int {
	code := fail(c.stderr, err)
	if !c.interactive {
		c.out.WriteString("error: " + oneLine(err) + "\n")
		c.out.Flush()
	}
	return code
}

// oneLine is err's message on one line, without the command's prefix.
func oneLine(err error) string {
	msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", " ")
	return strings.TrimPrefix(msg, "idefics2-run: ")
}

// chatPrompt renders the conversation (system message, history, the new user message u) for a session of size
// tokens. When it does not fit: with truncate, the oldest whole turns (a user message and its answer) are dropped
// until it fits with room for the answer (a quarter of the context at most, as the runner leaves), and a line on
// stderr says what was dropped; without, the error names /reset and --truncate. It returns the prompt and the
// history it kept. img are the image settings the turns' images are preprocessed with.
func chatPrompt(m *runner.Model, size, maxTokens int, truncate bool, system string, history []runner.Message, u runner.Message,
	img runner.ImageSettings, stderr io.Writer) (*runner.Prompt, []runner.Message, error) {
	render := func(h []runner.Message) (*runner.Prompt, error) {
		var msgs []runner.Message
		if system != "" {
			msgs = append(msgs, runner.Message{Role: "system", Content: []runner.Part{runner.TextPart(system)}})
		}
		msgs = append(append(msgs, h...), u)
		return m.ChatPrompt(msgs, runner.PromptOptions{Image: img})
	}
	p, err := render(history)
	if err != nil || len(p.Tokens) <= size {
		return p, history, err
	}
	if !truncate {
		return nil, history, cli.Usagef("chat: the conversation (%s) does not fit the context size %d: /reset starts a new conversation, "+
			"--truncate drops the oldest turns, --ctx-size raises the context", plural(len(p.Tokens), "token"), size)
	}
	target := size - max(1, min(maxTokens, size/4))
	full := len(p.Tokens)
	turns, images := 0, 0
	for len(p.Tokens) > target {
		n := oldestTurn(history)
		if n == 0 {
			return nil, history, cli.Usagef("chat: --truncate: the new message alone (%s with the system message) does not fit the context "+
				"size %d with room for the answer: shorten it, attach fewer images or raise --ctx-size", plural(len(p.Tokens), "token"), size)
		}
		for _, msg := range history[:n] {
			images += countImages(msg)
		}
		history = history[n:]
		turns++
		if p, err = render(history); err != nil {
			return nil, history, err
		}
	}
	what := "the oldest turn"
	if turns > 1 {
		what = fmt.Sprintf("the %d oldest turns", turns)
	}
	fmt.Fprintf(stderr, "idefics2-run: chat: --truncate dropped %s (%s, %s) to fit the context size %d\n",
		what, plural(images, "image"), plural(full-len(p.Tokens), "token"), size)
	return p, history, nil
}

// oldestTurn is the number of history messages that make up its oldest turn: a user message and the answers up to
// the next user message (0 for an empty history).
func oldestTurn(history []runner.Message) int {
	if len(history) == 0 {
		return 0
	}
	n := 1
	for n < len(history) && history[n].Role != "user" {
		n++
	}
	return n
}

func countImages(msg runner.Message) int {
	n := 0
	for _, p := range msg.Content {
		if p.Image != nil {
			n++
		}
	}
	return n
}

// plural is n and word, with an s for any n but 1 ("1 image", "0 images", "3 tokens").
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// truncationNote says what --truncate cut from the start of a one-turn prompt p to fit the context (the runner keeps
// BOS and never cuts into an image's tokens), given the prompt length the result reports; "" when nothing was cut.
func truncationNote(m *runner.Model, p *runner.Prompt, promptTokens int) string {
	cut := len(p.Tokens) - promptTokens
	if cut <= 0 {
		return ""
	}
	from := 0
	if len(p.Tokens) > 0 && p.Tokens[0] == m.Tokenizer().BOS() {
		from = 1
	}
	imageTokens := 0
	c := m.Graph().Connector
	for _, t := range p.Tokens[from:min(from+cut, len(p.Tokens))] {
		if m.HasVision() && t == int32(c.ImageTokenID) {
			imageTokens++
		}
	}
	note := fmt.Sprintf("idefics2-run: --truncate dropped the first %s of the prompt", plural(cut, "token"))
	if imageTokens > 0 && c.ImageSeqLen > 0 {
		note += fmt.Sprintf(" (%s among them: whole images or crops)", plural(imageTokens/c.ImageSeqLen, "sub-image"))
	}
	return note + " to fit the context"
}
