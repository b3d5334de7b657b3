package ggml

// #include <stdlib.h>
// #include <stdint.h>
// #include "ggml.h"
// #include "gguf.h"
//
// static struct gguf_context * idefics2_gguf_open(const char * path, struct ggml_context ** meta, int with_data) {
//     struct gguf_init_params p = { .no_alloc = !with_data, .ctx = meta };
//     return gguf_init_from_file(path, p);
// }
import "C"

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"unsafe"
)

// GGUF value type ids (enum gguf_type in gguf.h).
const (
	GGUFTypeUint8   = C.GGUF_TYPE_UINT8
	GGUFTypeInt8    = C.GGUF_TYPE_INT8
	GGUFTypeUint16  = C.GGUF_TYPE_UINT16
	GGUFTypeInt16   = C.GGUF_TYPE_INT16
	GGUFTypeUint32  = C.GGUF_TYPE_UINT32
	GGUFTypeInt32   = C.GGUF_TYPE_INT32
	GGUFTypeFloat32 = C.GGUF_TYPE_FLOAT32
	GGUFTypeBool    = C.GGUF_TYPE_BOOL
	GGUFTypeString  = C.GGUF_TYPE_STRING
	GGUFTypeArray   = C.GGUF_TYPE_ARRAY
	GGUFTypeUint64  = C.GGUF_TYPE_UINT64
	GGUFTypeInt64   = C.GGUF_TYPE_INT64
	GGUFTypeFloat64 = C.GGUF_TYPE_FLOAT64
)

// GGUFKV is one metadata pair as ggml's C GGUF code sees it.
//
// Value holds, by Type: uint8, int8, uint16, int16, uint32, int32, float32, bool, string,
// uint64, int64 or float64; for Type GGUFTypeArray a slice of the Go type of ElemType
// ([]uint8 … []string). ggml's C code has no nested arrays.
type GGUFKV struct {
	Key      string
	Type     int // a GGUFType* id
	ElemType int // element type id when Type is GGUFTypeArray
	Value    any
}

// GGUFTensorInfo is one tensor info as ggml's C reader reports it.
type GGUFTensorInfo struct {
	Name   string
	Type   Type
	Ne     [MaxDims]int64 // ggml shape padded with 1s (the C API does not expose the stored n_dims)
	Offset uint64         // from the start of the data section
	Size   uint64         // bytes (ggml_nbytes)
}

// GGUFInfo is what ggml's gguf_init_from_file makes of a file.
type GGUFInfo struct {
	Version    uint32
	Alignment  uint64
	DataOffset uint64
	KV         []GGUFKV
	Tensors    []GGUFTensorInfo
}

// ReadGGUFInfo parses a GGUF file with ggml's own C reader (gguf_init_from_file), for
// cross-checking the pure-Go gguf package.
//
// It is a verification tool for files this project wrote or already validated with gguf.Open:
// ggml's reader aborts the process (GGML_ASSERT, or SIGFPE) on some malformed files — a
// "general.alignment" of another type than u32, an empty key, a dimension of 0 — so untrusted
// input must never reach it unchecked. Strings are read as C strings, so a string holding a NUL
// byte comes back truncated.
func ReadGGUFInfo(path string) (*GGUFInfo, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var meta *C.struct_ggml_context
	g := C.idefics2_gguf_open(cpath, &meta, 0)
	if g == nil {
		return nil, fmt.Errorf("ggml: %s: gguf_init_from_file rejected the file", path)
	}
	defer C.gguf_free(g)
	if meta != nil {
		defer C.ggml_free(meta)
	}
	info := &GGUFInfo{
		Version:    uint32(C.gguf_get_version(g)),
		Alignment:  uint64(C.gguf_get_alignment(g)),
		DataOffset: uint64(C.gguf_get_data_offset(g)),
	}
	nKV := int64(C.gguf_get_n_kv(g))
	for i := int64(0); i < nKV; i++ {
		kv, err := readGGUFKV(g, C.int64_t(i))
		if err != nil {
			return nil, fmt.Errorf("ggml: %s: %w", path, err)
		}
		info.KV = append(info.KV, kv)
	}
	nT := int64(C.gguf_get_n_tensors(g))
	for i := int64(0); i < nT; i++ {
		id := C.int64_t(i)
		name := C.gguf_get_tensor_name(g, id)
		ti := GGUFTensorInfo{
			Name:   C.GoString(name),
			Type:   Type(C.gguf_get_tensor_type(g, id)),
			Offset: uint64(C.gguf_get_tensor_offset(g, id)),
			Size:   uint64(C.gguf_get_tensor_size(g, id)),
		}
		t := C.ggml_get_tensor(meta, name)
		if t == nil {
			return nil, fmt.Errorf("ggml: %s: tensor %q missing from the metadata context", path, ti.Name)
		}
		for d := 0; d < MaxDims; d++ {
			ti.Ne[d] = int64(t.ne[d])
		}
		info.Tensors = append(info.Tensors, ti)
	}
	return info, nil
}

