package main

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/idefics2-go/idefics2/internal/cli/clitest"
)

// commandCase is one command of the help/exit-code table: how it is invoked, an option of it to misspell, and a
// command line that is bad usage.
type commandCase struct {
	name   string   // as cli.FlagSet and exitCodes name it
	args   []string // the command words ("chat"; none for the one-shot front end)
	typo   string   // a misspelt option
	near   string   // the option its error suggests
	usage  []string // a command line (after args) that exits with 2
	reason string   // substring of that usage error
}

var commandTable = []commandCase{
	{"idefics2-run", nil, "--tmp", "--temp", []string{"-p", "hi"}, "no model"},
	{"chat", []string{"chat"}, "--sytem", "--system", []string{"stray"}, `unexpected argument "stray"`},
	{"batch", []string{"batch"}, "--max-token", "--max-tokens", []string{"-m", "x.gguf", "--max-tokens", "-1"}, "--max-tokens -1"},
	{"serve", []string{"serve"}, "--prot", "--port", []string{"-m", "x.gguf", "--port", "70000"}, "--port 70000"},
	{"tokenize", []string{"tokenize"}, "--no-bso", "--no-bos", []string{"hi"}, "-m"},
	{"detokenize", []string{"detokenize"}, "--keep-specail", "--keep-special", []string{"1"}, "-m"},
	{"preprocess", []string{"preprocess"}, "--imgae", "--image", []string{"--out", "x"}, "--mmproj"},
	{"bench", []string{"bench"}, "--perciever", "--perceiver", []string{"-r", "1"}, "-m"},
	{"inspect", []string{"inspect"}, "--al", "--all", nil, "one GGUF file"},
	{"info", []string{"info"}, "--jsn", "--json", []string{"--device", "nosuchdevice"}, "nosuchdevice"},
}

// TestHelpExitTable runs every command through the table: --help on stdout with exit 0 in the common format,
// listing the command's exit codes; a misspelt option exits 2 with one line suggesting the nearest; a bad command
// line exits 2 with one line naming the culprit. Every command of the exit-code table is covered, and the one-shot
// options appear in the top-level help.
func TestHelpExitTable(t *testing.T) {
	covered := map[string]bool{}
	for _, tc := range commandTable {
		covered[tc.name] = true
		command := strings.TrimSpace("idefics2-run " + strings.Join(tc.args, " "))
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCmd(t, "", append(append([]string(nil), tc.args...), "--help")...)
			if code != exitOK || errs != "" {
				t.Fatalf("--help: exit %d, stderr %q", code, errs)
			}
			if err := clitest.CheckHelp(command, out); err != nil {
				t.Fatalf("--help: %v\n%s", err, out)
			}
			_, exits, ok := strings.Cut(out, "\nexit codes:\n")
			if !ok || len(exitCodes[tc.name]) == 0 {
				t.Fatalf("--help lists no exit codes:\n%s", out)
			}
			for _, l := range exitCodes[tc.name] {
				if !strings.Contains(exits, "  "+l+"\n") {
					t.Errorf("--help exit codes lack %q", l)
				}
			}
			if !strings.Contains(exits, "  0 ") || !strings.Contains(exits, "  2 ") {
				t.Errorf("exit codes without 0 and 2:\n%s", exits)
			}

			code, out, errs = runCmd(t, "", append(append([]string(nil), tc.args...), tc.typo, "1")...)
			want := "unknown option " + tc.typo + " (did you mean " + tc.near + "? see --help"
			if code != exitUsage || out != "" || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, want) {
				t.Errorf("%s: exit %d, stdout %q, stderr %q; want 2 and %q", tc.typo, code, out, errs, want)
			}

			code, _, errs = runCmd(t, "", append(append([]string(nil), tc.args...), tc.usage...)...)
			if code != exitUsage || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, tc.reason) {
				t.Errorf("%q: exit %d, stderr %q; want 2 and one line naming %q", tc.usage, code, errs, tc.reason)
			}
		})
	}
	var missing []string
	for name := range exitCodes {
		if !covered[name] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("commands without a row in the table: %v", missing)
	}

	_, out, _ := runCmd(t, "", "--help")
	for _, o := range []string{"--prompt, -p TEXT", "--image FILE", "--json", "--system TEXT", "--raw", "--file, -f FILE", "--max-tokens, -n N", "--temp, --temperature X"} {
		if !strings.Contains(out, "\n  "+o) {
			t.Errorf("the top-level help does not list the one-shot option %q", o)
		}
	}
}

