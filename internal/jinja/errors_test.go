package jinja

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestJinjaErrors is the bad-input table: each error is an *Error with the right category, the
// place of the culprit and a message naming it.
func TestJinjaErrors(t *testing.T) {
	tests := []struct {
		name      string
		src       string
		vars      map[string]any
		kind      error
		line, col int
		substr    string
	}{
		{"unclosed if", "a\n{% if x %}b", nil, ErrSyntax, 2, 11, "expected 'elif' or 'else' or 'endif' tag"},
		{"unknown tag", "{% frob %}", nil, ErrSyntax, 1, 4, "unknown tag 'frob'"},
		{"unsupported tag", "{% include 'x' %}", nil, ErrUnsupported, 1, 4, "'include' tag is not supported"},
		{"unclosed comment", "ab {# x", nil, ErrSyntax, 1, 4, "unclosed comment"},
		{"unclosed string", "{{ 'abc }}", nil, ErrSyntax, 1, 4, "unterminated string literal"},
		{"bad char", "{{ a ? b }}", nil, ErrSyntax, 1, 6, `unexpected character '?'`},
		{"stray paren", "{{ a) }}", nil, ErrSyntax, 1, 5, `unexpected ")"`},
		{"missing expr", "{{ }}", nil, ErrSyntax, 1, 4, "expected an expression"},
		{"test chain", "{{ a is defined is none }}", nil, ErrSyntax, 1, 17, "cannot chain multiple tests"},
		{"column counts characters", "héé {{ 1 + }}", nil, ErrSyntax, 1, 12, "expected an expression"},
		{"undefined attribute", "\n\n  {{ user.name }}", nil, ErrUndefined, 3, 10, "'user' is undefined"},
		{"undefined arithmetic", "{{ n + 1 }}", nil, ErrUndefined, 1, 6, "'n' is undefined"},
		{"type error", "{{ 'a' + 1 }}", nil, ErrType, 1, 8, "unsupported operand type(s) for +: 'str' and 'int'"},
		{"division by zero", "{{ 1 // 0 }}", nil, ErrType, 1, 6, "division or modulo by zero"},
		{"no filter", "{{ x | frobnicate }}", nil, ErrUnsupported, 1, 8, "no filter named 'frobnicate'"},
		{"no test", "{{ x is frobnicated }}", nil, ErrUnsupported, 1, 6, "no test named 'frobnicated'"},
		{"mutation", "{{ [].append(1) }}", nil, ErrUnsupported, 1, 13, "access to attribute 'append' of 'list' object is unsafe"},
		{"namespace only", "{% set d = {} %}{% set d.x = 1 %}", nil, ErrType, 1, 20, "non-namespace object 'd'"},
		{"unpack", "{% for a, b in [[1]] %}{% endfor %}", nil, ErrType, 1, 4, "not enough values to unpack"},
		{"range limit", "{{ range(200000) }}", nil, ErrLimit, 1, 9, "range too big"},
		{"generator len", "{{ [1] | map('string') | length }}", nil, ErrType, 1, 26, "object of type 'generator' has no len()"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := Parse(tc.src, DefaultOptions())
			if err == nil {
				_, err = tmpl.Render(tc.vars)
			}
			if err == nil {
				t.Fatal("no error")
			}
			var je *Error
			if !errors.As(err, &je) {
				t.Fatalf("error %T %v is not an *Error", err, err)
			}
			if !errors.Is(err, tc.kind) {
				t.Errorf("error %v is not %v", err, tc.kind)
			}
			if je.Line != tc.line || je.Col != tc.col {
				t.Errorf("error at line %d col %d, want %d %d (%v)", je.Line, je.Col, tc.line, tc.col, err)
			}
			if !strings.HasPrefix(err.Error(), "jinja: line ") || !strings.Contains(err.Error(), tc.substr) {
				t.Errorf("error %q does not contain %q", err, tc.substr)
			}
		})
	}
}

// TestJinjaRaise checks raise_exception's error value.
func TestJinjaRaise(t *testing.T) {
	tmpl, err := Parse("{% if x %}{{ raise_exception('Roles must alternate (' ~ x ~ ')') }}{% endif %}", DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	_, err = tmpl.Render(map[string]any{"x": 2})
	var re *RaiseError
	if !errors.As(err, &re) || re.Message != "Roles must alternate (2)" {
		t.Fatalf("error %v, want a *RaiseError", err)
	}
	if got := err.Error(); got != "jinja: line 1 col 29: raise_exception: Roles must alternate (2)" {
		t.Errorf("message %q", got)
	}
}

// TestJinjaLimits checks that runaway templates stop with ErrLimit.
func TestJinjaLimits(t *testing.T) {
	small := DefaultOptions()
	small.MaxSteps = 10_000
	small.MaxOutput = 1 << 12
	small.MaxCallDepth = 10
	small.MaxNesting = 50
	tests := []struct {
		name   string
		src    string
		substr string
	}{
		{"steps", "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}", "steps"},
		{"output", "{% for i in range(1000) %}xxxxxxxx{% endfor %}", "output exceeds 4096 bytes"},
		{"string repeat", "{{ 'ab' * 1000000 }}", "exceeds 4096"},
		{"list repeat", "{{ ([1] * 1000000) | length }}", "exceeds 4096"},
		{"recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "nested deeper than 10"},
		{"nesting", strings.Repeat("(", 100) + "1" + strings.Repeat(")", 100), "nesting deeper than 50"},
		{"exponential repr", "{% set ns = namespace(a=[1, 1]) %}{% for i in range(40) %}{% set ns.a = [ns.a, ns.a] %}{% endfor %}{{ ns.a }}", "exceeds"},
		{"replace blowup", "{{ ('a' * 4000) | replace('a', 'aaaa') }}", "exceeds 4096"},
		{"huge format width", "{{ '%999999999s' % 'x' }}", "width"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.src
			if tc.name == "nesting" {
				src = "{{ " + src + " }}"
			}
			tmpl, err := Parse(src, small)
			if err == nil {
				_, err = tmpl.Render(nil)
			}
			if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), tc.substr) {
				t.Errorf("error %v, want ErrLimit containing %q", err, tc.substr)
			}
		})
	}
}

