package gguf

import (
	"fmt"
	"strconv"
	"strings"
)

// ValueType is the type id of a GGUF metadata value (enum gguf_type in gguf.h).
type ValueType uint32

// Metadata value types, with the ids of enum gguf_type.
const (
	ValueUint8   ValueType = 0
	ValueInt8    ValueType = 1
	ValueUint16  ValueType = 2
	ValueInt16   ValueType = 3
	ValueUint32  ValueType = 4
	ValueInt32   ValueType = 5
	ValueFloat32 ValueType = 6
	ValueBool    ValueType = 7
	ValueString  ValueType = 8
	ValueArray   ValueType = 9
	ValueUint64  ValueType = 10
	ValueInt64   ValueType = 11
	ValueFloat64 ValueType = 12
)

// valueTypeNames are the names gguf_type_name returns.
var valueTypeNames = [...]string{"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64"}

// String returns ggml's short name of the type ("u32", "str", "arr", …) or "valuetype(N)".
func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("valuetype(%d)", uint32(t))
}

// Valid reports whether t is one of the thirteen GGUF value types.
func (t ValueType) Valid() bool { return t <= ValueFloat64 }

// size returns the encoded size of one scalar of type t, 0 for strings and arrays.
func (t ValueType) size() int {
	switch t {
	case ValueUint8, ValueInt8, ValueBool:
		return 1
	case ValueUint16, ValueInt16:
		return 2
	case ValueUint32, ValueInt32, ValueFloat32:
		return 4
	case ValueUint64, ValueInt64, ValueFloat64:
		return 8
	}
	return 0
}

// minSize returns the fewest bytes one element of type t can occupy: a string is at least its
// u64 length, an array its u32 element type and u64 count.
func (t ValueType) minSize() int64 {
	switch t {
	case ValueString:
		return 8
	case ValueArray:
		return 12
	}
	return int64(t.size())
}

// Value is one metadata value: its GGUF type and the Go value holding it.
//
// Data holds, by Type: uint8, int8, uint16, int16, uint32, int32, float32, bool, string, Array,
// uint64, int64 or float64.
type Value struct {
	Type ValueType
	Data any
}

// Array is a GGUF array value. Data holds, by Elem: []uint8, []int8, []uint16, []int16, []uint32,
// []int32, []float32, []bool, []string, []uint64, []int64, []float64 or, for nested arrays
// (Elem == ValueArray), []Array whose elements may each have their own element type.
type Array struct {
	Elem ValueType
	Data any
}

// Len returns the number of elements of the array.
func (a Array) Len() int {
	switch d := a.Data.(type) {
	case []uint8:
		return len(d)
	case []int8:
		return len(d)
	case []uint16:
		return len(d)
	case []int16:
		return len(d)
	case []uint32:
		return len(d)
	case []int32:
		return len(d)
	case []float32:
		return len(d)
	case []bool:
		return len(d)
	case []string:
		return len(d)
	case []uint64:
		return len(d)
	case []int64:
		return len(d)
	case []float64:
		return len(d)
	case []Array:
		return len(d)
	}
	return 0
}

// TypeName describes the type of v as in error messages and dumps: "u32", "str",
// "arr[str]", "arr[arr]".
func (v Value) TypeName() string {
	if v.Type != ValueArray {
		return v.Type.String()
	}
	a, ok := v.Data.(Array)
	if !ok {
		return "arr"
	}
	return "arr[" + a.Elem.String() + "]"
}

