package gguf

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// baseRaw is a small valid file: one string pair and two f32 tensors of 4 elements.
func baseRaw() rawGGUF {
	return rawGGUF{
		kvs: []rawKV{{"general.architecture", 8, rawStr("llama")}},
		tensors: []rawTensor{
			{"a", []uint64{4}, 0, 0},
			{"b", []uint64{4}, 0, 32},
		},
		data: make([]byte, 64),
	}
}

type errKind int

const (
	kindFormat errKind = iota
	kindUnsupported
	kindNotGGUF
)

type badInput struct {
	name string
	data []byte
	kind errKind
	want string // substring that names the culprit
}

func withKV(kv rawKV) []byte {
	r := baseRaw()
	r.kvs = append(r.kvs, kv)
	return r.bytes()
}

func withTensor(t rawTensor) []byte {
	r := baseRaw()
	r.tensors = append(r.tensors, t)
	r.data = make([]byte, 96)
	return r.bytes()
}

func nestedArray(depth int) []byte {
	body := cat(rawU32(uint32(ValueUint8)), rawU64(0))
	for i := 0; i < depth; i++ {
		body = cat(rawU32(uint32(ValueArray)), rawU64(1), body)
	}
	return body
}

// badInputs is the table of malformed files: each names its culprit in the error.
func badInputs() []badInput {
	valid := baseRaw().bytes()
	headerEnd := len(valid) - 64 // the data section is the last 64 bytes

	var out []badInput
	add := func(name string, data []byte, kind errKind, want string) {
		out = append(out, badInput{name, data, kind, want})
	}
	add("empty", nil, kindNotGGUF, "only 0 bytes")
	add("bad magic", append([]byte("GGML"), valid[4:]...), kindNotGGUF, `magic "GGML", want "GGUF"`)
	add("truncated header", valid[:10], kindFormat, "header: n_tensors: truncated: need 8 bytes, 2 left")
	twoKV := rawGGUF{kvs: []rawKV{{"general.architecture", 8, rawStr("llama")}, {"k2", 8, rawStr(strings.Repeat("x", 50))}}}
	add("truncated metadata", twoKV.bytes()[:130], kindFormat, `key "k2": string length 50 exceeds the 39 bytes left`)
	unpadded := baseRaw()
	unpadded.alignment, unpadded.data = 1, nil
	add("truncated tensor info", unpadded.bytes()[:125], kindFormat, `tensor "b": type: truncated: need 4 bytes, 2 left`)
	add("truncated data", valid[:headerEnd+47], kindFormat, `tensor "b": data [32, +16) at file offset`)
	add("no data section", unpadded.bytes(), kindFormat, "data section: starts at 160, beyond the file size 135")

	r := baseRaw()
	r.version = 1
	add("version 1", r.bytes(), kindUnsupported, "GGUF version 1")
	r.version = 4
	add("version 4", r.bytes(), kindUnsupported, "GGUF version 4")
	r.version = 0x03000000
	add("big endian", r.bytes(), kindUnsupported, "big-endian")
	v0 := append([]byte{}, valid...)
	copy(v0[4:8], rawU32(0))
	add("version 0", v0, kindFormat, "header: version: version 0")

	r = baseRaw()
	r.nTensors = u64p(1 << 62)
	add("huge tensor count", r.bytes(), kindFormat, "header: n_tensors: count 4611686018427387904 needs at least 33 bytes each")
	r.nTensors = u64p(1 << 63)
	add("negative tensor count", r.bytes(), kindFormat, "header: n_tensors: count 9223372036854775808 is negative")
	r = baseRaw()
	r.nKV = u64p(1 << 40)
	add("huge kv count", r.bytes(), kindFormat, "header: n_kv: count 1099511627776")
	r = baseRaw()
	r.nKV, r.nTensors = u64p(8), u64p(3)
	add("counts exceed file together", r.bytes(), kindFormat, "header: 8 key-value pairs and 3 tensors need at least 211 bytes, only 200 left")

	add("huge key length", cat([]byte("GGUF"), rawU32(3), rawU64(0), rawU64(1), rawU64(1<<60), make([]byte, 20)), kindFormat, "key-value 0: key: string length 1152921504606846976 exceeds")
	add("empty key", withKV(rawKV{"", 8, rawStr("x")}), kindFormat, "key-value 1: empty key")
	add("duplicate key", withKV(rawKV{"general.architecture", 8, rawStr("x")}), kindFormat, `key "general.architecture": duplicate key`)
	add("unknown value type", withKV(rawKV{"k", 13, nil}), kindFormat, `key "k": unknown value type 13`)
	add("huge string value", withKV(rawKV{"k", 8, rawU64(1 << 50)}), kindFormat, `key "k": string length 1125899906842624 exceeds`)
	add("bad bool", withKV(rawKV{"k", 7, []byte{2}}), kindFormat, `key "k": bool byte is 2, want 0 or 1`)
	add("bad bool in array", withKV(rawKV{"k", 9, cat(rawU32(7), rawU64(2), []byte{1, 9})}), kindFormat, `key "k": element 1: bool byte is 9`)
	add("unknown array element type", withKV(rawKV{"k", 9, cat(rawU32(42), rawU64(1))}), kindFormat, `key "k": unknown array element type 42`)
	add("huge array count", withKV(rawKV{"k", 9, cat(rawU32(uint32(ValueUint32)), rawU64(1<<61))}), kindFormat, `key "k": array length: count 2305843009213693952 needs at least 4 bytes each`)
	add("huge string array count", withKV(rawKV{"k", 9, cat(rawU32(uint32(ValueString)), rawU64(1<<40))}), kindFormat, `key "k": array length: count 1099511627776 needs at least 8 bytes each`)
	add("huge string in array", withKV(rawKV{"k", 9, cat(rawU32(uint32(ValueString)), rawU64(1), rawU64(1<<40))}), kindFormat, `key "k": element 0: string length 1099511627776`)
	add("nested too deep", withKV(rawKV{"k", 9, nestedArray(40)}), kindFormat, `key "k"`+strings.Repeat(": element 0", 32)+": arrays nested deeper than 32")
	add("alignment u64", withKV(rawKV{KeyAlignment, uint32(ValueUint64), rawU64(32)}), kindFormat, `key "general.alignment": type u64, want u32`)
	add("alignment zero", withKV(rawKV{KeyAlignment, uint32(ValueUint32), rawU32(0)}), kindFormat, `key "general.alignment": alignment 0 is not a power of two`)
	add("alignment 48", withKV(rawKV{KeyAlignment, uint32(ValueUint32), rawU32(48)}), kindFormat, "alignment 48 is not a power of two")

	add("empty tensor name", withTensor(rawTensor{"", []uint64{4}, 0, 64}), kindFormat, "tensor 2: empty name")
	add("long tensor name", withTensor(rawTensor{strings.Repeat("n", 64), []uint64{4}, 0, 64}), kindFormat, "tensor 2: name of 64 bytes exceeds ggml's 63")
	add("duplicate tensor", withTensor(rawTensor{"a", []uint64{4}, 0, 64}), kindFormat, `tensor "a": duplicate tensor name`)
	add("zero dims", withTensor(rawTensor{"c", nil, 0, 64}), kindFormat, `tensor "c": 0 dimensions, want 1 to 4`)
	add("five dims", withTensor(rawTensor{"c", []uint64{1, 1, 1, 1, 1}, 0, 64}), kindFormat, `tensor "c": 5 dimensions, want 1 to 4`)
	add("zero dim", withTensor(rawTensor{"c", []uint64{4, 0}, 0, 64}), kindFormat, `tensor "c": dimension 1: size 0`)
	add("negative dim", withTensor(rawTensor{"c", []uint64{4, 1 << 63}, 0, 64}), kindFormat, `tensor "c": dimension 1: size -9223372036854775808`)
	add("element overflow", withTensor(rawTensor{"c", []uint64{1 << 32, 1 << 31}, 0, 64}), kindFormat, `tensor "c": dimension 1: element count of shape overflows int64`)
	add("byte overflow", withTensor(rawTensor{"c", []uint64{1 << 31, 1 << 31}, 28, 64}), kindFormat, `tensor "c": shape [2147483648, 2147483648] of type f64: byte size overflows int64`)
	add("removed type", withTensor(rawTensor{"c", []uint64{4}, 31, 64}), kindUnsupported, `tensor "c": type: unsupported tensor type id 31`)
	add("Q4_2 type", withTensor(rawTensor{"c", []uint64{32}, 4, 64}), kindUnsupported, `tensor "c": type: unsupported tensor type id 4 (Q4_2/Q4_3`)
	add("unknown type", withTensor(rawTensor{"c", []uint64{4}, 99, 64}), kindUnsupported, `tensor "c": type: unsupported tensor type id 99 (unknown to ggml)`)
	add("block size", withTensor(rawTensor{"c", []uint64{48}, 2, 64}), kindFormat, `tensor "c": type q4_0: ne0 48 is not a multiple of the block size 32`)
	add("misaligned offset", withTensor(rawTensor{"c", []uint64{4}, 0, 68}), kindFormat, `tensor "c": data offset 68 is not a multiple of the alignment 32`)
	add("offset beyond file", withTensor(rawTensor{"c", []uint64{4}, 0, 1 << 40}), kindFormat, `tensor "c": data [1099511627776, +16)`)
	add("offset wraps", withTensor(rawTensor{"c", []uint64{4}, 0, 1<<64 - 32}), kindFormat, `tensor "c": data [18446744073709551584, +16)`)
	add("overlap", withTensor(rawTensor{"c", []uint64{8}, 0, 32}), kindFormat, `tensor "c": data [32, 64) overlaps tensor "b" at [32, 48)`)
	add("overlap across", withTensor(rawTensor{"c", []uint64{16}, 0, 0}), kindFormat, `tensor "c": data [0, 64) overlaps tensor "a" at [0, 16)`)

	r = rawGGUF{
		kvs:       []rawKV{{KeyAlignment, uint32(ValueUint32), rawU32(1 << 30)}},
		tensors:   []rawTensor{{"a", []uint64{4}, 0, 0}},
		alignment: 1,
		data:      make([]byte, 16),
	}
	add("alignment beyond file", r.bytes(), kindFormat, "data section: starts at 1073741824, beyond the file size")
	return out
}