// TestExitCodesRuntime: the run-time exit codes the help tables promise, on the demo model: a failed batch line
// exits 1, a chat whose last problem was a refused message exits 2 at the end of the input and 0 after /quit.
func TestExitCodesRuntime(t *testing.T) {
	model := modelArgs(t, "demo")
	tests := []struct {
		name  string
		stdin string
		args  []string
		code  int
	}{
		{"batch all answered", `{"id":1,"prompt":"What is 3 plus 4?","max_tokens":2}` + "\n", []string{"batch"}, exitOK},
		{"batch line failed", `{"id":1,"prompt":"<image>"}` + "\n", []string{"batch"}, exitRuntime},
		{"batch unknown field", `{"id":1,"prompt":"hi","max_token":2}` + "\n", []string{"batch"}, exitRuntime},
		{"chat end of input after a refused message", "<image>\n", []string{"chat"}, exitUsage},
		{"chat /quit after a refused message", "<image>\n/quit\n", []string{"chat"}, exitOK},
		{"one-shot", "", []string{"-p", "What is 3 plus 4?"}, exitOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCmd(t, tc.stdin, append(append(tc.args, model...), "-n", "4")...)
			noPanic(t, errs)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %q, stderr %q", code, tc.code, out, errs)
			}
		})
	}
}

// TestServeSignals: serve shuts down cleanly on SIGINT and SIGTERM and exits 0, as its help says.
func TestServeSignals(t *testing.T) {
	model := modelArgs(t, "demo")
	addr := regexp.MustCompile(`on (http://[0-9.:]+) `)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			p := startProc(t, nil, append([]string{"serve", "--port", "0"}, model...)...)
			p.waitFor(t, "the serving line", time.Minute, func() bool { return addr.MatchString(p.stderr.String()) })
			url := addr.FindStringSubmatch(p.stderr.String())[1]
			resp, err := http.Get(url + "/health")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			p.cmd.Process.Signal(sig)
			code := p.wait(t, 20*time.Second)
			errs := p.stderr.String()
			noPanic(t, errs)
			if code != exitOK || lastLine(errs) != "idefics2-run: server stopped" {
				t.Fatalf("exit %d, stderr %q; want 0 after a clean shutdown", code, errs)
			}
			if !strings.Contains(errs, "path=/health status=200") {
				t.Fatalf("no request log line for /health in %q", errs)
			}
		})
	}
}

// TestInfoJSONKeys: every key of info --json is snake_case (the keys of the per-variant scores and of a device's
// features are data: variant and feature names).
func TestInfoJSONKeys(t *testing.T) {
	code, out, errs := runCmd(t, "", "info", "--json", "--device", "cpu")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	snake := regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if !snake.MatchString(k) {
					t.Errorf("key %s.%s is not snake_case", path, k)
				}
				if k == "cpu_variant_scores" || k == "features" && path != ".cpu" {
					continue
				}
				walk(path+"."+k, e)
			}
		case []any:
			for _, e := range x {
				walk(path+"[]", e)
			}
		}
	}
	walk("", v)
	if m, _ := v.(map[string]any); m == nil || m["cpu"] == nil {
		t.Fatalf("no cpu object: %s", out)
	} else if c := m["cpu"].(map[string]any); c["physical_cores"] == nil || c["brand"] == nil {
		t.Fatalf("cpu object %v", c)
	}
}

// TestServeDefaultsProcess: the serve binary applies the default max tokens its help shows (that of
// --token-limit), and warns when it listens beyond loopback without an API key.
func TestServeDefaultsProcess(t *testing.T) {
	model := modelArgs(t, "demo")
	addr := regexp.MustCompile(`on http://[0-9.:\[\]]+:(\d+) `)
	p := startProc(t, nil, append([]string{"serve", "--host", "0.0.0.0", "--port", "0", "--token-limit", "3"}, model...)...)
	p.waitFor(t, "the serving line", time.Minute, func() bool { return addr.MatchString(p.stderr.String()) })
	errs := p.stderr.String()
	if !strings.Contains(errs, "warning: --host 0.0.0.0 accepts connections from other machines and no --api-key is set") {
		t.Errorf("no warning for an exposed host: %q", errs)
	}
	url := "http://127.0.0.1:" + addr.FindStringSubmatch(errs)[1]
	code, _, b := post(t, url+"/v1/chat/completions", `{"messages":[{"role":"user","content":"Tell me a long story."}]}`)
	var r chatResponse
	if code != 200 || json.Unmarshal(b, &r) != nil || r.Usage == nil || r.Usage.CompletionTokens != 3 || *r.Choices[0].FinishReason != "length" {
		t.Fatalf("status %d: %s; want 3 tokens, the --token-limit default of max_tokens", code, b)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 20*time.Second); code != exitOK {
		t.Fatalf("exit %d", code)
	}

	p = startProc(t, nil, append([]string{"serve", "--host", "127.0.0.1", "--port", "0", "--api-key", "k"}, model...)...)
	p.waitFor(t, "the serving line", time.Minute, func() bool { return addr.MatchString(p.stderr.String()) })
	if strings.Contains(p.stderr.String(), "warning") {
		t.Errorf("a warning on loopback: %q", p.stderr.String())
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t, 20*time.Second)
}
