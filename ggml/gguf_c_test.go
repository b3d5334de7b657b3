package ggml_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/internal/testexec"
)

// crossKVs covers every value type ggml's C code supports (it has no nested arrays), in an order
// that is not sorted.
func crossKVs() []gguf.KV {
	v := func(t gguf.ValueType, x any) gguf.Value { return gguf.Value{Type: t, Data: x} }
	arr := func(t gguf.ValueType, x any) gguf.Value {
		return gguf.Value{Type: gguf.ValueArray, Data: gguf.Array{Elem: t, Data: x}}
	}
	return []gguf.KV{
		{Key: "general.architecture", Value: v(gguf.ValueString, "llama")},
		{Key: "z.u8", Value: v(gguf.ValueUint8, uint8(200))},
		{Key: "a.i8", Value: v(gguf.ValueInt8, int8(-100))},
		{Key: "m.u16", Value: v(gguf.ValueUint16, uint16(60000))},
		{Key: "m.i16", Value: v(gguf.ValueInt16, int16(-30000))},
		{Key: "llama.block_count", Value: v(gguf.ValueUint32, uint32(4000000000))},
		{Key: "m.i32", Value: v(gguf.ValueInt32, int32(-2000000000))},
		{Key: "llama.attention.layer_norm_rms_epsilon", Value: v(gguf.ValueFloat32, float32(1e-5))},
		{Key: "m.bool", Value: v(gguf.ValueBool, true)},
		{Key: "m.u64", Value: v(gguf.ValueUint64, uint64(1)<<63)},
		{Key: "m.i64", Value: v(gguf.ValueInt64, int64(-1)<<62)},
		{Key: "m.f64", Value: v(gguf.ValueFloat64, 1e300)},
		{Key: "m.empty", Value: v(gguf.ValueString, "")},
		{Key: "tokenizer.ggml.tokens", Value: arr(gguf.ValueString, []string{"<unk>", "<s>", "", "▁the", "tïny ✓\n"})},
		{Key: "tokenizer.ggml.scores", Value: arr(gguf.ValueFloat32, []float32{0, -1.5, 3.25})},
		{Key: "tokenizer.ggml.token_type", Value: arr(gguf.ValueInt32, []int32{2, 3, 1})},
		{Key: "m.arr_u8", Value: arr(gguf.ValueUint8, []uint8{0, 255})},
		{Key: "m.arr_i8", Value: arr(gguf.ValueInt8, []int8{-128, 127})},
		{Key: "m.arr_u16", Value: arr(gguf.ValueUint16, []uint16{65535})},
		{Key: "m.arr_i16", Value: arr(gguf.ValueInt16, []int16{-32768})},
		{Key: "m.arr_u32", Value: arr(gguf.ValueUint32, []uint32{7, 8})},
		{Key: "m.arr_bool", Value: arr(gguf.ValueBool, []bool{true, false, true})},
		{Key: "m.arr_u64", Value: arr(gguf.ValueUint64, []uint64{1 << 60})},
		{Key: "m.arr_i64", Value: arr(gguf.ValueInt64, []int64{-5})},
		{Key: "m.arr_f64", Value: arr(gguf.ValueFloat64, []float64{2.5})},
		{Key: "m.arr_empty", Value: arr(gguf.ValueInt32, []int32{})},
	}
}

type crossTensor struct {
	name  string
	typ   gguf.Type
	shape []uint64
}

// crossTensors use shapes without trailing 1s: ggml writes ggml_n_dims dimensions, which drops
// them, while our writer keeps the shape it is given.
func crossTensors() []crossTensor {
	return []crossTensor{
		{"token_embd.weight", gguf.TypeF32, []uint64{8, 3}},
		{"blk.0.attn_q.weight", gguf.TypeF16, []uint64{5, 3}},
		{"blk.0.ffn_up.weight", gguf.TypeQ8_0, []uint64{64, 2}},
		{"blk.0.ffn_down.weight", gguf.TypeQ4_K, []uint64{256, 1, 2}},
		{"blk.0.ffn_gate.weight", gguf.TypeQ6_K, []uint64{256, 3}},
		{"v.patch_embd.weight", gguf.TypeBF16, []uint64{2, 3, 4, 5}},
		{"v.position_embd.weight", gguf.TypeI32, []uint64{1}},
		{"mm.model.mlp.0.weight", gguf.TypeQ4_0, []uint64{32, 7}},
	}
}

