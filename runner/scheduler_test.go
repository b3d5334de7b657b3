package runner

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idefics2-go/idefics2/runner/testmodels"
)

// tolLogprob bounds |our logprob − log-softmax(HF logits)| of the first generated token: the F32 fixture models'
// logits are within 1e-3 of HF's relative to their largest magnitude (tolLogits), and a log-softmax moves by at
// most twice the largest logit error; the fixtures' logits are small, so that stays below 1e-4.
const tolLogprob = 1e-4

// schedCase is one request of the batch-invariance test: a prompt and the greedy tokens HF gives for it.
type schedCase struct {
	name string
	p    *Prompt
	max  int
	want []int32
}

// fixtureSchedCases returns the HF fixture cases of model config and the demo model's chat cases as requests.
func fixtureSchedCases(t *testing.T) map[string][]schedCase {
	t.Helper()
	out := map[string][]schedCase{}
	for _, name := range []string{"p1_chelsea_split", "p1_text_only", "p2_text_only", "p2_two_images"} {
		fc := openCase(t, name)
		want := readNpyI64(t, filepath.Join(fc.dir, "generated_ids.npy"))
		w := make([]int32, len(want))
		for i, v := range want {
			w[i] = int32(v)
		}
		out[fc.c.Config] = append(out[fc.c.Config], schedCase{name: name, p: fc.p, max: fc.c.Generation.MaxNewTokens, want: w})
	}
	var man struct {
		Cases []demoCase `json:"cases"`
	}
	readJSON(t, testdata("demo", "manifest.json"), &man)
	m := loadModel(t, "demo")
	for _, c := range man.Cases {
		var imgs []Image
		for _, im := range c.Images {
			img, err := LoadImage(testdata("demo", im.File))
			if err != nil {
				t.Fatal(err)
			}
			imgs = append(imgs, img)
		}
		p, err := m.RawPrompt(c.Prompt, imgs, PromptOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out["demo"] = append(out["demo"], schedCase{name: c.ID, p: p, max: 24, want: c.GeneratedIDs})
	}
	return out
}

// TestSchedulerBatchInvariance runs every fixture case alone on a scheduler and then all cases of a model at once
// on one scheduler: each answer must be the same token for token, and HF's greedy answer.
//
// Why the floats agree exactly: a sequence's rows meet other sequences' rows only in the weight products, norms,
// RoPE and element-wise ops of a step (graph.Batch). Norms, RoPE, SwiGLU and adds work row by row, and attention
// runs per sequence over its own cache with the same query chunks as alone (a prompt is cut into chunks of the
// batch size from its first uncached position whatever else runs, and both runs here start with empty caches:
// CacheMem 1 keeps nothing). Each product output element comes from one weight row and one activation row; ggml's
// CPU mul_mat sums it in an order that depends on the row count only between one row (vec_dot) and two or more
// (llamafile sgemm: one vector accumulator per element over k, the same for every tile shape), and graph.Batch
// never runs a product on a single row (a one-token step carries a ghost copy). So a row's float order is the same
// alone and in company, and so are its logits, bit for bit.
func TestSchedulerBatchInvariance(t *testing.T) {
	cases := fixtureSchedCases(t)
	ctx := context.Background()
	for _, model := range []string{"p1", "p2", "demo"} {
		t.Run(model, func(t *testing.T) {
			m := loadModel(t, model)
			cs := cases[model]
			solo := make([][]int32, len(cs))
			for i, c := range cs {
				s, err := m.NewScheduler(SchedulerOptions{Parallel: 1, CtxSize: 1024, CacheMem: 1})
				if err != nil {
					t.Fatal(err)
				}
				res, err := s.Generate(ctx, c.p, GenerateOptions{MaxTokens: c.max})
				s.Close()
				if err != nil {
					t.Fatalf("%s alone: %v", c.name, err)
				}
				solo[i] = res.Tokens
				if !slices.Equal(res.Tokens, c.want) {
					t.Errorf("%s alone: tokens\n got %v\nwant %v (HF)", c.name, res.Tokens, c.want)
				}
			}
			s, err := m.NewScheduler(SchedulerOptions{Parallel: min(len(cs), 8), CtxSize: 1024, CacheMem: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got := make([][]int32, len(cs))
			errs := make([]error, len(cs))
			var wg sync.WaitGroup
			for i, c := range cs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					res, err := s.Generate(ctx, c.p, GenerateOptions{MaxTokens: c.max})
					if err == nil {
						got[i] = res.Tokens
					}
					errs[i] = err
				}()
			}
			wg.Wait()
			for i, c := range cs {
				if errs[i] != nil {
					t.Errorf("%s batched: %v", c.name, errs[i])
					continue
				}
				if !slices.Equal(got[i], solo[i]) {
					t.Errorf("%s: batched tokens\n got %v\nwant %v (alone)", c.name, got[i], solo[i])
				}
			}
		})
	}
}

// TestSchedulerN checks n answers from one prompt: seeded sampling gives distinct answers, greedy decoding equal
// ones, the same as a single greedy answer.
func TestSchedulerN(t *testing.T) {
	m := loadModel(t, "demo")
	ctx := context.Background()
	p, err := m.ChatPrompt([]Message{userTurn(t, "What shape is in the picture?", demoImage(t, "demo_00.png"))}, PromptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.NewScheduler(SchedulerOptions{Parallel: 4, CtxSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	one, err := s.Generate(ctx, p, GenerateOptions{MaxTokens: 12})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		sampler  SamplerOptions
		distinct bool
	}{
		{"greedy", SamplerOptions{}, false},
		{"seeded", SamplerOptions{Temperature: 5, Seed: 11}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			streamed := map[int]string{}
			res, err := s.Generate(ctx, p, GenerateOptions{MaxTokens: 12, N: 3, Sampler: tc.sampler,
				OnChoiceText: func(i int, text string) error {
					mu.Lock()
					streamed[i] += text
					mu.Unlock()
					return nil
				}})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Choices) != 3 {
				t.Fatalf("%d choices, want 3", len(res.Choices))
			}
			for i, c := range res.Choices {
				if streamed[i] != c.Text {
					t.Errorf("choice %d: streamed %q, result %q", i, streamed[i], c.Text)
				}
			}
			a, b, c := fmt.Sprint(res.Choices[0].Tokens), fmt.Sprint(res.Choices[1].Tokens), fmt.Sprint(res.Choices[2].Tokens)
			if tc.distinct {
				if a == b || b == c || a == c {
					t.Errorf("seeded samples are not distinct:\n%s\n%s\n%s", a, b, c)
				}
				return
			}
			if a != b || b != c || a != fmt.Sprint(one.Tokens) {
				t.Errorf("greedy answers differ:\n%s\n%s\n%s\nalone %v", a, b, c, one.Tokens)
			}
		})
	}
}

// TestSchedulerLogprobs checks the first generated token's logprob against the log-softmax of HF's logits at the
// last prompt position (the image placeholders masked, as the sampler never produces them), and that the top
// alternatives are sorted with the greedy token first, on the scheduler and on a session.
func TestSchedulerLogprobs(t *testing.T) {
	for _, name := range []string{"p1_text_only", "p2_text_only"} {
		t.Run(name, func(t *testing.T) {
			fc := openCase(t, name)
			logits := readNpyF32(t, filepath.Join(fc.dir, "logits.npy"))
			vocab := fc.m.g.Text.VocabSize
			last := slices.Clone(logits[len(logits)-vocab:])
			for _, id := range fc.m.banned {
				last[id] = float32(math.Inf(-1))
			}
			want := logSoftmax(last)
			o := GenerateOptions{MaxTokens: 3, Logprobs: true, TopLogprobs: 5}
			s, err := fc.m.NewScheduler(SchedulerOptions{Parallel: 2, CtxSize: 256})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			sres, err := s.Generate(context.Background(), fc.p, o)
			if err != nil {
				t.Fatal(err)
			}
			fres, err := fc.s.Generate(context.Background(), fc.p, o)
			if err != nil {
				t.Fatal(err)
			}
			for _, run := range []struct {
				name string
				res  *Result
			}{{"scheduler", sres}, {"session", fres}} {
				lp := run.res.Logprobs
				if len(lp) != len(run.res.Tokens) {
					t.Fatalf("%s: %d logprobs for %d tokens", run.name, len(lp), len(run.res.Tokens))
				}
				id := run.res.Tokens[0]
				if d := math.Abs(lp[0].Logprob - want[id]); d > tolLogprob {
					t.Errorf("%s: logprob of token %d: %.6f, HF %.6f (|diff| %.2g > %g)", run.name, id, lp[0].Logprob, want[id], d, tolLogprob)
				}
				for i, l := range lp {
					if len(l.Top) != 5 || l.Top[0].ID != run.res.Tokens[i] || l.Top[0].Logprob != l.Logprob {
						t.Fatalf("%s: position %d: top %v, want 5 alternatives led by the greedy token %d", run.name, i, l.Top, run.res.Tokens[i])
					}
					for k := 1; k < len(l.Top); k++ {
						if l.Top[k].Logprob > l.Top[k-1].Logprob {
							t.Errorf("%s: position %d: top logprobs not sorted: %v", run.name, i, l.Top)
						}
					}
				}
			}
			// The first token comes from the same prompt evaluation on both; later ones from one-token steps, which
			// a session multiplies as one row (vec_dot) and the scheduler as two (see graph.Batch), so only the first
			// is compared exactly.
			if fmt.Sprint(sres.Logprobs[0]) != fmt.Sprint(fres.Logprobs[0]) {
				t.Errorf("scheduler and session logprobs of the first token differ:\n%v\n%v", sres.Logprobs[0], fres.Logprobs[0])
			}
		})
	}
}

func logSoftmax(v []float32) []float64 {
	maxV := math.Inf(-1)
	for _, x := range v {
		maxV = math.Max(maxV, float64(x))
	}
	sum := 0.0
	for _, x := range v {
		sum += math.Exp(float64(x) - maxV)
	}
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x) - maxV - math.Log(sum)
	}
	return out
}

