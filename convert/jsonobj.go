package convert

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
)

// maxJSONSize bounds any JSON file read from a checkpoint folder. The largest one is
// tokenizer.json (about 2 MB for a 32k vocabulary, under 20 MB for 250k-entry vocabularies).
const maxJSONSize = 256 << 20

// jsonObject is one JSON object of a checkpoint file, with the file name and the key path used
// in error messages ("config.json: text_config.hidden_size: …").
type jsonObject struct {
	file   string // base name, e.g. "config.json"
	prefix string // key path of this object followed by a dot, "" for the top level
	m      map[string]json.RawMessage
}

// readFileLimited reads a whole file of at most limit bytes.
func readFileLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return data, nil
}

// readJSONObject reads dir/name as a JSON object. A missing file gives (nil, false, nil) when
// optional is set and an InputError otherwise.
func readJSONObject(dir, name string, optional bool) (*jsonObject, bool, error) {
	data, err := readFileLimited(filepath.Join(dir, name), maxJSONSize)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if optional {
				return nil, false, nil
			}
			return nil, false, inputErrorf("convert: %s: missing from %s", name, dir)
		}
		return nil, false, inputErrorf("convert: %s: %v", name, err)
	}
	o, err := parseJSONObject(name, data)
	if err != nil {
		return nil, false, err
	}
	return o, true, nil
}

// parseJSONObject parses data as one JSON object.
func parseJSONObject(file string, data []byte) (*jsonObject, error) {
	var m map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&m); err != nil {
		return nil, inputErrorf("convert: %s: not a JSON object: %v", file, err)
	}
	if m == nil {
		return nil, inputErrorf("convert: %s: not a JSON object: null", file)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, inputErrorf("convert: %s: trailing data after the JSON object", file)
	}
	return &jsonObject{file: file, m: m}, nil
}

// path returns the full key path of key for messages.
func (o *jsonObject) path(key string) string { return o.prefix + key }

// errorf formats an InputError about key.
func (o *jsonObject) errorf(key, format string, args ...any) error {
	return inputErrorf("convert: %s: %s: %s", o.file, o.path(key), fmt.Sprintf(format, args...))
}

// has reports whether key is present and not null.
func (o *jsonObject) has(key string) bool {
	raw, ok := o.m[key]
	return ok && !isNull(raw)
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// object returns the sub-object under key; absent or null gives (nil, false, nil).
func (o *jsonObject) object(key string) (*jsonObject, bool, error) {
	if !o.has(key) {
		return nil, false, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(o.m[key], &m); err != nil || m == nil {
		return nil, false, o.errorf(key, "not a JSON object")
	}
	return &jsonObject{file: o.file, prefix: o.path(key) + ".", m: m}, true, nil
}

// optional decodes key into a T; absent or null gives (zero, false, nil).
func optional[T any](o *jsonObject, key string) (T, bool, error) {
	var v T
	if !o.has(key) {
		return v, false, nil
	}
	if err := json.Unmarshal(o.m[key], &v); err != nil {
		return v, false, o.errorf(key, "%s is not a %T", truncate(string(o.m[key]), 40), v)
	}
	return v, true, nil
}

// required decodes key into a T; absent or null is an error naming the file and key.
func required[T any](o *jsonObject, key string) (T, error) {
	v, ok, err := optional[T](o, key)
	if err != nil {
		return v, err
	}
	if !ok {
		return v, o.errorf(key, "missing")
	}
	return v, nil
}

// withDefault decodes key into a T, or returns def when the key is absent or null. Callers
// document in a comment which HF class default def is.
func withDefault[T any](o *jsonObject, key string, def T) (T, error) {
	v, ok, err := optional[T](o, key)
	if err != nil || !ok {
		return def, err
	}
	return v, nil
}

// maxConfigInt bounds every size and count read from a config file. The largest real values
// are vocabularies of a few hundred thousand entries; the bound keeps products of sizes far from
// overflow and keeps a hostile config from driving huge allocations (padding the vocabulary,
// expanding per-layer tensor names).
const maxConfigInt = 1 << 24

// positive reads a required integer that must be in 1..maxConfigInt.
func positive(o *jsonObject, key string) (int, error) {
	v, err := required[int](o, key)
	if err != nil {
		return 0, err
	}
	return checkPositive(o, key, v)
}

// positiveDefault reads an integer that must be in 1..maxConfigInt, def when absent.
func positiveDefault(o *jsonObject, key string, def int) (int, error) {
	v, err := withDefault(o, key, def)
	if err != nil {
		return 0, err
	}
	return checkPositive(o, key, v)
}

func checkPositive(o *jsonObject, key string, v int) (int, error) {
	if v <= 0 {
		return 0, o.errorf(key, "%d is not positive", v)
	}
	if v > maxConfigInt {
		return 0, o.errorf(key, "%d is larger than %d", v, maxConfigInt)
	}
	return v, nil
}

// positiveFloatDefault reads a float that must be > 0 and finite as a float32 (GGUF stores
// epsilons and rope_theta as f32), def when absent.
func positiveFloatDefault(o *jsonObject, key string, def float64) (float64, error) {
	v, err := withDefault(o, key, def)
	if err != nil {
		return 0, err
	}
	if !positiveFloat32(v) {
		return 0, o.errorf(key, "%v is not a positive finite float32 number", v)
	}
	return v, nil
}

// positiveFloat32 reports whether v stays positive and finite when rounded to float32: 1e70
// would become +Inf and 1e-50 would become 0.
func positiveFloat32(v float64) bool {
	f := float32(v)
	return v > 0 && f > 0 && !math.IsInf(float64(f), 0)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