// NewValue converts a Go value into a metadata value. It accepts the fixed-width Go types that
// match GGUF types (uint8…uint64, int8…int64, float32, float64, bool, string), slices of them,
// Array, []Array and Value. int and uint are refused: their width would pick the GGUF type
// silently, and readers such as llama.cpp check the exact type of many keys.
func NewValue(v any) (Value, error) {
	switch x := v.(type) {
	case Value:
		if err := x.check(0); err != nil {
			return Value{}, err
		}
		return x, nil
	case uint8:
		return Value{ValueUint8, x}, nil
	case int8:
		return Value{ValueInt8, x}, nil
	case uint16:
		return Value{ValueUint16, x}, nil
	case int16:
		return Value{ValueInt16, x}, nil
	case uint32:
		return Value{ValueUint32, x}, nil
	case int32:
		return Value{ValueInt32, x}, nil
	case float32:
		return Value{ValueFloat32, x}, nil
	case bool:
		return Value{ValueBool, x}, nil
	case string:
		return Value{ValueString, x}, nil
	case uint64:
		return Value{ValueUint64, x}, nil
	case int64:
		return Value{ValueInt64, x}, nil
	case float64:
		return Value{ValueFloat64, x}, nil
	case int, uint, []int, []uint:
		return Value{}, fmt.Errorf("gguf: Go type %T has no fixed GGUF width; use int32, uint32, int64 or uint64", v)
	}
	a, err := NewArray(v)
	if err != nil {
		return Value{}, err
	}
	return Value{ValueArray, a}, nil
}

// NewArray converts a Go slice (or an Array) into an array value; see NewValue for the accepted
// element types. The slice is copied.
func NewArray(v any) (Array, error) {
	var a Array
	switch x := v.(type) {
	case Array:
		a = x
	case []uint8:
		a = Array{ValueUint8, append([]uint8{}, x...)}
	case []int8:
		a = Array{ValueInt8, append([]int8{}, x...)}
	case []uint16:
		a = Array{ValueUint16, append([]uint16{}, x...)}
	case []int16:
		a = Array{ValueInt16, append([]int16{}, x...)}
	case []uint32:
		a = Array{ValueUint32, append([]uint32{}, x...)}
	case []int32:
		a = Array{ValueInt32, append([]int32{}, x...)}
	case []float32:
		a = Array{ValueFloat32, append([]float32{}, x...)}
	case []bool:
		a = Array{ValueBool, append([]bool{}, x...)}
	case []string:
		a = Array{ValueString, append([]string{}, x...)}
	case []uint64:
		a = Array{ValueUint64, append([]uint64{}, x...)}
	case []int64:
		a = Array{ValueInt64, append([]int64{}, x...)}
	case []float64:
		a = Array{ValueFloat64, append([]float64{}, x...)}
	case []Array:
		a = Array{ValueArray, append([]Array{}, x...)}
	default:
		return Array{}, fmt.Errorf("gguf: Go type %T has no GGUF metadata type", v)
	}
	if err := (Value{ValueArray, a}).check(0); err != nil {
		return Array{}, err
	}
	return a, nil
}

// maxNesting bounds the depth of nested arrays, in the reader and the writer; real files use at
// most one level and the bound keeps recursion shallow on hostile input.
const maxNesting = 32

// check verifies that Data has the Go type Type promises, recursively for arrays.
func (v Value) check(depth int) error {
	ok := false
	switch v.Type {
	case ValueUint8:
		_, ok = v.Data.(uint8)
	case ValueInt8:
		_, ok = v.Data.(int8)
	case ValueUint16:
		_, ok = v.Data.(uint16)
	case ValueInt16:
		_, ok = v.Data.(int16)
	case ValueUint32:
		_, ok = v.Data.(uint32)
	case ValueInt32:
		_, ok = v.Data.(int32)
	case ValueFloat32:
		_, ok = v.Data.(float32)
	case ValueBool:
		_, ok = v.Data.(bool)
	case ValueString:
		_, ok = v.Data.(string)
	case ValueUint64:
		_, ok = v.Data.(uint64)
	case ValueInt64:
		_, ok = v.Data.(int64)
	case ValueFloat64:
		_, ok = v.Data.(float64)
	case ValueArray:
		a, isArr := v.Data.(Array)
		if !isArr {
			break
		}
		return a.check(depth + 1)
	default:
		return fmt.Errorf("gguf: unknown value type %d", uint32(v.Type))
	}
	if !ok {
		return fmt.Errorf("gguf: value of type %s holds Go type %T", v.Type, v.Data)
	}
	return nil
}

