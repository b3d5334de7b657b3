package gguf

import (
	"bytes"
	"errors"
	"math"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestMetadataAccessors(t *testing.T) {
	md, err := NewMetadata(testKVs())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		get     func() (any, error)
		want    any
		wantErr error  // ErrKeyNotFound or ErrWrongType
		errText string // substring of the error
	}{
		{"String", func() (any, error) { return md.String("general.architecture") }, "llama", nil, ""},
		{"Bool", func() (any, error) { return md.Bool("test.bool") }, true, nil, ""},
		{"Uint8", func() (any, error) { return md.Uint8("test.u8") }, uint8(200), nil, ""},
		{"Int8", func() (any, error) { return md.Int8("test.i8") }, int8(-100), nil, ""},
		{"Uint16", func() (any, error) { return md.Uint16("test.u16") }, uint16(60000), nil, ""},
		{"Int16", func() (any, error) { return md.Int16("test.i16") }, int16(-30000), nil, ""},
		{"Uint32", func() (any, error) { return md.Uint32("test.u32") }, uint32(4000000000), nil, ""},
		{"Int32", func() (any, error) { return md.Int32("test.i32") }, int32(-2000000000), nil, ""},
		{"Uint64", func() (any, error) { return md.Uint64("test.u64") }, uint64(1) << 63, nil, ""},
		{"Int64", func() (any, error) { return md.Int64("test.i64") }, int64(-1) << 62, nil, ""},
		{"Float32", func() (any, error) { return md.Float32("test.f32") }, float32(1e-5), nil, ""},
		{"Float64", func() (any, error) { return md.Float64("test.f64") }, 1e300, nil, ""},
		{"Strings", func() (any, error) { return md.Strings("test.arr_str") }, []string{"<unk>", "<s>", "", "▁the"}, nil, ""},
		{"Float32s", func() (any, error) { return md.Float32s("test.arr_f32") }, []float32{0.5, -2, float32(math.Inf(1))}, nil, ""},
		{"Int32s", func() (any, error) { return md.Int32s("test.arr_i32") }, []int32{-1, 0, 1}, nil, ""},
		{"Uint32s", func() (any, error) { return md.Uint32s("test.arr_u32") }, []uint32{7, 8, 9}, nil, ""},
		{"Bools", func() (any, error) { return md.Bools("test.arr_bool") }, []bool{true, false, true}, nil, ""},
		{"Int from u32", func() (any, error) { return md.Int("test.u32") }, 4000000000, nil, ""},
		{"Int from i8", func() (any, error) { return md.Int("test.i8") }, -100, nil, ""},
		{"Array nested", func() (any, error) { a, err := md.Array("test.arr_nested"); return a.Len(), err }, 4, nil, ""},

		{"missing", func() (any, error) { return md.Uint32("llama.block_count") }, uint32(0), ErrKeyNotFound, `gguf: key "llama.block_count" not found (want u32)`},
		{"missing array", func() (any, error) { return md.Strings("tokenizer.ggml.tokens") }, []string(nil), ErrKeyNotFound, `key "tokenizer.ggml.tokens" not found (want arr[str])`},
		{"scalar type", func() (any, error) { return md.Uint32("test.i32") }, uint32(0), ErrWrongType, `gguf: key "test.i32" is i32, want u32`},
		{"string as int", func() (any, error) { return md.Int("general.name") }, 0, ErrWrongType, `key "general.name" is str, want integer`},
		{"array as scalar", func() (any, error) { return md.String("test.arr_str") }, "", ErrWrongType, `key "test.arr_str" is arr[str], want str`},
		{"array elem type", func() (any, error) { return md.Float32s("test.arr_f64") }, []float32(nil), ErrWrongType, `key "test.arr_f64" is arr[f64], want arr[f32]`},
		{"scalar as array", func() (any, error) { return md.Int32s("test.i32") }, []int32(nil), ErrWrongType, `key "test.i32" is i32, want arr[i32]`},
		{"Int overflow", func() (any, error) { return md.Int("test.u64") }, 0, nil, `key "test.u64": value 9223372036854775808 does not fit in an int`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.get()
			if tc.errText == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else {
				if err == nil || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("error %v, want %q", err, tc.errText)
				}
				if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
					t.Errorf("error %v is not %v", err, tc.wantErr)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
		})
	}
	if !md.Has("test.u8") || md.Has("nope") {
		t.Error("Has is wrong")
	}
	if v, ok := md.Get("test.u8"); !ok || v.Type != ValueUint8 || v.Data != uint8(200) {
		t.Errorf("Get = %v, %v", v, ok)
	}
	if md.Len() != len(testKVs()) || len(md.KVs()) != md.Len() {
		t.Errorf("Len = %d", md.Len())
	}
	var zero Metadata
	if _, err := zero.String("x"); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("zero Metadata: %v", err)
	}
}

