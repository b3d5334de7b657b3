package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/internal/npy"
	"github.com/idefics2-go/idefics2/runner/testmodels"
)

// tolLogits bounds max |ours − HF| / max |HF| of the prompt logits of the F32 fixture models: graph/ holds its
// stages to 1e-4 (accumulation order and ggml's F32 kernels); the front end must add nothing, and 1e-3 is the
// tolerance of shared/checks/parity.sh.
const tolLogits = 1e-3

func TestMain(m *testing.M) {
	code := m.Run()
	testmodels.Cleanup()
	os.Exit(code)
}

var (
	modelsMu sync.Mutex
	models   = map[string]*Model{}
)

// loadModel converts (once) and loads (once) a fixture model; it stays loaded for the whole test binary.
func loadModel(t testing.TB, name string) *Model {
	t.Helper()
	modelsMu.Lock()
	defer modelsMu.Unlock()
	if m, ok := models[name]; ok {
		return m
	}
	text, mm, err := testmodels.Pair(name, "f32")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Load(context.Background(), Options{ModelPath: text, MMProjPath: mm, Device: "cpu", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	models[name] = m
	return m
}

func testdata(parts ...string) string {
	return filepath.Join(append([]string{testmodels.Root(), "testdata"}, parts...)...)
}

type hfCase struct {
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

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func readNpyF32(t *testing.T, path string) []float32 {
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

func readNpyI64(t *testing.T, path string) []int64 {
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

// relErr returns max |got − want| / max |want|, the worst index and the values there.
func relErr(got, want []float32) (float64, int) {
	maxRef, maxAbs, worst := 0.0, 0.0, 0
	for i := range want {
		maxRef = math.Max(maxRef, math.Abs(float64(want[i])))
		if e := math.Abs(float64(got[i]) - float64(want[i])); e > maxAbs || math.IsNaN(e) {
			maxAbs, worst = e, i
		}
	}
	return maxAbs / math.Max(maxRef, 1e-30), worst
}

// fixtureCase is an HF fixture case ready to generate: its model, images, raw prompt and a fresh session.
type fixtureCase struct {
	dir  string
	c    hfCase
	m    *Model
	imgs []Image
	p    *Prompt
	s    *Session
}

// openCase loads case name of testdata/hf/cases; the session is closed when the test ends.
func openCase(t *testing.T, name string) fixtureCase {
	t.Helper()
	fc := fixtureCase{dir: testdata("hf", "cases", name)}
	readJSON(t, filepath.Join(fc.dir, "manifest.json"), &fc.c)
	fc.m = loadModel(t, fc.c.Config)
	for _, im := range fc.c.Inputs.Images {
		img, err := LoadImage(testdata("hf", im.File))
		if err != nil {
			t.Fatal(err)
		}
		fc.imgs = append(fc.imgs, img)
	}
	var err error
	if fc.p, err = fc.m.RawPrompt(fc.c.Inputs.Prompt, fc.imgs, PromptOptions{}); err != nil {
		t.Fatal(err)
	}
	if fc.s, err = fc.m.NewSession(0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fc.s.Close)
	return fc
}

// TestParityHF runs every "model" case of testdata/hf/cases through RawPrompt and Generate with a dump: the input
// ids must equal HF's, the logits of every prompt position be within tolLogits, and the greedy tokens equal.
func TestParityHF(t *testing.T) {
	for _, name := range []string{"p1_chelsea_split", "p1_text_only", "p2_text_only", "p2_two_images"} {
		t.Run(name, func(t *testing.T) {
			fc := openCase(t, name)
			dir, c, imgs, p, s := fc.dir, fc.c, fc.imgs, fc.p, fc.s
			dump := t.TempDir()
			res, err := s.Generate(context.Background(), p, GenerateOptions{MaxTokens: c.Generation.MaxNewTokens, DumpDir: dump})
			if err != nil {
				t.Fatal(err)
			}
			wantIDs := readNpyI64(t, filepath.Join(dir, "input_ids.npy"))
			gotIDs := readNpyI64(t, filepath.Join(dump, DumpInputIDs))
			if fmt.Sprint(gotIDs) != fmt.Sprint(wantIDs) {
				t.Fatalf("input ids\n got %v\nwant %v", gotIDs, wantIDs)
			}
			checks := []string{DumpLogits}
			if len(imgs) > 0 {
				checks = append(checks, DumpPixelValues, DumpConnector)
			}
			for _, f := range checks {
				got, want := readNpyF32(t, filepath.Join(dump, f)), readNpyF32(t, filepath.Join(dir, f))
				if len(got) != len(want) {
					t.Fatalf("%s: %d values, want %d", f, len(got), len(want))
				}
				rel, worst := relErr(got, want)
				t.Logf("%s: rel err %.3g (worst index %d)", f, rel, worst)
				if rel > tolLogits {
					t.Errorf("%s: rel err %.3g > %g at %d: got %v want %v", f, rel, tolLogits, worst, got[worst], want[worst])
				}
			}
			wantGen := readNpyI64(t, filepath.Join(dir, "generated_ids.npy"))
			if fmt.Sprint(res.Tokens) != fmt.Sprint(wantGen) {
				t.Fatalf("greedy tokens\n got %v\nwant %v", res.Tokens, wantGen)
			}
		})
	}
}

type demoCase struct {
	ID     string `json:"id"`
	Images []struct {
		File string `json:"file"`
	} `json:"images"`
	Messages []struct {
		Role    string `json:"role"`
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
	} `json:"messages"`
	Prompt       string  `json:"prompt"`
	InputIDs     []int32 `json:"input_ids"`
	GeneratedIDs []int32 `json:"generated_ids"`
	Answer       string  `json:"answer"`
}

// TestDemoChat builds every demo case from its messages through the chat template (not the rendered prompt): the
// text and ids must be HF's, and the greedy answer HF's, stop token included.
func TestDemoChat(t *testing.T) {
	var man struct {
		Cases []demoCase `json:"cases"`
	}
	readJSON(t, testdata("demo", "manifest.json"), &man)
	m := loadModel(t, "demo")
	s, err := m.NewSession(1024)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range man.Cases {
		t.Run(c.ID, func(t *testing.T) {
			var msgs []Message
			k := 0
			for _, cm := range c.Messages {
				msg := Message{Role: cm.Role}
				for _, part := range cm.Content {
					if part.Type == "image" {
						img, err := LoadImage(testdata("demo", c.Images[k].File))
						if err != nil {
							t.Fatal(err)
						}
						k++
						msg.Content = append(msg.Content, ImagePart(img))
					} else {
						msg.Content = append(msg.Content, TextPart(part.Text))
					}
				}
				msgs = append(msgs, msg)
			}
			p, err := m.ChatPrompt(msgs, PromptOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if p.Text != c.Prompt {
				t.Fatalf("prompt\n got %q\nwant %q", p.Text, c.Prompt)
			}
			if fmt.Sprint(p.Tokens) != fmt.Sprint(c.InputIDs) {
				t.Fatalf("input ids\n got %v\nwant %v", p.Tokens, c.InputIDs)
			}
			res, err := s.Generate(context.Background(), p, GenerateOptions{MaxTokens: 24})
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(res.Tokens) != fmt.Sprint(c.GeneratedIDs) {
				t.Fatalf("tokens\n got %v\nwant %v", res.Tokens, c.GeneratedIDs)
			}
			if strings.TrimSpace(res.Text) != c.Answer {
				t.Fatalf("answer %q, want %q", res.Text, c.Answer)
			}
		})
	}
}

func demoImage(t *testing.T, name string) Image {
	t.Helper()
	img, err := LoadImage(testdata("demo", "images", name))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func userTurn(t *testing.T, text string, imgs ...Image) Message {
	t.Helper()
	u, err := UserMessage(text, imgs)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestPrefixReuse checks that a second turn evaluated on top of the cached first one gives what a fresh session
// gives, and reuses the cache.
func TestPrefixReuse(t *testing.T) {
	m := loadModel(t, "demo")
	ctx := context.Background()
	turn1 := []Message{userTurn(t, "What shape is in the picture?", demoImage(t, "demo_00.png"))}
	s, err := m.NewSession(512)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p1, err := m.ChatPrompt(turn1, PromptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r1, err := s.Generate(ctx, p1, GenerateOptions{MaxTokens: 24})
	if err != nil {
		t.Fatal(err)
	}
	turn2 := append(turn1, Message{Role: "assistant", Content: []Part{TextPart(strings.TrimSpace(r1.Text))}},
		userTurn(t, "What colour is the shape?"))
	p2, err := m.ChatPrompt(turn2, PromptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.Generate(ctx, p2, GenerateOptions{MaxTokens: 24})
	if err != nil {
		t.Fatal(err)
	}
	if r2.CachedTokens < len(p1.Tokens) {
		t.Errorf("second turn reused %d cached positions, want at least the %d of the first prompt", r2.CachedTokens, len(p1.Tokens))
	}
	fresh, err := m.NewSession(512)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	r3, err := fresh.Generate(ctx, p2, GenerateOptions{MaxTokens: 24})
	if err != nil {
		t.Fatal(err)
	}
	if r3.CachedTokens != 0 || fmt.Sprint(r2.Tokens) != fmt.Sprint(r3.Tokens) {
		t.Fatalf("cached turn %v (%d cached), fresh %v (%d cached)", r2.Tokens, r2.CachedTokens, r3.Tokens, r3.CachedTokens)
	}
	// Same text, another image: the image positions must not be reused.
	p4, err := m.ChatPrompt([]Message{userTurn(t, "What shape is in the picture?", demoImage(t, "demo_03.png"))}, PromptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r4, err := s.Generate(ctx, p4, GenerateOptions{MaxTokens: 24})
	if err != nil {
		t.Fatal(err)
	}
	if r4.CachedTokens > 4 {
		t.Fatalf("a different image reused %d cached positions", r4.CachedTokens)
	}
}

func TestSamplingSeed(t *testing.T) {
	m := loadModel(t, "p1")
	p, err := m.ChatPrompt([]Message{userTurn(t, "Tell me a story.")}, PromptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.NewSession(256)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	gen := func(seed uint64) []int32 {
		r, err := s.Generate(context.Background(), p, GenerateOptions{MaxTokens: 20,
			Sampler: SamplerOptions{Temperature: 1.2, TopK: 50, TopP: 0.95, Seed: seed}})
		if err != nil {
			t.Fatal(err)
		}
		return r.Tokens
	}
	a, b, c := gen(1), gen(1), gen(2)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("seed 1 twice: %v and %v", a, b)
	}
	if fmt.Sprint(a) == fmt.Sprint(c) {
		t.Fatalf("seeds 1 and 2 gave the same tokens %v", a)
	}
}

func TestStopsAndLimits(t *testing.T) {
	m := loadModel(t, "demo")
	ctx := context.Background()
	p, err := m.RawPrompt("User:<image>Describe this image.<end_of_utterance>\nAssistant:", []Image{demoImage(t, "demo_01.png")}, PromptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.NewSession(256)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	full, err := s.Generate(ctx, p, GenerateOptions{MaxTokens: 40})
	if err != nil {
		t.Fatal(err)
	}
	if full.StopReason != StopToken || !m.isStop(full.Tokens[len(full.Tokens)-1]) {
		t.Fatalf("stop reason %s, tokens %v", full.StopReason, full.Tokens)
	}
	t.Logf("answer %q", full.Text)

	// A stop string cuts the text before it; streamed text equals the result.
	word := strings.Fields(full.Text)[2]
	var streamed strings.Builder
	r, err := s.Generate(ctx, p, GenerateOptions{MaxTokens: 40, Stop: []string{word},
		OnText: func(x string) error { streamed.WriteString(x); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if r.StopReason != StopString || r.Text != full.Text[:strings.Index(full.Text, word)] || streamed.String() != r.Text {
		t.Fatalf("stop %q: reason %s, text %q, streamed %q", word, r.StopReason, r.Text, streamed.String())
	}

	// Max tokens.
	r, err = s.Generate(ctx, p, GenerateOptions{MaxTokens: 2})
	if err != nil || r.StopReason != StopLength || len(r.Tokens) != 2 {
		t.Fatalf("max 2: %v %+v", err, r)
	}
	r, err = s.Generate(ctx, p, GenerateOptions{MaxTokens: 0})
	if err != nil || len(r.Tokens) != 0 || r.Text != "" {
		t.Fatalf("max 0: %v %+v", err, r)
	}

	// The context fills up.
	small, err := m.NewSession(len(p.Tokens) + 3)
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	r, err = small.Generate(ctx, p, GenerateOptions{MaxTokens: 40})
	if err != nil || r.StopReason != StopContext || len(r.Tokens) != 4 {
		t.Fatalf("full context: %v %+v", err, r)
	}
	// An absurd MaxTokens (a request field) allocates nothing in proportion: the context ends generation.
	r, err = small.Generate(ctx, p, GenerateOptions{MaxTokens: math.MaxInt})
	if err != nil || r.StopReason != StopContext || len(r.Tokens) != 4 {
		t.Fatalf("MaxTokens MaxInt: %v %+v", err, r)
	}

	// A prompt that does not fit: an error, or truncation when asked.
	tiny, err := m.NewSession(20)
	if err != nil {
		t.Fatal(err)
	}
	defer tiny.Close()
	_, err = tiny.Generate(ctx, p, GenerateOptions{MaxTokens: 4})
	if !errors.Is(err, ErrContextOverflow) || !IsInputError(err) {
		t.Fatalf("overflow: err %v", err)
	}
	r, err = tiny.Generate(ctx, p, GenerateOptions{MaxTokens: 4, Truncate: true})
	if err != nil || r.PromptTokens > 20 || r.PromptTokens == 0 {
		t.Fatalf("truncated: %v %+v", err, r)
	}

	// Cancellation from the streaming callback and from the context.
	cctx, cancel := context.WithCancel(ctx)
	n := 0
	r, err = s.Generate(cctx, p, GenerateOptions{MaxTokens: 40, OnText: func(string) error {
		n++
		cancel()
		return nil
	}})
	if !errors.Is(err, context.Canceled) || r == nil || r.StopReason != StopCancelled || n != 1 {
		t.Fatalf("cancel: err %v, result %+v, %d callbacks", err, r, n)
	}
	boom := errors.New("client gone")
	_, err = s.Generate(ctx, p, GenerateOptions{MaxTokens: 40, OnText: func(string) error { return boom }})
	if !errors.Is(err, boom) {
		t.Fatalf("callback error: %v", err)
	}
}

func TestBannedImageTokens(t *testing.T) {
	m := loadModel(t, "p1")
	img, _ := m.tok.TokenID(tokenImage)
	fake, _ := m.tok.TokenID(tokenFakeAroundImage)
	p, err := m.RawPrompt("<image><image><image>", []Image{demoImage(t, "demo_00.png"), demoImage(t, "demo_01.png"), demoImage(t, "demo_02.png")}, PromptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.NewSession(0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.Generate(context.Background(), p, GenerateOptions{MaxTokens: 50, Sampler: SamplerOptions{Temperature: 3, Seed: 3}})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range r.Tokens {
		if id == img || id == fake {
			t.Fatalf("generated an image placeholder: %v", r.Tokens)
		}
	}
}

func TestBadInput(t *testing.T) {
	text, mm, err := testmodels.Pair("p1", "f32")
	if err != nil {
		t.Fatal(err)
	}
	m := loadModel(t, "p1")
	img := demoImage(t, "demo_00.png")
	notGGUF := filepath.Join(t.TempDir(), "x.gguf")
	os.WriteFile(notGGUF, []byte("hello"), 0o644)
	noNorm := withoutTensor(t, text, "output_norm.weight")
	loads := []struct {
		name string
		o    Options
		want string
	}{
		{"missing model", Options{ModelPath: "/nonexistent/m.gguf"}, "/nonexistent/m.gguf does not exist"},
		{"missing mmproj", Options{ModelPath: text, MMProjPath: "/nonexistent/mm.gguf"}, "/nonexistent/mm.gguf does not exist"},
		{"mmproj as model", Options{ModelPath: mm, MMProjPath: mm}, "is an mmproj"},
		{"model as mmproj", Options{ModelPath: text, MMProjPath: text}, "is a text model"},
		{"not a GGUF", Options{ModelPath: notGGUF}, "x.gguf"},
		{"unknown device", Options{ModelPath: text, Device: "tpu"}, "tpu"},
		{"no model", Options{}, "no model"},
		{"missing tensor", Options{ModelPath: noNorm}, "output_norm.weight"},
	}
	for _, tc := range loads {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Threads = 1
			m, err := Load(context.Background(), tc.o)
			if err == nil {
				m.Close()
				t.Fatal("loaded")
			}
			if !IsInputError(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v (input error %v), want one naming %q", err, IsInputError(err), tc.want)
			}
		})
	}
	prompts := []struct {
		name string
		f    func() error
		want string
	}{
		{"more markers than images", func() error { _, err := m.RawPrompt("<image><image>hi", []Image{img}, PromptOptions{}); return err }, "2 <image> markers but 1 image was given"},
		{"fewer markers than images", func() error { _, err := m.RawPrompt("hi", []Image{img}, PromptOptions{}); return err }, "0 <image> markers but 1 image was given"},
		{"empty raw", func() error { _, err := m.RawPrompt("", nil, PromptOptions{}); return err }, "empty"},
		{"empty user", func() error { _, err := UserMessage("", nil); return err }, "empty"},
		{"marker count in user text", func() error { _, err := UserMessage("<image> and <image>", []Image{img}); return err }, "2 <image> markers"},
		{"undecodable image", func() error {
			_, err := m.RawPrompt("<image>", []Image{{Name: "junk.png", Data: []byte("not an image")}}, PromptOptions{})
			return err
		}, "junk.png"},
		{"missing image", func() error { _, err := LoadImage("/nonexistent/a.png"); return err }, "/nonexistent/a.png"},
		{"no messages", func() error { _, err := m.ChatPrompt(nil, PromptOptions{}); return err }, "no messages"},
		{"empty message", func() error { _, err := m.ChatPrompt([]Message{{Role: "user"}}, PromptOptions{}); return err }, "empty"},
		{"bad part", func() error {
			_, err := m.ChatPrompt([]Message{{Role: "user", Content: []Part{{Type: "audio"}}}}, PromptOptions{})
			return err
		}, "audio"},
		{"negative max tokens", func() error {
			s, _ := m.NewSession(64)
			defer s.Close()
			p, _ := m.RawPrompt("hi", nil, PromptOptions{})
			_, err := s.Generate(context.Background(), p, GenerateOptions{MaxTokens: -1})
			return err
		}, "max tokens -1"},
		{"context too large", func() error { _, err := m.NewSession(1 << 20); return err }, "context size"},
	}
	for _, tc := range prompts {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.f()
			if err == nil || !IsInputError(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v (input error %v), want an input error naming %q", err, IsInputError(err), tc.want)
			}
		})
	}
	t.Run("image without mmproj", func(t *testing.T) {
		tm, err := Load(context.Background(), Options{ModelPath: text, TextOnly: true, Device: "cpu", Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer tm.Close()
		_, err = tm.RawPrompt("<image>", []Image{img}, PromptOptions{})
		if !IsInputError(err) || !strings.Contains(err.Error(), "mmproj") {
			t.Fatalf("err %v", err)
		}
	})
}

// withoutTensor writes a copy of the GGUF at path without the named tensor.
func withoutTensor(t *testing.T, path, drop string) string {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := filepath.Join(t.TempDir(), "broken.gguf")
	w, err := gguf.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, kv := range f.KV {
		if err := w.SetKV(kv.Key, kv.Value); err != nil {
			t.Fatal(err)
		}
	}
	for _, ti := range f.Tensors {
		if ti.Name != drop {
			if err := w.AddTensor(ti.Name, ti.Type, ti.Shape); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, ti := range f.Tensors {
		if ti.Name == drop {
			continue
		}
		b, err := f.TensorData(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WriteTensor(ti.Name, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFindMMProj(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "m.gguf")
	if got := FindMMProj(model); got != "" {
		t.Fatalf("found %q in an empty folder", got)
	}
	os.WriteFile(filepath.Join(dir, "mmproj-m.gguf"), nil, 0o644)
	if got := FindMMProj(model); got != filepath.Join(dir, "mmproj-m.gguf") {
		t.Fatalf("got %q", got)
	}
}

// TestCancelledGenerate: a cancelled context stops Generate with the partial result (StopCancelled) and ctx's
// error, before the prompt is evaluated as well as between generated tokens, and the text streamed so far equals
// the result's text (nothing held back for a possible stop string is lost).
func TestCancelledGenerate(t *testing.T) {
	m := loadModel(t, "p1")
	p, err := m.RawPrompt("Tell me a long story", nil, PromptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.NewSession(512)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, err := s.Generate(ctx, p, GenerateOptions{MaxTokens: 10})
	if !errors.Is(err, context.Canceled) || r == nil || r.StopReason != StopCancelled || len(r.Tokens) != 0 {
		t.Fatalf("cancelled before the prompt: %v %+v", err, r)
	}
	full, err := s.Generate(context.Background(), p, GenerateOptions{MaxTokens: 12})
	if err != nil {
		t.Fatal(err)
	}
	// A stop string that never occurs but starts with a space holds back text that ends in a space.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	var streamed strings.Builder
	n := 0
	r, err = s.Generate(ctx, p, GenerateOptions{MaxTokens: 100, Stop: []string{" \x00"},
		OnToken: func(int32) error {
			if n++; n == 6 {
				cancel()
			}
			return nil
		},
		OnText: func(x string) error { streamed.WriteString(x); return nil }})
	if !errors.Is(err, context.Canceled) || r.StopReason != StopCancelled || len(r.Tokens) != 6 {
		t.Fatalf("cancelled after 6 tokens: %v %+v", err, r)
	}
	if streamed.String() != r.Text || !strings.HasPrefix(full.Text, r.Text) || fmt.Sprint(r.Tokens) != fmt.Sprint(full.Tokens[:6]) {
		t.Fatalf("streamed %q, result %q, full answer %q", streamed.String(), r.Text, full.Text)
	}
}