func (c crossTensor) data() []byte {
	n, err := gguf.TensorBytes(c.typ, c.shape)
	if err != nil {
		panic(err) // fixed table
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7+len(c.name)) ^ 0x5a
	}
	return b
}

// writeOurs writes the cross-check content with the pure-Go writer.
func writeOurs(t *testing.T, path string, align uint32, kvs []gguf.KV) {
	t.Helper()
	w, err := gguf.Create(path, gguf.WithAlignment(align))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, kv := range kvs {
		if err := w.SetKV(kv.Key, kv.Value); err != nil {
			t.Fatal(err)
		}
	}
	for _, ct := range crossTensors() {
		if err := w.AddTensor(ct.name, ct.typ, ct.shape); err != nil {
			t.Fatal(err)
		}
	}
	for _, ct := range crossTensors() {
		if err := w.WriteTensor(ct.name, ct.data()); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// writeC writes the same content with ggml's C writer.
func writeC(t *testing.T, path string, align uint32, kvs []gguf.KV) {
	t.Helper()
	var ckvs []ggml.GGUFKV
	if align != gguf.DefaultAlignment {
		ckvs = append(ckvs, ggml.GGUFKV{Key: gguf.KeyAlignment, Type: ggml.GGUFTypeUint32, Value: align})
	}
	for _, kv := range kvs {
		ckvs = append(ckvs, toC(kv))
	}
	var tensors []ggml.GGUFTensorData
	for _, ct := range crossTensors() {
		shape := make([]int64, len(ct.shape))
		for i, d := range ct.shape {
			shape[i] = int64(d)
		}
		tensors = append(tensors, ggml.GGUFTensorData{Name: ct.name, Type: ggml.Type(ct.typ), Shape: shape, Data: ct.data()})
	}
	if err := ggml.WriteGGUFFile(path, ckvs, tensors); err != nil {
		t.Fatal(err)
	}
}

func toC(kv gguf.KV) ggml.GGUFKV {
	c := ggml.GGUFKV{Key: kv.Key, Type: int(kv.Value.Type), Value: kv.Value.Data}
	if a, ok := kv.Value.Data.(gguf.Array); ok {
		c.ElemType = int(a.Elem)
		c.Value = a.Data
	}
	return c
}

func fromC(kv ggml.GGUFKV) gguf.KV {
	if kv.Type == ggml.GGUFTypeArray {
		return gguf.KV{Key: kv.Key, Value: gguf.Value{Type: gguf.ValueArray, Data: gguf.Array{Elem: gguf.ValueType(kv.ElemType), Data: kv.Value}}}
	}
	return gguf.KV{Key: kv.Key, Value: gguf.Value{Type: gguf.ValueType(kv.Type), Data: kv.Value}}
}

// TestGGMLReadsOurFiles: files from gguf.Writer read identically through gguf_init_from_file.
func TestGGMLReadsOurFiles(t *testing.T) {
	for _, align := range []uint32{32, 64} {
		t.Run(fmt.Sprint(align), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ours.gguf")
			writeOurs(t, path, align, crossKVs())
			ours, err := gguf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer ours.Close()
			info, err := ggml.ReadGGUFInfo(path)
			if err != nil {
				t.Fatal(err)
			}
			compareInfo(t, info, ours)
			data, err := ggml.ReadGGUFTensorData(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, ct := range crossTensors() {
				if !bytes.Equal(data[ct.name], ct.data()) {
					t.Errorf("tensor %q: ggml read different bytes", ct.name)
				}
			}
		})
	}
}

// TestOurReaderReadsGGMLFiles: files from ggml's C writer parse identically with gguf.Open, and
// are byte-identical to what gguf.Writer produces for the same content.
func TestOurReaderReadsGGMLFiles(t *testing.T) {
	for _, align := range []uint32{32, 64} {
		t.Run(fmt.Sprint(align), func(t *testing.T) {
			dir := t.TempDir()
			cPath, goPath := filepath.Join(dir, "c.gguf"), filepath.Join(dir, "go.gguf")
			writeC(t, cPath, align, crossKVs())
			writeOurs(t, goPath, align, crossKVs())
			f, err := gguf.Open(cPath)
			if err != nil {
				t.Fatalf("our reader rejects ggml's file: %v", err)
			}
			defer f.Close()
			wantKV := crossKVs()
			if align != gguf.DefaultAlignment {
				wantKV = append([]gguf.KV{{Key: gguf.KeyAlignment, Value: gguf.Value{Type: gguf.ValueUint32, Data: align}}}, wantKV...)
			}
			if !reflect.DeepEqual(f.KV, wantKV) {
				t.Errorf("metadata of ggml's file:\n got %v\nwant %v", f.KV, wantKV)
			}
			if f.Alignment != uint64(align) {
				t.Errorf("alignment %d, want %d", f.Alignment, align)
			}
			for i, ct := range crossTensors() {
				ti := f.Tensors[i]
				if ti.Name != ct.name || ti.Type != ct.typ || !reflect.DeepEqual(ti.Shape, ct.shape) {
					t.Errorf("tensor %d: %s %s %v, want %s %s %v", i, ti.Name, ti.Type, ti.Shape, ct.name, ct.typ, ct.shape)
				}
				d, err := f.TensorData(ct.name)
				if err != nil || !bytes.Equal(d, ct.data()) {
					t.Errorf("tensor %q: data differs (%v)", ct.name, err)
				}
			}
			cb, _ := os.ReadFile(cPath)
			gb, _ := os.ReadFile(goPath)
			if !bytes.Equal(cb, gb) {
				i := 0
				for i < len(cb) && i < len(gb) && cb[i] == gb[i] {
					i++
				}
				t.Errorf("ggml's file (%d bytes) and ours (%d bytes) differ from byte %d", len(cb), len(gb), i)
			}
		})
	}
}

func compareInfo(t *testing.T, info *ggml.GGUFInfo, ours *gguf.File) {
	t.Helper()
	if info.Version != ours.Version || info.Alignment != ours.Alignment || int64(info.DataOffset) != ours.DataOffset {
		t.Errorf("ggml: version %d alignment %d data offset %d; ours %d %d %d",
			info.Version, info.Alignment, info.DataOffset, ours.Version, ours.Alignment, ours.DataOffset)
	}
	if len(info.KV) != len(ours.KV) {
		t.Fatalf("ggml reads %d pairs, ours %d", len(info.KV), len(ours.KV))
	}
	for i, kv := range info.KV {
		if got := fromC(kv); !reflect.DeepEqual(got, ours.KV[i]) {
			t.Errorf("pair %d: ggml %v, ours %v", i, got, ours.KV[i])
		}
	}
	if len(info.Tensors) != len(ours.Tensors) {
		t.Fatalf("ggml reads %d tensors, ours %d", len(info.Tensors), len(ours.Tensors))
	}
	for i, ti := range info.Tensors {
		want := ours.Tensors[i]
		ne := [ggml.MaxDims]int64{1, 1, 1, 1}
		for d, n := range want.Shape {
			ne[d] = int64(n)
		}
		if ti.Name != want.Name || int(ti.Type) != int(want.Type) || ti.Ne != ne || ti.Offset != want.Offset || ti.Size != want.Size() {
			t.Errorf("tensor %d: ggml %+v, ours %+v (size %d)", i, ti, want, want.Size())
		}
	}
}

// TestGGMLRejectsNestedArrays documents a limit of ggml's reader: GGUF allows arrays of arrays,
// which gguf writes and reads, but gguf_init_from_file refuses (cleanly).
func TestGGMLRejectsNestedArrays(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nested.gguf")
	kvs := append(crossKVs(), gguf.KV{Key: "m.nested", Value: gguf.Value{Type: gguf.ValueArray,
		Data: gguf.Array{Elem: gguf.ValueArray, Data: []gguf.Array{{Elem: gguf.ValueInt32, Data: []int32{1}}}}}})
	writeOurs(t, path, 32, kvs)
	if _, err := ggml.ReadGGUFInfo(path); err == nil || !strings.Contains(err.Error(), "gguf_init_from_file rejected") {
		t.Errorf("ggml read a nested array: %v", err)
	}
	err := ggml.WriteGGUFFile(filepath.Join(t.TempDir(), "x.gguf"), []ggml.GGUFKV{toC(kvs[len(kvs)-1])}, nil)
	if err == nil || !strings.Contains(err.Error(), "nested arrays are not supported") {
		t.Errorf("WriteGGUFFile with a nested array: %v", err)
	}
}

// TestWriteGGUFFileRefusesWhatGGMLAbortsOn: the checks that keep bad arguments from reaching a
// GGML_ASSERT in gguf.cpp.
func TestWriteGGUFFileRefusesWhatGGMLAbortsOn(t *testing.T) {
	td := func(name string, typ ggml.Type, n int, shape ...int64) ggml.GGUFTensorData {
		return ggml.GGUFTensorData{Name: name, Type: typ, Shape: shape, Data: make([]byte, n)}
	}
	tests := []struct {
		name    string
		kvs     []ggml.GGUFKV
		tensors []ggml.GGUFTensorData
		want    string
	}{
		{"empty key", []ggml.GGUFKV{{Key: "", Type: ggml.GGUFTypeUint8, Value: uint8(1)}}, nil, `key "": empty`},
		{"duplicate key", []ggml.GGUFKV{{Key: "a", Type: ggml.GGUFTypeUint8, Value: uint8(1)}, {Key: "a", Type: ggml.GGUFTypeUint8, Value: uint8(1)}}, nil, `key "a" set twice`},
		{"alignment u64", []ggml.GGUFKV{{Key: "general.alignment", Type: ggml.GGUFTypeUint64, Value: uint64(64)}}, nil, `"general.alignment" must be a u32 power of two`},
		{"alignment 48", []ggml.GGUFKV{{Key: "general.alignment", Type: ggml.GGUFTypeUint32, Value: uint32(48)}}, nil, `"general.alignment" must be a u32 power of two`},
		{"go type mismatch", []ggml.GGUFKV{{Key: "a", Type: ggml.GGUFTypeUint32, Value: int32(1)}}, nil, `key "a": Go value of type int32, want uint32`},
		{"NUL in string", []ggml.GGUFKV{{Key: "a", Type: ggml.GGUFTypeString, Value: "x\x00y"}}, nil, `key "a": string holds a NUL byte`},
		{"duplicate tensor", nil, []ggml.GGUFTensorData{td("t", ggml.TypeF32, 4, 1), td("t", ggml.TypeF32, 4, 1)}, `tensor "t" added twice`},
		{"long name", nil, []ggml.GGUFTensorData{td(strings.Repeat("n", 64), ggml.TypeF32, 4, 1)}, "longer than 63 bytes"},
		{"bad type", nil, []ggml.GGUFTensorData{td("t", ggml.Type(31), 4, 1)}, `tensor "t": unknown type 31`},
		{"zero dim", nil, []ggml.GGUFTensorData{td("t", ggml.TypeF32, 0, 4, 0)}, `tensor "t": dimension 1 is 0`},
		{"block", nil, []ggml.GGUFTensorData{td("t", ggml.TypeQ4_0, 18, 16)}, `ne0 16 is not a multiple of the q4_0 block size 32`},
		{"size", nil, []ggml.GGUFTensorData{td("t", ggml.TypeF32, 3, 1)}, `tensor "t": 3 bytes of data, want 4`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.gguf")
			err := ggml.WriteGGUFFile(path, tc.kvs, tc.tensors)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "ggml: ") {
				t.Errorf("error %v, want %q", err, tc.want)
			}
			if _, err := os.Stat(path); err == nil {
				t.Error("a file was left behind")
			}
		})
	}
}

