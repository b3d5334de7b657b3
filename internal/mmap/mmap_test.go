package mmap

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(p, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, _, err := File(f, 0); err == nil {
		t.Fatal("size 0 mapped")
	}
	data, unmap, err := File(f, 5)
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" {
		if err == nil {
			t.Fatal("expected ErrUnsupported")
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != "hello" {
		t.Fatalf("got %q", data)
	}
	if err := unmap(); err != nil {
		t.Fatal(err)
	}
}
