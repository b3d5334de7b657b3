package safetensors

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func checkpointDir(name string) string {
	return filepath.Join("..", "testdata", "hf", "checkpoints", name)
}

// build assembles a safetensors image from a header JSON string and a data section.
func build(header string, data []byte) []byte {
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	out = append(out, header...)
	return append(out, data...)
}

func TestOpenFixtures(t *testing.T) {
	tests := []struct {
		name     string
		path     string
		nTensors int
		tensor   string
		dtype    DType
		shape    []int64
	}{
		{"p1", filepath.Join(checkpointDir("p1"), SingleFileName), 0, "lm_head.weight", F32, []int64{32003, 32}},
		{"p2", filepath.Join(checkpointDir("p2"), SingleFileName), 98, "lm_head.weight", F32, []int64{32003, 16}},
		{"p2 shard 1", filepath.Join(checkpointDir("p2-bf16-sharded"), "model-00001-of-00002.safetensors"), 16, "model.connector.modality_projection.down_proj.weight", BF16, []int64{16, 48}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Open(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if tc.nTensors != 0 && len(f.Names()) != tc.nTensors {
				t.Errorf("%d tensors, want %d", len(f.Names()), tc.nTensors)
			}
			if !reflect.DeepEqual(f.Metadata, map[string]string{"format": "pt"}) {
				t.Errorf("metadata %v", f.Metadata)
			}
			tn, err := f.Tensor(tc.tensor)
			if err != nil {
				t.Fatal(err)
			}
			if tn.DType != tc.dtype || !reflect.DeepEqual(tn.Shape, tc.shape) || int64(len(tn.Data)) != tn.NumElements()*int64(tc.dtype.Size()) || tn.File != tc.path {
				t.Errorf("tensor %+v (%d bytes), want %s %v", tn.Name, len(tn.Data), tc.dtype, tc.shape)
			}
			names := f.Names()
			for i := 1; i < len(names); i++ {
				if names[i-1] >= names[i] {
					t.Fatalf("names not sorted: %q before %q", names[i-1], names[i])
				}
			}
		})
	}
}

