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

// checkFile checks every tensor of f; data, when not nil, is the input f was parsed from.
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
		if data != nil && len(tn.Data) > 0 && !inside(tn.Data, data) {
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

// FuzzCheckpointIndex writes the fuzzed bytes as model.safetensors.index.json next to three
// small shards and opens the folder with OpenCheckpoint. Property: an error starting with
// "safetensors: " (a *FormatError for a malformed index), or a checkpoint whose files all lie
// in the folder and whose every name is served by exactly the shard that holds it; never a
// panic.
func FuzzCheckpointIndex(f *testing.F) {
	dir, err := os.MkdirTemp("", "safetensors-fuzz-")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	shards := map[string][]byte{
		"model-00001-of-00002.safetensors": build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[1,2],"data_offsets":[8,12]}}`, make([]byte, 12)),
		"model-00002-of-00002.safetensors": build(`{"c":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]},"d":{"dtype":"F64","shape":[1],"data_offsets":[6,14]}}`, make([]byte, 14)),
		"other.safetensors":                build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)),
		"broken.safetensors":               []byte("\x08\x00\x00\x00\x00\x00\x00\x00{}"),
	}
	for name, data := range shards {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			f.Fatal(err)
		}
	}
	f.Add([]byte(`{"metadata": {"total_size": 32}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors", "d": "model-00002-of-00002.safetensors"}}`))
	f.Add([]byte(`{"weight_map": {"a": "other.safetensors"}}`))
	f.Add([]byte(`{"weight_map": {"a": "model-00001-of-00002.safetensors", "a": "other.safetensors"}}`))
	f.Add([]byte(`{"weight_map": {"a": "../model-00001-of-00002.safetensors"}, "weight_map": {}}`))
	f.Add([]byte(`{"weight_map": {"x": "broken.safetensors"}, "metadata": [1]}`))
	f.Add([]byte(`{"weight_map": {"a": "missing.safetensors"}}`))
	f.Add([]byte(`{"weight_map": {"a": "."}} trailing`))
	f.Add([]byte(`[]`))
	if b, err := os.ReadFile(filepath.Join(checkpointDir("p2-bf16-sharded"), IndexFileName)); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, IndexFileName), data, 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := OpenCheckpoint(dir)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "safetensors: ") {
				t.Fatalf("error %q lacks the package prefix", err)
			}
			return
		}
		defer c.Close()
		names := c.Names()
		if len(names) == 0 {
			t.Fatal("checkpoint without tensors")
		}
		served := make(map[string]bool)
		for i, name := range names {
			if i > 0 && names[i-1] >= name {
				t.Fatalf("names not sorted and unique: %q after %q", name, names[i-1])
			}
			served[name] = true
			if _, _, ok := c.Info(name); !ok {
				t.Fatalf("Info(%q) missing", name)
			}
		}
		for _, file := range c.Files {
			if filepath.Dir(file.Path) != dir {
				t.Fatalf("opened %s outside %s", file.Path, dir)
			}
			checkFile(t, file, nil) // mapped from the file, not a slice of the shard bytes
			for _, name := range file.Names() {
				if !served[name] {
					t.Fatalf("tensor %q of %s not served", name, file.Path)
				}
				if _, err := c.Tensor(name); err != nil {
					var ue *UnsupportedError
					if !errors.As(err, &ue) {
						t.Fatalf("Tensor(%q): %v", name, err)
					}
				}
			}
		}
	})
}
