package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chzyer/readline"
)

// TestTermReader drives chat's terminal reader through a pipe that stands in for a terminal: line editing (Ctrl-A
// to the start of the line, a deleted character), the history (Up recalls the last message, also from the history
// file of an earlier run), continued lines and Ctrl-C at the prompt.
func TestTermReader(t *testing.T) {
	history := filepath.Join(t.TempDir(), "chat-history")
	open := func() (*termReader, io.Writer, *lockedBuffer) {
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pw.Close() })
		var screen lockedBuffer
		tr, err := newTermReader(pr, &screen, func(c *readline.Config) {
			c.HistoryFile = history
			c.FuncIsTerminal = func() bool { return true }
			c.FuncMakeRaw = func() error { return nil }
			c.FuncExitRaw = func() error { return nil }
			c.FuncGetWidth = func() int { return 80 }
			c.FuncOnWidthChanged = func(func()) {}
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tr.close)
		return tr, pw, &screen
	}
	tr, keys, screen := open()
	steps := []struct {
		name, keys, want string
		err              error
	}{
		{"editing", "world\x01hello \x05!x\x7f\r", "hello world!", nil},
		{"plain", "What is 3 plus 4?\r", "What is 3 plus 4?", nil},
		{"history", "\x1b[A\x1b[A\r", "hello world!", nil},
		{"continued", "first \\\rsecond\r", "first \nsecond", nil},
		{"ctrl-c", "half\x03", "", errPromptInterrupt},
	}
	for _, st := range steps {
		if _, err := io.WriteString(keys, st.keys); err != nil {
			t.Fatal(err)
		}
		got, err := tr.readMessage()
		if got != st.want || !errors.Is(err, st.err) {
			t.Fatalf("%s: %q, %v; want %q, %v", st.name, got, err, st.want, st.err)
		}
	}
	if !strings.Contains(screen.String(), "> ") || !strings.Contains(screen.String(), "… ") {
		t.Errorf("prompts not drawn on stderr: %q", screen.String())
	}
	tr.close()

	// A new run finds the lines of the last one in its history (a continued message is kept line by line).
	tr, keys, _ = open()
	io.WriteString(keys, "\x1b[A\x1b[A\x1b[A\x1b[A\r") // second, first \, hello world!, What is…
	if got, err := tr.readMessage(); err != nil || got != "What is 3 plus 4?" {
		t.Fatalf("history across runs: %q, %v", got, err)
	}
}
