package main

import (
	"regexp"
	"strings"
	"testing"
)

// TestChatPipe: under a pipe every message gets exactly one line on stdout, its answer or an "error: …" line, so
// that a script stays in step; commands (/image, /help) print nothing there; /quit exits 0 even after a failed
// message, while the end of the input exits with the worst code.
func TestChatPipe(t *testing.T) {
	img := demoPNG("demo_00.png")
	tests := []struct {
		name   string
		script string
		code   int
		lines  []string // stdout lines; "" matches any answer, "error: X" an error line containing X
		stderr []string // substrings
	}{
		{"answers and a failed message, /quit", "What is 3 plus 4?\n<image> and <image>\n/help\nWhat is 3 plus 4?\n/quit\nnever read\n", 0,
			[]string{"7.", "error: 2 <image> markers but 0 images", ""}, []string{"/help         show this list", "2 <image> markers"}},
		{"end of input after a failed message", "<image>\nWhat is 3 plus 4?\n", 2,
			[]string{"error: 1 <image> marker but 0 images were given", "7."}, nil},
		{"image command then a message", "/image " + img + "\n" + question + "\n/quit\n", 0,
			[]string{"A red circle."}, nil},
		{"bad command is not a message", "/image /nonexistent.png\n/bogus\nWhat is 3 plus 4?\n", 2,
			[]string{"7."}, []string{"/nonexistent.png", "unknown command /bogus"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCmd(t, tc.script, append([]string{"chat"}, append(modelArgs(t, "demo"), "-n", "8")...)...)
			noPanic(t, errs)
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if code != tc.code || len(lines) != len(tc.lines) {
				t.Fatalf("exit %d, stdout %q; want %d and %d lines; stderr %s", code, out, tc.code, len(tc.lines), errs)
			}
			for i, want := range tc.lines {
				if e, ok := strings.CutPrefix(want, "error: "); ok {
					if !strings.HasPrefix(lines[i], "error: ") || !strings.Contains(lines[i], e) {
						t.Errorf("line %d %q, want an error line with %q", i+1, lines[i], e)
					}
				} else if want == "" && (lines[i] == "" || strings.HasPrefix(lines[i], "error: ")) || want != "" && lines[i] != want {
					t.Errorf("line %d %q, want %q", i+1, lines[i], want)
				}
			}
			for _, s := range tc.stderr {
				if !strings.Contains(errs, s) {
					t.Errorf("stderr %q does not contain %q", errs, s)
				}
			}
		})
	}
}

// TestChatTruncate: a conversation that outgrows the context fails with an error naming /reset and --truncate;
// with --truncate the oldest whole turns go (their images with them) and stderr says what went.
func TestChatTruncate(t *testing.T) {
	script := "/image " + demoPNG("demo_00.png") + "\n" + question + "\nWhat colour is it?\nWhat is 2 plus 2?\nAnd 3 plus 3?\n"
	args := append([]string{"chat"}, append(modelArgs(t, "demo"), "-n", "8", "-c", "80")...)
	code, out, errs := runCmd(t, script, args...)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != exitUsage || len(lines) != 4 || !strings.HasPrefix(lines[3], "error: ") {
		t.Fatalf("without --truncate: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	for _, s := range []string{"does not fit the context size 80", "/reset", "--truncate"} {
		if !strings.Contains(lines[3], s) {
			t.Errorf("overflow error %q does not name %q", lines[3], s)
		}
	}
	code, out, errs = runCmd(t, script, append(args, "--truncate")...)
	lines = strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != exitOK || len(lines) != 4 || lines[0] != "A red circle." || strings.HasPrefix(lines[3], "error") {
		t.Fatalf("--truncate: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	re := regexp.MustCompile(`idefics2-run: chat: --truncate dropped the oldest turn \(1 image, \d+ tokens\) to fit the context size 80\n`)
	if !re.MatchString(errs) {
		t.Fatalf("stderr %q, want the dropped turn named", errs)
	}
}

// TestRunTruncateNote: the one-shot front end says on stderr what --truncate cut from its prompt, images included.
func TestRunTruncateNote(t *testing.T) {
	args := append([]string{"--image", demoPNG("demo_00.png"), "--image", demoPNG("demo_01.png"), "-p", "What shapes are in the pictures? Tell me in detail please.",
		"-c", "48", "-n", "4"}, modelArgs(t, "demo")...)
	code, out, errs := runCmd(t, "", append(args, "--truncate")...)
	re := regexp.MustCompile(`^idefics2-run: --truncate dropped the first \d+ tokens of the prompt \(2 sub-images among them: whole images or crops\) to fit the context\n$`)
	if code != exitOK || out == "" || !re.MatchString(errs) {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
	code, _, errs = runCmd(t, "", args...)
	if code != exitUsage || !strings.Contains(errs, "does not fit the context size 48") {
		t.Fatalf("without --truncate: exit %d, stderr %q", code, errs)
	}
}

func TestPlural(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want string
	}{{0, "0 images"}, {1, "1 image"}, {2, "2 images"}} {
		if got := plural(tc.n, "image"); got != tc.want {
			t.Errorf("plural(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}
