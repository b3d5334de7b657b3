package testexec

import (
	"context"
	"slices"
	"testing"
)

func TestCommand(t *testing.T) {
	for _, c := range []struct {
		wrapper string
		want    []string
	}{
		{"", []string{"/bin/prog", "-a", "b"}},
		{"   ", []string{"/bin/prog", "-a", "b"}},
		{"qemu-aarch64", []string{"qemu-aarch64", "/bin/prog", "-a", "b"}},
		{"qemu-aarch64 -L /usr/aarch64-linux-gnu", []string{"qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", "/bin/prog", "-a", "b"}},
	} {
		t.Setenv(WrapperEnv, c.wrapper)
		cmd := Command(context.Background(), "/bin/prog", "-a", "b")
		if !slices.Equal(cmd.Args, c.want) {
			t.Errorf("wrapper %q: args %q, want %q", c.wrapper, cmd.Args, c.want)
		}
	}
}