// ReadGGUFTensorData loads every tensor's bytes with ggml's C reader (gguf_init_from_file with
// allocation), keyed by name. The same caveats as ReadGGUFInfo apply; it reads the whole data
// section into memory, so it is meant for small test files.
func ReadGGUFTensorData(path string) (map[string][]byte, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var data *C.struct_ggml_context
	g := C.idefics2_gguf_open(cpath, &data, 1)
	if g == nil {
		return nil, fmt.Errorf("ggml: %s: gguf_init_from_file rejected the file", path)
	}
	defer C.gguf_free(g)
	defer C.ggml_free(data)
	out := make(map[string][]byte)
	nT := int64(C.gguf_get_n_tensors(g))
	for i := int64(0); i < nT; i++ {
		name := C.gguf_get_tensor_name(g, C.int64_t(i))
		t := C.ggml_get_tensor(data, name)
		if t == nil || t.data == nil {
			return nil, fmt.Errorf("ggml: %s: tensor %q has no data", path, C.GoString(name))
		}
		out[C.GoString(name)] = C.GoBytes(t.data, C.int(C.ggml_nbytes(t)))
	}
	return out, nil
}

func readGGUFKV(g *C.struct_gguf_context, id C.int64_t) (GGUFKV, error) {
	kv := GGUFKV{Key: C.GoString(C.gguf_get_key(g, id)), Type: int(C.gguf_get_kv_type(g, id))}
	switch kv.Type {
	case GGUFTypeUint8:
		kv.Value = uint8(C.gguf_get_val_u8(g, id))
	case GGUFTypeInt8:
		kv.Value = int8(C.gguf_get_val_i8(g, id))
	case GGUFTypeUint16:
		kv.Value = uint16(C.gguf_get_val_u16(g, id))
	case GGUFTypeInt16:
		kv.Value = int16(C.gguf_get_val_i16(g, id))
	case GGUFTypeUint32:
		kv.Value = uint32(C.gguf_get_val_u32(g, id))
	case GGUFTypeInt32:
		kv.Value = int32(C.gguf_get_val_i32(g, id))
	case GGUFTypeFloat32:
		kv.Value = float32(C.gguf_get_val_f32(g, id))
	case GGUFTypeBool:
		kv.Value = bool(C.gguf_get_val_bool(g, id))
	case GGUFTypeString:
		kv.Value = C.GoString(C.gguf_get_val_str(g, id))
	case GGUFTypeUint64:
		kv.Value = uint64(C.gguf_get_val_u64(g, id))
	case GGUFTypeInt64:
		kv.Value = int64(C.gguf_get_val_i64(g, id))
	case GGUFTypeFloat64:
		kv.Value = float64(C.gguf_get_val_f64(g, id))
	case GGUFTypeArray:
		kv.ElemType = int(C.gguf_get_arr_type(g, id))
		n := int(C.gguf_get_arr_n(g, id))
		if kv.ElemType == GGUFTypeString {
			s := make([]string, n)
			for j := range s {
				s[j] = C.GoString(C.gguf_get_arr_str(g, id, C.size_t(j)))
			}
			kv.Value = s
			break
		}
		size := ggufScalarSize(kv.ElemType)
		if size == 0 {
			return kv, fmt.Errorf("key %q: array of unknown element type %d", kv.Key, kv.ElemType)
		}
		var raw []byte
		if n > 0 {
			raw = C.GoBytes(C.gguf_get_arr_data(g, id), C.int(n*size))
		}
		kv.Value = decodeGGUFArray(kv.ElemType, raw, n)
	default:
		return kv, fmt.Errorf("key %q: unknown value type %d", kv.Key, kv.Type)
	}
	return kv, nil
}

