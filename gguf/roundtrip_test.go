package gguf

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, align := range []uint32{DefaultAlignment, 8, 64, 4096} {
		t.Run(FormatShape([]uint64{uint64(align)}), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "model.gguf")
			writeTestFile(t, path, WithAlignment(align))

			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			mapped, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer mapped.Close()
			if !mapped.Mapped() {
				t.Errorf("Open did not memory-map %s", path)
			}
			inMem, err := readBytes(raw)
			if err != nil {
				t.Fatal(err)
			}
			for name, f := range map[string]*File{"Open": mapped, "Read": inMem} {
				t.Run(name, func(t *testing.T) {
					checkTestFile(t, f, uint64(align), int64(len(raw)))
				})
			}
		})
	}
}

// checkTestFile verifies a file written by writeTestFile.
func checkTestFile(t *testing.T, f *File, align uint64, size int64) {
	t.Helper()
	if f.Version != 3 || f.Alignment != align || f.Size != size {
		t.Errorf("version %d alignment %d size %d, want 3 %d %d", f.Version, f.Alignment, f.Size, align, size)
	}
	if f.DataOffset%int64(align) != 0 {
		t.Errorf("data offset %d not aligned to %d", f.DataOffset, align)
	}
	wantKV := testKVs()
	if align != DefaultAlignment {
		wantKV = append([]KV{{KeyAlignment, Value{ValueUint32, uint32(align)}}}, wantKV...)
	}
	if !reflect.DeepEqual(f.KV, wantKV) {
		t.Errorf("metadata differs:\n got %v\nwant %v", f.KV, wantKV)
	}
	if got, want := f.Metadata.Keys(), keysOf(wantKV); !reflect.DeepEqual(got, want) {
		t.Errorf("Metadata.Keys() = %v, want %v", got, want)
	}
	tts := testTensors()
	if len(f.Tensors) != len(tts) {
		t.Fatalf("%d tensors, want %d", len(f.Tensors), len(tts))
	}
	next := uint64(0)
	for i, tt := range tts {
		ti, ok := f.Tensor(tt.name)
		if !ok {
			t.Fatalf("tensor %q missing", tt.name)
		}
		if ti != &f.Tensors[i] || ti.Type != tt.typ || !reflect.DeepEqual(ti.Shape, tt.shape) || ti.Offset != next {
			t.Errorf("tensor %d = %+v, want %s %s %v at %d", i, *ti, tt.name, tt.typ, tt.shape, next)
		}
		next += alignUp(ti.Size(), align)
		data, err := f.TensorData(tt.name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, tt.data()) {
			t.Errorf("tensor %q data differs", tt.name)
		}
	}
	// The writer pads after the last tensor too, like ggml.
	if got := f.DataOffset + int64(next); got != size {
		t.Errorf("file size %d, want data offset + padded data = %d", size, got)
	}
}

func keysOf(kvs []KV) []string {
	var out []string
	for _, kv := range kvs {
		out = append(out, kv.Key)
	}
	return out
}

