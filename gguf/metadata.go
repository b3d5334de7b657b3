package gguf

import (
	"fmt"
	"math"
)

// KV is one metadata key-value pair, in file order.
type KV struct {
	Key   string
	Value Value
}

// Metadata is the ordered key-value section of a GGUF file with typed accessors. The zero value
// is empty. Accessors return the stored slices without copying; callers must not modify them.
type Metadata struct {
	kvs   []KV
	index map[string]int
}

// NewMetadata builds a Metadata from pairs in order; keys must be unique and values well-formed.
func NewMetadata(kvs []KV) (Metadata, error) {
	m := Metadata{kvs: kvs, index: make(map[string]int, len(kvs))}
	for i, kv := range kvs {
		if _, dup := m.index[kv.Key]; dup {
			return Metadata{}, fmt.Errorf("gguf: duplicate metadata key %q", kv.Key)
		}
		if err := kv.Value.check(0); err != nil {
			return Metadata{}, fmt.Errorf("gguf: key %q: %w", kv.Key, stripPrefix(err))
		}
		m.index[kv.Key] = i
	}
	return m, nil
}

// KVs returns the pairs in file order.
func (m Metadata) KVs() []KV { return m.kvs }

// Len returns the number of pairs.
func (m Metadata) Len() int { return len(m.kvs) }

// Keys returns the keys in file order.
func (m Metadata) Keys() []string {
	keys := make([]string, len(m.kvs))
	for i, kv := range m.kvs {
		keys[i] = kv.Key
	}
	return keys
}

// Get returns the value of key and whether it is present.
func (m Metadata) Get(key string) (Value, bool) {
	i, ok := m.index[key]
	if !ok {
		return Value{}, false
	}
	return m.kvs[i].Value, true
}

// Has reports whether key is present.
func (m Metadata) Has(key string) bool {
	_, ok := m.index[key]
	return ok
}

// KeyError is returned by the typed accessors for an absent key (errors.Is ErrKeyNotFound) or a
// key of another type (errors.Is ErrWrongType).
type KeyError struct {
	Key  string
	Want string // the type asked for, e.g. "u32" or "arr[str]"
	Got  string // the type found, "" when the key is absent
}

// Error formats the error as `gguf: key "K" not found` or `gguf: key "K" is GOT, want WANT`.
func (e *KeyError) Error() string {
	if e.Got == "" {
		return fmt.Sprintf("gguf: key %q not found (want %s)", e.Key, e.Want)
	}
	return fmt.Sprintf("gguf: key %q is %s, want %s", e.Key, e.Got, e.Want)
}

// Is matches ErrKeyNotFound or ErrWrongType.
func (e *KeyError) Is(target error) bool {
	if e.Got == "" {
		return target == ErrKeyNotFound
	}
	return target == ErrWrongType
}

// scalar fetches key as a scalar of type want.
func scalar[T any](m Metadata, key string, want ValueType) (T, error) {
	var zero T
	v, ok := m.Get(key)
	if !ok {
		return zero, &KeyError{Key: key, Want: want.String()}
	}
	x, ok := v.Data.(T)
	if v.Type != want || !ok {
		return zero, &KeyError{Key: key, Want: want.String(), Got: v.TypeName()}
	}
	return x, nil
}

// slice fetches key as an array of elem.
func slice[T any](m Metadata, key string, elem ValueType) ([]T, error) {
	want := "arr[" + elem.String() + "]"
	v, ok := m.Get(key)
	if !ok {
		return nil, &KeyError{Key: key, Want: want}
	}
	a, ok := v.Data.(Array)
	if v.Type != ValueArray || !ok || a.Elem != elem {
		return nil, &KeyError{Key: key, Want: want, Got: v.TypeName()}
	}
	x, ok := a.Data.([]T)
	if !ok {
		return nil, &KeyError{Key: key, Want: want, Got: v.TypeName()}
	}
	return x, nil
}

// String returns the string value of key.
func (m Metadata) String(key string) (string, error) { return scalar[string](m, key, ValueString) }