// ggufScalarSize is gguf_type_size for the fixed-size value types; 0 otherwise.
func ggufScalarSize(t int) int {
	switch t {
	case GGUFTypeUint8, GGUFTypeInt8, GGUFTypeBool:
		return 1
	case GGUFTypeUint16, GGUFTypeInt16:
		return 2
	case GGUFTypeUint32, GGUFTypeInt32, GGUFTypeFloat32:
		return 4
	case GGUFTypeUint64, GGUFTypeInt64, GGUFTypeFloat64:
		return 8
	}
	return 0
}

// decodeGGUFArray decodes n little-endian elements (ggml stores arrays in host order; every
// platform ggml builds for here is little-endian).
func decodeGGUFArray(t int, raw []byte, n int) any {
	le := binary.LittleEndian
	switch t {
	case GGUFTypeUint8:
		return append([]uint8{}, raw...)
	case GGUFTypeInt8:
		out := make([]int8, n)
		for i := range out {
			out[i] = int8(raw[i])
		}
		return out
	case GGUFTypeBool:
		out := make([]bool, n)
		for i := range out {
			out[i] = raw[i] != 0
		}
		return out
	case GGUFTypeUint16:
		out := make([]uint16, n)
		for i := range out {
			out[i] = le.Uint16(raw[2*i:])
		}
		return out
	case GGUFTypeInt16:
		out := make([]int16, n)
		for i := range out {
			out[i] = int16(le.Uint16(raw[2*i:]))
		}
		return out
	case GGUFTypeUint32:
		out := make([]uint32, n)
		for i := range out {
			out[i] = le.Uint32(raw[4*i:])
		}
		return out
	case GGUFTypeInt32:
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(le.Uint32(raw[4*i:]))
		}
		return out
	case GGUFTypeFloat32:
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
		}
		return out
	case GGUFTypeUint64:
		out := make([]uint64, n)
		for i := range out {
			out[i] = le.Uint64(raw[8*i:])
		}
		return out
	case GGUFTypeInt64:
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(le.Uint64(raw[8*i:]))
		}
		return out
	case GGUFTypeFloat64:
		out := make([]float64, n)
		for i := range out {
			out[i] = math.Float64frombits(le.Uint64(raw[8*i:]))
		}
		return out
	}
	return nil
}

// GGUFTensorData is one tensor for WriteGGUFFile.
type GGUFTensorData struct {
	Name  string
	Type  Type
	Shape []int64 // ggml order, 1 to 4 positive dimensions
	Data  []byte  // exactly ggml_nbytes bytes
}

// ggufDefaultAlignment is GGUF_DEFAULT_ALIGNMENT.
const ggufDefaultAlignment = C.GGUF_DEFAULT_ALIGNMENT