// TestSchedulerCaches checks the cross-request caches: a repeated prompt reuses the kept prefix and the image
// embeddings with the same answer, and the caches stay within CacheMem (a budget too small for a KV cache keeps
// only image rows).
func TestSchedulerCaches(t *testing.T) {
	m := loadModel(t, "demo")
	ctx := context.Background()
	p, err := m.ChatPrompt([]Message{userTurn(t, "What shape is in the picture?", demoImage(t, "demo_01.png"))}, PromptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.NewScheduler(SchedulerOptions{Parallel: 2, CtxSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.Generate(ctx, p, GenerateOptions{MaxTokens: 8})
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.Generate(ctx, p, GenerateOptions{MaxTokens: 8})
	if err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	s.Close()
	if first.Text != second.Text {
		t.Errorf("repeated prompt: %q, then %q", first.Text, second.Text)
	}
	if second.CachedTokens != len(p.Tokens)-1 || st.PrefixHits != 1 || st.PrefixMisses != 1 {
		t.Errorf("second request reused %d of %d positions; stats %+v", second.CachedTokens, len(p.Tokens), st)
	}
	if st.CacheBytes <= 0 || st.CacheBytes > DefaultCacheMem || st.Active != 0 || st.Waiting != 0 {
		t.Errorf("stats %+v", st)
	}
	if s.Stats().CacheBytes != 0 {
		t.Errorf("closed scheduler holds %d cache bytes", s.Stats().CacheBytes)
	}

	// A budget for image rows only: the image is encoded once, no KV cache is kept.
	budget := m.g.KVBytes(512) - 1
	small, err := m.NewScheduler(SchedulerOptions{Parallel: 1, CtxSize: 512, CacheMem: budget})
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	for i := 0; i < 2; i++ {
		res, err := small.Generate(ctx, p, GenerateOptions{MaxTokens: 8})
		if err != nil {
			t.Fatal(err)
		}
		if res.Text != first.Text {
			t.Errorf("run %d: %q, want %q", i, res.Text, first.Text)
		}
	}
	st = small.Stats()
	if st.PrefixHits != 0 || st.ImageHits != 1 || st.ImageMisses != 1 || st.CacheBytes <= 0 || st.CacheBytes > budget {
		t.Errorf("small cache stats %+v", st)
	}
}

// TestSchedulerCancel checks that a cancelled request returns its partial answer with the context's error while
// another goes on, and that Close waits for running requests.
func TestSchedulerCancel(t *testing.T) {
	m := loadModel(t, "demo")
	p, err := m.ChatPrompt([]Message{userTurn(t, "Describe the picture.", demoImage(t, "demo_02.png"))}, PromptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.NewScheduler(SchedulerOptions{Parallel: 2, CtxSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var other *Result
	var otherErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		other, otherErr = s.Generate(context.Background(), p, GenerateOptions{MaxTokens: 16})
	}()
	n := 0
	res, err := s.Generate(ctx, p, GenerateOptions{MaxTokens: 400, Sampler: SamplerOptions{Temperature: 1, Seed: 3},
		OnToken: func(int32) error {
			if n++; n == 3 {
				cancel()
			}
			return nil
		}})
	if !errors.Is(err, context.Canceled) || res == nil || res.StopReason != StopCancelled || len(res.Tokens) < 3 || len(res.Tokens) > 5 {
		t.Errorf("cancelled request: %v, %+v", err, res)
	}
	s.Close()
	wg.Wait()
	if otherErr != nil || other == nil || len(other.Tokens) == 0 {
		t.Errorf("the other request: %v, %+v", otherErr, other)
	}
	if _, err := s.Generate(context.Background(), p, GenerateOptions{MaxTokens: 1}); !errors.Is(err, ErrSchedulerClosed) {
		t.Errorf("after Close: %v, want ErrSchedulerClosed", err)
	}
}

// TestSchedulerBadInput checks that bad options are refused as *InputError naming the option.
func TestSchedulerBadInput(t *testing.T) {
	m := loadModel(t, "demo")
	p, err := m.RawPrompt("hello", nil, PromptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.NewScheduler(SchedulerOptions{Parallel: 2, CtxSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sess, err := m.NewSession(64)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	long := strings.Repeat("hello ", 100)
	lp, err := m.RawPrompt(long, nil, PromptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		p       *Prompt
		o       GenerateOptions
		session bool
		want    string
	}{
		{"n above parallel", p, GenerateOptions{N: 3}, false, "n 3"},
		{"negative n", p, GenerateOptions{N: -1}, false, "n -1"},
		{"n on a session", p, GenerateOptions{N: 2}, true, "scheduler"},
		{"top logprobs", p, GenerateOptions{Logprobs: true, TopLogprobs: 21}, false, "top_logprobs 21"},
		{"top without logprobs", p, GenerateOptions{TopLogprobs: 2}, true, "needs logprobs"},
		{"OnText with n", p, GenerateOptions{N: 2, OnText: func(string) error { return nil }}, false, "OnChoiceText"},
		{"dump", p, GenerateOptions{DumpDir: t.TempDir()}, false, "dump"},
		{"adapter scales", p, GenerateOptions{AdapterScales: []float32{1}}, false, "adapter scales"},
		{"sampler", p, GenerateOptions{Sampler: SamplerOptions{TopP: 2}}, false, "top_p"},
		{"overflow", lp, GenerateOptions{}, false, "context size 64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.session {
				_, err = sess.Generate(context.Background(), tc.p, tc.o)
			} else {
				_, err = s.Generate(context.Background(), tc.p, tc.o)
			}
			if !IsInputError(err) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an input error with %q", err, tc.want)
			}
		})
	}
	if _, err := m.NewScheduler(SchedulerOptions{Parallel: -1}); !IsInputError(err) {
		t.Errorf("parallel -1: %v", err)
	}
	if _, err := m.NewScheduler(SchedulerOptions{Parallel: 1, CtxSize: 1 << 30}); !IsInputError(err) {
		t.Errorf("huge context: %v", err)
	}
}

// TestSchedulerInterleaving checks that a running stream keeps producing tokens while a newcomer's long prompt is
// evaluated in chunks (one chunk per step, beside the stream's token) and while a newcomer's image is encoded in
// pieces between steps (at least one piece per phase of the vision tower: embedding, keys and rows of every layer,
// projection, perceiver). The bounds count steps, not time.
func TestSchedulerInterleaving(t *testing.T) {
	text, mm, err := testmodels.Pair("p1", "f32")
	if err != nil {
		t.Fatal(err)
	}
	const chunk = 8
	m, err := Load(context.Background(), Options{ModelPath: text, MMProjPath: mm, Device: "cpu", Threads: 1, BatchSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s, err := m.NewScheduler(SchedulerOptions{Parallel: 2, CtxSize: 512, CacheMem: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	seen, stop := startStream(t, m, s)
	long, err := m.RawPrompt(strings.Repeat("one two three four ", 20), nil, PromptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := seen()
	if _, err := s.Generate(context.Background(), long, GenerateOptions{MaxTokens: 1}); err != nil {
		t.Fatal(err)
	}
	if got, want := seen()-before, len(long.Tokens)/chunk-1; got < want {
		t.Errorf("the stream made %d tokens while a %d-token prompt was evaluated in chunks of %d, want at least %d", got, len(long.Tokens), chunk, want)
	}
	img, err := LoadImage(testdata("hf", "images", "chelsea.png"))
	if err != nil {
		t.Fatal(err)
	}
	withImage, err := m.RawPrompt("<image>cat", []Image{img}, PromptOptions{NoSplit: true})
	if err != nil {
		t.Fatal(err)
	}
	before = seen()
	res, err := s.Generate(context.Background(), withImage, GenerateOptions{MaxTokens: 0})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := seen()-before, 2*m.g.Vision.Layers+2; got < want || res.Timings.ImageCacheMisses != 1 {
		t.Errorf("the stream made %d tokens while an image was encoded (%d misses), want at least %d", got, res.Timings.ImageCacheMisses, want)
	}
	stop()
}

// startStream starts a sampled generation of up to 400 tokens on s and waits for its first 2 tokens. seen counts its
// tokens so far; stop cancels it and checks that it ended cancelled.
func startStream(t *testing.T, m *Model, s *Scheduler) (seen func() int, stop func()) {
	t.Helper()
	stream, err := m.RawPrompt("The quick brown fox", nil, PromptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var tokens atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := s.Generate(ctx, stream, GenerateOptions{MaxTokens: 400, Sampler: SamplerOptions{Temperature: 1, Seed: 1},
			OnToken: func(int32) error {
				tokens.Add(1)
				return nil
			}})
		done <- err
	}()
	seen = func() int { return int(tokens.Load()) }
	for seen() < 2 {
		time.Sleep(time.Millisecond)
	}
	return seen, func() {
		t.Helper()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("the stream ended with %v, want it cancelled", err)
		}
	}
}

// TestSchedulerOverlap checks the overlapped encoding of an image (2 threads, no adapters): while a stream
// generates, a newcomer's image is encoded in pieces on the image runner beside the decoder steps, the stream keeps
// producing tokens, and the newcomer's greedy answer equals the one it gets alone (the features do not depend on
// the runner or its thread count: every product sums in the same order on any number of threads).
func TestSchedulerOverlap(t *testing.T) {
	text, mm, err := testmodels.Pair("p1", "f32")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Load(context.Background(), Options{ModelPath: text, MMProjPath: mm, Device: "cpu", Threads: 2, BatchSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	img, err := LoadImage(testdata("hf", "images", "chelsea.png"))
	if err != nil {
		t.Fatal(err)
	}
	withImage, err := m.RawPrompt("<image>cat", []Image{img}, PromptOptions{NoSplit: true})
	if err != nil {
		t.Fatal(err)
	}
	greedy := GenerateOptions{MaxTokens: 6, Sampler: SamplerOptions{Temperature: 0}}
	answer := func(s *Scheduler) []int32 {
		t.Helper()
		res, err := s.Generate(context.Background(), withImage, greedy)
		if err != nil {
			t.Fatal(err)
		}
		return res.Tokens
	}
	alone, err := m.NewScheduler(SchedulerOptions{Parallel: 2, CtxSize: 512, CacheMem: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := answer(alone)
	if p := alone.Stats().OverlapStretches; p != 0 {
		t.Errorf("an image encoded with nothing else running took %d overlapped stretches, want 0", p)
	}
	alone.Close()

	s, err := m.NewScheduler(SchedulerOptions{Parallel: 2, CtxSize: 512, CacheMem: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	seen, stop := startStream(t, m, s)
	before := seen()
	got := answer(s)
	if !slices.Equal(got, want) {
		t.Errorf("answer encoded beside a stream %v, alone %v", got, want)
	}
	if p := s.Stats().OverlapStretches; p == 0 {
		t.Error("the image was encoded with no overlapped stretch")
	}
	if n := seen() - before; n == 0 {
		t.Error("the stream made no token while the image was encoded")
	}
	stop()
}
