package safetensors

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the broken seed files under testdata/safetensors/bad")

func badDir() string { return filepath.Join("..", "testdata", "safetensors", "bad") }

// validSeed holds every supported dtype, a scalar, an empty tensor and metadata.
func validSeed() []byte {
	return build(`{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},`+
		`"h":{"dtype":"F16","shape":[1,2],"data_offsets":[8,12]},"b":{"dtype":"BF16","shape":[],"data_offsets":[12,14]},`+
		`"i":{"dtype":"I64","shape":[1],"data_offsets":[14,22]},"z":{"dtype":"BOOL","shape":[2,0],"data_offsets":[22,22]},`+
		`"u":{"dtype":"U8","shape":[2],"data_offsets":[22,24]},"j":{"dtype":"I32","shape":[1],"data_offsets":[24,28]},`+
		`"k":{"dtype":"I8","shape":[1],"data_offsets":[28,29]},"d":{"dtype":"F64","shape":[1],"data_offsets":[29,37]}}  `, make([]byte, 37))
}

// TestBadSeedFilesCommitted keeps testdata/safetensors/bad (fuzz seeds) in step with the table.
func TestBadSeedFilesCommitted(t *testing.T) {
	cases := badFiles()
	for _, tc := range cases {
		path := filepath.Join(badDir(), strings.ReplaceAll(tc.name, " ", "_")+".safetensors")
		if *update {
			must(t, os.MkdirAll(badDir(), 0o755))
			must(t, os.WriteFile(path, tc.data, 0o644))
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test ./safetensors -update)", err)
		}
		if !bytes.Equal(got, tc.data) {
			t.Errorf("%s differs from the table; rerun with -update after review", path)
		}
	}
	if entries, err := os.ReadDir(badDir()); err != nil || len(entries) != len(cases) {
		t.Errorf("%s: %d files (%v), the table has %d", badDir(), len(entries), err, len(cases))
	}
}

// FuzzSafetensorsHeader: Parse returns a *FormatError / *UnsupportedError or a File whose
// tensors all lie inside the input with consistent sizes; it never panics.
func FuzzSafetensorsHeader(f *testing.F) {
	f.Add(validSeed())
	for _, tc := range badFiles() {
		f.Add(tc.data)
	}
	if entries, err := os.ReadDir(badDir()); err == nil {
		for _, e := range entries {
			if b, err := os.ReadFile(filepath.Join(badDir(), e.Name())); err == nil {
				f.Add(b)
			}
		}
	}
	// A real header (the first bf16 shard) over a too-short data section.
	if b, err := os.ReadFile(filepath.Join(checkpointDir("p2-bf16-sharded"), "model-00001-of-00002.safetensors")); err == nil && len(b) > 4096 {
		f.Add(b[:4096])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			var fe *FormatError
			var ue *UnsupportedError
			if !errors.As(err, &fe) && !errors.As(err, &ue) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			if !strings.HasPrefix(err.Error(), "safetensors: ") {
				t.Fatalf("error %q lacks the package prefix", err)
			}
			return
		}
		checkFile(t, file, data)
	})
}

func checkFile(t *testing.T, f *File, data []byte) {
	t.Helper()
	for _, name := range f.Names() {
		dt, shape, ok := f.Info(name)
		if !ok {
			t.Fatalf("Info(%q) missing", name)
		}
		tn, err := f.Tensor(name)
		if !dt.Supported() {
			var ue *UnsupportedError
			if !errors.As(err, &ue) {
				t.Fatalf("tensor %q of %s: %v", name, dt, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		n := int64(1)
		for _, d := range shape {
			if d < 0 {
				t.Fatalf("tensor %q: negative dim", name)
			}
			n *= d
		}
		if int64(len(tn.Data)) != n*int64(dt.Size()) {
			t.Fatalf("tensor %q: %d bytes for %d elements of %s", name, len(tn.Data), n, dt)
		}
		if len(tn.Data) > 0 && !inside(tn.Data, data) {
			t.Fatalf("tensor %q: data outside the input", name)
		}
		if dt == F32 || dt == F16 || dt == BF16 {
			if v, err := ToFloat32(tn); err != nil || int64(len(v)) != n {
				t.Fatalf("tensor %q: ToFloat32: %d values, %v", name, len(v), err)
			}
		}
	}
}

// inside reports whether sub is a subslice of buf.
func inside(sub, buf []byte) bool {
	for i := range buf {
		if &buf[i] == &sub[0] {
			return i+len(sub) <= len(buf)
		}
	}
	return false
}

func TestValidSeed(t *testing.T) {
	data := validSeed()
	f, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Names()) != 9 {
		t.Errorf("%d names", len(f.Names()))
	}
	checkFile(t, f, data)
}
