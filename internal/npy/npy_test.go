package npy

import (
	"bytes"
	"path/filepath"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name  string
		shape []int
	}{
		{"vector", []int{5}},
		{"matrix", []int{2, 3}},
		{"4d", []int{1, 2, 1, 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := 1
			for _, d := range tc.shape {
				n *= d
			}
			f := make([]float32, n)
			i64 := make([]int64, n)
			bs := make([]bool, n)
			for i := range f {
				f[i] = float32(i) * 0.5
				i64[i] = int64(i) - 2
				bs[i] = i%2 == 0
			}
			p := filepath.Join(dir, tc.name)
			if err := WriteFloat32(p+"f.npy", tc.shape, f); err != nil {
				t.Fatal(err)
			}
			if err := WriteInt64(p+"i.npy", tc.shape, i64); err != nil {
				t.Fatal(err)
			}
			if err := WriteBool(p+"b.npy", tc.shape, bs); err != nil {
				t.Fatal(err)
			}
			a, err := Read(p + "f.npy")
			if err != nil {
				t.Fatal(err)
			}
			got, _ := a.Float32s()
			if a.DType != "f4" || len(got) != n || got[n-1] != f[n-1] || len(a.Shape) != len(tc.shape) {
				t.Fatalf("float32: got %v %v %v", a.DType, a.Shape, got)
			}
			a, err = Read(p + "i.npy")
			if err != nil {
				t.Fatal(err)
			}
			gi, _ := a.Int64s()
			if gi[0] != -2 || gi[n-1] != int64(n-3) {
				t.Fatalf("int64: got %v", gi)
			}
			a, err = Read(p + "b.npy")
			if err != nil {
				t.Fatal(err)
			}
			gb, _ := a.Bools()
			if !gb[0] || (n > 1 && gb[1]) {
				t.Fatalf("bool: got %v", gb)
			}
		})
	}
}

func TestFixtureFiles(t *testing.T) {
	a, err := Read("../../testdata/hf/cases/p1_chelsea_split/input_ids.npy")
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Shape) != 2 || a.Shape[0] != 1 || a.Shape[1] != 41 || a.DType != "i8" {
		t.Fatalf("input_ids: shape %v dtype %s", a.Shape, a.DType)
	}
	ids, _ := a.Int64s()
	if ids[0] != 1 {
		t.Fatalf("first id %d, want BOS 1", ids[0])
	}
}

func TestBadInput(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "magic"},
		{"bad magic", []byte("NOTNUMPY\x00\x00"), "bad magic"},
		{"bad version", []byte("\x93NUMPY\x09\x00\x00\x00"), "version"},
		{"truncated header", []byte("\x93NUMPY\x01\x00\x40\x00{'descr'"), "header"},
		{"fortran", hdr("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }"), "fortran"},
		{"object", hdr("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"), "dtype"},
		{"short data", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (9,), }"), "data"},
		{"negative dim", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }"), "dimension"},
		{"huge", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }"), "too large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(bytes.NewReader(tc.data))
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func hdr(h string) []byte {
	b := []byte("\x93NUMPY\x01\x00")
	b = append(b, byte(len(h)), byte(len(h)>>8))
	return append(b, h...)
}

func FuzzDecode(f *testing.F) {
	var buf bytes.Buffer
	_ = Encode(&buf, "<f4", []int{2}, make([]byte, 8))
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := Decode(bytes.NewReader(b))
		if err == nil {
			_, _ = a.Float32s()
		}
	})
}