func (a Array) check(depth int) error {
	if depth > maxNesting {
		return fmt.Errorf("gguf: arrays nested deeper than %d", maxNesting)
	}
	ok := false
	switch a.Elem {
	case ValueUint8:
		_, ok = a.Data.([]uint8)
	case ValueInt8:
		_, ok = a.Data.([]int8)
	case ValueUint16:
		_, ok = a.Data.([]uint16)
	case ValueInt16:
		_, ok = a.Data.([]int16)
	case ValueUint32:
		_, ok = a.Data.([]uint32)
	case ValueInt32:
		_, ok = a.Data.([]int32)
	case ValueFloat32:
		_, ok = a.Data.([]float32)
	case ValueBool:
		_, ok = a.Data.([]bool)
	case ValueString:
		_, ok = a.Data.([]string)
	case ValueUint64:
		_, ok = a.Data.([]uint64)
	case ValueInt64:
		_, ok = a.Data.([]int64)
	case ValueFloat64:
		_, ok = a.Data.([]float64)
	case ValueArray:
		inner, isArr := a.Data.([]Array)
		if !isArr {
			break
		}
		for i, e := range inner {
			if err := e.check(depth + 1); err != nil {
				return fmt.Errorf("gguf: array element %d: %w", i, stripPrefix(err))
			}
		}
		return nil
	default:
		return fmt.Errorf("gguf: unknown array element type %d", uint32(a.Elem))
	}
	if !ok {
		return fmt.Errorf("gguf: array of %s holds Go type %T", a.Elem, a.Data)
	}
	return nil
}

// String formats the value for dumps: numbers in Go syntax, strings quoted, arrays in brackets
// with every element. Use Format to abbreviate long arrays.
func (v Value) String() string { return v.Format(-1) }

// Format formats the value like String but shows at most maxElems elements of each array
// (all when maxElems < 0), followed by ", ... (N more)".
func (v Value) Format(maxElems int) string {
	var b strings.Builder
	formatValue(&b, v, maxElems)
	return b.String()
}

func formatValue(b *strings.Builder, v Value, maxElems int) {
	switch x := v.Data.(type) {
	case Array:
		formatArray(b, x, maxElems)
	case string:
		b.WriteString(strconv.Quote(x))
	case float32:
		b.WriteString(formatFloat(float64(x), 32))
	case float64:
		b.WriteString(formatFloat(x, 64))
	default:
		fmt.Fprint(b, x)
	}
}

func formatFloat(f float64, bitSize int) string {
	return strconv.FormatFloat(f, 'g', -1, bitSize)
}

func formatArray(b *strings.Builder, a Array, maxElems int) {
	n := a.Len()
	shown := n
	if maxElems >= 0 && shown > maxElems {
		shown = maxElems
	}
	b.WriteByte('[')
	for i := 0; i < shown; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		formatValue(b, a.elem(i), maxElems)
	}
	if shown < n {
		if shown > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(b, "... (%d more)", n-shown)
	}
	b.WriteByte(']')
}

// elem returns element i as a Value; i must be in range.
func (a Array) elem(i int) Value {
	switch d := a.Data.(type) {
	case []uint8:
		return Value{a.Elem, d[i]}
	case []int8:
		return Value{a.Elem, d[i]}
	case []uint16:
		return Value{a.Elem, d[i]}
	case []int16:
		return Value{a.Elem, d[i]}
	case []uint32:
		return Value{a.Elem, d[i]}
	case []int32:
		return Value{a.Elem, d[i]}
	case []float32:
		return Value{a.Elem, d[i]}
	case []bool:
		return Value{a.Elem, d[i]}
	case []string:
		return Value{a.Elem, d[i]}
	case []uint64:
		return Value{a.Elem, d[i]}
	case []int64:
		return Value{a.Elem, d[i]}
	case []float64:
		return Value{a.Elem, d[i]}
	case []Array:
		return Value{ValueArray, d[i]}
	}
	return Value{}
}
