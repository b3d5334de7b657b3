// Package bench measures a loaded model in the spirit of llama-bench: prompt processing (pp), token generation
// (tg), image encoding at given sizes, the perceiver alone and time to first token, each repeated, with mean and
// standard deviation. Result fields use llama-bench's JSON names where they apply.
package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"

	"github.com/idefics2-go/idefics2/constrain"
	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/graph"
)

// Result is one test's figures (llama-bench field names where they apply).
type Result struct {
	Test      string    `json:"test"` // "pp512", "tg128", "image 980x980", "perceiver 4900", "ttft"
	ModelFile string    `json:"model_filename"`
	ModelType string    `json:"model_type"`
	ModelSize int64     `json:"model_size"` // bytes of the text GGUF
	NParams   int64     `json:"model_n_params"`
	Backend   string    `json:"backends"`
	Variant   string    `json:"cpu_variant"`
	NThreads  int       `json:"n_threads"`
	NPrompt   int       `json:"n_prompt"`
	NGen      int       `json:"n_gen"`
	FlashAttn bool      `json:"flash_attn"`
	AvgNs     int64     `json:"avg_ns"`
	StddevNs  int64     `json:"stddev_ns"`
	AvgTs     float64   `json:"avg_ts"`    // tokens (or images) per second
	StddevTs  float64   `json:"stddev_ts"` // of the per-repetition rates
	SamplesNs []int64   `json:"samples_ns"`
	SamplesTs []float64 `json:"samples_ts"`
	PeakRSS   int64     `json:"peak_rss_bytes"`
	Unit      string    `json:"unit"` // "t/s" or "images/s"
	// Generation tests with ReadLimit: the memory's bound on the rate. Around each repetition the weights a step
	// reads, as loaded (ReadBytes), are read once more by as many threads with nothing else to do
	// (ggml.StreamRead, best of 2 passes before and 2 after), which gives the memory's read rate; the limit is that
	// rate over the bytes those weights take in the file (StepBytes), the bound whatever layout they are kept in.
	StepBytes      int64     `json:"step_bytes,omitempty"`       // file bytes of the weights a step reads
	ReadBytes      int64     `json:"read_bytes,omitempty"`       // the same weights as loaded (layouts may differ)
	LimitTs        float64   `json:"limit_ts,omitempty"`         // mean of the repetitions' limits
	SamplesLimitTs []float64 `json:"samples_limit_ts,omitempty"` // per repetition
	ReadGBs        float64   `json:"read_gbs,omitempty"`         // StepBytes × LimitTs / 1e9: the read rate
	PctLimit       float64   `json:"pct_limit,omitempty"`        // mean over repetitions of rate / limit, in %
	// Constrained generation tests: the mean time to compute the allowed tokens of one step, in µs.
	MaskUs     float64 `json:"mask_us,omitempty"`
	Repetition int     `json:"repetitions"`
}

// Config selects what to run.
type Config struct {
	Prompt      []int    // pp tests (tokens), e.g. 512
	Gen         []int    // tg tests (tokens), e.g. 128
	ImageSizes  [][2]int // image encodes (W, H), e.g. 378×378, 980×980
	Split       bool     // also encode one 980×980 image split into 4 crops + the full image
	Perceiver   bool     // the perceiver alone on a full 980×980 image's patches
	TTFT        bool     // one 378×378 image + a 16-token question, time to the first generated token
	Repetitions int
	Warmup      bool // run each test once untimed first (without it, image tests still get one untimed encode)
	Threads     int  // as the model was loaded with (reported)
	FlashAttn   bool // as the model was loaded with (reported)
	// ReadLimit times the memory's bound around each generation repetition (Result.LimitTs). The bound is that of
	// CPU memory: where the weights a step reads are elsewhere (a GPU), there is none and LimitTs stays 0.
	ReadLimit bool
	// Constraint, when set, adds a constrained generation test after each tg test (see Constraint).
	Constraint *Constraint
	// AdapterAB, on a model loaded with run-time LoRA adapters, runs every tg test with the adapters off (scale 0)
	// and on (their loaded scales), alternating within each repetition in one process, and reports both
	// ("tgN, adapters off" and "tgN, adapters on"): the adapters' cost, measured side by side.
	AdapterAB bool
}

