package runner

import (
	"strings"
	"testing"
)

// FuzzStopper: whatever the chunks and stop strings, the released text is a prefix of the input with no stop
// string in it, and is all of the input when no stop string occurs.
func FuzzStopper(f *testing.F) {
	f.Add("abc|XY|Z", "XYZ")
	f.Add("ca|fé!|x", "é!")
	f.Add("aaa|a", "aa")
	f.Fuzz(func(t *testing.T, chunks, stop string) {
		var stops []string
		if stop != "" {
			stops = strings.Split(stop, "|")
			for _, s := range stops {
				if s == "" {
					return
				}
			}
		}
		s := newStopper(stops)
		var released strings.Builder
		hit := false
		parts := strings.Split(chunks, "|")
		for _, c := range parts {
			out, h := s.add(c, false)
			released.WriteString(out)
			if hit = h; h {
				break
			}
		}
		if !hit {
			out, h := s.add("", true)
			released.WriteString(out)
			hit = h
		}
		in := strings.Join(parts, "")
		got := released.String()
		if got != s.text() || !strings.HasPrefix(in, got) {
			t.Fatalf("released %q, text %q, input %q", got, s.text(), in)
		}
		for _, x := range stops {
			if strings.Contains(got, x) {
				t.Fatalf("released %q holds stop %q", got, x)
			}
		}
		if !hit && got != in {
			t.Fatalf("no stop hit but released %q of %q", got, in)
		}
		if hit {
			found := false
			for _, x := range stops {
				found = found || strings.HasPrefix(in[len(got):], x)
			}
			if !found {
				t.Fatalf("hit but %q does not follow with a stop string (%q)", in[len(got):], stops)
			}
		}
	})
}