func TestNewMetadataDuplicate(t *testing.T) {
	_, err := NewMetadata([]KV{{"a", Value{ValueUint8, uint8(1)}}, {"a", Value{ValueUint8, uint8(2)}}})
	if err == nil || !strings.Contains(err.Error(), `duplicate metadata key "a"`) {
		t.Errorf("err = %v", err)
	}
	_, err = NewMetadata([]KV{{"b", Value{ValueUint8, "x"}}})
	if err == nil || !strings.Contains(err.Error(), `key "b": value of type u8 holds Go type string`) {
		t.Errorf("err = %v", err)
	}
}

func TestNewValue(t *testing.T) {
	tests := []struct {
		in   any
		want Value
	}{
		{uint8(1), Value{ValueUint8, uint8(1)}},
		{int64(-1), Value{ValueInt64, int64(-1)}},
		{float64(2), Value{ValueFloat64, float64(2)}},
		{"s", Value{ValueString, "s"}},
		{[]string{"a"}, Value{ValueArray, Array{ValueString, []string{"a"}}}},
		{[]bool{true}, Value{ValueArray, Array{ValueBool, []bool{true}}}},
		{[]Array{{ValueUint8, []uint8{1}}}, Value{ValueArray, Array{ValueArray, []Array{{ValueUint8, []uint8{1}}}}}},
	}
	for _, tc := range tests {
		got, err := NewValue(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("NewValue(%#v) = %#v, %v; want %#v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []any{1, uint(1), []int{1}, struct{}{}, nil, Value{ValueUint32, int32(1)}, Value{ValueType(77), nil}} {
		if _, err := NewValue(bad); err == nil {
			t.Errorf("NewValue(%#v) succeeded", bad)
		}
	}
	// Arrays are copied.
	src := []float32{1}
	v, _ := NewValue(src)
	src[0] = 2
	if v.Data.(Array).Data.([]float32)[0] != 1 {
		t.Error("NewValue did not copy the slice")
	}
}

func TestTypeTraits(t *testing.T) {
	tests := []struct {
		typ        Type
		name       string
		block, siz int
	}{
		{TypeF32, "f32", 1, 4}, {TypeF16, "f16", 1, 2}, {TypeBF16, "bf16", 1, 2},
		{TypeQ4_0, "q4_0", 32, 18}, {TypeQ8_0, "q8_0", 32, 34}, {TypeQ4_K, "q4_K", 256, 144},
		{TypeQ6_K, "q6_K", 256, 210}, {TypeMXFP4, "mxfp4", 32, 17}, {TypeI64, "i64", 1, 8},
	}
	for _, tc := range tests {
		if tc.typ.String() != tc.name || tc.typ.BlockSize() != tc.block || tc.typ.TypeSize() != tc.siz {
			t.Errorf("%d: %s %d %d, want %s %d %d", tc.typ, tc.typ, tc.typ.BlockSize(), tc.typ.TypeSize(), tc.name, tc.block, tc.siz)
		}
		if p, err := ParseType(strings.ToUpper(tc.name)); err != nil || p != tc.typ {
			t.Errorf("ParseType(%q) = %v, %v", strings.ToUpper(tc.name), p, err)
		}
	}
	if n, err := TypeQ4_K.RowSize(512); err != nil || n != 288 {
		t.Errorf("RowSize = %d, %v", n, err)
	}
	if _, err := TypeQ4_K.RowSize(100); err == nil || !strings.Contains(err.Error(), "row of 100 elements is not a multiple of the block size 256") {
		t.Errorf("RowSize(100): %v", err)
	}
	if s := Type(4).String(); s != "type(4)" {
		t.Errorf("Type(4) = %s", s)
	}
	if len(Types()) != 32 {
		t.Errorf("%d types, want 32", len(Types()))
	}
	if _, err := ParseType("q4_2"); err == nil {
		t.Error("ParseType(q4_2) succeeded")
	}
}

// TestDumpGolden writes the test file, compares it byte for byte with the committed copy
// (testdata/gguf/tiny.gguf, also read by the ggml cross-check) and its dump with tiny.dump.txt.
func TestDumpGolden(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	writeTestFile(t, path)
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if err := Dump(&buf, f, DumpOptions{MaxArray: 3}); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, testdataPath("tiny.dump.txt"), buf.Bytes())
	raw := make([]byte, f.Size)
	if f.Mapped() {
		copy(raw, f.data)
	}
	checkGolden(t, testdataPath("tiny.gguf"), raw)
}

func TestOpenFallbackWithoutMmap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.gguf")
	writeTestFile(t, path)
	mmapEnabled = false
	defer func() { mmapEnabled = true }()
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Mapped() {
		t.Fatal("mapped although mmap is disabled")
	}
	checkTestFile(t, f, DefaultAlignment, f.Size)
}
