package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/chzyer/readline"
)

// chatHistoryLimit is the number of messages the terminal history keeps.
const chatHistoryLimit = 1000

// termReader reads chat messages on a terminal with line editing (arrows, Home/End, Ctrl-A/E/K/W…) and a history
// (Up/Down, Ctrl-R search), saved across runs in the user's cache folder. The prompt goes to stderr, so that
// stdout carries only answers.
type termReader struct {
	rl *readline.Instance
}

// newTermReader starts line editing on stdin; cfg, when set, adjusts the configuration (tests drive it through a
// pipe that pretends to be a terminal).
func newTermReader(stdin io.ReadCloser, stderr io.Writer, cfg func(*readline.Config)) (*termReader, error) {
	c := &readline.Config{Prompt: "> ", Stdin: stdin, Stdout: stderr, Stderr: stderr, HistoryFile: chatHistoryFile(),
		HistoryLimit: chatHistoryLimit, HistorySearchFold: true, InterruptPrompt: "^C", EOFPrompt: ""}
	if cfg != nil {
		cfg(c)
	}
	rl, err := readline.NewEx(c)
	if err != nil {
		return nil, err
	}
	return &termReader{rl: rl}, nil
}

// chatHistoryFile is where the terminal history is kept: idefics2-go/chat-history in the user's cache folder ("":
// in memory only, when there is none).
func chatHistoryFile() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	dir = filepath.Join(dir, "idefics2-go")
	if os.MkdirAll(dir, 0o700) != nil {
		return ""
	}
	return filepath.Join(dir, "chat-history")
}

// errPromptInterrupt is returned by readMessage for Ctrl-C at the prompt: the terminal is in raw mode there, so
// Ctrl-C arrives as a key, not as SIGINT; chat ends as if interrupted by SIGINT.
var errPromptInterrupt = errors.New("interrupted at the prompt")

// readMessage reads one message; a line ending in a backslash continues on the next ("… " prompt). It returns
// io.EOF at Ctrl-D on an empty line.
func (t *termReader) readMessage() (string, error) {
	var b strings.Builder
	defer t.rl.SetPrompt("> ")
	for {
		line, err := t.rl.Readline()
		if errors.Is(err, readline.ErrInterrupt) {
			return "", errPromptInterrupt
		}
		if err != nil {
			return b.String(), err
		}
		if strings.HasSuffix(line, `\`) {
			b.WriteString(strings.TrimSuffix(line, `\`))
			b.WriteByte('\n')
			t.rl.SetPrompt("… ")
			continue
		}
		b.WriteString(line)
		return b.String(), nil
	}
}

func (t *termReader) close() { t.rl.Close() }
