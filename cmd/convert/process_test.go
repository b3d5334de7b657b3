//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The process tests run the command as a real process: the test binary re-executes itself with
// asMainEnv set, and TestMain then runs main() instead of the tests, so signals, exit statuses,
// stdout and stderr are those of the command. A few more variables let a test make the child
// slow, or cap its file size.
const (
	asMainEnv = "IDEFICS2_CONVERT_TEST_AS_MAIN" // "1": run main()
	fsizeEnv  = "IDEFICS2_CONVERT_TEST_FSIZE"   // RLIMIT_FSIZE in bytes (a full disk)
	// markEnv is "PATH:K:PAUSE": after the K-th written chunk the child creates PATH and then
	// sleeps PAUSE, so that the test can signal it at a known point.
	markEnv = "IDEFICS2_CONVERT_TEST_MARK"
	// delayEnv is a pause after every written chunk (a slow disk).
	delayEnv = "IDEFICS2_CONVERT_TEST_CHUNK_DELAY"
)

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		childMain()
		return
	}
	os.Exit(m.Run())
}

// childMain applies the test settings and runs the command.
func childMain() {
	if s := os.Getenv(fsizeEnv); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			fmt.Fprintln(os.Stderr, "test child:", err)
			os.Exit(99)
		}
		// Beyond the limit write(2) fails with EFBIG; the Go runtime ignores the SIGXFSZ that
		// comes with it.
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
			fmt.Fprintln(os.Stderr, "test child:", err)
			os.Exit(99)
		}
	}
	var delay time.Duration
	if s := os.Getenv(delayEnv); s != "" {
		delay, _ = time.ParseDuration(s)
	}
	var markPath string
	var markAt int
	var markPause time.Duration
	if s := os.Getenv(markEnv); s != "" {
		parts := strings.Split(s, ":")
		markPath = parts[0]
		markAt, _ = strconv.Atoi(parts[1])
		markPause, _ = time.ParseDuration(parts[2])
	}
	chunks := 0
	afterChunk = func() {
		chunks++
		if chunks == markAt {
			_ = os.WriteFile(markPath, nil, 0o644)
			time.Sleep(markPause)
		}
		time.Sleep(delay)
	}
	main()
}

// child is one run of the command as a process.
type child struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
}

func startChild(t *testing.T, env []string, args ...string) *child {
	t.Helper()
	c := &child{cmd: exec.Command(os.Args[0], args...)}
	c.cmd.Env = append(append(os.Environ(), asMainEnv+"=1"), env...)
	c.cmd.Stdout, c.cmd.Stderr = &c.stdout, &c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return c
}

// wait waits for the child (at most a minute) and returns its exit status, or -signal when a
// signal ended it.
func (c *child) wait(t *testing.T) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		_ = c.cmd.Process.Kill()
		<-done
		t.Fatalf("the command did not finish in a minute; stderr: %s", c.stderr.String())
	}
	ws := c.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return -int(ws.Signal())
	}
	return ws.ExitStatus()
}

// runChild runs the command to completion.
func runChild(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	c := startChild(t, env, args...)
	code = c.wait(t)
	return code, c.stdout.String(), c.stderr.String()
}

// checkOneLine checks that a failure printed exactly one line naming the culprit and no trace
// of a panic.
func checkOneLine(t *testing.T, stderr string, want ...string) {
	t.Helper()
	msg := strings.TrimRight(stderr, "\n")
	if strings.Contains(msg, "\n") || msg == "" {
		t.Errorf("stderr is not one line: %q", stderr)
	}
	for _, bad := range []string{"panic:", "goroutine ", "runtime error"} {
		if strings.Contains(stderr, bad) {
			t.Errorf("stderr holds %q: %s", bad, stderr)
		}
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("stderr %q does not contain %q", msg, w)
		}
	}
}

