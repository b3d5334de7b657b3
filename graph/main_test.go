package graph

import (
	"os"
	"testing"

	"github.com/idefics2-go/idefics2/ggml"
)

var tempRoot string

// mustTempDir is a folder shared by the whole test binary (t.TempDir would be removed after the first test).
func mustTempDir(t *testing.T) string {
	if tempRoot == "" {
		d, err := os.MkdirTemp("", "graph-test-")
		if err != nil {
			t.Fatal(err)
		}
		tempRoot = d
	}
	return tempRoot
}

func TestMain(m *testing.M) {
	code := m.Run()
	if tempRoot != "" {
		os.RemoveAll(tempRoot)
	}
	os.Exit(code)
}

// SelectDeviceForTest is the CPU device the tests run on.
func SelectDeviceForTest() (ggml.Device, error) { return ggml.SelectDevice("cpu") }
