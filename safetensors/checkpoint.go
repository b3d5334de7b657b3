package safetensors

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Names of a Hugging Face checkpoint's weight files.
const (
	SingleFileName = "model.safetensors"
	IndexFileName  = "model.safetensors.index.json"
)

// maxIndexSize bounds the index JSON read into memory; real indexes are well under a megabyte
// per thousand tensors.
const maxIndexSize = 256 << 20

// Checkpoint is a set of safetensors files serving one name space: a single model.safetensors
// or the shards listed by model.safetensors.index.json.
type Checkpoint struct {
	Dir   string
	Files []*File // in shard-name order
	// IndexMetadata is the "metadata" object of the index (e.g. total_size); nil without an
	// index.
	IndexMetadata map[string]any

	shardOf map[string]*File
	names   []string
}

// OpenCheckpoint opens the weights of a Hugging Face checkpoint directory: the shards named by
// model.safetensors.index.json when it exists, otherwise model.safetensors. path may also name a
// single .safetensors file. With an index, every indexed tensor must exist in its shard and
// every tensor of a shard must be indexed to that shard, so no name is served twice.
func OpenCheckpoint(path string) (*Checkpoint, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if !st.IsDir() {
		f, err := Open(path)
		if err != nil {
			return nil, err
		}
		return single(filepath.Dir(path), f), nil
	}
	index := filepath.Join(path, IndexFileName)
	if _, err := os.Stat(index); err == nil {
		return openIndexed(path, index)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	file := filepath.Join(path, SingleFileName)
	if _, err := os.Stat(file); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("safetensors: %s: neither %s nor %s found", path, IndexFileName, SingleFileName)
		}
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	f, err := Open(file)
	if err != nil {
		return nil, err
	}
	return single(path, f), nil
}

func single(dir string, f *File) *Checkpoint {
	c := &Checkpoint{Dir: dir, Files: []*File{f}, shardOf: make(map[string]*File), names: f.Names()}
	for _, n := range c.names {
		c.shardOf[n] = f
	}
	return c
}

func openIndexed(dir, index string) (_ *Checkpoint, err error) {
	raw, err := readLimited(index, maxIndexSize)
	if err != nil {
		return nil, err
	}
	weightMap, meta, err := parseIndex(index, raw)
	if err != nil {
		return nil, err
	}
	c := &Checkpoint{Dir: dir, IndexMetadata: meta, shardOf: make(map[string]*File, len(weightMap))}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	// Work in sorted order so that errors are deterministic.
	indexed := make([]string, 0, len(weightMap))
	var shardNames []string
	seen := make(map[string]bool)
	for name, shard := range weightMap {
		indexed = append(indexed, name)
		if !seen[shard] {
			seen[shard] = true
			shardNames = append(shardNames, shard)
		}
	}
	slices.Sort(indexed)
	slices.Sort(shardNames)
	byShard := make(map[string]*File, len(shardNames))
	for _, shard := range shardNames {
		f, err := Open(filepath.Join(dir, shard))
		if err != nil {
			return nil, err
		}
		c.Files = append(c.Files, f)
		byShard[shard] = f
	}
	for _, name := range indexed {
		shard := weightMap[name]
		f := byShard[shard]
		if _, ok := f.tensors[name]; !ok {
			return nil, &FormatError{Path: index, Tensor: name, Msg: fmt.Sprintf("indexed in %s, which does not hold it", shard)}
		}
		c.shardOf[name] = f
		c.names = append(c.names, name)
	}
	for _, f := range c.Files {
		for _, name := range f.names {
			if owner, ok := c.shardOf[name]; !ok {
				return nil, &FormatError{Path: f.Path, Tensor: name, Msg: fmt.Sprintf("not listed in %s", IndexFileName)}
			} else if owner != f {
				return nil, &FormatError{Path: f.Path, Tensor: name, Msg: fmt.Sprintf("duplicate: also in %s, where the index puts it", owner.Path)}
			}
		}
	}
	slices.Sort(c.names)
	return c, nil
}

func readLimited(path string, limit int64) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if st.Size() > limit {
		return nil, &FormatError{Path: path, Msg: fmt.Sprintf("%d bytes exceed the limit of %d", st.Size(), limit)}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	return raw, nil
}

// parseIndex reads {"metadata": {...}, "weight_map": {tensor: shard file}}, rejecting duplicate
// tensor names and shard names that are not plain file names in the checkpoint directory.
func parseIndex(path string, raw []byte) (map[string]string, map[string]any, error) {
	bad := func(format string, args ...any) (map[string]string, map[string]any, error) {
		return nil, nil, &FormatError{Path: path, Msg: fmt.Sprintf(format, args...)}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return bad("not a JSON object: %s", describeJSON(tok, err))
	}
	var weightMap map[string]string
	var meta map[string]any
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return bad("JSON: %v", err)
		}
		key, _ := tok.(string)
		switch key {
		case "weight_map":
			if weightMap != nil {
				return bad(`duplicate "weight_map"`)
			}
			if weightMap, err = decodeWeightMap(dec); err != nil {
				return nil, nil, &FormatError{Path: path, Msg: err.Error()}
			}
		case "metadata":
			if err := dec.Decode(&meta); err != nil {
				return bad(`"metadata": %v`, err)
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return bad("JSON: %v", err)
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return bad("JSON: %v", err)
	}
	if len(weightMap) == 0 {
		return bad(`no "weight_map" entries`)
	}
	names := make([]string, 0, len(weightMap))
	for name := range weightMap {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		shard := weightMap[name]
		if shard == "" || shard != filepath.Base(shard) || shard == "." || shard == ".." || strings.ContainsAny(shard, `/\`) {
			return nil, nil, &FormatError{Path: path, Tensor: name, Msg: fmt.Sprintf("shard %q is not a file name in the checkpoint directory", shard)}
		}
	}
	return weightMap, meta, nil
}

// decodeWeightMap reads the weight_map object token by token to catch duplicate names, which
// decoding into a map would silently merge.
func decodeWeightMap(dec *json.Decoder) (map[string]string, error) {
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf(`"weight_map" is not a JSON object: %s`, describeJSON(tok, err))
	}
	m := make(map[string]string)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf(`"weight_map": %v`, err)
		}
		name, _ := tok.(string)
		var shard string
		if err := dec.Decode(&shard); err != nil {
			return nil, fmt.Errorf(`"weight_map": tensor %q: %v`, name, err)
		}
		if _, dup := m[name]; dup {
			return nil, fmt.Errorf(`"weight_map": tensor %q listed twice`, name)
		}
		m[name] = shard
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf(`"weight_map": %v`, err)
	}
	return m, nil
}

// Names returns every tensor name of the checkpoint, sorted.
func (c *Checkpoint) Names() []string { return slices.Clone(c.names) }

// Tensor returns the named tensor from its shard.
func (c *Checkpoint) Tensor(name string) (Tensor, error) {
	f, ok := c.shardOf[name]
	if !ok {
		return Tensor{}, fmt.Errorf("safetensors: %s: no tensor %q", c.Dir, name)
	}
	return f.Tensor(name)
}

// Info returns the dtype and shape of the named tensor, whatever its dtype.
func (c *Checkpoint) Info(name string) (DType, []int64, bool) {
	f, ok := c.shardOf[name]
	if !ok {
		return "", nil, false
	}
	return f.Info(name)
}

// Close closes every file. It is idempotent.
func (c *Checkpoint) Close() error {
	var errs []error
	for _, f := range c.Files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}