// listDir returns the names in dir, sorted.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// TestInterrupt signals a running conversion at known points (after the first chunk, in the
// middle, after the last chunk, twice in a row) and checks the exit status, the one-line message
// and that the output folder is left as it was: no output file, no temporary file, and outputs
// that existed before (with --force) untouched.
func TestInterrupt(t *testing.T) {
	const chunks = 83 // tensors of p1, one chunk each
	tests := []struct {
		name     string
		sigs     []syscall.Signal
		at       int  // chunk after which the signal is sent
		force    bool // outputs exist and --force is given
		wantCode int
		wantMsg  string
	}{
		{name: "SIGINT after the first chunk", sigs: []syscall.Signal{syscall.SIGINT}, at: 1, wantCode: 130, wantMsg: "interrupted by SIGINT"},
		{name: "SIGTERM in the middle", sigs: []syscall.Signal{syscall.SIGTERM}, at: 40, wantCode: 143, wantMsg: "interrupted by SIGTERM"},
		{name: "SIGHUP in the mmproj part", sigs: []syscall.Signal{syscall.SIGHUP}, at: 70, wantCode: 129, wantMsg: "interrupted by SIGHUP"},
		{name: "SIGINT after the last chunk", sigs: []syscall.Signal{syscall.SIGINT}, at: chunks, wantCode: 130, wantMsg: "interrupted by SIGINT"},
		{name: "SIGINT twice", sigs: []syscall.Signal{syscall.SIGINT, syscall.SIGINT}, at: 10, wantCode: 130, wantMsg: "interrupted by SIGINT"},
		{name: "SIGTERM with existing outputs and force", sigs: []syscall.Signal{syscall.SIGTERM}, at: 30, force: true, wantCode: 143, wantMsg: "interrupted by SIGTERM"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			mark := filepath.Join(t.TempDir(), "mark")
			args := []string{"--in", p1, "--out", filepath.Join(out, "m.gguf"), "--type", "q8_0"}
			var before []string
			if tc.force {
				for _, f := range []string{"m.gguf", "mmproj-m.gguf"} {
					if err := os.WriteFile(filepath.Join(out, f), []byte("old"), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				before = []string{"m.gguf", "mmproj-m.gguf"}
				args = append(args, "--force")
			}
			// The child pauses 2 s after chunk tc.at, which is when the signal is sent.
			c := startChild(t, []string{fmt.Sprintf("%s=%s:%d:2s", markEnv, mark, tc.at)}, args...)
			if !waitFor(mark, 30*time.Second) {
				_ = c.cmd.Process.Kill()
				c.wait(t)
				t.Fatalf("chunk %d never came; stderr: %s", tc.at, c.stderr.String())
			}
			tmps := 0
			for _, n := range listDir(t, out) {
				if strings.Contains(n, ".tmp-") {
					tmps++
				}
			}
			if tmps != 2 {
				t.Errorf("%d temporary files while converting (%v), want 2", tmps, listDir(t, out))
			}
			for _, s := range tc.sigs {
				if err := c.cmd.Process.Signal(s); err != nil {
					t.Fatal(err)
				}
				time.Sleep(10 * time.Millisecond)
			}
			code := c.wait(t)
			if code != tc.wantCode {
				t.Errorf("exit status %d, want %d; stderr: %s", code, tc.wantCode, c.stderr.String())
			}
			checkOneLine(t, c.stderr.String(), tc.wantMsg, "no output written")
			if got := listDir(t, out); !slices.Equal(got, before) {
				t.Errorf("output folder holds %v, want %v", got, before)
			}
			for _, f := range before {
				if b, _ := os.ReadFile(filepath.Join(out, f)); string(b) != "old" {
					t.Errorf("%s was modified", f)
				}
			}
		})
	}
}

// TestInterruptAnyTime sends SIGINT at a sweep of delays after the start of a slowed-down
// conversion (during start-up, planning, streaming and closing) and checks the invariant: either
// the run completed (status 0, both files valid) or it was interrupted (status 130, or killed
// by the signal before the handler was installed) and the folder is empty.
func TestInterruptAnyTime(t *testing.T) {
	completed, interrupted := 0, 0
	for i, delay := range []time.Duration{0, 20, 60, 120, 200, 300, 450, 600, 800, 1200, 3000} {
		delay *= time.Millisecond
		t.Run(delay.String(), func(t *testing.T) {
			out := t.TempDir()
			c := startChild(t, []string{delayEnv + "=5ms"}, "--in", p1, "--out", filepath.Join(out, "m.gguf"), "--threads", strconv.Itoa(1+i%2))
			time.Sleep(delay)
			_ = c.cmd.Process.Signal(syscall.SIGINT)
			code := c.wait(t)
			files := listDir(t, out)
			switch code {
			case 0:
				completed++
				if !slices.Equal(files, []string{"m.gguf", "mmproj-m.gguf"}) {
					t.Errorf("completed run left %v", files)
				}
			case 130, -int(syscall.SIGINT):
				interrupted++
				if len(files) != 0 {
					t.Errorf("interrupted run left %v", files)
				}
				if code == 130 {
					checkOneLine(t, c.stderr.String(), "interrupted by SIGINT")
				}
			default:
				t.Errorf("exit status %d; stderr: %s", code, c.stderr.String())
			}
		})
	}
	t.Logf("%d runs completed before the signal, %d were interrupted", completed, interrupted)
	if interrupted == 0 {
		t.Error("no run was interrupted")
	}
}

func waitFor(path string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return false
}

// TestDiskFull caps the file size of the command (RLIMIT_FSIZE, so write(2) fails with EFBIG as
// on a full disk) at points inside model.gguf's header, its data and its last flush (after
// mmproj.gguf is complete), and checks status 1, one line naming the output path and the cause,
// and an output folder as it was before: empty, or with the old outputs untouched under --force.
func TestDiskFull(t *testing.T) {
	// p1 at f16 gives a model.gguf of 4,851,456 bytes and an mmproj.gguf of 194,112 bytes;
	// the writer flushes every MiB, so 4,800,000 fails at model.gguf's final flush.
	for _, tc := range []struct {
		limit int
		force bool
	}{{0, false}, {100, false}, {64 << 10, false}, {1 << 20, false}, {3 << 20, false}, {4_800_000, false}, {4_800_000, true}, {100, true}} {
		t.Run(fmt.Sprintf("%d/force=%v", tc.limit, tc.force), func(t *testing.T) {
			out := t.TempDir()
			path := filepath.Join(out, "m.gguf")
			args := []string{"--in", p1, "--out", path}
			var before []string
			if tc.force {
				before = []string{"m.gguf", "mmproj-m.gguf"}
				for _, f := range before {
					replace(t, out, f, []byte("old"))
				}
				args = append(args, "--force")
			}
			code, stdout, stderr := runChild(t, []string{fsizeEnv + "=" + strconv.Itoa(tc.limit)}, args...)
			t.Logf("exit %d: %s", code, strings.TrimSpace(stderr))
			if code != exitFailure {
				t.Errorf("exit status %d, want %d; stderr: %s", code, exitFailure, stderr)
			}
			checkOneLine(t, stderr, path, "file too large")
			if stdout != "" {
				t.Errorf("stdout: %q", stdout)
			}
			if got := listDir(t, out); !slices.Equal(got, before) {
				t.Errorf("output folder holds %v, want %v", got, before)
			}
			for _, f := range before {
				if b, _ := os.ReadFile(filepath.Join(out, f)); string(b) != "old" {
					t.Errorf("%s was modified", f)
				}
			}
		})
	}
}

// TestBadInputMatrix runs the command on broken checkpoints and bad flags. Each case: the exit
// status (2 for bad input or usage, 1 for a run-time failure), one line on stderr naming the
// culprit, no stack trace, nothing on stdout, and no file left in the output folder beyond what
// was there before.
func TestBadInputMatrix(t *testing.T) {
	const st = "model.safetensors"
	tests := []struct {
		name     string
		src      string                             // checkpoint copied into IN ("" : p1)
		mutate   func(t *testing.T, in, out string) // breaks IN or prepares OUT
		args     []string                           // IN and OUT are replaced by the folders
		existing []string                           // files in OUT before the run (kept)
		wantCode int
		wantMsg  []string
	}{
		// Flags.
		{name: "no arguments", args: []string{}, wantCode: 2, wantMsg: []string{"--in is required"}},
		{name: "missing --in", args: []string{"--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"--in is required"}},
		{name: "empty --in", args: []string{"--in", "", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"--in is required"}},
		{name: "missing --out", args: []string{"--in", "IN"}, wantCode: 2, wantMsg: []string{"--out is required"}},
		{name: "empty --out", args: []string{"--in", "IN", "--out", ""}, wantCode: 2, wantMsg: []string{"--out is required"}},
		{name: "unknown flag", args: []string{"--in", "IN", "--out", "OUT/m.gguf", "--device", "cuda"}, wantCode: 2, wantMsg: []string{"-device"}},
		{name: "stray argument", args: []string{"--in", "IN", "--out", "OUT/m.gguf", "extra"}, wantCode: 2, wantMsg: []string{`"extra"`}},
		{name: "bad --type", args: []string{"--in", "IN", "--out", "OUT/m.gguf", "--type", "q3_z"}, wantCode: 2, wantMsg: []string{`--type "q3_z"`}},
		{name: "bad --vision-type", args: []string{"--in", "IN", "--out", "OUT/m.gguf", "--vision-type", "q4_k_m"}, wantCode: 2, wantMsg: []string{`--vision-type "q4_k_m"`}},
		{name: "bad --override regex", args: []string{"--in", "IN", "--out", "OUT/m.gguf", "--override", "blk.(0=q8_0"}, wantCode: 2, wantMsg: []string{"--override", "blk.(0"}},
		{name: "--override without type", args: []string{"--in", "IN", "--out", "OUT/m.gguf", "--override", "attn_q"}, wantCode: 2, wantMsg: []string{"--override", "attn_q"}},
		{name: "--override with a bad type", args: []string{"--in", "IN", "--out", "OUT/m.gguf", "--override", "attn_q=q9"}, wantCode: 2, wantMsg: []string{"--override", "q9"}},
		{name: "--override matching nothing", args: []string{"--in", "IN", "--out", "OUT/m.gguf", "--override", "^nothing$=q8_0"}, wantCode: 2, wantMsg: []string{"--override", "^nothing$"}},
		{name: "--threads -1", args: []string{"--in", "IN", "--out", "OUT/m.gguf", "--threads", "-1"}, wantCode: 2, wantMsg: []string{"--threads -1"}},
		{name: "--threads absurd", args: []string{"--in", "IN", "--out", "OUT/m.gguf", "--threads", "1000000000"}, wantCode: 2, wantMsg: []string{"--threads 1000000000"}},
		{name: "--threads overflowing", args: []string{"--in", "IN", "--out", "OUT/m.gguf", "--threads", "99999999999999999999"}, wantCode: 2, wantMsg: []string{"-threads", "out of range"}},
		{name: "--threads not a number", args: []string{"--in", "IN", "--out", "OUT/m.gguf", "--threads", "all"}, wantCode: 2, wantMsg: []string{"-threads", `"all"`}},
		{name: "--mmproj-out same as --out", args: []string{"--in", "IN", "--out", "OUT/m.gguf", "--mmproj-out", "OUT/./m.gguf"}, wantCode: 2, wantMsg: []string{"same file"}},

		// The input folder.
		{name: "--in does not exist", args: []string{"--in", "OUT/nothing", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"nothing", "no such file"}},
		{name: "--in is a file", args: []string{"--in", "IN/config.json", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"config.json", "not a folder"}},
		{
			name: "no config.json", mutate: func(t *testing.T, in, _ string) { remove(t, in, "config.json") },
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"config.json", "missing"},
		},
		{
			name: "config.json not JSON", mutate: func(t *testing.T, in, _ string) {
				replace(t, in, "config.json", []byte("{\"model_type\": \"idefics2\","))
			},
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"config.json", "not a JSON object"},
		},
		{
			name: "config.json is a folder", mutate: func(t *testing.T, in, _ string) {
				remove(t, in, "config.json")
				if err := os.Mkdir(filepath.Join(in, "config.json"), 0o755); err != nil {
					t.Fatal(err)
				}
			},
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"config.json"},
		},
		{
			name: "unknown model_type", mutate: func(t *testing.T, in, _ string) {
				editJSON(t, in, "config.json", func(m map[string]any) { m["model_type"] = "llava" })
			},
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"config.json", "model_type", "llava"},
		},
		{
			name: "unknown architecture", mutate: func(t *testing.T, in, _ string) {
				editJSON(t, in, "config.json", func(m map[string]any) { m["architectures"] = []string{"LlavaForConditionalGeneration"} })
			},
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"config.json", "architectures", "LlavaForConditionalGeneration"},
		},
		{
			name: "absurd config size", mutate: func(t *testing.T, in, _ string) {
				editJSON(t, in, "config.json", func(m map[string]any) { m["text_config"].(map[string]any)["vocab_size"] = 1 << 40 })
			},
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"config.json", "text_config.vocab_size"},
		},
		{
			name: "missing tokenizer", mutate: func(t *testing.T, in, _ string) { remove(t, in, "tokenizer.json") },
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"no tokenizer"},
		},
		{
			name: "truncated tokenizer.json", mutate: func(t *testing.T, in, _ string) { truncateFile(t, in, "tokenizer.json", 1000) },
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"tokenizer.json"},
		},
		{
			name: "bad tokenizer_config.json", mutate: func(t *testing.T, in, _ string) {
				editJSON(t, in, "tokenizer_config.json", func(m map[string]any) { m["add_bos_token"] = "yes" })
			},
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"tokenizer_config.json", "add_bos_token"},
		},
		{
			name: "added token outside the vocabulary", mutate: func(t *testing.T, in, _ string) {
				editJSON(t, in, "tokenizer_config.json", func(m map[string]any) {
					m["added_tokens_decoder"].(map[string]any)["16000000"] = map[string]any{"content": "<x>", "special": true}
				})
			},
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{`"<x>"`, "16000000", "vocab_size"},
		},
		{
			name: "no preprocessor_config.json", mutate: func(t *testing.T, in, _ string) { remove(t, in, "preprocessor_config.json") },
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"preprocessor_config.json", "missing"},
		},
		{
			name: "image_seq_len disagrees", mutate: func(t *testing.T, in, _ string) {
				editJSON(t, in, "processor_config.json", func(m map[string]any) { m["image_seq_len"] = 3 })
			},
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"processor_config.json", "image_seq_len 3"},
		},
		{
			name: "bad chat_template.json", mutate: func(t *testing.T, in, _ string) { replace(t, in, "chat_template.json", []byte(`{"chat_template": 7}`)) },
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"chat_template.json", "chat_template"},
		},
		{
			name: "bad generation_config.json", mutate: func(t *testing.T, in, _ string) {
				replace(t, in, "generation_config.json", []byte(`{"eos_token_id": [2, 99999999]}`))
			},
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"generation_config.json", "99999999"},
		},

		// The weights.
		{
			name: "no weights", mutate: func(t *testing.T, in, _ string) { remove(t, in, st) },
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"model.safetensors", "found"},
		},
		{
			name: "empty safetensors", mutate: func(t *testing.T, in, _ string) { replace(t, in, st, nil) },
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"model.safetensors"},
		},
		{
			name: "truncated safetensors", mutate: func(t *testing.T, in, _ string) { truncateFile(t, in, st, 4<<20) },
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"model.safetensors"},
		},
		{
			name: "truncated safetensors header", mutate: func(t *testing.T, in, _ string) { truncateFile(t, in, st, 5000) },
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"model.safetensors"},
		},
		{
			name: "huge safetensors header length", mutate: func(t *testing.T, in, _ string) {
				data := readFile(t, in, st)
				binary.LittleEndian.PutUint64(data, 1<<50)
				replace(t, in, st, data)
			},
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"model.safetensors"},
		},
		{
			name: "corrupt safetensors header", mutate: func(t *testing.T, in, _ string) {
				data := readFile(t, in, st)
				copy(data[8:], "{\"a\": ][")
				replace(t, in, st, data)
			},
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"model.safetensors"},
		},
		{
			name: "header points past the file", mutate: func(t *testing.T, in, _ string) {
				editHeader(t, in, func(h map[string]map[string]any) {
					h["model.text_model.norm.weight"]["data_offsets"] = []int64{8411776, 1 << 40}
				})
			},
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"model.safetensors", "model.text_model.norm.weight"},
		},
		{
			name: "mismatched shape", mutate: func(t *testing.T, in, _ string) {
				editHeader(t, in, func(h map[string]map[string]any) {
					h["model.connector.modality_projection.gate_proj.weight"]["shape"] = []int64{32, 64}
				})
			},
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"model.connector.modality_projection.gate_proj.weight", "shape [32 64], want [64 32]"},
		},
		{
			name: "unknown tensor", mutate: func(t *testing.T, in, _ string) {
				editHeader(t, in, func(h map[string]map[string]any) {
					h["model.text_model.bogus.weight"] = h["model.text_model.norm.weight"]
					delete(h, "model.text_model.norm.weight")
				})
			},
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"model.text_model.bogus.weight"},
		},
		{
			name: "missing tensor", mutate: func(t *testing.T, in, _ string) {
				editHeader(t, in, func(h map[string]map[string]any) { delete(h, "model.text_model.norm.weight") })
			},
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"model.text_model.norm.weight", "missing"},
		},
		{
			name: "unsupported dtype", mutate: func(t *testing.T, in, _ string) {
				editHeader(t, in, func(h map[string]map[string]any) { h["model.text_model.norm.weight"]["dtype"] = "I32" })
			},
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"model.text_model.norm.weight", "I32"},
		},
		{
			name: "NaN in the last tensor", mutate: func(t *testing.T, in, _ string) {
				setFloat(t, in, "model.vision_model.post_layernorm.weight", 3, float32(math.NaN()))
			},
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"model.vision_model.post_layernorm.weight", "not finite"},
		},
		{
			name: "index names a missing shard", src: "p2-bf16-sharded", mutate: func(t *testing.T, in, _ string) { remove(t, in, "model-00002-of-00002.safetensors") },
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"model-00002-of-00002.safetensors"},
		},
		{
			name: "index escapes the folder", src: "p2-bf16-sharded", mutate: func(t *testing.T, in, _ string) {
				editJSON(t, in, "model.safetensors.index.json", func(m map[string]any) {
					m["weight_map"].(map[string]any)["lm_head.weight"] = "../model-00001-of-00002.safetensors"
				})
			},
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, wantCode: 2, wantMsg: []string{"model.safetensors.index.json", "lm_head.weight"},
		},

		// The outputs.
		{name: "output folder missing", args: []string{"--in", "IN", "--out", "OUT/no/m.gguf"}, wantCode: 2, wantMsg: []string{"output folder", "does not exist"}},
		{
			name: "output folder is a file", mutate: func(t *testing.T, _, out string) { replace(t, out, "file", []byte("x")) },
			args: []string{"--in", "IN", "--out", "OUT/file/m.gguf"}, existing: []string{"file"}, wantCode: 2, wantMsg: []string{"OUT/file", "not a folder"},
		},
		// Root may write anywhere but /proc refuses new files even to root.
		{name: "output folder not writable", args: []string{"--in", "IN", "--out", "/proc/self/m.gguf"}, wantCode: 1, wantMsg: []string{"/proc/self/m.gguf", "cannot create a file in /proc/self"}},
		{name: "--out is a folder", args: []string{"--in", "IN", "--out", "OUT"}, wantCode: 2, wantMsg: []string{"is a folder"}},
		{
			name: "--out is a pipe", mutate: func(t *testing.T, _, out string) {
				if err := syscall.Mkfifo(filepath.Join(out, "fifo"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			args: []string{"--in", "IN", "--out", "OUT/fifo", "--force"}, existing: []string{"fifo"}, wantCode: 2, wantMsg: []string{"OUT/fifo", "not a regular file"},
		},
		{
			name: "existing output without --force", mutate: func(t *testing.T, _, out string) { replace(t, out, "m.gguf", []byte("old")) },
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, existing: []string{"m.gguf"}, wantCode: 2, wantMsg: []string{"OUT/m.gguf", "--force"},
		},
		{
			name: "existing mmproj without --force", mutate: func(t *testing.T, _, out string) { replace(t, out, "mmproj-m.gguf", []byte("old")) },
			args: []string{"--in", "IN", "--out", "OUT/m.gguf"}, existing: []string{"mmproj-m.gguf"}, wantCode: 2, wantMsg: []string{"OUT/mmproj-m.gguf", "--force"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.src
			if src == "" {
				src = "p1"
			}
			in := linkCheckpoint(t, filepath.Join(filepath.Dir(p1), src))
			out := t.TempDir()
			if tc.mutate != nil {
				tc.mutate(t, in, out)
			}
			inBefore := listDir(t, in)
			args := make([]string, len(tc.args))
			for i, a := range tc.args {
				args[i] = expand(a, in, out)
			}
			code, stdout, stderr := runChild(t, nil, args...)
			t.Logf("exit %d: %s", code, strings.TrimSpace(stderr))
			if code != tc.wantCode {
				t.Errorf("exit status %d, want %d; stderr: %s", code, tc.wantCode, stderr)
			}
			want := make([]string, len(tc.wantMsg))
			for i, w := range tc.wantMsg {
				want[i] = expand(w, in, out)
			}
			checkOneLine(t, stderr, want...)
			if stdout != "" {
				t.Errorf("stdout: %q", stdout)
			}
			if got := listDir(t, out); !slices.Equal(got, tc.existing) {
				t.Errorf("output folder holds %v, want %v", got, tc.existing)
			}
			if got := listDir(t, in); !slices.Equal(got, inBefore) {
				t.Errorf("input folder holds %v, had %v", got, inBefore)
			}
		})
	}
}

// expand replaces a leading "IN" or "OUT" path element by the folder.
func expand(s, in, out string) string {
	for _, r := range []struct{ from, to string }{{"IN", in}, {"OUT", out}} {
		if s == r.from || strings.HasPrefix(s, r.from+"/") {
			return r.to + s[len(r.from):]
		}
	}
	return s
}

// linkCheckpoint makes a folder of symbolic links to the files of src. Files are changed only
// through replace, which removes the link first, so the committed checkpoint is never written.
func linkCheckpoint(t *testing.T, src string) string {
	t.Helper()
	abs, err := filepath.Abs(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	entries, err := os.ReadDir(abs)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.Symlink(filepath.Join(abs, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func readFile(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// replace writes a new file in place of dir/name (a link to the committed data, or a file).
func replace(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	remove(t, dir, name)
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, dir, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, name)); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
}

func truncateFile(t *testing.T, dir, name string, size int) {
	t.Helper()
	replace(t, dir, name, readFile(t, dir, name)[:size])
}

func editJSON(t *testing.T, dir, name string, edit func(m map[string]any)) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(readFile(t, dir, name), &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	replace(t, dir, name, b)
}

// splitSafetensors returns the header and the data section of a safetensors file.
func splitSafetensors(t *testing.T, data []byte) (map[string]map[string]any, []byte) {
	t.Helper()
	n := binary.LittleEndian.Uint64(data)
	var h map[string]map[string]any
	d := json.NewDecoder(bytes.NewReader(data[8 : 8+n]))
	d.UseNumber()
	if err := d.Decode(&h); err != nil {
		t.Fatal(err)
	}
	return h, data[8+n:]
}

// editHeader rewrites the header of model.safetensors, keeping the data section.
func editHeader(t *testing.T, dir string, edit func(h map[string]map[string]any)) {
	t.Helper()
	h, data := splitSafetensors(t, readFile(t, dir, "model.safetensors"))
	edit(h)
	hdr, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(hdr)))
	replace(t, dir, "model.safetensors", append(append(out, hdr...), data...))
}

// setFloat sets value i of an F32 tensor of model.safetensors.
func setFloat(t *testing.T, dir, tensor string, i int, v float32) {
	t.Helper()
	raw := readFile(t, dir, "model.safetensors")
	h, data := splitSafetensors(t, raw)
	info, ok := h[tensor]
	if !ok || info["dtype"] != "F32" {
		t.Fatalf("no F32 tensor %q", tensor)
	}
	start, err := info["data_offsets"].([]any)[0].(json.Number).Int64()
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint32(data[start+4*int64(i):], math.Float32bits(v))
	replace(t, dir, "model.safetensors", raw)
}

// TestRunInterruptedContext checks the mapping of a signal cancellation to its exit status and
// message without a process.
func TestRunInterruptedContext(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
		msg  string
	}{{syscall.SIGINT, 130, "SIGINT"}, {syscall.SIGTERM, 143, "SIGTERM"}, {syscall.SIGHUP, 129, "SIGHUP"}} {
		t.Run(tc.msg, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			cancel(&interrupted{sig: tc.sig})
			var stdout, stderr bytes.Buffer
			code := run(ctx, []string{"--in", p1, "--out", filepath.Join(t.TempDir(), "m.gguf")}, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit status %d, want %d", code, tc.code)
			}
			if want := "convert: interrupted by " + tc.msg + "; no output written\n"; stderr.String() != want {
				t.Errorf("stderr %q, want %q", stderr.String(), want)
			}
		})
	}
}