// roundBF16 rounds a float32 to bfloat16 with round-to-nearest-even, as torch's .to(bfloat16).
func roundBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if f != f {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// TestShardedBF16MatchesP2 checks that the sharded bf16 checkpoint serves exactly the p2 tensors
// rounded to bf16.
func TestShardedBF16MatchesP2(t *testing.T) {
	p2, err := OpenCheckpoint(checkpointDir("p2"))
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	sh, err := OpenCheckpoint(checkpointDir("p2-bf16-sharded"))
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	if len(sh.Files) != 2 || sh.IndexMetadata["total_size"] != float64(2279936) {
		t.Errorf("%d shards, index metadata %v", len(sh.Files), sh.IndexMetadata)
	}
	if !reflect.DeepEqual(p2.Names(), sh.Names()) {
		t.Fatalf("names differ: %d vs %d", len(p2.Names()), len(sh.Names()))
	}
	for _, name := range p2.Names() {
		a, err := p2.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		b, err := sh.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		if b.DType != BF16 || !reflect.DeepEqual(a.Shape, b.Shape) {
			t.Fatalf("%s: %s %v vs %s %v", name, a.DType, a.Shape, b.DType, b.Shape)
		}
		fa, err := ToFloat32(a)
		if err != nil {
			t.Fatal(err)
		}
		fb, err := ToFloat32(b)
		if err != nil {
			t.Fatal(err)
		}
		for i := range fa {
			if want := BF16ToF32(roundBF16(fa[i])); fb[i] != want {
				t.Fatalf("%s[%d] = %g, want bf16(%g) = %g", name, i, fb[i], fa[i], want)
			}
		}
	}
}

func TestOpenCheckpointForms(t *testing.T) {
	file := filepath.Join(checkpointDir("p2"), SingleFileName)
	c, err := OpenCheckpoint(file)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(c.Names()) != 98 {
		t.Errorf("%d names", len(c.Names()))
	}
	if dt, shape, ok := c.Info("lm_head.weight"); !ok || dt != F32 || !reflect.DeepEqual(shape, []int64{32003, 16}) {
		t.Errorf("Info = %s %v %v", dt, shape, ok)
	}
	if _, err := c.Tensor("nope"); err == nil || !strings.Contains(err.Error(), `no tensor "nope"`) {
		t.Errorf("missing tensor: %v", err)
	}
	if _, err := OpenCheckpoint(t.TempDir()); err == nil || !strings.Contains(err.Error(), "neither model.safetensors.index.json nor model.safetensors found") {
		t.Errorf("empty dir: %v", err)
	}
	must(t, c.Close())
	must(t, c.Close())
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func f32bytes(vals ...float32) []byte {
	var b []byte
	for _, v := range vals {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

func TestParseValidAndConvert(t *testing.T) {
	data := append(f32bytes(1, -2.5), 0x00, 0x3c, 0x00, 0xc0, 0x80, 0x3f, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 1, 0)
	hdr := `{"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},` +
		`"h":{"dtype":"F16","shape":[1,2],"data_offsets":[8,12]},"b":{"dtype":"BF16","shape":[],"data_offsets":[12,14]},` +
		`"i":{"dtype":"I64","shape":[1],"data_offsets":[14,22]},"z":{"dtype":"BOOL","shape":[2,0],"data_offsets":[22,22]},` +
		`"q":{"dtype":"BOOL","shape":[2],"data_offsets":[22,24]}}   `
	f, err := Parse(build(hdr, data))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Names(); !reflect.DeepEqual(got, []string{"a", "b", "h", "i", "q", "z"}) {
		t.Errorf("names %v", got)
	}
	tests := []struct {
		name string
		want []float32
	}{
		{"a", []float32{1, -2.5}},
		{"h", []float32{1, -2}},
		{"b", []float32{1}},
	}
	for _, tc := range tests {
		tn, err := f.Tensor(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ToFloat32(tn)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	i, _ := f.Tensor("i")
	if _, err := ToFloat32(i); err == nil || !strings.Contains(err.Error(), `tensor "i": dtype I64 is not a floating-point type`) {
		t.Errorf("ToFloat32(I64): %v", err)
	}
	z, _ := f.Tensor("z")
	if z.NumElements() != 0 || len(z.Data) != 0 {
		t.Errorf("empty tensor: %d elements, %d bytes", z.NumElements(), len(z.Data))
	}
}

func TestF16ToF32Exhaustive(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		s, e, m := h>>15, (h>>10)&0x1f, h&0x3ff
		var want float64
		switch e {
		case 0:
			want = math.Ldexp(float64(m), -24)
		case 0x1f:
			if m != 0 {
				want = math.NaN()
			} else {
				want = math.Inf(1)
			}
		default:
			want = math.Ldexp(1+float64(m)/1024, e-15)
		}
		if s == 1 {
			want = -want
		}
		got := F16ToF32(uint16(h))
		if math.IsNaN(want) {
			if !math.IsNaN(float64(got)) || math.Float32bits(got)&0x1fff != 0 || math.Float32bits(got)>>13&0x3ff != uint32(m) {
				t.Fatalf("F16ToF32(%#04x) = %v (%#08x), want NaN with payload %#x", h, got, math.Float32bits(got), m)
			}
			continue
		}
		if float64(got) != want || math.Signbit(float64(got)) != (s == 1) {
			t.Fatalf("F16ToF32(%#04x) = %v, want %v", h, got, want)
		}
	}
}

type errKind int

const (
	kindFormat errKind = iota
	kindUnsupported
)

type badFile struct {
	name string
	data []byte
	kind errKind
	want string
}

func badFiles() []badFile {
	ent := func(name, dtype, shape, offs string) string {
		return `"` + name + `":{"dtype":"` + dtype + `","shape":` + shape + `,"data_offsets":` + offs + `}`
	}
	d16 := make([]byte, 16)
	huge := binary.LittleEndian.AppendUint64(nil, 1<<40)
	return []badFile{
		{"empty", nil, kindFormat, "file of 0 bytes is shorter than the 8-byte header length"},
		{"short", []byte{1, 2, 3}, kindFormat, "file of 3 bytes"},
		{"header beyond file", append(huge[:8:8], `{}`...), kindFormat, "header length 1099511627776 exceeds the limit of 100000000 bytes"},
		{"header longer than file", append(binary.LittleEndian.AppendUint64(nil, 50), `{}`...), kindFormat, "header length 50 exceeds the 2 bytes after it"},
		{"not json", build(`hello`, nil), kindFormat, "header is not a JSON object"},
		{"json array", build(`[1,2]`, nil), kindFormat, "header is not a JSON object: starts with ["},
		{"truncated json", build(`{"a":{"dtype":"F32"`, nil), kindFormat, "header"},
		{"trailing data", build(`{} x`, nil), kindFormat, "trailing data after the object"},
		{"duplicate tensor", build(`{`+ent("a", "F32", "[1]", "[0,4]")+`,`+ent("a", "F32", "[1]", "[4,8]")+`}`, d16), kindFormat, `tensor "a": duplicate entry in the header`},
		{"duplicate metadata", build(`{"__metadata__":{},"__metadata__":{}}`, nil), kindFormat, `duplicate "__metadata__"`},
		{"metadata not strings", build(`{"__metadata__":{"a":1}}`, nil), kindFormat, `"__metadata__" must map strings to strings`},
		{"entry not object", build(`{"a":5}`, nil), kindFormat, `tensor "a": header entry: json: cannot unmarshal number`},
		{"missing offsets", build(`{"a":{"dtype":"F32","shape":[1]}}`, d16), kindFormat, `tensor "a": header entry needs "dtype", "shape" and "data_offsets"`},
		{"unknown dtype", build(`{`+ent("a", "F7", "[1]", "[0,4]")+`}`, d16), kindUnsupported, `tensor "a": unsupported dtype "F7"`},
		{"negative dim", build(`{`+ent("a", "F32", "[2,-1]", "[0,4]")+`}`, d16), kindFormat, `tensor "a": shape [2 -1]: dimension 1 is negative`},
		{"element overflow", build(`{`+ent("a", "F32", "[4294967296,4294967296]", "[0,4]")+`}`, d16), kindFormat, `tensor "a": shape [4294967296 4294967296]: element count overflows int64`},
		{"byte overflow", build(`{`+ent("a", "F32", "[4611686018427387904]", "[0,4]")+`}`, d16), kindFormat, `tensor "a": shape [4611686018427387904] of F32: byte size overflows int64`},
		{"float dim", build(`{`+ent("a", "F32", "[1.5]", "[0,4]")+`}`, d16), kindFormat, `tensor "a": header entry: json: cannot unmarshal number 1.5`},
		{"three offsets", build(`{`+ent("a", "F32", "[1]", "[0,4,8]")+`}`, d16), kindFormat, `tensor "a": data_offsets has 3 values, want 2`},
		{"reversed offsets", build(`{`+ent("a", "F32", "[1]", "[8,4]")+`}`, d16), kindFormat, `tensor "a": data_offsets [8, 4] are not an ordered pair`},
		{"negative offset", build(`{`+ent("a", "F32", "[1]", "[-4,0]")+`}`, d16), kindFormat, `tensor "a": data_offsets [-4, 0] are not an ordered pair`},
		{"beyond data", build(`{`+ent("a", "F32", "[5]", "[0,20]")+`}`, d16), kindFormat, `tensor "a": data_offsets [0, 20] end beyond the data section of 16 bytes`},
		{"size mismatch", build(`{`+ent("a", "F32", "[3]", "[0,8]")+`}`, d16), kindFormat, `tensor "a": data_offsets [0, 8] hold 8 bytes, shape [3] of F32 needs 12`},
		{"overlap", build(`{`+ent("a", "F32", "[2]", "[0,8]")+`,`+ent("b", "F32", "[2]", "[4,12]")+`}`, d16), kindFormat, `tensor "b": data_offsets [4, 12] overlap tensor "a" at [0, 8]`},
		{"overlap out of order", build(`{`+ent("b", "F32", "[2]", "[8,16]")+`,`+ent("a", "F32", "[4]", "[0,16]")+`}`, d16), kindFormat, `tensor "b": data_offsets [8, 16] overlap tensor "a" at [0, 16]`},
	}
}

func TestBadFiles(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range badFiles() {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.data)
			checkErr(t, err, tc.kind, tc.want)
			// Through Open the error also names the file, mapped or read.
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".safetensors")
			must(t, os.WriteFile(path, tc.data, 0o644))
			for _, mm := range []bool{true, false} {
				mmapEnabled = mm
				_, err = Open(path)
				mmapEnabled = true
				checkErr(t, err, tc.kind, tc.want)
				if err != nil && !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name %s", err, path)
				}
			}
		})
	}
}

