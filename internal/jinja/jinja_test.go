package jinja

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// jinjaCase is one entry of testdata/cases.json, rendered by Python's jinja2 3.1.6 in
// transformers' chat-template environment (see testdata/gen_cases.py).
type jinjaCase struct {
	Name        string          `json:"name"`
	Template    string          `json:"template"`
	Vars        json.RawMessage `json:"vars"`
	Want        *string         `json:"want"`
	Error       string          `json:"error"`
	PythonError string          `json:"python_error"`
}

// jinjaDecodeOrdered decodes JSON keeping object key order (*Dict), as Python's json does.
func jinjaDecodeOrdered(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := jinjaDecodeValue(dec)
	if err != nil {
		return nil, err
	}
	return v, nil
}

func jinjaDecodeValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			d := NewDict()
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				v, err := jinjaDecodeValue(dec)
				if err != nil {
					return nil, err
				}
				d.set(kt.(string), v)
			}
			_, err := dec.Token()
			return d, err
		case '[':
			l := []any{}
			for dec.More() {
				v, err := jinjaDecodeValue(dec)
				if err != nil {
					return nil, err
				}
				l = append(l, v)
			}
			_, err := dec.Token()
			return l, err
		}
	case json.Number:
		if i, err := t.Int64(); err == nil && !strings.ContainsAny(t.String(), ".eE") {
			return i, nil
		}
		f, err := t.Float64()
		return f, err
	case string, bool, nil:
		return t, nil
	}
	return nil, fmt.Errorf("unexpected token %v", tok)
}

// jinjaLoadCases reads a corpus: a list of cases (cases.json), or {"vars": …, "cases": […]} with
// one context shared by all cases (random.json, gen_random.py's output).
func jinjaLoadCases(tb testing.TB, path string) []jinjaCase {
	tb.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var cases []jinjaCase
	if trimmed := bytes.TrimSpace(raw); len(trimmed) > 0 && trimmed[0] == '{' {
		var corpus struct {
			Vars  json.RawMessage `json:"vars"`
			Cases []jinjaCase     `json:"cases"`
		}
		if err := json.Unmarshal(raw, &corpus); err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		for i := range corpus.Cases {
			corpus.Cases[i].Vars = corpus.Vars
		}
		return corpus.Cases
	}
	if err := json.Unmarshal(raw, &cases); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return cases
}

func jinjaVars(tb testing.TB, raw json.RawMessage) map[string]any {
	tb.Helper()
	vars := map[string]any{}
	if len(raw) == 0 {
		return vars
	}
	v, err := jinjaDecodeOrdered(raw)
	if err != nil {
		tb.Fatal(err)
	}
	d := v.(*Dict)
	for i, k := range d.keys {
		vars[k.(string)] = d.vals[i]
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
