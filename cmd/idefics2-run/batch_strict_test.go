package main

import (
	"strings"
	"testing"
)

// TestBatchLineFields: a batch line with a field batch does not know is an error naming it (and keeping the line's
// id); known fields, nested ones included, are read.
func TestBatchLineFields(t *testing.T) {
	tests := []struct {
		line   string
		id     string
		errSub string // "" for a line that decodes
	}{
		{`{"id":1,"prompt":"hi","max_tokens":2}`, "1", ""},
		{`{"id":"a","messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true}}`, `"a"`, ""},
		{`{"id":7,"prompt":"hi","max_token":2}`, "7", `unknown field "max_token" (batch --help lists the fields)`},
		{`{"prompt":"hi","stream_options":{"include_usgae":true}}`, "", `unknown field "include_usgae"`},
		{`{"id":2,"prompt":"hi"} {"id":3}`, "", "text after the object"},
		{`{"id":2,"prompt":`, "", "not a JSON request object"},
		{`[1,2]`, "", "not a JSON request object"},
	}
	for _, tc := range tests {
		t.Run(tc.line, func(t *testing.T) {
			var req chatRequest
			err := decodeBatchLine([]byte(tc.line), &req)
			if tc.errSub == "" {
				if err != nil || string(req.ID) != tc.id {
					t.Fatalf("error %v, id %s; want nil and %s", err, req.ID, tc.id)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errSub) {
				t.Fatalf("error %v, want one containing %q", err, tc.errSub)
			}
			if tc.id != "" && string(req.ID) != tc.id {
				t.Fatalf("id %s, want %s", req.ID, tc.id)
			}
			if e := errorObject(err); strings.Contains(tc.errSub, "unknown field") &&
				(e.Param == nil || !strings.Contains(tc.errSub, `"`+*e.Param+`"`) || e.Code == nil || *e.Code != "unknown_field") {
				t.Fatalf("error object %+v, want param naming the field and code unknown_field", e)
			}
		})
	}
}

// FuzzDecodeBatchLine: any line decodes or gives an error, never a panic.
func FuzzDecodeBatchLine(f *testing.F) {
	for _, s := range []string{`{"id":1,"prompt":"hi"}`, `{"max_token":2}`, `{"id":1} x`, `{`, `null`, `{"stream_options":{"x":1}}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		var req chatRequest
		_ = decodeBatchLine([]byte(line), &req)
	})
}
