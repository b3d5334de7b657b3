package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/idefics2-go/idefics2/runner"
)

// TestProgressLines: with --progress lines, the one-shot front end reports image encoding and the prompt's
// batches as plain lines on stderr, ending at the totals; the answer on stdout is unchanged; in auto mode off a
// terminal the short steps of the demo model print nothing.
func TestProgressLines(t *testing.T) {
	args := append([]string{"-p", question, "--image", demoPNG("demo_00.png"), "-n", "8", "-b", "8"}, modelArgs(t, "demo")...)
	code, out, errs := runCmd(t, "", append(args, "--progress", "lines")...)
	if code != exitOK || strings.TrimSpace(out) != "A red circle." {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
	lines := strings.Split(strings.TrimSpace(errs), "\n")
	// The image: every layer of the vision tower and the perceiver, one line each (the demo has 6 in all).
	image := regexp.MustCompile(`^idefics2-run: image encoding: (\d+)/(\d+) layers? \((\d+)%\), sub-image 1/1$`)
	n := 0
	for ; n < len(lines) && image.MatchString(lines[n]); n++ {
		m := image.FindStringSubmatch(lines[n])
		if atoiT(t, m[1]) != n+1 {
			t.Errorf("line %q: want layer %d", lines[n], n+1)
		}
	}
	if n < 2 || !strings.Contains(lines[n-1], "(100%)") || n+1 >= len(lines) {
		t.Fatalf("image encoding lines do not reach the total:\n%s", errs)
	}
	prefill := regexp.MustCompile(`^idefics2-run: prefill: (\d+)/(\d+) tokens \((\d+)%\)$`)
	prev := 0
	for _, l := range lines[n:] {
		m := prefill.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("line %q is not a prefill line", l)
		}
		done := atoiT(t, m[1])
		if done <= prev || done%8 != 0 && m[1] != m[2] {
			t.Errorf("prefill %d after %d (batches of 8)", done, prev)
		}
		prev = done
	}
	if last := prefill.FindStringSubmatch(lines[len(lines)-1]); last[1] != last[2] || last[3] != "100" {
		t.Errorf("last line %q does not reach the total", lines[len(lines)-1])
	}

	code, out, errs = runCmd(t, "", args...)
	if code != exitOK || strings.TrimSpace(out) != "A red circle." || errs != "" {
		t.Fatalf("auto off a terminal: exit %d, stdout %q, stderr %q; want no progress for short steps", code, out, errs)
	}
	code, _, errs = runCmd(t, "", append(args, "--progress", "sometimes")...)
	if code != exitUsage || !strings.Contains(errs, `--progress "sometimes"`) {
		t.Fatalf("bad mode: exit %d, %q", code, errs)
	}
}

func atoiT(t *testing.T, s string) int {
	t.Helper()
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// TestBatchProgress: a batch read from a file reports the lines answered out of the file's request lines, with the
// time left; blank lines are not requests.
func TestBatchProgress(t *testing.T) {
	path := filepath.Join(t.TempDir(), "requests.jsonl")
	var in strings.Builder
	for i := 0; i < 10; i++ {
		in.WriteString(`{"id":1,"prompt":"What is 3 plus 4?","max_tokens":2}` + "\n")
		if i == 4 {
			in.WriteString("\n  \n")
		}
	}
	if err := os.WriteFile(path, []byte(in.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out, errb bytes.Buffer
	code := run(context.Background(), append(append([]string{"batch"}, modelArgs(t, "demo")...), "--progress", "lines"), f, &out, &errb)
	if code != exitOK || strings.Count(out.String(), "\n") != 10 {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
	re := regexp.MustCompile(`^idefics2-run: batch: (\d+)/10 lines \((\d+)%\)(, ETA \d+[a-z0-9.]*)?$`)
	for i, l := range lines {
		m := re.FindStringSubmatch(l)
		if m != nil && (m[3] == "") != (i == 9) {
			t.Fatalf("line %q: want an ETA on every line but the last", l)
		}
		if m == nil || atoiT(t, m[1]) != i+1 {
			t.Fatalf("line %d %q, want %v for line %d", i+1, l, re, i+1)
		}
	}
	if len(lines) != 10 {
		t.Fatalf("%d progress lines, want one per tenth: %q", len(lines), errb.String())
	}
}

// TestReporterThrottle: in auto mode off a terminal a step is silent for its first seconds, then writes at most a
// line a second and its end.
func TestReporterThrottle(t *testing.T) {
	var b bytes.Buffer
	r := newReporter(&b, progressAuto)
	if r.bar || !r.lines || !r.throttle {
		t.Fatalf("auto on a buffer: %+v", r)
	}
	r.update("prefill", 1, 4, "token", "")
	if b.Len() != 0 {
		t.Fatalf("a short step wrote %q", b.String())
	}
	r.start = r.start.Add(-progressQuiet) // the step has run long enough
	r.update("prefill", 2, 4, "token", "")
	r.update("prefill", 3, 4, "token", "") // within a second of the last line
	r.update("prefill", 4, 4, "token", "")
	want := "idefics2-run: prefill: 2/4 tokens (50%)\nidefics2-run: prefill: 4/4 tokens (100%)\n"
	if b.String() != want {
		t.Fatalf("wrote %q, want %q", b.String(), want)
	}
	if got := eta(10*time.Second, 2, 3); got != "ETA 15s" {
		t.Errorf("eta %q", got)
	}
	var off bytes.Buffer
	newReporter(&off, progressOff).update("x", 1, 1, "token", "")
	if off.Len() != 0 {
		t.Errorf("off wrote %q", off.String())
	}
}

// TestOnGenerate: the runner's reports become lines in layers over every sub-image (the report between two
// sub-images adds nothing), or in sub-images when every feature came from the cache.
func TestOnGenerate(t *testing.T) {
	img := func(done, layer, layers int) runner.Progress {
		return runner.Progress{Stage: runner.ProgressImages, Done: done, Total: 2, Layer: layer, Layers: layers}
	}
	tests := []struct {
		name string
		in   []runner.Progress
		want string
	}{
		{"encoded", []runner.Progress{img(0, 0, 0), img(0, 1, 3), img(0, 2, 3), img(0, 3, 3), img(1, 0, 0), img(1, 1, 3), img(1, 2, 3), img(1, 3, 3), img(2, 0, 0),
			{Stage: runner.ProgressPrefill, Done: 5, Total: 5}},
			`image encoding: 1/6 layers (16%), sub-image 1/2
image encoding: 2/6 layers (33%), sub-image 1/2
image encoding: 3/6 layers (50%), sub-image 1/2
image encoding: 4/6 layers (66%), sub-image 2/2
image encoding: 5/6 layers (83%), sub-image 2/2
image encoding: 6/6 layers (100%), sub-image 2/2
prefill: 5/5 tokens (100%)
`},
		{"cached", []runner.Progress{img(0, 0, 0), img(1, 0, 0), img(2, 0, 0)}, "image encoding: 2/2 sub-images (100%)\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			r := newReporter(&b, progressLines)
			hook := r.generateHook()
			for _, p := range tc.in {
				hook(p)
			}
			if got := strings.ReplaceAll(b.String(), "idefics2-run: ", ""); got != tc.want {
				t.Fatalf("lines:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
	if newReporter(io.Discard, progressOff).generateHook() != nil {
		t.Error("--progress off watches the runner")
	}
}