// TestTypeTraitsMatchGGML: gguf's pure-Go type table equals ggml's type_traits.
func TestTypeTraitsMatchGGML(t *testing.T) {
	known := map[gguf.Type]bool{}
	for _, typ := range gguf.Types() {
		known[typ] = true
		g := ggml.Type(typ)
		if !g.Valid() || g.String() != typ.String() || g.BlockSize() != typ.BlockSize() || g.TypeSize() != typ.TypeSize() {
			t.Errorf("type %d: gguf %s/%d/%d, ggml %s/%d/%d", typ, typ, typ.BlockSize(), typ.TypeSize(), g, g.BlockSize(), g.TypeSize())
		}
	}
	for id := 0; id < 64; id++ {
		if ggml.Type(id).Valid() && !known[gguf.Type(id)] {
			t.Errorf("ggml type %d (%s) is missing from gguf", id, ggml.Type(id))
		}
	}
}

// cReaderEnv makes the test binary act as a one-shot ggml reader (see TestGGUFCReaderHelperProcess).
const cReaderEnv = "IDEFICS2_GGUF_C_READ"

// TestGGUFCReaderHelperProcess is not a test of its own: run with IDEFICS2_GGUF_C_READ=path it
// reads the file with ggml's C reader (metadata and data) and prints "accept" or "reject", so
// that a file making ggml abort only ends that child process.
func TestGGUFCReaderHelperProcess(t *testing.T) {
	path := os.Getenv(cReaderEnv)
	if path == "" {
		return
	}
	_, err := ggml.ReadGGUFTensorData(path)
	if err != nil {
		fmt.Println("RESULT reject")
	} else {
		fmt.Println("RESULT accept")
	}
	os.Exit(0)
}

