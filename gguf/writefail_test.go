package gguf

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// errDiskFull stands for ENOSPC in the injected writer.
var errDiskFull = errors.New("no space left on device (injected)")

// failingWriter passes the first left bytes on and then fails, as a disk that fills up does: the
// write that crosses the limit is short.
type failingWriter struct {
	w    io.Writer
	left int64
}

func (f *failingWriter) Write(p []byte) (int, error) {
	if int64(len(p)) <= f.left {
		f.left -= int64(len(p))
		return f.w.Write(p)
	}
	n := f.left
	f.left = 0
	if n > 0 {
		if _, err := f.w.Write(p[:n]); err != nil {
			return 0, err
		}
	}
	return int(n), &os.PathError{Op: "write", Path: "/somewhere/.tmp-file", Err: errDiskFull}
}

// injectFailure makes the next Writers fail after limit bytes until the test ends.
func injectFailure(t *testing.T, limit int64) {
	t.Helper()
	saved := outputWriter
	outputWriter = func(f *os.File) io.Writer { return &failingWriter{w: f, left: limit} }
	t.Cleanup(func() { outputWriter = saved })
}

// writeMode is how writeFailFile writes and closes.
type writeMode int

const (
	viaWriteTensor  writeMode = iota // WriteTensor, then Close
	viaTensorWriter                  // TensorWriter in 64 KiB pieces, as convert does, then Close
	viaFinish                        // TensorWriter, then Finish and Close
)

func (m writeMode) String() string {
	return [...]string{"WriteTensor", "TensorWriter", "Finish"}[m]
}

// writeFailFile writes a file with a header and three tensors (about 2.3 MiB, more than the
// writer's 1 MiB buffer). It returns the first error while writing and the error of Finish or
// Close.
func writeFailFile(path string, mode writeMode) (first, closeErr error) {
	w, err := Create(path)
	if err != nil {
		return err, nil
	}
	tensors := []struct {
		name  string
		typ   Type
		shape []uint64
	}{
		{"a", TypeF32, []uint64{256, 1024}},
		{"b", TypeF16, []uint64{1000, 651}},
		{"c", TypeF32, []uint64{7}},
	}
	note := func(err error) {
		if first == nil {
			first = err
		}
	}
	note(w.SetKV("general.name", "write failure test"))
	for _, tn := range tensors {
		note(w.AddTensor(tn.name, tn.typ, tn.shape))
	}
	for _, tn := range tensors {
		size, _ := TensorBytes(tn.typ, tn.shape)
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i)
		}
		if mode == viaWriteTensor {
			note(w.WriteTensor(tn.name, data))
			continue
		}
		tw, err := w.TensorWriter(tn.name)
		if err != nil {
			note(err)
			continue
		}
		for len(data) > 0 {
			n := min(len(data), 64<<10)
			if _, err := tw.Write(data[:n]); err != nil {
				note(err)
				break
			}
			data = data[n:]
		}
	}
	if mode == viaFinish {
		if err := w.Finish(); err != nil {
			if w.Close() != nil {
				return first, errors.New("Close after a failed Finish returned an error")
			}
			return first, err
		}
	}
	return first, w.Close()
}