// WriteGGUFFile writes a GGUF file with ggml's own C writer (gguf_init_empty, gguf_set_*,
// gguf_add_tensor, gguf_write_to_file), for cross-checking the pure-Go gguf package. Pairs and
// tensors keep the given order. Everything ggml would abort on is checked in Go first: empty,
// duplicate or NUL-holding keys and strings, a "general.alignment" that is not a u32 power of
// two, duplicate or over-long tensor names, unknown types, bad shapes and wrong data sizes.
//
// ggml's writer always lays out data at the alignment of its context, which for a fresh context
// is 32 whatever "general.alignment" says. For another alignment this function starts from a
// context read back (gguf_init_from_file) from a header holding only that key, whose alignment
// ggml then uses.
func WriteGGUFFile(path string, kvs []GGUFKV, tensors []GGUFTensorData) (err error) {
	alignment, err := checkGGUFWrite(kvs, tensors)
	if err != nil {
		return fmt.Errorf("ggml: %s: %w", path, err)
	}
	var g *C.struct_gguf_context
	if alignment == ggufDefaultAlignment {
		g = C.gguf_init_empty()
	} else {
		g, err = ggufContextWithAlignment(path, alignment)
		if err != nil {
			return err
		}
	}
	defer C.gguf_free(g)

	var cfree []unsafe.Pointer
	defer func() {
		for _, p := range cfree {
			C.free(p)
		}
	}()
	cstr := func(s string) *C.char {
		p := C.CString(s)
		cfree = append(cfree, unsafe.Pointer(p))
		return p
	}
	for _, kv := range kvs {
		setGGUFKV(g, cstr(kv.Key), kv, cstr)
	}

	var ctx *C.struct_ggml_context
	if len(tensors) > 0 {
		ctx = C.ggml_init(C.struct_ggml_init_params{
			mem_size:   C.size_t(len(tensors)) * C.ggml_tensor_overhead(),
			mem_buffer: nil,
			no_alloc:   true,
		})
		if ctx == nil {
			return fmt.Errorf("ggml: %s: ggml_init failed", path)
		}
		defer C.ggml_free(ctx)
	}
	for _, td := range tensors {
		var ne [MaxDims]C.int64_t
		for i, d := range td.Shape {
			ne[i] = C.int64_t(d)
		}
		t := C.ggml_new_tensor(ctx, C.enum_ggml_type(td.Type), C.int(len(td.Shape)), &ne[0])
		if t == nil {
			return fmt.Errorf("ggml: %s: tensor %q: ggml_new_tensor failed", path, td.Name)
		}
		name := cstr(td.Name)
		C.ggml_set_name(t, name)
		C.gguf_add_tensor(g, t)
		data := C.CBytes(td.Data)
		cfree = append(cfree, data)
		C.gguf_set_tensor_data(g, name, data)
	}
	if !C.gguf_write_to_file(g, cstr(path), false) {
		os.Remove(path)
		return fmt.Errorf("ggml: %s: gguf_write_to_file failed", path)
	}
	return nil
}

// ggufContextWithAlignment returns a context whose data alignment is a: ggml sets it only when
// reading, so a header holding just "general.alignment" is written and read back.
func ggufContextWithAlignment(path string, a uint32) (*C.struct_gguf_context, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ggml-align-*.gguf")
	if err != nil {
		return nil, fmt.Errorf("ggml: %s: %w", path, err)
	}
	tmpName := tmp.Name()
	tmp.Close()
	defer os.Remove(tmpName)
	cname := C.CString(tmpName)
	defer C.free(unsafe.Pointer(cname))
	ckey := C.CString("general.alignment")
	defer C.free(unsafe.Pointer(ckey))
	seed := C.gguf_init_empty()
	C.gguf_set_val_u32(seed, ckey, C.uint32_t(a))
	ok := C.gguf_write_to_file(seed, cname, true)
	C.gguf_free(seed)
	if !ok {
		return nil, fmt.Errorf("ggml: %s: writing the alignment header failed", path)
	}
	g := C.idefics2_gguf_open(cname, nil, 0)
	if g == nil {
		return nil, fmt.Errorf("ggml: %s: reading the alignment header back failed", path)
	}
	if uint64(C.gguf_get_alignment(g)) != uint64(a) {
		C.gguf_free(g)
		return nil, fmt.Errorf("ggml: %s: alignment %d did not take", path, a)
	}
	return g, nil
}

