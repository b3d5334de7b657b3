package safetensors

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBadCheckpoints(t *testing.T) {
	shardA := build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4))
	shardB := build(`{"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4))
	shardAB := build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8))
	files := func(kv ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name  string
		files map[string]any // file name → string or []byte content
		want  string         // substring naming the culprit
	}{
		{"index not json", files(IndexFileName, "nope"), "model.safetensors.index.json: not a JSON object"},
		{"no weight map", files(IndexFileName, `{"metadata":{}}`), `no "weight_map" entries`},
		{"weight map not object", files(IndexFileName, `{"weight_map":[1]}`), `"weight_map" is not a JSON object`},
		{"duplicate weight map", files(IndexFileName, `{"weight_map":{"a":"x"},"weight_map":{"a":"x"}}`), `duplicate "weight_map"`},
		{"duplicate tensor", files(IndexFileName, `{"weight_map":{"a":"s1","a":"s2"}}`), `"weight_map": tensor "a" listed twice`},
		{"shard not string", files(IndexFileName, `{"weight_map":{"a":3}}`), `"weight_map": tensor "a": json: cannot unmarshal number`},
		{"path traversal", files(IndexFileName, `{"weight_map":{"a":"../s1"}}`), `tensor "a": shard "../s1" is not a file name in the checkpoint directory`},
		{"absolute shard", files(IndexFileName, `{"weight_map":{"a":"/etc/passwd"}}`), `shard "/etc/passwd" is not a file name`},
		{"missing shard", files(IndexFileName, `{"weight_map":{"a":"s1"}}`), "s1: no such file"},
		{"tensor not in shard", files(IndexFileName, `{"weight_map":{"a":"s1","b":"s1"}}`, "s1", shardA), `tensor "b": indexed in s1, which does not hold it`},
		{"tensor not indexed", files(IndexFileName, `{"weight_map":{"a":"s1"}}`, "s1", shardAB), `s1: tensor "b": not listed in model.safetensors.index.json`},
		{"tensor in two shards", files(IndexFileName, `{"weight_map":{"a":"s1","b":"s2"}}`, "s1", shardA, "s2", shardAB), `s2: tensor "a": duplicate: also in`},
		{"broken shard", files(IndexFileName, `{"weight_map":{"a":"s1","b":"s2"}}`, "s1", shardA, "s2", shardB[:20]), "s2: header length"},
		{"broken single file", files(SingleFileName, []byte{1}), "model.safetensors: file of 1 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tc.files {
				var b []byte
				switch c := content.(type) {
				case string:
					b = []byte(c)
				case []byte:
					b = c
				}
				must(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
			}
			c, err := OpenCheckpoint(dir)
			if err == nil {
				c.Close()
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "safetensors: ") {
				t.Errorf("error %q\nwant substring %q", err, tc.want)
			}
			var fe *FormatError
			if !errors.As(err, &fe) && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("error %q (%T) is neither a *FormatError nor fs.ErrNotExist", err, err)
			}
		})
	}
}

func TestCheckpointIndexed(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "s1"), build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, f32bytes(3)), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "s2"), build(`{"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, f32bytes(4)), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, IndexFileName), []byte(`{"metadata":{"total_size":8},"extra":[1],"weight_map":{"b":"s2","a":"s1"}}`), 0o644))
	c, err := OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for name, want := range map[string]float32{"a": 3, "b": 4} {
		tn, err := c.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := ToFloat32(tn)
		if err != nil || len(v) != 1 || v[0] != want {
			t.Errorf("%s = %v, %v", name, v, err)
		}
	}
	if got := strings.Join(c.Names(), ","); got != "a,b" {
		t.Errorf("names %s", got)
	}
}