func TestBadInputs(t *testing.T) {
	for _, tc := range badInputs() {
		t.Run(tc.name, func(t *testing.T) {
			f, err := readBytes(tc.data)
			if err == nil {
				t.Fatalf("no error; parsed %d pairs and %d tensors", len(f.KV), len(f.Tensors))
			}
			checkBadErr(t, err, tc)
		})
	}
}

func checkBadErr(t *testing.T, err error, tc badInput) {
	t.Helper()
	var fe *FormatError
	var ue *UnsupportedError
	switch tc.kind {
	case kindFormat:
		if !errors.As(err, &fe) || errors.Is(err, ErrNotGGUF) {
			t.Errorf("error %q (%T), want a *FormatError", err, err)
		}
	case kindUnsupported:
		if !errors.As(err, &ue) {
			t.Errorf("error %q (%T), want an *UnsupportedError", err, err)
		}
	case kindNotGGUF:
		if !errors.Is(err, ErrNotGGUF) {
			t.Errorf("error %q, want ErrNotGGUF", err)
		}
	}
	if !strings.Contains(err.Error(), tc.want) {
		t.Errorf("error %q\nwant substring %q", err, tc.want)
	}
	if !strings.HasPrefix(err.Error(), "gguf: ") {
		t.Errorf("error %q does not start with \"gguf: \"", err)
	}
}