// setGGUFKV stores one checked pair. gguf_set_* replaces an existing key by appending, so
// setting the keys in order reproduces the order even when the context already holds
// "general.alignment".
func setGGUFKV(g *C.struct_gguf_context, key *C.char, kv GGUFKV, cstr func(string) *C.char) {
	switch v := kv.Value.(type) {
	case uint8:
		C.gguf_set_val_u8(g, key, C.uint8_t(v))
	case int8:
		C.gguf_set_val_i8(g, key, C.int8_t(v))
	case uint16:
		C.gguf_set_val_u16(g, key, C.uint16_t(v))
	case int16:
		C.gguf_set_val_i16(g, key, C.int16_t(v))
	case uint32:
		C.gguf_set_val_u32(g, key, C.uint32_t(v))
	case int32:
		C.gguf_set_val_i32(g, key, C.int32_t(v))
	case float32:
		C.gguf_set_val_f32(g, key, C.float(v))
	case bool:
		C.gguf_set_val_bool(g, key, C.bool(v))
	case string:
		C.gguf_set_val_str(g, key, cstr(v))
	case uint64:
		C.gguf_set_val_u64(g, key, C.uint64_t(v))
	case int64:
		C.gguf_set_val_i64(g, key, C.int64_t(v))
	case float64:
		C.gguf_set_val_f64(g, key, C.double(v))
	case []string:
		arr := (**C.char)(C.malloc(C.size_t(max(len(v), 1)) * C.size_t(unsafe.Sizeof((*C.char)(nil)))))
		defer C.free(unsafe.Pointer(arr))
		ptrs := unsafe.Slice(arr, max(len(v), 1))
		for i, s := range v {
			ptrs[i] = cstr(s)
		}
		C.gguf_set_arr_str(g, key, arr, C.size_t(len(v)))
	default:
		raw, n := encodeGGUFArray(v)
		var p unsafe.Pointer
		if len(raw) > 0 {
			p = C.CBytes(raw)
			defer C.free(p)
		}
		C.gguf_set_arr_data(g, key, C.enum_gguf_type(kv.ElemType), p, C.size_t(n))
	}
}

// encodeGGUFArray encodes a numeric or bool slice little-endian (bools as one byte each).
func encodeGGUFArray(v any) ([]byte, int) {
	var b []byte
	le := binary.LittleEndian
	switch x := v.(type) {
	case []uint8:
		return append([]byte{}, x...), len(x)
	case []int8:
		for _, e := range x {
			b = append(b, byte(e))
		}
		return b, len(x)
	case []bool:
		for _, e := range x {
			if e {
				b = append(b, 1)
			} else {
				b = append(b, 0)
			}
		}
		return b, len(x)
	case []uint16:
		for _, e := range x {
			b = le.AppendUint16(b, e)
		}
		return b, len(x)
	case []int16:
		for _, e := range x {
			b = le.AppendUint16(b, uint16(e))
		}
		return b, len(x)
	case []uint32:
		for _, e := range x {
			b = le.AppendUint32(b, e)
		}
		return b, len(x)
	case []int32:
		for _, e := range x {
			b = le.AppendUint32(b, uint32(e))
		}
		return b, len(x)
	case []float32:
		for _, e := range x {
			b = le.AppendUint32(b, math.Float32bits(e))
		}
		return b, len(x)
	case []uint64:
		for _, e := range x {
			b = le.AppendUint64(b, e)
		}
		return b, len(x)
	case []int64:
		for _, e := range x {
			b = le.AppendUint64(b, uint64(e))
		}
		return b, len(x)
	case []float64:
		for _, e := range x {
			b = le.AppendUint64(b, math.Float64bits(e))
		}
		return b, len(x)
	}
	return nil, 0
}