func checkErr(t *testing.T, err error, kind errKind, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	var fe *FormatError
	var ue *UnsupportedError
	if kind == kindFormat && !errors.As(err, &fe) {
		t.Errorf("error %q (%T), want *FormatError", err, err)
	}
	if kind == kindUnsupported && !errors.As(err, &ue) {
		t.Errorf("error %q (%T), want *UnsupportedError", err, err)
	}
	if !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "safetensors: ") {
		t.Errorf("error %q\nwant prefix \"safetensors: \" and substring %q", err, want)
	}
}

func TestUnsupportedDTypeServedLazily(t *testing.T) {
	f, err := Parse(build(`{"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`, make([]byte, 16)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Tensor("a")
	checkErr(t, err, kindUnsupported, `tensor "a": unsupported dtype "F64"`)
	if dt, shape, ok := f.Info("a"); !ok || dt != "F64" || !reflect.DeepEqual(shape, []int64{1}) {
		t.Errorf("Info(a) = %s %v %v", dt, shape, ok)
	}
	if _, err := f.Tensor("b"); err != nil {
		t.Error(err)
	}
}

func TestCloseIdempotent(t *testing.T) {
	f, err := Open(filepath.Join(checkpointDir("p2"), SingleFileName))
	if err != nil {
		t.Fatal(err)
	}
	must(t, f.Close())
	must(t, f.Close())
	if _, err := f.Tensor("lm_head.weight"); err == nil || !strings.Contains(err.Error(), "file is closed") {
		t.Errorf("Tensor after Close: %v", err)
	}
}

func TestOpenWithoutMmap(t *testing.T) {
	mmapEnabled = false
	defer func() { mmapEnabled = true }()
	f, err := Open(filepath.Join(checkpointDir("p2"), SingleFileName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tn, err := f.Tensor("lm_head.weight")
	if err != nil || len(tn.Data) != 32003*16*4 {
		t.Fatalf("%v, %d bytes", err, len(tn.Data))
	}
}