// TestJinjaFromGo checks the conversion of Go values.
func TestJinjaFromGo(t *testing.T) {
	type myInt int16
	tmpl, err := Parse("{{ a }}|{{ b }}|{{ c }}|{{ d }}|{{ e | tojson }}|{{ f }}|{{ g }}", DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	d := NewDict()
	if err := d.Set("z", 1); err != nil {
		t.Fatal(err)
	}
	if err := d.Set("a", []string{"x"}); err != nil {
		t.Fatal(err)
	}
	got, err := tmpl.Render(map[string]any{
		"a": []int{1, 2}, "b": map[string]float32{"y": 0.5, "x": 1}, "c": myInt(7), "d": (*int)(nil),
		"e": d, "f": [2]bool{true, false}, "g": uint8(255),
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := `[1, 2]|{'x': 1.0, 'y': 0.5}|7|None|{"z": 1, "a": ["x"]}|[True, False]|255`; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if _, err := tmpl.Render(map[string]any{"a": struct{}{}}); err == nil || !strings.Contains(err.Error(), `variable "a"`) {
		t.Errorf("struct value: error %v", err)
	}
	if err := d.Set("bad", make(chan int)); err == nil {
		t.Error("Dict.Set accepted a channel")
	}
	if _, err := FromGo(map[int]int{1: 1}); err == nil {
		t.Error("FromGo accepted an int-keyed map")
	}
}

// TestJinjaStrftime checks strftime_now with a fixed clock.
func TestJinjaStrftime(t *testing.T) {
	opt := DefaultOptions()
	opt.Now = func() time.Time { return time.Date(2024, 7, 5, 9, 3, 4, 0, time.UTC) }
	tmpl, err := Parse(`{{ strftime_now("%d %b %Y|%-d %B|%H:%M:%S %p|%j %a %A %y|%%") }}`, opt)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tmpl.Render(nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "05 Jul 2024|5 July|09:03:04 AM|187 Fri Friday 24|%"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestJinjaOptions checks the whitespace options outside transformers' defaults.
func TestJinjaOptions(t *testing.T) {
	src := "  {% if true %}\nx\n{% endif %}\n"
	tests := []struct {
		opt  Options
		want string
	}{
		{Options{}, "  \nx\n"},
		{Options{TrimBlocks: true}, "  x\n"},
		{Options{TrimBlocks: true, LstripBlocks: true, KeepTrailingNewline: true}, "x\n"},
		{DefaultOptions(), "x\n"},
	}
	for _, tc := range tests {
		tmpl, err := Parse(src, tc.opt)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tmpl.Render(nil)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.opt, got, tc.want)
		}
	}
}

// TestJinjaGeneratorSingleUse checks Python's single-use iterators.
func TestJinjaGeneratorSingleUse(t *testing.T) {
	tmpl, err := Parse("{% set g = [1, 2, 3] | select('odd') %}{{ g | first }}|{{ g | list }}|{{ g | list }}|{{ 'yes' if g else 'no' }}", DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	got, err := tmpl.Render(nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "1|[3]|[]|yes"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// FuzzJinja parses and renders arbitrary templates with small limits: an error or a string,
// never a panic, and the output within MaxOutput.
func FuzzJinja(f *testing.F) {
	for _, c := range jinjaLoadCases(f, filepath.Join("testdata", "cases.json")) {
		f.Add(c.Template)
	}
	opt := DefaultOptions()
	opt.MaxSteps = 100_000
	opt.MaxOutput = 1 << 16
	opt.MaxCallDepth = 20
	vars := map[string]any{"messages": []any{map[string]any{"role": "user", "content": "hi"}}, "n": 3, "s": "text"}
	f.Fuzz(func(t *testing.T, src string) {
		tmpl, err := Parse(src, opt)
		if err != nil {
			var je *Error
			if !errors.As(err, &je) {
				t.Fatalf("parse error %T %v is not an *Error", err, err)
			}
			return
		}
		out, err := tmpl.Render(vars)
		if err != nil {
			var je *Error
			if !errors.As(err, &je) {
				t.Fatalf("render error %T %v is not an *Error", err, err)
			}
			return
		}
		if len(out) > opt.MaxOutput {
			t.Fatalf("output %d bytes > %d", len(out), opt.MaxOutput)
		}
	})
}
