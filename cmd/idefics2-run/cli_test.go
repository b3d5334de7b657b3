package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/idefics2-go/idefics2/internal/npy"
	"github.com/idefics2-go/idefics2/runner"
	"github.com/idefics2-go/idefics2/runner/testmodels"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testmodels.Cleanup()
	removeBinary()
	os.Exit(code)
}

func pair(t testing.TB, name string) (string, string) {
	t.Helper()
	model, mm, err := testmodels.Pair(name, "f32")
	if err != nil {
		t.Fatal(err)
	}
	return model, mm
}

func testdata(parts ...string) string {
	return filepath.Join(append([]string{testmodels.Root(), "testdata"}, parts...)...)
}

// runCmd runs the command in process and returns its exit code, stdout and stderr.
func runCmd(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// cpu are the options every test run uses: the CPU and one thread (the test machine is shared).
var cpu = []string{"--device", "cpu", "-t", "1"}

func modelArgs(t *testing.T, name string) []string {
	model, mm := pair(t, name)
	return append([]string{"-m", model, "--mmproj", mm}, cpu...)
}

func noPanic(t *testing.T, stderr string) {
	t.Helper()
	for _, bad := range []string{"panic:", "goroutine ", "fatal error", "SIGSEGV", "GGML_ASSERT"} {
		if strings.Contains(stderr, bad) {
			t.Fatalf("stderr holds %q:\n%s", bad, stderr)
		}
	}
}

// libAnswer is the reference: the library's greedy answer (24 tokens at most) to one user turn.
func libAnswer(t *testing.T, name, text string, images ...string) *runner.Result {
	t.Helper()
	return libGreedy(t, name, text, 24, 0, images...)
}

// libGreedy is the library's greedy answer of at most maxTokens tokens to one user turn, in a context of ctxSize
// positions (0: the default).
func libGreedy(t *testing.T, name, text string, maxTokens, ctxSize int, images ...string) *runner.Result {
	t.Helper()
	model, mm := pair(t, name)
	m, err := runner.Load(context.Background(), runner.Options{ModelPath: model, MMProjPath: mm, Device: "cpu", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var imgs []runner.Image
	for _, p := range images {
		img, err := runner.LoadImage(p)
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	u, err := runner.UserMessage(text, imgs)
	if err != nil {
		t.Fatal(err)
	}
	p, err := m.ChatPrompt([]runner.Message{u}, runner.PromptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.NewSession(ctxSize)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.Generate(context.Background(), p, runner.GenerateOptions{MaxTokens: maxTokens})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

const question = "What shape is in the picture?"

func demoPNG(name string) string { return testdata("demo", "images", name) }

func dataURI(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(b)
}

// TestFrontEndsAgree: the library, the streaming CLI, --json, batch and chat give the same greedy answer.
func TestFrontEndsAgree(t *testing.T) {
	img := demoPNG("demo_00.png")
	want := libAnswer(t, "demo", question, img)
	t.Logf("library: %q %v", want.Text, want.Tokens)
	args := append(modelArgs(t, "demo"), "-p", question, "--image", img, "-n", "24", "--temp", "0")

	code, out, errs := runCmd(t, "", args...)
	if code != 0 || out != want.Text+"\n" {
		t.Fatalf("streaming: code %d, stdout %q, want %q; stderr %s", code, out, want.Text+"\n", errs)
	}

	code, out, errs = runCmd(t, "", append(args, "--json")...)
	var o runOutput
	if code != 0 || json.Unmarshal([]byte(out), &o) != nil {
		t.Fatalf("--json: code %d, stdout %q, stderr %s", code, out, errs)
	}
	if o.Text != want.Text || fmt.Sprint(o.Tokens) != fmt.Sprint(want.Tokens) || o.StopReason != "stop" ||
		o.Usage.CompletionTokens != len(want.Tokens) || o.Usage.PromptTokens != want.PromptTokens {
		t.Fatalf("--json: %+v, want text %q tokens %v", o, want.Text, want.Tokens)
	}

	// Image from standard input.
	png, _ := os.ReadFile(img)
	code, out, errs = runCmd(t, string(png), append(modelArgs(t, "demo"), "-p", question, "--image", "-", "--json")...)
	if code != 0 || !strings.Contains(out, fmt.Sprintf(`"text":%q`, want.Text)) {
		t.Fatalf("stdin image: code %d, stdout %s, stderr %s", code, out, errs)
	}

	// Batch: messages with a data URI, the prompt form with a path, a bad line, an empty line, a failing request.
	lines := []string{
		fmt.Sprintf(`{"id":"a","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":%q}},{"type":"text","text":%q}]}],"max_tokens":24}`, dataURI(t, img), question),
		fmt.Sprintf(`{"id":2,"prompt":%q,"images":[%q],"temperature":0}`, question, img),
		`{"id":"bad", "messages": [`,
		``,
		`{"id":"c","messages":[{"role":"user","content":"<image><image>"}]}`,
		fmt.Sprintf(`{"id":"d","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":%q}},{"type":"text","text":%q}]}],"max_tokens":24}`, img, question),
	}
	code, out, errs = runCmd(t, strings.Join(lines, "\n")+"\n", append([]string{"batch"}, append(modelArgs(t, "demo"), "-n", "24")...)...)
	if code != 1 {
		t.Errorf("batch with failing requests: exit code %d, want 1; stderr %s", code, errs)
	}
	noPanic(t, errs)
	results := strings.Split(strings.TrimSpace(out), "\n")
	if len(results) != 5 {
		t.Fatalf("batch: %d result lines, want 5:\n%s", len(results), out)
	}
	wantIDs := []string{`"a"`, `2`, `null`, `"c"`, `"d"`}
	for i, line := range results {
		var r struct {
			ID     json.RawMessage `json:"id"`
			Text   *string         `json:"text"`
			Tokens []int32         `json:"tokens"`
			Error  *apiError       `json:"error"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("batch line %d: %v: %s", i, err, line)
		}
		if string(r.ID) != wantIDs[i] {
			t.Errorf("batch line %d: id %s, want %s", i, r.ID, wantIDs[i])
		}
		ok := i == 0 || i == 1 || i == 4
		switch {
		case ok && (r.Error != nil || r.Text == nil || *r.Text != want.Text || fmt.Sprint(r.Tokens) != fmt.Sprint(want.Tokens)):
			t.Errorf("batch line %d: %s, want text %q", i, line, want.Text)
		case !ok && (r.Error == nil || r.Error.Type != "invalid_request_error"):
			t.Errorf("batch line %d: %s, want an invalid_request_error", i, line)
		}
	}

	// Chat under a pipe: the image is attached with /image; the second turn continues the conversation.
	script := "/image " + img + "\n" + question + "\nWhat colour is it?\n/quit\n"
	code, out, errs = runCmd(t, script, append([]string{"chat"}, append(modelArgs(t, "demo"), "-n", "24")...)...)
	answers := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if code != 0 || len(answers) != 2 || answers[0] != want.Text {
		t.Fatalf("chat: code %d, answers %q, want first %q; stderr %s", code, answers, want.Text, errs)
	}
	t.Logf("chat second answer: %q", answers[1])
}

// TestDumpParity runs the HF model cases through the CLI as shared/checks/parity.sh does: --raw prompt, --dump,
// --json; input ids equal, logits within 1e-3 relative, greedy tokens equal.
func TestDumpParity(t *testing.T) {
	for _, name := range []string{"p1_chelsea_split", "p1_text_only", "p2_text_only", "p2_two_images"} {
		t.Run(name, func(t *testing.T) {
			dir := testdata("hf", "cases", name)
			var c struct {
				Config string `json:"config"`
				Inputs struct {
					Prompt string `json:"prompt"`
					Images []struct {
						File string `json:"file"`
					} `json:"images"`
				} `json:"inputs"`
				Generation struct {
					MaxNewTokens int `json:"max_new_tokens"`
				} `json:"generation"`
			}
			b, _ := os.ReadFile(filepath.Join(dir, "manifest.json"))
			if err := json.Unmarshal(b, &c); err != nil {
				t.Fatal(err)
			}
			dump := t.TempDir()
			args := append(modelArgs(t, c.Config), "--raw", "-p", c.Inputs.Prompt, "-n", fmt.Sprint(c.Generation.MaxNewTokens),
				"--temp", "0", "--json", "--dump", dump)
			for _, im := range c.Inputs.Images {
				args = append(args, "--image", testdata("hf", im.File))
			}
			code, out, errs := runCmd(t, "", args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			var o runOutput
			if err := json.Unmarshal([]byte(out), &o); err != nil {
				t.Fatal(err)
			}
			ids := npyI64(t, filepath.Join(dump, "input_ids.npy"))
			if fmt.Sprint(ids) != fmt.Sprint(npyI64(t, filepath.Join(dir, "input_ids.npy"))) {
				t.Fatalf("input ids differ: %v", ids)
			}
			got, want := npyF32(t, filepath.Join(dump, "logits.npy")), npyF32(t, filepath.Join(dir, "logits.npy"))
			if len(got) != len(want) {
				t.Fatalf("logits: %d values, want %d", len(got), len(want))
			}
			maxRef, maxAbs := 0.0, 0.0
			for i := range want {
				maxRef = max(maxRef, abs(float64(want[i])))
				maxAbs = max(maxAbs, abs(float64(got[i]-want[i])))
			}
			if maxAbs/maxRef > 1e-3 {
				t.Fatalf("logits: rel err %.3g", maxAbs/maxRef)
			}
			if gen := npyI64(t, filepath.Join(dir, "generated_ids.npy")); fmt.Sprint(o.Tokens) != fmt.Sprint(gen) {
				t.Fatalf("tokens %v, want %v", o.Tokens, gen)
			}
			if len(c.Inputs.Images) > 0 {
				for _, f := range []string{"pixel_values.npy", "vision_last_hidden_state.npy", "connector_output.npy"} {
					a, err := npy.Read(filepath.Join(dump, f))
					if err != nil {
						t.Fatal(err)
					}
					w, err := npy.Read(filepath.Join(dir, f))
					if err != nil {
						t.Fatal(err)
					}
					if fmt.Sprint(a.Shape) != fmt.Sprint(w.Shape) {
						t.Errorf("%s: shape %v, want %v", f, a.Shape, w.Shape)
					}
				}
			}
		})
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func npyF32(t *testing.T, path string) []float32 {
	t.Helper()
	a, err := npy.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := a.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func npyI64(t *testing.T, path string) []int64 {
	t.Helper()
	a, err := npy.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := a.Int64s()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestDemoCLI runs every case of testdata/demo/manifest.json as shared/checks/demo.sh does; all must give HF's
// greedy ids (a trailing stop token ignored on both sides).
func TestDemoCLI(t *testing.T) {
	var man struct {
		Generation struct {
			EOS []int32 `json:"eos_token_id"`
		} `json:"generation"`
		Cases []struct {
			ID     string `json:"id"`
			Prompt string `json:"prompt"`
			Images []struct {
				File string `json:"file"`
			} `json:"images"`
			GeneratedIDs []int32 `json:"generated_ids"`
		} `json:"cases"`
	}
	b, err := os.ReadFile(testdata("demo", "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &man); err != nil {
		t.Fatal(err)
	}
	strip := func(ids []int32) []int32 {
		if n := len(ids); n > 0 {
			for _, s := range man.Generation.EOS {
				if ids[n-1] == s {
					return ids[:n-1]
				}
			}
		}
		return ids
	}
	for _, c := range man.Cases {
		t.Run(c.ID, func(t *testing.T) {
			args := append(modelArgs(t, "demo"), "--raw", "-p", c.Prompt, "-n", "24", "--temp", "0", "--json")
			for _, im := range c.Images {
				args = append(args, "--image", testdata("demo", im.File))
			}
			code, out, errs := runCmd(t, "", args...)
			var o runOutput
			if code != 0 || json.Unmarshal([]byte(out), &o) != nil {
				t.Fatalf("exit %d, stdout %q, stderr %s", code, out, errs)
			}
			if fmt.Sprint(strip(o.Tokens)) != fmt.Sprint(strip(c.GeneratedIDs)) {
				t.Fatalf("tokens %v, want %v", o.Tokens, c.GeneratedIDs)
			}
		})
	}
}

// TestCLIBadInput: bad usage and bad input exit with 2 and one line on stderr naming the culprit.
func TestCLIBadInput(t *testing.T) {
	model, mm := pair(t, "p1")
	img := demoPNG("demo_00.png")
	dir := t.TempDir()
	notGGUF := filepath.Join(dir, "junk.gguf")
	os.WriteFile(notGGUF, []byte("GGUF but not really"), 0o644)
	notImage := filepath.Join(dir, "junk.png")
	os.WriteFile(notImage, []byte("not a picture"), 0o644)
	base := append([]string{"-m", model, "--mmproj", mm}, cpu...)
	with := func(extra ...string) []string { return append(append([]string(nil), base...), extra...) }
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no arguments", nil, "usage"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown option", with("-p", "hi", "--frob"), "--frob"},
		{"no model", []string{"-p", "hi"}, "-m model.gguf"},
		{"missing model", append([]string{"-m", "/nonexistent/model.gguf", "-p", "hi"}, cpu...), "/nonexistent/model.gguf"},
		{"missing mmproj", append([]string{"-m", model, "--mmproj", "/nonexistent/mm.gguf", "-p", "hi"}, cpu...), "/nonexistent/mm.gguf"},
		{"mmproj given as model", append([]string{"-m", mm, "-p", "hi"}, cpu...), "is an mmproj"},
		{"model given as mmproj", append([]string{"-m", model, "--mmproj", model, "-p", "hi"}, cpu...), "is a text model"},
		{"not a GGUF", append([]string{"-m", notGGUF, "-p", "hi"}, cpu...), "junk.gguf"},
		{"empty prompt", with("-p", ""), "prompt is empty"},
		{"no prompt", with(), "prompt is empty"},
		{"more markers than images", with("--raw", "-p", "<image><image>hi", "--image", img), "2 <image> markers but 1 image was given"},
		{"more markers than images (chat)", with("-p", "<image> and <image>", "--image", img), "2 <image> markers"},
		{"missing image", with("-p", "hi", "--image", "/nonexistent/a.png"), "/nonexistent/a.png"},
		{"undecodable image", with("-p", "hi", "--image", notImage), "junk.png"},
		{"image URL", with("-p", "hi", "--image", "https://example.com/a.png"), "https://example.com/a.png"},
		{"image with a text-only model", append([]string{"-m", model, "--text-only", "-p", "hi", "--image", img}, cpu...), "mmproj"},
		{"unknown device", with("-p", "hi", "--device", "tpu"), `--device "tpu"`},
		{"negative -n", with("-p", "hi", "-n", "-3"), "--max-tokens -3"},
		{"-n not a number", with("-p", "hi", "-n", "many"), `"many" is not an integer`},
		{"-n without value", with("-p", "hi", "-n"), "--max-tokens needs a value"},
		{"bad temperature", with("-p", "hi", "--temp", "-1"), "temperature -1"},
		{"bad top-p", with("-p", "hi", "--top-p", "1.5"), "top_p 1.5"},
		{"negative threads", with("-p", "hi", "-t", "-2"), "--threads -2"},
		{"context too large", with("-p", "hi", "-c", "100000"), "context size 100000"},
		{"prompt over context", with("-p", strings.Repeat("word ", 300), "-c", "64"), "does not fit the context size 64"},
		{"system with raw", with("--raw", "-p", "hi", "--system", "x"), "--system"},
		{"stray argument", with("-p", "hi", "extra"), `"extra"`},
		{"empty stop", with("-p", "hi", "--stop", ""), "empty stop string"},
		{"stdin twice", with("-p", "<image><image>", "--image", "-", "--image", "-"), "standard input"},
		{"tokenize without model", []string{"tokenize", "hi"}, "-m model.gguf"},
		{"tokenize an mmproj", []string{"tokenize", "-m", mm, "hi"}, "mmproj"},
		{"detokenize bad id", []string{"detokenize", "-m", model, "12", "x"}, `"x" is not a token id`},
		{"detokenize out of range", []string{"detokenize", "-m", model, "[1, 99999]"}, "99999"},
		{"preprocess two configs", []string{"preprocess", "--mmproj", mm, "--processor-config", "x.json", "--image", img, "--out", dir}, "exactly one"},
		{"preprocess missing image", []string{"preprocess", "--mmproj", mm, "--image", "/nonexistent/b.png", "--out", dir}, "/nonexistent/b.png"},
		{"preprocess text model", []string{"preprocess", "--mmproj", model, "--image", img, "--out", dir}, "not an mmproj"},
		{"inspect missing", []string{"inspect", "/nonexistent/x.gguf"}, "/nonexistent/x.gguf"},
		{"inspect junk", []string{"inspect", notGGUF}, "junk.gguf"},
		{"serve bad port", append([]string{"serve", "-m", model, "--port", "70000"}, cpu...), "--port 70000"},
		{"serve local dir missing", append([]string{"serve", "-m", model, "--allow-local-images", "/nonexistent/dir"}, cpu...), "/nonexistent/dir"},
		{"chat stdin image", append([]string{"chat", "-m", model, "--image", "-"}, cpu...), "standard input"},
		{"batch stray argument", append([]string{"batch", "-m", model, "x.jsonl"}, cpu...), `"x.jsonl"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := runCmd(t, "", tc.args...)
			noPanic(t, errs)
			if code != exitUsage {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, exitUsage, errs)
			}
			if tc.args == nil {
				return // the usage text
			}
			if lines := strings.Split(strings.TrimRight(errs, "\n"), "\n"); len(lines) != 1 {
				t.Fatalf("stderr has %d lines, want 1:\n%s", len(lines), errs)
			}
			if !strings.Contains(errs, tc.want) || !strings.HasPrefix(errs, "idefics2-run: ") {
				t.Fatalf("stderr %q, want one line starting idefics2-run: and naming %q", errs, tc.want)
			}
		})
	}
}

func TestTokenizeDetokenize(t *testing.T) {
	model, _ := pair(t, "p1")
	type tokCase struct {
		Kind     string  `json:"kind"`
		Text     string  `json:"text"`
		IDs      []int32 `json:"ids"`
		IDsNoBOS []int32 `json:"ids_no_bos"`
		Decoded  string  `json:"decoded_skip_special"`
	}
	var cases []tokCase
	b, err := os.ReadFile(testdata("tokenizer", "cases.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var one tokCase
		if err := json.Unmarshal([]byte(line), &one); err != nil {
			t.Fatal(err)
		}
		if one.Kind == "encode" && !strings.Contains(one.Text, "\x00") {
			cases = append(cases, one)
		}
	}
	if len(cases) < 100 {
		t.Fatalf("only %d encode cases", len(cases))
	}
	// Every 7th case keeps the test short; shared/checks/tokenizer.sh runs them all through the binary.
	for i := 0; i < len(cases); i += 7 {
		c := cases[i]
		for _, v := range []struct {
			flags []string
			want  []int32
		}{{nil, c.IDs}, {[]string{"--no-bos"}, c.IDsNoBOS}} {
			args := append(append([]string{"tokenize", "-m", model}, v.flags...), c.Text)
			code, out, errs := runCmd(t, "", args...)
			if code != 0 || strings.TrimSpace(out) != compactJSON(v.want) {
				t.Fatalf("tokenize %q %v: code %d, got %s, want %s; %s", c.Text, v.flags, code, out, compactJSON(v.want), errs)
			}
		}
		code, out, errs := runCmd(t, "", "detokenize", "-m", model, compactJSON(c.IDs))
		if code != 0 || strings.TrimSuffix(out, "\n") != c.Decoded {
			t.Fatalf("detokenize %v: code %d, got %q, want %q; %s", c.IDs, code, out, c.Decoded, errs)
		}
	}
}

func compactJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestPreprocess compares the preprocess command with the HF processor case, as shared/checks/processor.sh does.
func TestPreprocess(t *testing.T) {
	dir := testdata("hf", "cases", "proc8b_coins_split")
	var man struct {
		Settings map[string]any `json:"settings"`
		Inputs   struct {
			Images []struct {
				File string `json:"file"`
			} `json:"images"`
		} `json:"inputs"`
	}
	b, _ := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err := json.Unmarshal(b, &man); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	s := man.Settings
	delete(s, "note")
	s["image_processor_type"] = "Idefics2ImageProcessor"
	cfg, _ := json.Marshal(s)
	cfgPath := filepath.Join(out, "preprocessor_config.json")
	os.WriteFile(cfgPath, cfg, 0o644)
	args := []string{"preprocess", "--processor-config", cfgPath, "--out", out}
	for _, im := range man.Inputs.Images {
		args = append(args, "--image", testdata("hf", im.File))
	}
	if code, _, errs := runCmd(t, "", args...); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	got, want := npyF32(t, filepath.Join(out, "pixel_values.npy")), npyF32(t, filepath.Join(dir, "pixel_values.npy"))
	if len(got) != len(want) {
		t.Fatalf("%d pixel values, want %d", len(got), len(want))
	}
	for i := range got {
		if abs(float64(got[i]-want[i])) > 1e-5 {
			t.Fatalf("pixel %d: %v, want %v", i, got[i], want[i])
		}
	}
	gm, err := npy.Read(filepath.Join(out, "pixel_attention_mask.npy"))
	if err != nil {
		t.Fatal(err)
	}
	wm, _ := npy.Read(filepath.Join(dir, "pixel_attention_mask.npy"))
	g, _ := gm.Bools()
	w, _ := wm.Bools()
	if fmt.Sprint(gm.Shape) != fmt.Sprint(wm.Shape) || fmt.Sprint(g) != fmt.Sprint(w) {
		t.Fatalf("mask differs (shape %v, want %v)", gm.Shape, wm.Shape)
	}
	// The mmproj form: the demo's settings, no split.
	_, mm := pair(t, "demo")
	if code, outText, errs := runCmd(t, "", "preprocess", "--mmproj", mm, "--image", demoPNG("demo_00.png"), "--out", out); code != 0 || !strings.Contains(outText, "1 image → 1 (sub-)image of") {
		t.Fatalf("mmproj: exit %d: %s %s", code, outText, errs)
	}
}

func TestInspect(t *testing.T) {
	model, _ := pair(t, "p1")
	code, out, errs := runCmd(t, "", "inspect", model)
	if code != 0 || !strings.Contains(out, "general.architecture") || !strings.Contains(out, "token_embd.weight") {
		t.Fatalf("exit %d, stdout %.300s, stderr %s", code, out, errs)
	}
}

// TestBinary builds the command and checks exit codes and output of the real process.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	model, mm := pair(t, "demo")
	img := demoPNG("demo_03.png")
	want := libAnswer(t, "demo", "What colour is the shape?", img)
	tests := []struct {
		args []string
		code int
		out  string
		err  string
	}{
		{append([]string{"-m", model, "--mmproj", mm, "-p", "What colour is the shape?", "--image", img, "-n", "24"}, cpu...), 0, want.Text + "\n", ""},
		{append([]string{"-m", mm, "-p", "hi"}, cpu...), 2, "", "is an mmproj"},
		{append([]string{"-m", model, "-p", "hi", "-n", "-1"}, cpu...), 2, "", "--max-tokens -1"},
		{[]string{"info", "--device", "tpu"}, 2, "", ""},
	}
	for _, tc := range tests {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(bin, tc.args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		noPanic(t, stderr.String())
		if code != tc.code || (tc.out != "" && stdout.String() != tc.out) || !strings.Contains(stderr.String(), tc.err) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want %d, %q, %q", tc.args, code, stdout.String(), stderr.String(), tc.code, tc.out, tc.err)
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for a writer and a reader in different goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var _ io.Writer = (*lockedBuffer)(nil)
