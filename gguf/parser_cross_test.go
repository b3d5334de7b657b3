package gguf

import (
	"fmt"
	"path/filepath"
	"reflect"
	"testing"

	ggufparser "github.com/gpustack/gguf-parser-go"
)

// TestGGUFParserGoReadsOurFiles cross-checks the Writer against an independent reader,
// github.com/gpustack/gguf-parser-go: same keys in order, value types and values, tensor names,
// types, shapes, offsets and data offset.
func TestGGUFParserGoReadsOurFiles(t *testing.T) {
	for _, align := range []uint32{DefaultAlignment, 64} {
		t.Run(fmt.Sprint(align), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "model.gguf")
			writeTestFile(t, path, WithAlignment(align))
			ours, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer ours.Close()
			theirs, err := ggufparser.ParseGGUFFile(path)
			if err != nil {
				t.Fatalf("gguf-parser-go: %v", err)
			}
			if v := uint32(theirs.Header.Version); v != ours.Version {
				t.Errorf("version %d, ours %d", v, ours.Version)
			}
			if theirs.TensorDataStartOffset != ours.DataOffset {
				t.Errorf("data offset %d, ours %d", theirs.TensorDataStartOffset, ours.DataOffset)
			}
			kvs := theirs.Header.MetadataKV
			if len(kvs) != len(ours.KV) {
				t.Fatalf("%d pairs, ours %d", len(kvs), len(ours.KV))
			}
			for i, kv := range kvs {
				want := ours.KV[i]
				got, err := fromParserValue(uint32(kv.ValueType), kv.Value)
				if err != nil {
					t.Fatalf("key %q: %v", kv.Key, err)
				}
				if kv.Key != want.Key || !reflect.DeepEqual(got, want.Value) {
					t.Errorf("pair %d: %q = %v, ours %q = %v", i, kv.Key, got, want.Key, want.Value)
				}
			}
			if len(theirs.TensorInfos) != len(ours.Tensors) {
				t.Fatalf("%d tensors, ours %d", len(theirs.TensorInfos), len(ours.Tensors))
			}
			for i, ti := range theirs.TensorInfos {
				want := ours.Tensors[i]
				if ti.Name != want.Name || uint32(ti.Type) != uint32(want.Type) ||
					!reflect.DeepEqual(ti.Dimensions, want.Shape) || ti.Offset != want.Offset {
					t.Errorf("tensor %d: %s %v %v @%d, ours %s %v %v @%d", i,
						ti.Name, ti.Type, ti.Dimensions, ti.Offset, want.Name, want.Type, want.Shape, want.Offset)
				}
				if got := ti.Bytes(); got != want.Size() {
					t.Errorf("tensor %q: %d bytes, ours %d", ti.Name, got, want.Size())
				}
			}
		})
	}
}

// fromParserValue converts a gguf-parser-go value into ours.
func fromParserValue(vt uint32, v any) (Value, error) {
	if ValueType(vt) != ValueArray {
		return Value{ValueType(vt), v}, nil
	}
	av, ok := v.(ggufparser.GGUFMetadataKVArrayValue)
	if !ok {
		return Value{}, fmt.Errorf("array value of Go type %T", v)
	}
	a, err := fromParserArray(av)
	return Value{ValueArray, a}, err
}

func fromParserArray(av ggufparser.GGUFMetadataKVArrayValue) (Array, error) {
	elem := ValueType(av.Type)
	if elem == ValueArray {
		out := make([]Array, len(av.Array))
		for i, e := range av.Array {
			inner, ok := e.(ggufparser.GGUFMetadataKVArrayValue)
			if !ok {
				return Array{}, fmt.Errorf("nested element of Go type %T", e)
			}
			a, err := fromParserArray(inner)
			if err != nil {
				return Array{}, err
			}
			out[i] = a
		}
		return Array{elem, out}, nil
	}
	var data any
	switch elem {
	case ValueUint8:
		data = typed[uint8](av.Array)
	case ValueInt8:
		data = typed[int8](av.Array)
	case ValueUint16:
		data = typed[uint16](av.Array)
	case ValueInt16:
		data = typed[int16](av.Array)
	case ValueUint32:
		data = typed[uint32](av.Array)
	case ValueInt32:
		data = typed[int32](av.Array)
	case ValueFloat32:
		data = typed[float32](av.Array)
	case ValueBool:
		data = typed[bool](av.Array)
	case ValueString:
		data = typed[string](av.Array)
	case ValueUint64:
		data = typed[uint64](av.Array)
	case ValueInt64:
		data = typed[int64](av.Array)
	case ValueFloat64:
		data = typed[float64](av.Array)
	default:
		return Array{}, fmt.Errorf("element type %d", av.Type)
	}
	if data == nil {
		return Array{}, fmt.Errorf("array of %s holds other Go types", elem)
	}
	return Array{elem, data}, nil
}

func typed[T any](in []any) any {
	out := make([]T, len(in))
	for i, e := range in {
		x, ok := e.(T)
		if !ok {
			return nil
		}
		out[i] = x
	}
	return out
}