// TestWriteFailureLeavesNothing injects a full disk at every stage of writing (inside the
// header, at and around the buffer size, in the last tensor, at the final flush) and checks that
// the error names the final path and the cause, that Close fails too, and that the folder is
// empty afterwards.
func TestWriteFailureLeavesNothing(t *testing.T) {
	const total = 2350816 // size of the complete file (checked by the "no failure" case)
	limits := []int64{0, 1, 23, 24, 100, 1<<20 - 1, 1 << 20, 1<<20 + 1, 2 << 20, total - 1}
	for _, mode := range []writeMode{viaWriteTensor, viaTensorWriter, viaFinish} {
		for _, limit := range limits {
			t.Run(fmt.Sprintf("%s/%d", mode, limit), func(t *testing.T) {
				injectFailure(t, limit)
				dir := t.TempDir()
				path := filepath.Join(dir, "m.gguf")
				first, closeErr := writeFailFile(path, mode)
				if closeErr == nil {
					t.Fatalf("Close succeeded with the disk full after %d bytes (first error %v)", limit, first)
				}
				for _, err := range []error{first, closeErr} {
					if err == nil {
						continue
					}
					msg := err.Error()
					if !strings.HasPrefix(msg, "gguf: "+path+": ") || !strings.Contains(msg, "no space left on device") {
						t.Errorf("error %q does not name %s and the cause", msg, path)
					}
					if strings.Contains(msg, ".tmp-") {
						t.Errorf("error %q names the temporary file", msg)
					}
					if !errors.Is(err, errDiskFull) {
						t.Errorf("error %q does not wrap the cause", msg)
					}
				}
				if entries, _ := os.ReadDir(dir); len(entries) != 0 {
					t.Errorf("folder holds %v after the failure", names(entries))
				}
			})
		}
	}
	t.Run("no failure", func(t *testing.T) {
		injectFailure(t, total)
		dir := t.TempDir()
		path := filepath.Join(dir, "m.gguf")
		if first, err := writeFailFile(path, viaFinish); first != nil || err != nil {
			t.Fatalf("write: %v, close: %v", first, err)
		}
		st, err := os.Stat(path)
		if err != nil || st.Size() != total {
			t.Fatalf("stat: %v, size %d, want %d", err, st.Size(), total)
		}
		f, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	})
}

// TestCreateInUnwritableFolder checks that a folder that cannot hold files (a path under a
// regular file; /proc, which refuses new files even to root) is reported naming the output path
// and leaves nothing behind.
func TestCreateInUnwritableFolder(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	must(t, os.WriteFile(file, []byte("x"), 0o644))
	paths := []string{filepath.Join(file, "m.gguf"), filepath.Join(dir, "missing", "m.gguf")}
	if st, err := os.Stat("/proc/self"); err == nil && st.IsDir() {
		paths = append(paths, "/proc/self/m.gguf")
	}
	for _, path := range paths {
		t.Run(path, func(t *testing.T) {
			w, err := Create(path)
			if err == nil {
				w.Abort()
				t.Fatal("Create succeeded")
			}
			if want := "gguf: " + path + ": cannot create a file in " + filepath.Dir(path) + ": "; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q, want prefix %q", err, want)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("folder holds %v", names(entries))
	}
}

func names(entries []os.DirEntry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// TestFinishThenClose checks the two-step close: after Finish the data is complete in the
// temporary file and the final name does not exist yet; writes are refused; Close renames.
func TestFinishThenClose(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.gguf")
	w, err := Create(path)
	must(t, err)
	must(t, w.AddTensor("a", TypeF32, []uint64{4}))
	must(t, w.WriteTensor("a", make([]byte, 16)))
	must(t, w.Finish())
	must(t, w.Finish()) // a second Finish does nothing
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("final path exists after Finish: %v", err)
	}
	if got := listNames(t, dir); len(got) != 1 || !strings.HasPrefix(got[0], ".m.gguf.tmp-") {
		t.Fatalf("folder holds %v, want the temporary file only", got)
	}
	if err := w.SetKV("k", uint32(1)); err == nil || !strings.Contains(err.Error(), "finished") {
		t.Errorf("SetKV after Finish: %v", err)
	}
	must(t, w.Close())
	if got := listNames(t, dir); len(got) != 1 || got[0] != "m.gguf" {
		t.Fatalf("folder holds %v after Close", got)
	}
	f, err := Open(path)
	must(t, err)
	f.Close()
	if err := w.Finish(); err == nil {
		t.Error("Finish after Close succeeded")
	}

	// Abort after Finish removes the temporary file.
	w, err = Create(filepath.Join(dir, "n.gguf"))
	must(t, err)
	must(t, w.Finish())
	must(t, w.Abort())
	if got := listNames(t, dir); len(got) != 1 {
		t.Errorf("folder holds %v after Abort", got)
	}

	// Finish reports missing tensor data and removes the temporary file.
	w, err = Create(filepath.Join(dir, "o.gguf"))
	must(t, err)
	must(t, w.AddTensor("a", TypeF32, []uint64{4}))
	if err := w.Finish(); err == nil || !strings.Contains(err.Error(), `tensor "a"`) {
		t.Errorf("Finish with a tensor unwritten: %v", err)
	}
	if got := listNames(t, dir); len(got) != 1 {
		t.Errorf("folder holds %v after a failed Finish", got)
	}
}

func listNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	must(t, err)
	return names(entries)
}
