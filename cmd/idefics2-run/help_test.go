package main

import (
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/internal/cli/clitest"
)

// TestHelp: every command prints its help on stdout in the common format and exits with 0, for -h and --help alike,
// also after other options.
func TestHelp(t *testing.T) {
	tests := []struct {
		args    []string // before the help option
		command string   // as the usage line names it
	}{
		{nil, "idefics2-run"},
		{[]string{"-m", "x.gguf", "-p", "hi"}, "idefics2-run"},
		{[]string{"run"}, "idefics2-run"},
		{[]string{"chat"}, "idefics2-run chat"},
		{[]string{"batch"}, "idefics2-run batch"},
		{[]string{"serve"}, "idefics2-run serve"},
		{[]string{"tokenize"}, "idefics2-run tokenize"},
		{[]string{"detokenize"}, "idefics2-run detokenize"},
		{[]string{"preprocess"}, "idefics2-run preprocess"},
		{[]string{"bench"}, "idefics2-run bench"},
		{[]string{"inspect"}, "idefics2-run inspect"},
		{[]string{"info"}, "idefics2-run info"},
	}
	for _, tc := range tests {
		for _, h := range []string{"--help", "-h"} {
			args := append(append([]string(nil), tc.args...), h)
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				code, out, errs := runCmd(t, "", args...)
				if code != exitOK || errs != "" {
					t.Fatalf("exit %d, stderr %q; want 0 and nothing", code, errs)
				}
				if err := clitest.CheckHelp(tc.command, out); err != nil {
					t.Fatalf("%v\n%s", err, out)
				}
			})
		}
	}
	// "help" is the one-shot front end's help, which lists every command.
	code, out, _ := runCmd(t, "", "help")
	if err := clitest.CheckHelp("idefics2-run", out); code != exitOK || err != nil {
		t.Fatalf("help: exit %d, %v", code, err)
	}
	for _, c := range []string{"chat", "batch", "serve", "tokenize", "detokenize", "preprocess", "bench", "inspect", "info"} {
		if !strings.Contains(out, "idefics2-run "+c+" ") {
			t.Errorf("help does not list %s", c)
		}
	}
}
