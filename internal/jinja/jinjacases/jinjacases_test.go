package jinjacases

import (
	"path/filepath"
	"reflect"
	"testing"
)

func TestVarsKeepOrderAndNumberTypes(t *testing.T) {
	vars, err := Vars([]byte(`{"m": {"z": 1, "a": 1.5, "k": [2e0, null, true, "s"]}, "n": 3}`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"m": &Map{Keys: []string{"z", "a", "k"}, Values: []any{int64(1), 1.5, []any{2.0, nil, true, "s"}}},
		"n": int64(3),
	}
	if !reflect.DeepEqual(vars, want) {
		t.Errorf("got %#v, want %#v", vars, want)
	}
	if _, err := Vars([]byte(`[1]`)); err == nil {
		t.Error("a JSON list as variables: no error")
	}
}

func TestLoadBothForms(t *testing.T) {
	for _, f := range []string{"cases.json", "random.json"} {
		cases, err := Load(filepath.Join("..", "testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		if len(cases) == 0 {
			t.Fatalf("%s: no cases", f)
		}
		for _, c := range cases {
			if _, err := Vars(c.Vars); err != nil {
				t.Fatalf("%s %s: %v", f, c.Name, err)
			}
		}
	}
}