// Bool returns the bool value of key.
func (m Metadata) Bool(key string) (bool, error) { return scalar[bool](m, key, ValueBool) }

// Uint8 returns the u8 value of key.
func (m Metadata) Uint8(key string) (uint8, error) { return scalar[uint8](m, key, ValueUint8) }

// Uint16 returns the u16 value of key.
func (m Metadata) Uint16(key string) (uint16, error) { return scalar[uint16](m, key, ValueUint16) }

// Uint32 returns the u32 value of key.
func (m Metadata) Uint32(key string) (uint32, error) { return scalar[uint32](m, key, ValueUint32) }

// Uint64 returns the u64 value of key.
func (m Metadata) Uint64(key string) (uint64, error) { return scalar[uint64](m, key, ValueUint64) }

// Int8 returns the i8 value of key.
func (m Metadata) Int8(key string) (int8, error) { return scalar[int8](m, key, ValueInt8) }

// Int16 returns the i16 value of key.
func (m Metadata) Int16(key string) (int16, error) { return scalar[int16](m, key, ValueInt16) }

// Int32 returns the i32 value of key.
func (m Metadata) Int32(key string) (int32, error) { return scalar[int32](m, key, ValueInt32) }

// Int64 returns the i64 value of key.
func (m Metadata) Int64(key string) (int64, error) { return scalar[int64](m, key, ValueInt64) }

// Float32 returns the f32 value of key.
func (m Metadata) Float32(key string) (float32, error) {
	return scalar[float32](m, key, ValueFloat32)
}

// Float64 returns the f64 value of key.
func (m Metadata) Float64(key string) (float64, error) {
	return scalar[float64](m, key, ValueFloat64)
}

// Int returns the value of key stored as any integer type (u8…u64, i8…i64) when it fits in an
// int. Use it for sizes and counts that different writers store with different widths; use the
// exact accessors where a consumer such as llama.cpp requires one type.
func (m Metadata) Int(key string) (int, error) {
	const want = "integer"
	v, ok := m.Get(key)
	if !ok {
		return 0, &KeyError{Key: key, Want: want}
	}
	var n int64
	switch x := v.Data.(type) {
	case uint8:
		n = int64(x)
	case int8:
		n = int64(x)
	case uint16:
		n = int64(x)
	case int16:
		n = int64(x)
	case uint32:
		n = int64(x)
	case int32:
		n = int64(x)
	case int64:
		n = x
	case uint64:
		if x > math.MaxInt64 {
			return 0, fmt.Errorf("gguf: key %q: value %d does not fit in an int", key, x)
		}
		n = int64(x)
	default:
		return 0, &KeyError{Key: key, Want: want, Got: v.TypeName()}
	}
	if n != int64(int(n)) {
		return 0, fmt.Errorf("gguf: key %q: value %d does not fit in an int", key, n)
	}
	return int(n), nil
}

// Array returns the array value of key, of any element type.
func (m Metadata) Array(key string) (Array, error) {
	v, ok := m.Get(key)
	if !ok {
		return Array{}, &KeyError{Key: key, Want: "arr"}
	}
	a, ok := v.Data.(Array)
	if v.Type != ValueArray || !ok {
		return Array{}, &KeyError{Key: key, Want: "arr", Got: v.TypeName()}
	}
	return a, nil
}

// Strings returns the arr[str] value of key.
func (m Metadata) Strings(key string) ([]string, error) { return slice[string](m, key, ValueString) }

// Float32s returns the arr[f32] value of key.
func (m Metadata) Float32s(key string) ([]float32, error) {
	return slice[float32](m, key, ValueFloat32)
}

// Int32s returns the arr[i32] value of key.
func (m Metadata) Int32s(key string) ([]int32, error) { return slice[int32](m, key, ValueInt32) }

// Uint32s returns the arr[u32] value of key.
func (m Metadata) Uint32s(key string) ([]uint32, error) { return slice[uint32](m, key, ValueUint32) }

// Bools returns the arr[bool] value of key.
func (m Metadata) Bools(key string) ([]bool, error) { return slice[bool](m, key, ValueBool) }
