//go:build llamacpp

package llamacpptest

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idefics2-go/idefics2/convert"
	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/graph"
	"github.com/idefics2-go/idefics2/internal/npy"
)

// Tolerances: max |a−b| / max |b| over the compared logits.
const (
	// tolF32 bounds llama.cpp on an F32 file (F32 KV cache) against HF's float32 logits: as for our runtime
	// (graph's tolF32Exact), only accumulation order and ggml's F32 kernels differ from PyTorch.
	tolF32 = 1e-4
	// tolSameFile bounds llama.cpp against our runtime on the same file. Both run the same ggml CPU backend
	// (TestMain keeps ours on the portable one llama.cpp uses) on the same weights; what differs is the graph
	// (op order and fusion, where the mask and the softmax scale are applied), so F32 files agree to ~3e-7.
	// Quantized files agree less closely: ggml quantizes the activations of each Q8_0 product to Q8_0, so a
	// last-bit difference that moves an activation across a rounding boundary moves a whole quantization step,
	// and the tiny random models amplify it. On p1 Q8_0 llama.cpp and ours differ by 1.0e-2, while our own
	// runtime with flash attention differs from itself without it by 1.8e-2 (p2: 1.2e-3).
	tolSameFile = 1e-4
	tolSameQ8   = 3e-2
	// tolQ8 bounds a Q8_0 file (F16 KV cache) against HF's float32 logits. p1's rows are 32 wide, one Q8_0
	// block each, so a row's largest weight sets the step of all of them: measured 0.019 there, 0.0013 on p2.
	tolQ8 = 5e-2
)

// TestMain keeps our runtime on ggml's portable CPU backend, the one llama.cpp uses (it takes the first CPU
// device registered, which is the backend compiled into the binary), so that both run the same kernels. With
// a SIMD variant library (IDEFICS2_LIB_DIR) our Q8_0 logits differ from llama.cpp's by up to 1e-2 relative on
// p1, from the variants' different rounding of the Q8_0 activations.
// variantDir is $IDEFICS2_LIB_DIR as the test started (TestMain empties it for our runtime); BenchmarkLlamaCpp
// loads its variants into llama.cpp.
var variantDir string