// ggufGoType names the Go type a value of type t must have (arrays: the element type's slice).
func ggufGoType(t int, array bool) string {
	names := map[int]string{
		GGUFTypeUint8: "uint8", GGUFTypeInt8: "int8", GGUFTypeUint16: "uint16", GGUFTypeInt16: "int16",
		GGUFTypeUint32: "uint32", GGUFTypeInt32: "int32", GGUFTypeFloat32: "float32", GGUFTypeBool: "bool",
		GGUFTypeString: "string", GGUFTypeUint64: "uint64", GGUFTypeInt64: "int64", GGUFTypeFloat64: "float64",
	}
	n, ok := names[t]
	if !ok {
		return ""
	}
	if array {
		return "[]" + n
	}
	return n
}

// checkGGUFWrite validates everything gguf.cpp would assert on and returns the alignment.
func checkGGUFWrite(kvs []GGUFKV, tensors []GGUFTensorData) (uint32, error) {
	alignment := uint32(ggufDefaultAlignment)
	keys := make(map[string]bool, len(kvs))
	for _, kv := range kvs {
		if kv.Key == "" || hasNUL(kv.Key) {
			return 0, fmt.Errorf("key %q: empty or holds a NUL byte", kv.Key)
		}
		if keys[kv.Key] {
			return 0, fmt.Errorf("key %q set twice", kv.Key)
		}
		keys[kv.Key] = true
		isArr := kv.Type == GGUFTypeArray
		t := kv.Type
		if isArr {
			t = kv.ElemType
		}
		want := ggufGoType(t, isArr)
		if want == "" {
			return 0, fmt.Errorf("key %q: value type %d / element type %d not writable by ggml (nested arrays are not supported)", kv.Key, kv.Type, kv.ElemType)
		}
		if got := fmt.Sprintf("%T", kv.Value); got != want {
			return 0, fmt.Errorf("key %q: Go value of type %s, want %s", kv.Key, got, want)
		}
		switch v := kv.Value.(type) {
		case string:
			if hasNUL(v) {
				return 0, fmt.Errorf("key %q: string holds a NUL byte", kv.Key)
			}
		case []string:
			for i, s := range v {
				if hasNUL(s) {
					return 0, fmt.Errorf("key %q: element %d holds a NUL byte", kv.Key, i)
				}
			}
		}
		if kv.Key == "general.alignment" {
			a, ok := kv.Value.(uint32)
			if !ok || isArr || a == 0 || a&(a-1) != 0 {
				return 0, fmt.Errorf(`key "general.alignment" must be a u32 power of two, got %v`, kv.Value)
			}
			alignment = a
		}
	}
	names := make(map[string]bool, len(tensors))
	for _, td := range tensors {
		if td.Name == "" || len(td.Name) >= C.GGML_MAX_NAME || hasNUL(td.Name) {
			return 0, fmt.Errorf("tensor %q: name empty, longer than %d bytes or holding a NUL byte", td.Name, C.GGML_MAX_NAME-1)
		}
		if names[td.Name] {
			return 0, fmt.Errorf("tensor %q added twice", td.Name)
		}
		names[td.Name] = true
		if !td.Type.Valid() {
			return 0, fmt.Errorf("tensor %q: unknown type %d", td.Name, int(td.Type))
		}
		if len(td.Shape) == 0 || len(td.Shape) > MaxDims {
			return 0, fmt.Errorf("tensor %q: %d dimensions, want 1 to %d", td.Name, len(td.Shape), MaxDims)
		}
		elems := int64(1)
		for i, d := range td.Shape {
			if d <= 0 || elems > math.MaxInt64/d {
				return 0, fmt.Errorf("tensor %q: dimension %d is %d (or the element count overflows)", td.Name, i, d)
			}
			elems *= d
		}
		if td.Shape[0]%int64(td.Type.BlockSize()) != 0 {
			return 0, fmt.Errorf("tensor %q: ne0 %d is not a multiple of the %s block size %d", td.Name, td.Shape[0], td.Type, td.Type.BlockSize())
		}
		want := elems / int64(td.Type.BlockSize()) * int64(td.Type.TypeSize())
		if int64(len(td.Data)) != want {
			return 0, fmt.Errorf("tensor %q: %d bytes of data, want %d", td.Name, len(td.Data), want)
		}
	}
	return alignment, nil
}

func hasNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}
