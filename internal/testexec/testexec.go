// Package testexec starts test binaries again as child processes, through the wrapper named by
// IDEFICS2_TEST_EXEC when one is set: a test binary built for another architecture (linux/arm64
// under qemu-user, `make test-arm64`) cannot execute itself directly where the kernel has no
// binfmt handler for it, and the wrapper (e.g. "qemu-aarch64") runs the child as it runs the parent.
package testexec

import (
	"context"
	"os"
	"os/exec"
	"strings"
)

// WrapperEnv names the variable holding the wrapper command (split on spaces) that child test
// processes run under; empty or unset runs them directly.
const WrapperEnv = "IDEFICS2_TEST_EXEC"

// Command is exec.CommandContext(ctx, name, args...) run under the wrapper of WrapperEnv, if any.
func Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if w := strings.Fields(os.Getenv(WrapperEnv)); len(w) > 0 {
		return exec.CommandContext(ctx, w[0], append(append(w[1:], name), args...)...)
	}
	return exec.CommandContext(ctx, name, args...)
}