func TestMain(m *testing.M) {
	variantDir = os.Getenv(ggml.LibDirEnv)
	empty, err := os.MkdirTemp("", "llamacpptest-nolib-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv(ggml.LibDirEnv, empty)
	code := m.Run()
	os.RemoveAll(empty)
	os.Exit(code)
}

type manifest struct {
	Checkpoint string `json:"checkpoint"`
	Inputs     struct {
		Prompt string `json:"prompt"`
	} `json:"inputs"`
}

func readNpy(t *testing.T, path string) ([]float32, []int) {
	t.Helper()
	a, err := npy.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := a.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return v, a.Shape
}

// errStats returns max |got−want| / max |want|, the max abs error and its index.
func errStats(got, want []float32) (rel, maxAbs float64, worst int) {
	maxRef := 0.0
	for i := range want {
		maxRef = math.Max(maxRef, math.Abs(float64(want[i])))
		if e := math.Abs(float64(got[i]) - float64(want[i])); e > maxAbs || math.IsNaN(e) {
			maxAbs, worst = e, i
		}
	}
	return maxAbs / math.Max(maxRef, 1e-30), maxAbs, worst
}

func argmax(v []float32) int32 {
	best := 0
	for i := range v {
		if v[i] > v[best] {
			best = i
		}
	}
	return int32(best)
}

// convertFixture converts an HF checkpoint to model.gguf + mmproj.gguf of type typ in dir.
func convertFixture(t *testing.T, ckpt, typ, dir string) (string, string) {
	t.Helper()
	out := filepath.Join(dir, "model-"+typ+".gguf")
	plan, err := convert.NewPlan(convert.Options{InDir: ckpt, Out: out, Type: typ, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	defer plan.Close()
	if err := plan.Run(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	return out, convert.DefaultMMProjPath(out)
}

// llamaPrompt evaluates the prompt with llama.cpp the way its multimodal path does: runs of text tokens as token
// batches, runs of image tokens as embedding batches holding the connector's output rows.
func llamaPrompt(lm *LlamaModel, ids []int32, images []float32, imageToken int32) ([]float32, error) {
	var all []float32
	used := 0
	for start := 0; start < len(ids); {
		isImg := images != nil && ids[start] == imageToken
		end := start
		for end < len(ids) && (images != nil && ids[end] == imageToken) == isImg {
			end++
		}
		var l []float32
		var err error
		if isImg {
			n := end - start
			l, err = lm.DecodeEmbeddings(images[used*lm.NEmbd:(used+n)*lm.NEmbd], start)
			used += n
		} else {
			l, err = lm.DecodeTokens(ids[start:end], start)
		}
		if err != nil {
			return nil, err
		}
		all = append(all, l...)
		start = end
	}
	return all, nil
}

// TestLlamaCppParity converts p1 and p2 to F32 and Q8_0, loads model.gguf in llama.cpp and compares the logits
// of every prompt position with HF's and with our runtime's, then compares llama.cpp's greedy continuation with
// HF's generated ids. p2 has sliding_window 16: llama.cpp's llama architecture ignores the window, so positions
// from 16 on are reported, not required to match HF (our runtime applies the window and must match everywhere).
func TestLlamaCppParity(t *testing.T) {
	root := filepath.Join("..", "..", "testdata", "hf", "cases")
	tmp := t.TempDir()
	converted := map[string][2]string{}
	for _, name := range []string{"p1_text_only", "p2_text_only", "p2_two_images"} {
		for _, typ := range []string{"f32", "q8_0"} {
			t.Run(name+"/"+typ, func(t *testing.T) {
				dir := filepath.Join(root, name)
				raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
				if err != nil {
					t.Fatal(err)
				}
				var man manifest
				if err := json.Unmarshal(raw, &man); err != nil {
					t.Fatal(err)
				}
				ckpt, err := filepath.Abs(filepath.Join(dir, man.Checkpoint))
				if err != nil {
					t.Fatal(err)
				}
				key := ckpt + "|" + typ
				paths, ok := converted[key]
				if !ok {
					d := filepath.Join(tmp, filepath.Base(ckpt))
					if err := os.MkdirAll(d, 0o755); err != nil {
						t.Fatal(err)
					}
					paths[0], paths[1] = convertFixture(t, ckpt, typ, d)
					converted[key] = paths
				}
				parity(t, dir, man, typ, paths[0], paths[1])
			})
		}
	}
}

func parity(t *testing.T, dir string, man manifest, typ, modelPath, mmprojPath string) {
	idsF, _ := readNpy(t, filepath.Join(dir, "input_ids.npy"))
	ids := make([]int32, len(idsF))
	for i, v := range idsF {
		ids[i] = int32(v)
	}
	want, _ := readNpy(t, filepath.Join(dir, "logits.npy"))
	genF, _ := readNpy(t, filepath.Join(dir, "generated_ids.npy"))
	margins, _ := readNpy(t, filepath.Join(dir, "greedy_step_logits_margin.npy"))
	var images []float32
	if _, err := os.Stat(filepath.Join(dir, "connector_output.npy")); err == nil {
		// HF's connector output isolates the decoder: both runtimes get the same image rows.
		images, _ = readNpy(t, filepath.Join(dir, "connector_output.npy"))
	}

	// Our runtime, with the KV cache type it picks for the file (F32 for F32 files, else F16).
	kvType := "f16"
	if typ == "f32" {
		kvType = "f32"
	}
	mm := ""
	if images != nil {
		mm = mmprojPath
	}
	ours, err := graph.Load(modelPath, mm, graph.Options{Device: "cpu", Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	vocab := ours.Text.VocabSize
	window := ours.Text.SlidingWindow
	imageToken := int32(-1)
	if images != nil {
		imageToken = int32(ours.Connector.ImageTokenID)
	}
	s, err := ours.NewSequence(len(ids) + len(genF) + 1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	oursLogits, err := s.Eval(context.Background(), ids, images, true, nil)
	if err != nil {
		t.Fatal(err)
	}

	lm, err := LoadLlama(modelPath, len(ids)+len(genF)+1, 2, kvType)
	if err != nil {
		t.Fatal(err)
	}
	defer lm.Close()
	if lm.NVocab != vocab {
		t.Fatalf("llama.cpp vocabulary %d, ours %d", lm.NVocab, vocab)
	}
	arch, _ := lm.Meta("general.architecture")
	swaKey, _ := lm.Meta("llama.attention.sliding_window")
	t.Logf("llama.cpp: architecture %q, file's llama.attention.sliding_window %q, window applied by llama.cpp %d, ours %d",
		arch, swaKey, lm.NSWA, window)
	if images == nil {
		got, err := lm.Tokenize(man.Inputs.Prompt)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, ids) {
			t.Errorf("llama.cpp tokenizes %q as %v, HF %v", man.Inputs.Prompt, got, ids)
		}
	}
	llamaLogits, err := llamaPrompt(lm, ids, images, imageToken)
	if err != nil {
		t.Fatal(err)
	}
	if len(llamaLogits) != len(want) || len(oursLogits) != len(want) {
		t.Fatalf("logits: llama.cpp %d, ours %d, HF %d values", len(llamaLogits), len(oursLogits), len(want))
	}

	// Positions inside the window (all of them when the prompt is shorter) must agree three ways.
	n := len(ids)
	inside := n
	if window > 0 && window < n {
		inside = window
	}
	tolHF, tolSame := tolF32, tolSameFile
	if typ != "f32" {
		tolHF, tolSame = tolQ8, tolSameQ8
	}
	check := func(what string, first int, got, ref []float32, tol float64, require bool) {
		t.Helper()
		rel, abs, worst := errStats(got, ref)
		t.Logf("%-50s max abs %.3g, rel %.3g (worst: position %d, token %d)", what+":", abs, rel, first+worst/vocab, worst%vocab)
		if require && (rel > tol || math.IsNaN(rel)) {
			t.Errorf("%s: rel err %.3g > %.g", what, rel, tol)
		}
	}
	in := inside * vocab
	check(fmt.Sprintf("llama.cpp vs HF, positions 0…%d", inside-1), 0, llamaLogits[:in], want[:in], tolHF, true)
	check(fmt.Sprintf("llama.cpp vs ours, positions 0…%d", inside-1), 0, llamaLogits[:in], oursLogits[:in], tolSame, true)
	check("ours vs HF, all positions", 0, oursLogits, want, tolHF, true)
	if inside < n {
		check(fmt.Sprintf("llama.cpp vs HF, positions %d…%d (beyond window)", inside, n-1),
			inside, llamaLogits[in:], want[in:], tolHF, lm.NSWA > 0)
		check(fmt.Sprintf("llama.cpp vs ours, positions %d…%d (beyond window)", inside, n-1),
			inside, llamaLogits[in:], oursLogits[in:], tolSame, lm.NSWA > 0)
	}

	// Greedy continuation with llama.cpp's KV cache, compared with HF's until the first step whose HF top-1/top-2
	// margin is within the logit error measured above (a flip there is noise, not a bug) or, when llama.cpp
	// ignores the window, the first step at or past it.
	_, maxAbs, _ := errStats(llamaLogits[:in], want[:in])
	next := argmax(llamaLogits[(n-1)*vocab:])
	var got []int32
	for step := range genF {
		got = append(got, next)
		l, err := lm.DecodeTokens([]int32{next}, n+step)
		if err != nil {
			t.Fatal(err)
		}
		next = argmax(l)
	}
	for i := range got {
		pos := n + i - 1 // position whose logits chose token i
		if window > 0 && pos >= window && lm.NSWA == 0 {
			same := 0
			for j := i; j < len(got); j++ {
				if got[j] == int32(genF[j]) {
					same++
				}
			}
			t.Logf("greedy: %d tokens equal HF's inside the window; from step %d (position %d ≥ window %d) %d of %d "+
				"still equal (llama.cpp attends to the whole prefix)", i, i, pos, window, same, len(got)-i)
			return
		}
		if float64(margins[i]) <= 2*maxAbs {
			t.Logf("greedy: %d of %d tokens equal HF's before step %d, whose HF margin %.3g is within 2×%.3g",
				i, len(genF), i, margins[i], maxAbs)
			return
		}
		if got[i] != int32(genF[i]) {
			t.Fatalf("greedy tokens differ at step %d: llama.cpp %v, HF %v", i, got, genF)
		}
	}
	t.Logf("greedy: all %d tokens equal HF's", len(got))
}

// BenchmarkLlamaCpp measures llama.cpp itself on a text model.gguf ($IDEFICS2_BENCH_MODEL), the way llama-bench
// does: pp512 (one batch of 512 random tokens, logits of the last only) and tg128 (128 tokens one at a time), F16
// KV cache, flash attention off, $IDEFICS2_BENCH_THREADS threads (default 2). With $IDEFICS2_LIB_DIR set, the
// best CPU variant library there is loaded first, so llama.cpp computes with the same SIMD build of ggml as our
// runtime (including its repacked Q4_0 layout); without it llama.cpp uses the portable backend. Run with
// -benchtime=Nx (N repetitions of each test after one warm-up).
func BenchmarkLlamaCpp(b *testing.B) {
	path := os.Getenv("IDEFICS2_BENCH_MODEL")
	if path == "" {
		b.Skip("set IDEFICS2_BENCH_MODEL to a text model.gguf")
	}
	threads := envInt(b, "IDEFICS2_BENCH_THREADS", 2)
	loadBenchVariants(b)
	m, err := LoadLlama(path, 640, threads, "f16")
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	r := rand.New(rand.NewPCG(1, 2))
	prompt := make([]int32, 512)
	for i := range prompt {
		prompt[i] = int32(r.IntN(m.NVocab))
	}
	tests := []struct {
		name   string
		tokens int
		run    func() error
	}{
		{"pp512", 512, func() error { return m.DecodeLast(prompt, 0) }},
		{"tg128", 128, func() error {
			for i := 0; i < 128; i++ {
				if err := m.DecodeLast(prompt[i:i+1], i); err != nil {
					return err
				}
			}
			return nil
		}},
	}
	for _, tc := range tests {
		b.Run(tc.name, func(b *testing.B) {
			m.ClearCache()
			if err := tc.run(); err != nil { // warm-up
				b.Fatal(err)
			}
			var rates []float64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				m.ClearCache()
				t0 := time.Now()
				if err := tc.run(); err != nil {
					b.Fatal(err)
				}
				rates = append(rates, float64(tc.tokens)/time.Since(t0).Seconds())
			}
			mean, sd := meanSD(rates)
			b.ReportMetric(mean, "t/s")
			b.ReportMetric(sd, "sd_t/s")
			b.Logf("%s: %.2f ± %.2f t/s over %d runs, %d threads", tc.name, mean, sd, len(rates), threads)
		})
	}
}

// BenchmarkLlamaBatched is llama-batched-bench on $IDEFICS2_BENCH_MODEL with $IDEFICS2_BENCH_THREADS threads
// (default 2): for each parallel level pl of $IDEFICS2_BENCH_PL (default 1,2,4,8), pl sequences get random
// prompts of $IDEFICS2_BENCH_PP tokens (default 128) decoded in batches of up to 512 tokens (t_pp), then generate
// $IDEFICS2_BENCH_TG tokens (default 32) together, one batch of pl tokens per step (t_tg). It logs one line per
// level with llama-batched-bench's fields (pp, tg, pl, n_kv, t_pp, speed_pp, t_tg, speed_tg, t, speed), the
// figures bench --parallel prints for our runtime. Run it once (-benchtime 1x).
func BenchmarkLlamaBatched(b *testing.B) {
	path := os.Getenv("IDEFICS2_BENCH_MODEL")
	if path == "" {
		b.Skip("set IDEFICS2_BENCH_MODEL to a text model.gguf")
	}
	threads := envInt(b, "IDEFICS2_BENCH_THREADS", 2)
	pp, tg := envInt(b, "IDEFICS2_BENCH_PP", 128), envInt(b, "IDEFICS2_BENCH_TG", 32)
	levels := envInts(b, "IDEFICS2_BENCH_PL", []int{1, 2, 4, 8})
	loadBenchVariants(b)
	maxPL := slices.Max(levels)
	m, err := LoadLlamaSeqs(path, maxPL*(pp+tg), maxPL, threads, "f16")
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	r := rand.New(rand.NewPCG(7, 3))
	token := func() int32 { return int32(r.IntN(m.NVocab-3) + 3) }
	const nBatch = 512
	for i := 0; i < b.N; i++ {
		for _, pl := range levels {
			m.ClearCache()
			var prompt []SeqToken
			for s := 0; s < pl; s++ {
				for j := 0; j < pp; j++ {
					prompt = append(prompt, SeqToken{Seq: s, Token: token(), Pos: j, Logits: j == pp-1})
				}
			}
			t0 := time.Now()
			for k := 0; k < len(prompt); k += nBatch {
				if err := m.DecodeSeqs(prompt[k:min(k+nBatch, len(prompt))]); err != nil {
					b.Fatal(err)
				}
			}
			tPP := time.Since(t0).Seconds()
			t1 := time.Now()
			step := make([]SeqToken, pl)
			for g := 0; g < tg; g++ {
				for s := range step {
					step[s] = SeqToken{Seq: s, Token: token(), Pos: pp + g, Logits: true}
				}
				if err := m.DecodeSeqs(step); err != nil {
					b.Fatal(err)
				}
			}
			tTG := time.Since(t1).Seconds()
			nKV := pl * (pp + tg)
			b.Logf(`{"pp": %d, "tg": %d, "pl": %d, "n_kv": %d, "t_pp": %.3f, "speed_pp": %.2f, "t_tg": %.3f, "speed_tg": %.2f, "t": %.3f, "speed": %.2f, "n_threads": %d}`,
				pp, tg, pl, nKV, tPP, float64(pl*pp)/tPP, tTG, float64(pl*tg)/tTG, tPP+tTG, float64(nKV)/(tPP+tTG), threads)
		}
	}
}

// envInt is the positive integer in environment variable name, or def when it is unset.
func envInt(b testing.TB, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// envInts is the comma-separated positive integers in environment variable name, or def when it is unset.
func envInts(b testing.TB, name string, def []int) []int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			b.Fatalf("%s=%q: want comma-separated positive integers", name, s)
		}
		out = append(out, n)
	}
	return out
}

// loadBenchVariants loads the CPU variant libraries of $IDEFICS2_LIB_DIR (as the test started) into llama.cpp's
// registry, so that the peer computes with the same SIMD build of ggml as our runtime; nothing without it.
func loadBenchVariants(b testing.TB) {
	if variantDir == "" {
		return
	}
	n, ok := LoadCPUVariants(variantDir)
	if !ok {
		b.Fatalf("no CPU variant of %s was loaded (%d CPU devices registered)", variantDir, n)
	}
	b.Logf("llama.cpp computes with the best CPU variant of %s (%d CPU devices registered)", variantDir, n)
}

func meanSD(v []float64) (mean, sd float64) {
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	if len(v) > 1 {
		for _, x := range v {
			sd += (x - mean) * (x - mean)
		}
		sd = math.Sqrt(sd / float64(len(v)-1))
	}
	return mean, sd
}

// BenchmarkLlamaQuantize times llama.cpp's quantizer, the second step of its conversion route (the first,
// convert_hf_to_gguf.py, needs Python with PyTorch): $IDEFICS2_QUANTIZE_IN (an F16 text model.gguf) to
// $IDEFICS2_QUANTIZE_OUT in $IDEFICS2_QUANTIZE_TYPE (default q4_k_m) with $IDEFICS2_BENCH_THREADS threads
// (default 2). Run it once (-benchtime=1x) under /usr/bin/time -v for CPU time and peak RSS.
func BenchmarkLlamaQuantize(b *testing.B) {
	in, out := os.Getenv("IDEFICS2_QUANTIZE_IN"), os.Getenv("IDEFICS2_QUANTIZE_OUT")
	if in == "" || out == "" {
		b.Skip("set IDEFICS2_QUANTIZE_IN and IDEFICS2_QUANTIZE_OUT")
	}
	typ := os.Getenv("IDEFICS2_QUANTIZE_TYPE")
	if typ == "" {
		typ = "q4_k_m"
	}
	threads := 2
	if s := os.Getenv("IDEFICS2_BENCH_THREADS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("IDEFICS2_BENCH_THREADS=%q: want a positive integer", s)
		}
		threads = n
	}
	st, err := os.Stat(in)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		if err := Quantize(in, out, typ, threads); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(st.Size())*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s_in")
}
