package gguf

import (
	"bytes"
	"encoding/binary"
	"flag"
	"math"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/gguf")

// rawKV is one metadata pair for hand-assembled test files: the value type id and the encoded
// value body, so tests can write values the Writer refuses to produce.
type rawKV struct {
	key  string
	typ  uint32
	body []byte
}

type rawTensor struct {
	name string
	dims []uint64
	typ  uint32
	off  uint64
}

// rawGGUF assembles GGUF bytes field by field, independently of Writer, so that tests can check
// the Writer against it and build malformed files.
type rawGGUF struct {
	magic     string  // default "GGUF"
	version   uint32  // default 3
	nTensors  *uint64 // override the tensor count
	nKV       *uint64 // override the key-value count
	kvs       []rawKV
	tensors   []rawTensor
	alignment uint64 // padding before the data section; default 32
	data      []byte // data section
}

func (r rawGGUF) bytes() []byte {
	var b bytes.Buffer
	magic := r.magic
	if magic == "" {
		magic = "GGUF"
	}
	b.WriteString(magic)
	version := r.version
	if version == 0 {
		version = 3
	}
	le := binary.LittleEndian
	b.Write(le.AppendUint32(nil, version))
	nT, nK := uint64(len(r.tensors)), uint64(len(r.kvs))
	if r.nTensors != nil {
		nT = *r.nTensors
	}
	if r.nKV != nil {
		nK = *r.nKV
	}
	b.Write(le.AppendUint64(nil, nT))
	b.Write(le.AppendUint64(nil, nK))
	for _, kv := range r.kvs {
		b.Write(rawStr(kv.key))
		b.Write(le.AppendUint32(nil, kv.typ))
		b.Write(kv.body)
	}
	for _, t := range r.tensors {
		b.Write(rawStr(t.name))
		b.Write(le.AppendUint32(nil, uint32(len(t.dims))))
		for _, d := range t.dims {
			b.Write(le.AppendUint64(nil, d))
		}
		b.Write(le.AppendUint32(nil, t.typ))
		b.Write(le.AppendUint64(nil, t.off))
	}
	a := r.alignment
	if a == 0 {
		a = 32
	}
	for uint64(b.Len())%a != 0 {
		b.WriteByte(0)
	}
	b.Write(r.data)
	return b.Bytes()
}

func rawStr(s string) []byte {
	return append(binary.LittleEndian.AppendUint64(nil, uint64(len(s))), s...)
}

func rawU32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func rawU64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
func rawF32(v float32) []byte {
	return binary.LittleEndian.AppendUint32(nil, math.Float32bits(v))
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func u64p(v uint64) *uint64 { return &v }

// readBytes parses an in-memory image.
func readBytes(b []byte) (*File, error) { return Read(bytes.NewReader(b), int64(len(b))) }

// testKVs covers every value type, including arrays of each and a nested array.
func testKVs() []KV {
	nested := Array{ValueArray, []Array{
		{ValueInt32, []int32{1, 2}},
		{ValueString, []string{"a", "b", "c"}},
		{ValueArray, []Array{{ValueBool, []bool{true}}}},
		{ValueFloat32, []float32{}},
	}}
	return []KV{
		{"general.architecture", Value{ValueString, "llama"}},
		{"general.name", Value{ValueString, "tïny ✓\nmodel"}},
		{"test.u8", Value{ValueUint8, uint8(200)}},
		{"test.i8", Value{ValueInt8, int8(-100)}},
		{"test.u16", Value{ValueUint16, uint16(60000)}},
		{"test.i16", Value{ValueInt16, int16(-30000)}},
		{"test.u32", Value{ValueUint32, uint32(4000000000)}},
		{"test.i32", Value{ValueInt32, int32(-2000000000)}},
		{"test.f32", Value{ValueFloat32, float32(1e-5)}},
		{"test.bool", Value{ValueBool, true}},
		{"test.bool_false", Value{ValueBool, false}},
		{"test.u64", Value{ValueUint64, uint64(1) << 63}},
		{"test.i64", Value{ValueInt64, int64(-1) << 62}},
		{"test.f64", Value{ValueFloat64, 1e300}},
		{"test.empty_string", Value{ValueString, ""}},
		{"test.arr_u8", Value{ValueArray, Array{ValueUint8, []uint8{0, 1, 255}}}},
		{"test.arr_i8", Value{ValueArray, Array{ValueInt8, []int8{-128, 0, 127}}}},
		{"test.arr_u16", Value{ValueArray, Array{ValueUint16, []uint16{1, 65535}}}},
		{"test.arr_i16", Value{ValueArray, Array{ValueInt16, []int16{-32768, 32767}}}},
		{"test.arr_u32", Value{ValueArray, Array{ValueUint32, []uint32{7, 8, 9}}}},
		{"test.arr_i32", Value{ValueArray, Array{ValueInt32, []int32{-1, 0, 1}}}},
		{"test.arr_f32", Value{ValueArray, Array{ValueFloat32, []float32{0.5, -2, float32(math.Inf(1))}}}},
		{"test.arr_bool", Value{ValueArray, Array{ValueBool, []bool{true, false, true}}}},
		{"test.arr_str", Value{ValueArray, Array{ValueString, []string{"<unk>", "<s>", "", "▁the"}}}},
		{"test.arr_u64", Value{ValueArray, Array{ValueUint64, []uint64{math.MaxUint64}}}},
		{"test.arr_i64", Value{ValueArray, Array{ValueInt64, []int64{math.MinInt64, math.MaxInt64}}}},
		{"test.arr_f64", Value{ValueArray, Array{ValueFloat64, []float64{math.Pi}}}},
		{"test.arr_empty", Value{ValueArray, Array{ValueInt32, []int32{}}}},
		{"test.arr_nested", Value{ValueArray, nested}},
	}
}

// testTensor is a tensor with deterministic content.
type testTensor struct {
	name  string
	typ   Type
	shape []uint64
}

func (tt testTensor) data() []byte {
	n, err := TensorBytes(tt.typ, tt.shape)
	if err != nil {
		panic(err) // test tables are fixed
	}
	b := make([]byte, n)
	seed := byte(len(tt.name))
	for i := range b {
		b[i] = byte(i*31) ^ seed
	}
	return b
}

func testTensors() []testTensor {
	return []testTensor{
		{"token_embd.weight", TypeF32, []uint64{8, 3}},
		{"blk.0.attn_q.weight", TypeF16, []uint64{5, 3}},
		{"blk.0.ffn_up.weight", TypeQ8_0, []uint64{64, 2}},
		{"blk.0.ffn_down.weight", TypeQ4_K, []uint64{256, 1, 2}},
		{"v.patch_embd.weight", TypeBF16, []uint64{2, 3, 4, 5}},
		{"scalar", TypeI32, []uint64{1}},
	}
}

// writeTestFile writes testKVs and testTensors with the Writer.
func writeTestFile(t testing.TB, path string, opts ...WriterOption) {
	t.Helper()
	w, err := Create(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, kv := range testKVs() {
		if err := w.SetKV(kv.Key, kv.Value); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range testTensors() {
		if err := w.AddTensor(tt.name, tt.typ, tt.shape); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range testTensors() {
		if err := w.WriteTensor(tt.name, tt.data()); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func testdataPath(parts ...string) string {
	return filepath.Join(append([]string{"..", "testdata", "gguf"}, parts...)...)
}

// checkGolden compares got with the golden file, rewriting it under -update.
func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./gguf -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the output (%d vs %d bytes); rerun with -update after review\ngot:\n%s", path, len(got), len(want), got)
	}
}
