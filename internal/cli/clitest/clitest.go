// Package clitest checks, in tests, that a command's help has the format cli.FlagSet.Usage writes.
package clitest

import (
	"fmt"
	"regexp"
	"strings"
)

// optionLine is one line of the options list: two spaces, the option's names, a placeholder, its text.
var optionLine = regexp.MustCompile(`^  (--[a-z0-9-]+|-[a-z])(, (--[a-z0-9-]+|-[a-z]))*( [A-Z][A-Z=,.]*)? +\S`)

// exitLine is one line of the optional exit codes list after the options: two spaces, a code (or codes joined by
// "/", or "128+N"), its meaning.
var exitLine = regexp.MustCompile(`^  [0-9][0-9/+N]* +\S`)

// CheckHelp returns an error saying what is wrong when help is not the help of command (e.g. "idefics2-run chat")
// in the common format: "usage: COMMAND …" first, then "options:" on a line of its own after a blank line, then one
// line per option, "--help, -h" among them, and optionally "exit codes:" after a blank line with one line per code.
func CheckHelp(command, help string) error {
	if !strings.HasPrefix(help, "usage: "+command+" ") {
		return fmt.Errorf("help does not start with %q: %.80q", "usage: "+command, help)
	}
	_, opts, ok := strings.Cut(help, "\n\noptions:\n")
	if !ok {
		return fmt.Errorf("help has no options list")
	}
	opts, exits, hasExits := strings.Cut(opts, "\n\nexit codes:\n")
	if hasExits {
		for _, l := range strings.Split(strings.TrimSuffix(exits, "\n"), "\n") {
			if !exitLine.MatchString(l) {
				return fmt.Errorf("exit code line %q is not in the common format", l)
			}
		}
	}
	lines := strings.Split(strings.TrimSuffix(opts, "\n"), "\n")
	hasHelp := false
	for _, l := range lines {
		if !optionLine.MatchString(l) {
			return fmt.Errorf("option line %q is not in the common format", l)
		}
		hasHelp = hasHelp || strings.HasPrefix(l, "  --help, -h ")
	}
	if !hasHelp {
		return fmt.Errorf("options do not list --help, -h")
	}
	return nil
}