// TestWriterMatchesRawLayout checks the Writer's bytes against a file assembled field by field
// from the format description.
func TestWriterMatchesRawLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.gguf")
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	must(t, w.SetKV("a", "hi"))
	must(t, w.SetKV("b", []float32{1.5}))
	must(t, w.SetKV("c", Array{ValueArray, []Array{{ValueUint8, []uint8{7}}}}))
	must(t, w.AddTensor("t0", TypeF32, []uint64{3}))
	must(t, w.AddTensor("t1", TypeI8, []uint64{2, 2}))
	must(t, w.WriteTensor("t0", []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}))
	must(t, w.WriteTensor("t1", []byte{13, 14, 15, 16}))
	must(t, w.Close())
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 64)
	copy(data, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	copy(data[32:], []byte{13, 14, 15, 16})
	want := rawGGUF{
		kvs: []rawKV{
			{"a", 8, rawStr("hi")},
			{"b", 9, cat(rawU32(6), rawU64(1), rawF32(1.5))},
			{"c", 9, cat(rawU32(9), rawU64(1), rawU32(0), rawU64(1), []byte{7})},
		},
		tensors: []rawTensor{{"t0", []uint64{3}, 0, 0}, {"t1", []uint64{2, 2}, 24, 32}},
		data:    data,
	}.bytes()
	if !bytes.Equal(got, want) {
		t.Errorf("writer output differs from the raw layout\n got %x\nwant %x", got, want)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestTensorWriterStreaming(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.gguf")
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	tts := testTensors()
	for _, tt := range tts {
		must(t, w.AddTensor(tt.name, tt.typ, tt.shape))
	}
	for _, tt := range tts {
		tw, err := w.TensorWriter(tt.name)
		if err != nil {
			t.Fatal(err)
		}
		data := tt.data()
		// Odd chunk sizes, through io.Copy.
		if _, err := io.CopyBuffer(tw, bytes.NewReader(data), make([]byte, 7)); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte{0}); err == nil {
			t.Errorf("tensor %q: write past the end succeeded", tt.name)
		}
	}
	must(t, w.Close())
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, tt := range tts {
		data, err := f.TensorData(tt.name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, tt.data()) {
			t.Errorf("tensor %q differs", tt.name)
		}
	}
}

func TestWriterDeterministic(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "b.gguf")
	writeTestFile(t, a)
	writeTestFile(t, b)
	ba, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if !bytes.Equal(ba, bb) {
		t.Error("two writes of the same content differ")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("directory holds %d entries, want 2 (no temporary files left)", len(entries))
	}
}

func TestWriterNoTensors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.gguf")
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	must(t, w.SetKV("general.architecture", "clip"))
	must(t, w.Close())
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if s, err := f.Metadata.String("general.architecture"); err != nil || s != "clip" {
		t.Errorf("architecture = %q, %v", s, err)
	}
	if len(f.Tensors) != 0 || f.DataOffset != f.Size {
		t.Errorf("tensors %d, data offset %d, size %d", len(f.Tensors), f.DataOffset, f.Size)
	}
}