// TestGGMLOnBrokenFiles runs ggml's C reader, each in a child process, over the broken files that
// gguf rejects (testdata/gguf/bad) and compares: ggml must not accept what we reject, except the
// divergences listed here; the files that crash ggml are listed too. The results are recorded in
// docs/reliability.md.
func TestGGMLOnBrokenFiles(t *testing.T) {
	if os.Getenv(cReaderEnv) != "" {
		return
	}
	// ggml accepts these; gguf rejects them on purpose.
	wantAccept := map[string]string{
		"bad_bool.gguf":          "ggml reads any nonzero byte as true; the GGUF spec allows only 0 and 1",
		"bad_bool_in_array.gguf": "same, inside an array",
		"empty_tensor_name.gguf": "ggml allows an empty tensor name",
		"zero_dims.gguf":         "ggml reads n_dims 0 as a scalar; its own writer never writes 0",
		"byte_overflow.gguf":     "ggml's byte size of a [2^31, 2^31] f64 tensor wraps around (2^65 bytes) and passes",
	}
	// ggml kills the process on these (GGML_ASSERT abort, uncaught std::bad_alloc or SIGFPE).
	wantCrash := map[string]string{
		"empty_key.gguf":                   "GGML_ASSERT(!key.empty()) in the gguf_kv constructor",
		"huge_kv_count.gguf":               "the count runs past the real pairs; zero bytes read as an empty key hit the same assert",
		"counts_exceed_file_together.gguf": "same",
		"alignment_u64.gguf":               "gguf_get_val_u32 asserts the type of general.alignment",
		"huge_string_value.gguf":           "a scalar string's length is allocated outside any try block: std::bad_alloc terminates",
		"zero_dim.gguf":                    "INT64_MAX/ne[1] divides by zero in the element-count check (SIGFPE)",
	}
	if runtime.GOARCH == "arm64" {
		// aarch64's integer division by zero gives 0 instead of trapping: the element-count check then rejects.
		delete(wantCrash, "zero_dim.gguf")
	}
	dir := filepath.Join("..", "testdata", "gguf", "bad")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if _, err := gguf.Open(path); err == nil {
			t.Errorf("%s: gguf accepts it", e.Name())
			continue
		}
		// ggml's abort path may start gdb for a backtrace; bound each child.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := testexec.Command(ctx, os.Args[0], "-test.run=^TestGGUFCReaderHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), cReaderEnv+"="+path, "GOTRACEBACK=none")
		out, err := cmd.CombinedOutput()
		cancel()
		got := "crash"
		switch {
		case err == nil && bytes.Contains(out, []byte("RESULT accept")):
			got = "accept"
		case err == nil && bytes.Contains(out, []byte("RESULT reject")):
			got = "reject"
		}
		want := "reject"
		if _, ok := wantAccept[e.Name()]; ok {
			want = "accept"
		}
		if _, ok := wantCrash[e.Name()]; ok {
			want = "crash"
		}
		if got != want {
			t.Errorf("%s: ggml's reader: %s, want %s (exit %v)\n%s", e.Name(), got, want, err, lastLines(out, 3))
		}
		rows = append(rows, fmt.Sprintf("%-34s %s", e.Name(), got))
	}
	sort.Strings(rows)
	t.Logf("ggml's gguf_init_from_file on testdata/gguf/bad:\n%s", strings.Join(rows, "\n"))
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
