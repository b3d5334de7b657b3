package jinja

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/internal/jinja/jinjacases"
)

// jinjaCase is one entry of testdata/cases.json or random.json, rendered by Python's jinja2 3.1.6
// in transformers' chat-template environment (see testdata/gen_cases.py and gen_random.py).
type jinjaCase = jinjacases.Case

// jinjaLoadCases reads a corpus (see jinjacases.Load).
func jinjaLoadCases(tb testing.TB, path string) []jinjaCase {
	tb.Helper()
	cases, err := jinjacases.Load(path)
	if err != nil {
		tb.Fatal(err)
	}
	return cases
}

// jinjaVars decodes a case's variables with JSON objects as *Dict in their key order.
func jinjaVars(tb testing.TB, raw json.RawMessage) map[string]any {
	tb.Helper()
	vars, err := jinjacases.Vars(raw)
	if err != nil {
		tb.Fatal(err)
	}
	b := jinjacases.Builder{Object: func(keys []string, values []any) any {
		d := NewDict()
		for i, k := range keys {
			d.set(k, values[i])
		}
		return d
	}}
	for k, v := range vars {
		vars[k] = b.Build(v)
	}
	return vars
}

// TestJinjaPythonParity renders every case of testdata/cases.json (hand-written: chat templates,
// whitespace control, every statement, filter and test) and testdata/random.json (random
// templates from gen_random.py) and compares with jinja2's output exactly; error cases must fail,
// raise_exception ones with jinja2's message. $JINJA_CASES names an extra corpus (for instance a
// large gen_random.py run) to check the same way.
func TestJinjaPythonParity(t *testing.T) {
	files := []string{filepath.Join("testdata", "cases.json"), filepath.Join("testdata", "random.json")}
	if p := os.Getenv("JINJA_CASES"); p != "" {
		files = []string{p}
	}
	for _, f := range files {
		for _, c := range jinjaLoadCases(t, f) {
			t.Run(filepath.Base(f)+"/"+c.Name, func(t *testing.T) { jinjaCheckCase(t, c) })
		}
	}
}

func jinjaCheckCase(t *testing.T, c jinjaCase) {
	vars := jinjaVars(t, c.Vars)
	tmpl, err := Parse(c.Template, DefaultOptions())
	var got string
	if err == nil {
		got, err = tmpl.Render(vars)
	}
	if c.Want != nil {
		if err != nil {
			t.Fatalf("error %v, want %q", err, *c.Want)
		}
		if got != *c.Want {
			t.Errorf("render mismatch\n got %q\nwant %q", got, *c.Want)
		}
		return
	}
	if err == nil {
		t.Fatalf("rendered %q, want a %s error (%s)", got, c.Error, c.PythonError)
	}
	var je *Error
	if !errors.As(err, &je) {
		t.Fatalf("error %T %v is not a *jinja.Error", err, err)
	}
	if c.Error == "raise" && strings.Contains(c.Template, "raise_exception") {
		var re *RaiseError
		if !errors.As(err, &re) || re.Message != c.PythonError {
			t.Errorf("error %v, want raise_exception(%q)", err, c.PythonError)
		}
	}
}