func TestWriterErrors(t *testing.T) {
	type step func(w *Writer) error
	add := func(name string, typ Type, shape ...uint64) step {
		return func(w *Writer) error { return w.AddTensor(name, typ, shape) }
	}
	set := func(key string, v any) step { return func(w *Writer) error { return w.SetKV(key, v) } }
	write := func(name string, n int) step {
		return func(w *Writer) error { return w.WriteTensor(name, make([]byte, n)) }
	}
	closeW := func(w *Writer) error { return w.Close() }
	tests := []struct {
		name  string
		opts  []WriterOption
		steps []step
		want  string // substring of the last step's error
	}{
		{"int key", nil, []step{set("k", 5)}, `key "k": Go type int has no fixed GGUF width`},
		{"unsupported Go type", nil, []step{set("k", map[string]int{})}, `key "k": Go type map[string]int`},
		{"empty key", nil, []step{set("", "x")}, "empty metadata key"},
		{"duplicate key", nil, []step{set("k", "a"), set("k", "b")}, `key "k" set twice`},
		{"alignment type", nil, []step{set(KeyAlignment, uint64(64))}, `"general.alignment" must be u32, got u64`},
		{"alignment power", nil, []step{set(KeyAlignment, uint32(48))}, "alignment 48 is not a power of two"},
		{"alignment twice", []WriterOption{WithAlignment(64)}, []step{set(KeyAlignment, uint32(64))}, "set twice"},
		{"alignment after tensor", nil, []step{add("t", TypeF32, 1), set(KeyAlignment, uint32(64))}, "before the first AddTensor"},
		{"bad array value", nil, []step{set("k", Array{ValueString, []int32{1}})}, `key "k": array of str holds Go type []int32`},
		{"empty name", nil, []step{add("", TypeF32, 1)}, "empty tensor name"},
		{"long name", nil, []step{add(strings.Repeat("x", 64), TypeF32, 1)}, "name of 64 bytes exceeds ggml's 63"},
		{"duplicate tensor", nil, []step{add("t", TypeF32, 1), add("t", TypeF32, 1)}, `tensor "t" added twice`},
		{"no dims", nil, []step{add("t", TypeF32)}, `tensor "t": shape []: 0 dimensions`},
		{"five dims", nil, []step{add("t", TypeF32, 1, 1, 1, 1, 1)}, "5 dimensions, want 1 to 4"},
		{"zero dim", nil, []step{add("t", TypeF32, 4, 0)}, "dimension 1 is 0"},
		{"overflow", nil, []step{add("t", TypeF32, 1<<40, 1<<40)}, "element count overflows"},
		{"block size", nil, []step{add("t", TypeQ4_0, 48)}, "row of 48 elements is not a multiple of the block size 32"},
		{"unknown type", nil, []step{add("t", Type(31), 4)}, "unknown tensor type 31"},
		{"wrong size", nil, []step{add("t", TypeF32, 4), write("t", 15)}, `tensor "t": got 15 bytes of data, want 16`},
		{"not added", nil, []step{add("t", TypeF32, 4), write("u", 16)}, `tensor "u" was not added`},
		{"out of order", nil, []step{add("a", TypeF32, 1), add("b", TypeF32, 1), write("b", 4)}, `tensor "b" written out of order: next is "a"`},
		{"written twice", nil, []step{add("a", TypeF32, 1), add("b", TypeF32, 1), write("a", 4), write("a", 4)}, `tensor "a": data already written`},
		{"kv after data", nil, []step{add("a", TypeF32, 1), write("a", 4), set("k", "v")}, "tensor data has started"},
		{"tensor after data", nil, []step{add("a", TypeF32, 1), write("a", 4), add("b", TypeF32, 1)}, "tensor data has started"},
		{"missing data", nil, []step{add("a", TypeF32, 1), add("b", TypeF32, 1), write("a", 4), closeW}, `tensor "b" and 0 more declared but not written`},
		{"incomplete stream", nil, []step{add("a", TypeF32, 2), func(w *Writer) error {
			tw, err := w.TensorWriter("a")
			if err != nil {
				return err
			}
			if _, err := tw.Write(make([]byte, 5)); err != nil {
				return err
			}
			return w.Close()
		}}, `tensor "a" incomplete: 5 of 8 bytes written`},
		{"write after close", nil, []step{closeW, set("k", "v")}, "writer is closed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "out.gguf")
			w, err := Create(path, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			var last error
			for i, s := range tc.steps {
				last = s(w)
				if last != nil && i != len(tc.steps)-1 {
					t.Fatalf("step %d failed early: %v", i, last)
				}
			}
			if last == nil {
				t.Fatalf("no error, want one containing %q", tc.want)
			}
			if !strings.Contains(last.Error(), tc.want) || !strings.HasPrefix(last.Error(), "gguf: ") {
				t.Errorf("error %q, want it to start with \"gguf: \" and contain %q", last, tc.want)
			}
			if err := w.Abort(); err != nil {
				t.Error(err)
			}
			if tc.name == "write after close" {
				return // Close succeeded: the (empty) file is the output.
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("after a failed write the directory holds %v, want nothing", entries[0].Name())
			}
		})
	}
}

func TestCreateBadAlignment(t *testing.T) {
	if _, err := Create(filepath.Join(t.TempDir(), "x.gguf"), WithAlignment(3)); err == nil || !strings.Contains(err.Error(), "alignment 3 is not a power of two") {
		t.Errorf("err = %v", err)
	}
}

func TestAbortAfterClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.gguf")
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	must(t, w.Close())
	must(t, w.Close())
	must(t, w.Abort())
	if _, err := os.Stat(path); err != nil {
		t.Errorf("Abort after Close removed the output: %v", err)
	}
}

func TestCloseIdempotentAndUseAfterClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.gguf")
	writeTestFile(t, path)
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	must(t, f.Close())
	must(t, f.Close())
	if _, err := f.TensorData("scalar"); err == nil || !strings.Contains(err.Error(), "file is closed") {
		t.Errorf("TensorData after Close: %v", err)
	}
	if _, err := f.TensorData("nope"); err == nil || !strings.Contains(err.Error(), `no tensor "nope"`) {
		t.Errorf("TensorData of a missing tensor: %v", err)
	}
}

func TestOpenEmptyFileFallsBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "empty.gguf")
	must(t, os.WriteFile(path, nil, 0o644))
	_, err := Open(path)
	if err == nil || !strings.Contains(err.Error(), "not a GGUF file") {
		t.Errorf("err = %v", err)
	}
}