// Constraint is a grammar for the constrained generation test "tgN constrained": each step evaluates one token,
// masks the logits with the grammar's allowed tokens and takes the best allowed one (greedy), as constrained
// generation does; a stop token starts a new document.
type Constraint struct {
	Name    string // shown in the test name
	Grammar *constrain.Grammar
	Vocab   *constrain.Vocabulary
}

// Run executes cfg's tests on m and calls emit after each.
func Run(ctx context.Context, m *graph.Model, cfg Config, emit func(Result)) error {
	if cfg.Repetitions <= 0 {
		cfg.Repetitions = 5
	}
	rng := rand.New(rand.NewPCG(42, 1))
	base := Result{ModelFile: m.TextFile.Path, ModelSize: m.TextFile.Size, Backend: m.Device.Backend,
		Variant: m.Device.Variant, Repetition: cfg.Repetitions, NThreads: cfg.Threads, FlashAttn: cfg.FlashAttn}
	base.NParams = m.TextParams()
	if ft, err := m.TextFile.Metadata.Int("general.file_type"); err == nil && ft >= 0 {
		base.ModelType = "llama " + gguf.FileType(ft).String()
	}
	tokens := func(n int) []int32 {
		t := make([]int32, n)
		for i := range t {
			t[i] = int32(rng.IntN(m.Text.VocabSize-3) + 3)
		}
		return t
	}
	// limit, when set, is called around each repetition and returns the memory's bound in units per second.
	var limit func() (float64, error)
	var stepBytes, readBytes int64
	// annotate, when set, adds test-specific figures to a result before it is emitted.
	var annotate func(*Result)
	run := func(name string, nPrompt, nGen int, units float64, unit string, f func() error) error {
		if cfg.Warmup {
			if err := f(); err != nil {
				return err
			}
		}
		r := base
		r.Test, r.Unit, r.NPrompt, r.NGen = name, unit, nPrompt, nGen
		for i := 0; i < cfg.Repetitions; i++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			var before float64
			if limit != nil {
				var err error
				if before, err = limit(); err != nil {
					return err
				}
			}
			t0 := time.Now()
			if err := f(); err != nil {
				return err
			}
			d := time.Since(t0)
			r.SamplesNs = append(r.SamplesNs, d.Nanoseconds())
			r.SamplesTs = append(r.SamplesTs, units/d.Seconds())
			if limit != nil {
				after, err := limit()
				if err != nil {
					return err
				}
				// The bound over the repetition: the mean of the pass times before and after.
				lim := 2 / (1/before + 1/after)
				r.SamplesLimitTs = append(r.SamplesLimitTs, lim)
				r.PctLimit += 100 * units / d.Seconds() / lim / float64(cfg.Repetitions)
			}
		}
		r.AvgNs, r.StddevNs = meanSD(r.SamplesNs)
		r.AvgTs, r.StddevTs = meanSDf(r.SamplesTs)
		if limit != nil {
			r.LimitTs, _ = meanSDf(r.SamplesLimitTs)
			r.StepBytes, r.ReadBytes = stepBytes, readBytes
			r.ReadGBs = float64(stepBytes) * r.LimitTs / 1e9
		}
		r.PeakRSS = PeakRSS()
		if annotate != nil {
			annotate(&r)
		}
		emit(r)
		return nil
	}
	// constrained is the constrained tg test of n tokens on sequence s, starting from token first.
	constrained := func(s *graph.Sequence, n int, first int32) error {
		c := cfg.Constraint
		if c.Vocab.Size() != m.Text.VocabSize {
			return fmt.Errorf("bench: constraint vocabulary of %d tokens, model of %d", c.Vocab.Size(), m.Text.VocabSize)
		}
		allowed := make([]uint64, (c.Vocab.Size()+63)/64)
		name := fmt.Sprintf("tg%d constrained (%s)", n, c.Name)
		var maskUs []float64 // per call, warm-up included
		annotate = func(r *Result) {
			k := min(len(maskUs), cfg.Repetitions)
			r.MaskUs, _ = meanSDf(maskUs[len(maskUs)-k:])
		}
		defer func() { annotate = nil }()
		return run(name, 0, n, float64(n), "t/s", func() error {
			s.Truncate(0)
			mt := constrain.NewMatcher(c.Grammar, c.Vocab)
			tok := first
			var spent time.Duration
			for range n {
				logits, err := s.Eval(ctx, []int32{tok}, nil, false, nil)
				if err != nil {
					return err
				}
				t0 := time.Now()
				if mt.Fill(allowed) == 0 {
					return fmt.Errorf("bench: %s: the grammar allows no token", name)
				}
				best := -1
				for i, l := range logits {
					if allowed[i>>6]&(1<<(i&63)) != 0 && (best < 0 || l > logits[best]) {
						best = i
					}
				}
				if err := mt.Accept(int32(best)); err != nil {
					return err
				}
				spent += time.Since(t0)
				if c.Vocab.IsStop(int32(best)) {
					mt = constrain.NewMatcher(c.Grammar, c.Vocab) // a finished document: start the next one
				}
				tok = int32(best)
			}
			maskUs = append(maskUs, float64(spent.Nanoseconds())/1e3/float64(n))
			return nil
		})
	}
	for _, n := range cfg.Prompt {
		toks := tokens(n)
		s, err := m.NewSequence(min(n, m.Text.ContextLength))
		if err != nil {
			return err
		}
		err = run(fmt.Sprintf("pp%d", n), n, 0, float64(n), "t/s", func() error {
			s.Truncate(0)
			_, err := s.Eval(ctx, toks, nil, false, nil)
			return err
		})
		s.Close()
		if err != nil {
			return err
		}
	}
	regions, onCPU := m.StepWeights()
	if cfg.ReadLimit && len(cfg.Gen) > 0 && !onCPU {
		slog.Info("bench: no read limit: the weights a step reads are not all in CPU memory")
	}
	if cfg.ReadLimit && len(cfg.Gen) > 0 && onCPU {
		for _, r := range regions {
			readBytes += int64(len(r))
		}
		stepBytes = m.StepFileBytes()
		if stepBytes <= 0 || readBytes <= 0 {
			return fmt.Errorf("bench: read limit: no weights to read (%d file bytes, %d loaded)", stepBytes, readBytes)
		}
		limit = func() (float64, error) {
			best := time.Duration(0)
			for i := 0; i < 2; i++ {
				d, _, err := ggml.StreamRead(regions, cfg.Threads)
				if err != nil {
					return 0, fmt.Errorf("bench: read limit: %w", err)
				}
				if best == 0 || d < best {
					best = d
				}
			}
			// The memory's read rate over the file's bytes per step.
			return float64(readBytes) / best.Seconds() / float64(stepBytes), nil
		}
	}
	for _, n := range cfg.Gen {
		toks := tokens(n)
		s, err := m.NewSequence(min(n+1, m.Text.ContextLength))
		if err != nil {
			return err
		}
		if cfg.AdapterAB {
			err = adapterAB(ctx, m, s, toks, base, cfg, emit)
			s.Close()
			if err != nil {
				return err
			}
			continue
		}
		err = run(fmt.Sprintf("tg%d", n), 0, n, float64(n), "t/s", func() error {
			s.Truncate(0)
			for _, t := range toks {
				if _, err := s.Eval(ctx, []int32{t}, nil, false, nil); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil && cfg.Constraint != nil {
			err = constrained(s, n, toks[0])
		}
		s.Close()
		if err != nil {
			return err
		}
	}
	limit = nil
	if !m.HasVision && (len(cfg.ImageSizes) > 0 || cfg.Split || cfg.Perceiver || cfg.TTFT) {
		return errors.New("bench: image tests need an mmproj file")
	}
	if !cfg.Warmup && (len(cfg.ImageSizes) > 0 || cfg.Split || cfg.Perceiver || cfg.TTFT) {
		// Without per-test warm-up, one untimed 378×378 encode still pages the mmproj weights in and sizes the
		// compute buffers, so that the first image test does not carry the load.
		if _, err := m.EncodeImage(randomImage(rng, 378, 378), false, nil); err != nil {
			return err
		}
	}
	for _, sz := range cfg.ImageSizes {
		in := randomImage(rng, sz[0], sz[1])
		if err := run(fmt.Sprintf("image %dx%d", sz[0], sz[1]), 0, 0, 1, "images/s", func() error {
			_, err := m.EncodeImage(in, false, nil)
			return err
		}); err != nil {
			return err
		}
	}
	if cfg.Split {
		// A 1960×1960 picture split: 4 crops of 980×980 plus the whole image resized to 980×980.
		in := randomImage(rng, 980, 980)
		if err := run("image 1960x1960 split (5 x 980x980)", 0, 0, 1, "images/s", func() error {
			for i := 0; i < 5; i++ {
				if _, err := m.EncodeImage(in, false, nil); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	if cfg.Perceiver {
		p := m.Vision.Patch
		n := (980 / p) * (980 / p)
		c := make([]float32, n*m.Connector.TextHidden)
		for i := range c {
			c[i] = float32(rng.NormFloat64())
		}
		if err := run(fmt.Sprintf("perceiver %d", n), 0, 0, 1, "images/s", func() error {
			_, err := m.RunPerceiver(c, n)
			return err
		}); err != nil {
			return err
		}
	}
	if cfg.TTFT {
		in := randomImage(rng, 378, 378)
		q := tokens(16)
		if err := run("ttft 378x378 + 16 tokens", 16, 1, 1, "1/s", func() error {
			f, err := m.EncodeImage(in, false, nil)
			if err != nil {
				return err
			}
			prompt := make([]int32, 0, m.Connector.ImageSeqLen+len(q))
			for i := 0; i < m.Connector.ImageSeqLen; i++ {
				prompt = append(prompt, int32(m.Connector.ImageTokenID))
			}
			prompt = append(prompt, q...)
			s, err := m.NewSequence(len(prompt) + 1)
			if err != nil {
				return err
			}
			defer s.Close()
			_, err = s.Eval(ctx, prompt, f.Embeddings, false, nil)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

func randomImage(rng *rand.Rand, w, h int) graph.ImageInput {
	px := make([]float32, 3*w*h)
	for i := range px {
		px[i] = float32(rng.Float64()*2 - 1)
	}
	return graph.ImageInput{Pixels: px, H: h, W: w, RealH: h, RealW: w}
}

func meanSD(v []int64) (int64, int64) {
	f := make([]float64, len(v))
	for i, x := range v {
		f[i] = float64(x)
	}
	m, s := meanSDf(f)
	return int64(m), int64(s)
}

func meanSDf(v []float64) (float64, float64) {
	if len(v) == 0 {
		return 0, 0
	}
	m := 0.0
	for _, x := range v {
		m += x
	}
	m /= float64(len(v))
	if len(v) < 2 {
		return m, 0
	}
	s := 0.0
	for _, x := range v {
		s += (x - m) * (x - m)
	}
	return m, math.Sqrt(s / float64(len(v)-1))
}

// adapterAB times generation of toks with the model's run-time adapters off and on, alternating within each
// repetition (off first), and emits one result for each side.
func adapterAB(ctx context.Context, m *graph.Model, s *graph.Sequence, toks []int32, base Result, cfg Config, emit func(Result)) error {
	on := m.AdapterScales()
	if len(on) == 0 {
		return errors.New("bench: the adapter A/B test needs a model loaded with run-time adapters")
	}
	off := make([]float32, len(on))
	defer m.SetAdapterScales(on)
	n := len(toks)
	sides := [2]Result{base, base}
	for i, name := range []string{"off", "on"} {
		sides[i].Test, sides[i].Unit, sides[i].NGen = fmt.Sprintf("tg%d, adapters %s", n, name), "t/s", n
	}
	gen := func(scales []float32) (time.Duration, error) {
		if err := m.SetAdapterScales(scales); err != nil {
			return 0, err
		}
		s.Truncate(0)
		t0 := time.Now()
		for _, t := range toks {
			if _, err := s.Eval(ctx, []int32{t}, nil, false, nil); err != nil {
				return 0, err
			}
		}
		return time.Since(t0), nil
	}
	reps := cfg.Repetitions
	if cfg.Warmup {
		reps++
	}
	for i := 0; i < reps; i++ {
		for k, scales := range [2][]float32{off, on} {
			if err := ctx.Err(); err != nil {
				return err
			}
			d, err := gen(scales)
			if err != nil {
				return err
			}
			if cfg.Warmup && i == 0 {
				continue
			}
			sides[k].SamplesNs = append(sides[k].SamplesNs, d.Nanoseconds())
			sides[k].SamplesTs = append(sides[k].SamplesTs, float64(n)/d.Seconds())
		}
	}
	for k := range sides {
		r := &sides[k]
		r.AvgNs, r.StddevNs = meanSD(r.SamplesNs)
		r.AvgTs, r.StddevTs = meanSDf(r.SamplesTs)
		r.PeakRSS = PeakRSS()
		emit(*r)
	}
	return nil
}
