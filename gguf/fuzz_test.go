package gguf

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzReadGGUF: Read returns either a *FormatError / *UnsupportedError or a File whose every
// invariant holds; it never panics and never allocates more than the input can justify.
func FuzzReadGGUF(f *testing.F) {
	f.Add(baseRaw().bytes())
	for _, tc := range badInputs() {
		f.Add(tc.data)
	}
	for _, name := range []string{"tiny.gguf"} {
		if b, err := os.ReadFile(testdataPath(name)); err == nil {
			f.Add(b)
		}
	}
	if entries, err := os.ReadDir(testdataPath("bad")); err == nil {
		for _, e := range entries {
			if b, err := os.ReadFile(filepath.Join(testdataPath("bad"), e.Name())); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := readBytes(data)
		if err != nil {
			var fe *FormatError
			var ue *UnsupportedError
			if !errors.As(err, &fe) && !errors.As(err, &ue) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			if !strings.HasPrefix(err.Error(), "gguf: ") {
				t.Fatalf("error %q lacks the package prefix", err)
			}
			return
		}
		checkInvariants(t, file, int64(len(data)))
	})
}

// checkInvariants re-verifies, independently of the reader's own checks, what a valid File
// promises to its users.
func checkInvariants(t *testing.T, f *File, size int64) {
	t.Helper()
	if f.Version != 2 && f.Version != 3 {
		t.Fatalf("version %d", f.Version)
	}
	if f.Alignment == 0 || f.Alignment&(f.Alignment-1) != 0 || f.DataOffset%int64(f.Alignment) != 0 {
		t.Fatalf("alignment %d, data offset %d", f.Alignment, f.DataOffset)
	}
	if f.Metadata.Len() != len(f.KV) {
		t.Fatalf("metadata holds %d pairs, KV %d", f.Metadata.Len(), len(f.KV))
	}
	for _, kv := range f.KV {
		if err := kv.Value.check(0); err != nil {
			t.Fatalf("key %q: %v", kv.Key, err)
		}
		_ = kv.Value.Format(4)
	}
	type span struct{ lo, hi uint64 }
	var spans []span
	for _, ti := range f.Tensors {
		n, err := TensorBytes(ti.Type, ti.Shape)
		if err != nil || n == 0 {
			t.Fatalf("tensor %q: %v", ti.Name, err)
		}
		if ti.Offset%f.Alignment != 0 {
			t.Fatalf("tensor %q misaligned", ti.Name)
		}
		end := uint64(f.DataOffset) + ti.Offset + n
		if end > uint64(size) || end < ti.Offset {
			t.Fatalf("tensor %q ends at %d beyond %d", ti.Name, end, size)
		}
		for _, s := range spans {
			if ti.Offset < s.hi && s.lo < ti.Offset+n {
				t.Fatalf("tensor %q overlaps", ti.Name)
			}
		}
		spans = append(spans, span{ti.Offset, ti.Offset + n})
		data, err := f.TensorData(ti.Name)
		if err != nil || uint64(len(data)) != n {
			t.Fatalf("tensor %q: %d bytes, %v", ti.Name, len(data), err)
		}
	}
	if err := Dump(io.Discard, f, DumpOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestFuzzSeedsValid runs the invariants on the valid seeds in the default test run.
func TestFuzzSeedsValid(t *testing.T) {
	for _, name := range []string{"tiny.gguf"} {
		b, err := os.ReadFile(testdataPath(name))
		if err != nil {
			t.Fatal(err)
		}
		f, err := Read(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		checkInvariants(t, f, int64(len(b)))
	}
}