// TestBadFilesCommitted keeps testdata/gguf/bad (fuzz seeds, and inputs for the ggml
// cross-check) in step with the table, and checks Open names the file.
func TestBadFilesCommitted(t *testing.T) {
	for _, tc := range badInputs() {
		name := strings.ReplaceAll(tc.name, " ", "_") + ".gguf"
		path := testdataPath("bad", name)
		t.Run(tc.name, func(t *testing.T) {
			checkGolden(t, path, tc.data)
			if *update {
				return
			}
			_, err := Open(path)
			if err == nil {
				t.Fatal("Open: no error")
			}
			checkBadErr(t, err, tc)
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file %s", err, path)
			}
		})
	}
	if *update {
		return
	}
	entries, err := os.ReadDir(testdataPath("bad"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(badInputs()) {
		t.Errorf("%s holds %d files, the table %d: remove stale files", testdataPath("bad"), len(entries), len(badInputs()))
	}
}

// TestEveryTruncationFails cuts a valid file at every length: each prefix must fail cleanly.
func TestEveryTruncationFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.gguf")
	writeTestFile(t, path)
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	whole, err := readBytes(full)
	if err != nil {
		t.Fatal(err)
	}
	// Only the padding after the last tensor may be cut.
	last := whole.Tensors[len(whole.Tensors)-1]
	need := whole.DataOffset + int64(last.Offset+last.Size())
	for n := 0; n <= len(full); n++ {
		f, err := readBytes(full[:n])
		if int64(n) >= need {
			if err != nil {
				t.Fatalf("prefix of %d bytes (data ends at %d): %v", n, need, err)
			}
			continue
		}
		if err == nil {
			t.Fatalf("prefix of %d of %d bytes parsed (%d tensors)", n, len(full), len(f.Tensors))
		}
		var fe *FormatError
		if !errors.As(err, &fe) {
			t.Fatalf("prefix of %d bytes: error %q (%T), want *FormatError", n, err, err)
		}
	}
}
