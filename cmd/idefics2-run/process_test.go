package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// buildBinary builds the command once per test process (removed by TestMain).
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "idefics2-run-bin-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "idefics2-run")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// removeBinary removes what buildBinary built.
func removeBinary() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// proc is a started idefics2-run process with its output collected.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr lockedBuffer
	done           chan struct{}
	code           int
}

func startProc(t *testing.T, stdin io.Reader, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(buildBinary(t), args...), done: make(chan struct{})}
	p.cmd.Stdin = stdin
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := p.cmd.Wait()
		p.code = 0
		if ee, ok := err.(*exec.ExitError); ok {
			p.code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				p.code = -int(ws.Signal())
			}
		} else if err != nil {
			p.code = -1000
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitFor polls until cond holds, failing the test after limit or when the process ends first.
func (p *proc) waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		select {
		case <-p.done:
			t.Fatalf("the process ended (status %d) before %s; stdout %q, stderr %q", p.code, what, p.stdout.String(), p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v; stderr %q", what, limit, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wait waits for the process to end, at most limit.
func (p *proc) wait(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(limit):
		t.Fatalf("the process did not end within %v of the signal; stderr %q", limit, p.stderr.String())
	}
	return 0
}

// lastLine is the last line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

var interruptedAfter = regexp.MustCompile(`^idefics2-run: interrupted by (SIGINT|SIGTERM) after (\d+) generated tokens$`)

// TestInterrupt sends SIGINT or SIGTERM to a real idefics2-run process in the middle of a long greedy generation
// (p1 does not stop on its own for 4000 tokens): it stops within a few seconds, the streamed text so far is on
// stdout in full (exactly the library's answer of the same number of tokens, newline-terminated), with --json one
// object with stop_reason "cancelled" and those tokens, one line on stderr naming the signal, and exit status
// 128 + the signal number.
func TestInterrupt(t *testing.T) {
	model, mm := pair(t, "p1")
	const prompt = "Tell me a long story"
	tests := []struct {
		name   string
		sig    syscall.Signal
		asJSON bool
		code   int
	}{
		{"SIGINT while streaming", syscall.SIGINT, false, 130},
		{"SIGTERM with --json", syscall.SIGTERM, true, 143},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-m", model, "--mmproj", mm, "-p", prompt, "-n", "4000", "-c", "4096"}, cpu...)
			if tc.asJSON {
				args = append(args, "--json", "-v")
			}
			p := startProc(t, nil, args...)
			if tc.asJSON {
				p.waitFor(t, "model loaded log line", time.Minute, func() bool { return strings.Contains(p.stderr.String(), "model loaded") })
				time.Sleep(time.Second)
			} else {
				p.waitFor(t, "streamed text", time.Minute, func() bool { return len(p.stdout.String()) >= 40 })
			}
			if err := p.cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			code := p.wait(t, 20*time.Second)
			errs, out := p.stderr.String(), p.stdout.String()
			noPanic(t, errs)
			if code != tc.code {
				t.Fatalf("exit status %d, want %d; stderr %q", code, tc.code, errs)
			}
			m := interruptedAfter.FindStringSubmatch(lastLine(errs))
			if m == nil {
				t.Fatalf("last stderr line %q does not name the signal and the tokens", lastLine(errs))
			}
			n, _ := strconv.Atoi(m[2])
			if n == 0 || n >= 4000 {
				t.Fatalf("%d tokens generated before the signal", n)
			}
			want := libGreedy(t, "p1", prompt, n, 4096)
			if !tc.asJSON {
				if !strings.HasSuffix(want.Text, "\n") {
					want.Text += "\n"
				}
				if out != want.Text {
					t.Fatalf("stdout after %d tokens:\n%q\nwant the library's answer of %d tokens:\n%q", n, out, n, want.Text)
				}
				return
			}
			var o runOutput
			dec := json.NewDecoder(strings.NewReader(out))
			if err := dec.Decode(&o); err != nil || dec.More() {
				t.Fatalf("stdout is not one JSON object (%v): %q", err, out)
			}
			if o.StopReason != "cancelled" || o.Text != want.Text || fmt.Sprint(o.Tokens) != fmt.Sprint(want.Tokens) ||
				o.Usage.CompletionTokens != n {
				t.Fatalf("--json %+v; want stop_reason cancelled and the library's %d tokens %q", o, n, want.Text)
			}
		})
	}
	t.Run("SIGINT while chat waits for input", func(t *testing.T) {
		// An OS pipe (not an io.Reader, which exec would copy from until EOF) that stays open: chat waits.
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer pw.Close()
		p := startProc(t, pr, append([]string{"chat", "-m", model, "--mmproj", mm, "-n", "5"}, cpu...)...)
		pr.Close()
		io.WriteString(pw, "hi\n")
		p.waitFor(t, "the first answer", time.Minute, func() bool { return strings.Contains(p.stdout.String(), "\n") })
		time.Sleep(200 * time.Millisecond)
		p.cmd.Process.Signal(syscall.SIGINT)
		code := p.wait(t, 20*time.Second)
		errs := p.stderr.String()
		noPanic(t, errs)
		if code != 130 || lastLine(errs) != "idefics2-run: interrupted by SIGINT" {
			t.Fatalf("exit status %d, stderr %q", code, errs)
		}
	})
	t.Run("SIGINT during a batch", func(t *testing.T) {
		var in strings.Builder
		for i := 0; i < 500; i++ {
			fmt.Fprintf(&in, `{"id":%d,"prompt":"Story number %d","max_tokens":40}`+"\n", i, i)
		}
		p := startProc(t, strings.NewReader(in.String()), append([]string{"batch", "-m", model, "--mmproj", mm}, cpu...)...)
		p.waitFor(t, "two result lines", time.Minute, func() bool { return strings.Count(p.stdout.String(), "\n") >= 2 })
		p.cmd.Process.Signal(syscall.SIGINT)
		code := p.wait(t, 20*time.Second)
		errs := p.stderr.String()
		noPanic(t, errs)
		if code != 130 || !regexp.MustCompile(`^idefics2-run: batch: interrupted by SIGINT after \d+ lines?$`).MatchString(lastLine(errs)) {
			t.Fatalf("exit status %d, stderr %q", code, errs)
		}
		sc := bufio.NewScanner(strings.NewReader(p.stdout.String()))
		lines := 0
		for sc.Scan() {
			var r batchResult
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil || string(r.ID) != strconv.Itoa(lines) {
				t.Fatalf("result line %d %q: %v", lines, sc.Text(), err)
			}
			lines++
		}
		if lines < 2 || lines >= 500 || !strings.HasSuffix(p.stdout.String(), "\n") {
			t.Fatalf("%d result lines (the last one cut?): %q", lines, p.stdout.String())
		}
	})
}
