//go:build !amd64 || purego

package quant

type offsetCheck struct {
	name      string
	got, want uintptr
}

// frameOffsets is empty: this build has no assembly.
func frameOffsets() []offsetCheck { return nil }
