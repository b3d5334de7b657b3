package runner

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/idefics2-go/idefics2/constrain"
)

// StopReason says why generation ended.
type StopReason string

// Stop reasons.
const (
	StopToken     StopReason = "stop"        // a stop token (</s>, <end_of_utterance>) was generated
	StopString    StopReason = "stop_string" // the text reached one of the stop strings
	StopLength    StopReason = "length"      // MaxTokens tokens were generated
	StopContext   StopReason = "context"     // the session's context is full
	StopCancelled StopReason = "cancelled"   // the context was cancelled
)

// FinishReason maps r to the OpenAI chat API's finish_reason: "stop" or "length".
func (r StopReason) FinishReason() string {
	switch r {
	case StopLength, StopContext:
		return "length"
	}
	return "stop"
}

// GenerateOptions control one generation.
type GenerateOptions struct {
	// MaxTokens is the most tokens to generate; 0 evaluates the prompt only. Negative is an error.
	MaxTokens int
	// Sampler picks the tokens (zero value: greedy).
	Sampler SamplerOptions
	// Stop strings end generation when the text reaches one; the text is cut before it.
	Stop []string
	// Truncate drops the oldest part of a prompt that does not fit the context (keeping BOS and whole images)
	// instead of failing with ErrContextOverflow.
	Truncate bool
	// DumpDir, when set, receives NumPy files of the prompt's model inputs and outputs (see WriteDump); the prompt
	// is then evaluated from scratch with logits for every position.
	DumpDir string
	// DumpTensors, with DumpDir, also writes every named intermediate whose name matches this pattern (path.Match
	// syntax over names such as "vis.blk.3.attn_out", "perceiver.blk.0.layer_out", "conn.output",
	// "dec.blk.3.ffn_out", "dec.logits"; docs/usage.md lists them) as <name>.npy.
	DumpTensors string
	// OnText receives the text as it is produced (never a broken UTF-8 sequence, never text a stop string may
	// still claim). Returning an error stops generation with that error.
	OnText func(text string) error
	// OnToken, if set, is called with each generated id (stop token included) before its text.
	OnToken func(id int32) error
	// OnProgress, if set, is called as the prompt is evaluated: before the first and after each image (or crop)
	// encoded, and after each batch of prompt tokens. It runs on Generate's goroutine and should return quickly.
	OnProgress func(Progress)
	// Constraint, when set, restricts the output to the sentences of this grammar (a JSON Schema compiled by
	// constrain.CompileJSONSchema, or GBNF): stop tokens are allowed only where the output is complete. An output
	// cut by MaxTokens or the context is returned as it is, incomplete.
	Constraint *constrain.Grammar
	// N is the number of answers sampled for the prompt (0 or 1: one). More than one needs a Scheduler, which
	// evaluates the prompt once and shares its cache; answer i samples with Sampler.Seed + i, so that a seeded
	// request gives n different samples and a greedy one n equal answers.
	N int
	// OnChoiceText, with N > 1, receives each answer's text as it is produced, with the answer's index (OnText
	// serves N ≤ 1).
	OnChoiceText func(index int, text string) error
	// Logprobs asks for the log-probability of every generated token (Result.Logprobs); TopLogprobs (0…MaxTopLogprobs)
	// for that many most likely alternatives at each position as well. Both come from the logits the token was
	// sampled from, after the penalties, the banned tokens and a constraint's mask, and before temperature (as
	// OpenAI documents its logprobs).
	Logprobs    bool
	TopLogprobs int
	// AdapterScales, when not nil, are the run-time adapters' scales for this generation (Session.SetAdapterScales).
	AdapterScales []float32
}

// MaxTopLogprobs bounds GenerateOptions.TopLogprobs (OpenAI's limit).
const MaxTopLogprobs = 20

// Timings are the durations of one generation's stages, in milliseconds, and its throughput in tokens per second.
type Timings struct {
	LoadMS        float64 `json:"load_ms"`
	ImageEncodeMS float64 `json:"image_encode_ms"`
	PrefillMS     float64 `json:"prefill_ms"`
	DecodeMS      float64 `json:"decode_ms"`
	PrefillTPS    float64 `json:"prefill_tps"`
	DecodeTPS     float64 `json:"decode_tps"`
	// ConstrainMS is the time spent computing the allowed tokens of a constrained generation (part of DecodeMS);
	// ConstrainSteps the number of masks computed.
	ConstrainMS    float64 `json:"constrain_ms,omitempty"`
	ConstrainSteps int     `json:"constrain_steps,omitempty"`
	// ImageCacheHits and ImageCacheMisses count the sub-images whose features came from the image-embedding cache
	// and those encoded (Scheduler).
	ImageCacheHits   int `json:"image_cache_hits,omitempty"`
	ImageCacheMisses int `json:"image_cache_misses,omitempty"`
}

// Result is the outcome of Generate.
type Result struct {
	// Text is the generated text (special tokens skipped, cut before a stop string).
	Text string
	// Tokens are the generated ids, a final stop token included (as transformers' generate returns them).
	Tokens []int32
	// StopReason says why generation ended.
	StopReason StopReason
	// PromptTokens is the prompt's length in tokens (after truncation); CachedTokens of them were reused from the
	// session's cache and not evaluated again.
	PromptTokens, CachedTokens int
	// Timings of the stages; LoadMS is left to the caller.
	Timings Timings
	// Logprobs are the generated tokens' log-probabilities (GenerateOptions.Logprobs), one per token.
	Logprobs []TokenLogprob
	// Choices are every answer of a request with N > 1 (Choices[0] is the answer the fields above describe); nil
	// otherwise.
	Choices []Choice
}

// Choice is one of the answers of a request with N > 1.
type Choice struct {
	Text       string
	Tokens     []int32
	StopReason StopReason
	Logprobs   []TokenLogprob
}

const imageKeyBit = 1 << 63

// positionKeys returns the identity of each prompt position: the token id, or for an image token its sub-image and
// row, so that cached positions are reused only for the same image.
func (m *Model) positionKeys(p *Prompt, tokens []int32, imgOffset int) []uint64 {
	keys := make([]uint64, len(tokens))
	j := imgOffset
	for i, t := range tokens {
		if t == m.imageTokenID && p.Images != nil && m.seqLen > 0 {
			sub := j / m.seqLen
			keys[i] = (p.subKeys[sub]*31 + uint64(j%m.seqLen)) | imageKeyBit
			j++
		} else {
			keys[i] = uint64(uint32(t))
		}
	}
	return keys
}

// Generate evaluates the prompt on the session (reusing the cached prefix it shares with what the session already
// holds) and generates up to o.MaxTokens tokens. On cancellation it returns the partial result and ctx's error.
func (s *Session) Generate(ctx context.Context, p *Prompt, o GenerateOptions) (*Result, error) {
	m := s.m
	if err := m.checkOptions(o, 1); err != nil {
		return nil, err
	}
	if o.AdapterScales != nil {
		if err := s.SetAdapterScales(o.AdapterScales); err != nil {
			return nil, err
		}
	}
	sampler, err := NewSampler(o.Sampler, m.g.Text.VocabSize, m.banned)
	if err != nil {
		return nil, asInput(err)
	}
	cons, err := m.newConstraint(o.Constraint)
	if err != nil {
		return nil, err
	}
	tokens, imgOffset, err := s.fit(p, o)
	if err != nil {
		return nil, err
	}
	res := &Result{PromptTokens: len(tokens), StopReason: StopLength}
	keys := m.positionKeys(p, tokens, imgOffset)

	common := 0
	if o.DumpDir == "" {
		for common < len(keys) && common < len(s.keys) && keys[common] == s.keys[common] {
			common++
		}
		if common == len(keys) {
			common-- // the last position must be evaluated again for its logits
		}
	}
	s.truncate(common)
	res.CachedTokens = common

	// Image features for the image tokens that will be evaluated.
	t0 := time.Now()
	var rows []float32
	var dump *dumpData
	if o.DumpTensors != "" && o.DumpDir == "" {
		return nil, inputErrorf("runner: dump tensors %q: a dump folder is needed as well", o.DumpTensors)
	}
	if o.DumpDir != "" {
		if dump, err = newDumpData(o.DumpTensors); err != nil {
			return nil, err
		}
	}
	if p.Images != nil {
		first := imgOffset
		for _, t := range tokens[:common] {
			if t == m.imageTokenID {
				first++
			}
		}
		total := p.Images.N * m.seqLen
		hidden := m.g.Text.Hidden
		firstSub := first / m.seqLen
		if first < total {
			report(o.OnProgress, ProgressImages, 0, p.Images.N-firstSub)
		}
		for sub := first / m.seqLen; sub < p.Images.N && first < total; sub++ {
			var onLayer func(done, total int)
			if o.OnProgress != nil {
				done := sub - firstSub
				onLayer = func(layer, layers int) {
					o.OnProgress(Progress{Stage: ProgressImages, Done: done, Total: p.Images.N - firstSub, Layer: layer, Layers: layers})
				}
			}
			f, err := m.encode(ctx, p, sub, dump != nil, dump.graphDump(), s.adapterScales(), onLayer)
			if err != nil {
				return cancelled(ctx, res, err)
			}
			report(o.OnProgress, ProgressImages, sub+1-firstSub, p.Images.N-firstSub)
			from := 0
			if sub == first/m.seqLen {
				from = first % m.seqLen
			}
			rows = append(rows, f.Embeddings[from*hidden:]...)
			if dump != nil {
				dump.features = append(dump.features, f)
			}
		}
	}
	res.Timings.ImageEncodeMS = ms(time.Since(t0))

	// Prefill: the graph evaluates it in batches and notices cancellation between them.
	t1 := time.Now()
	if o.OnProgress != nil && s.gs != nil {
		s.gs.SetBatchProgress(func(done, total int) { report(o.OnProgress, ProgressPrefill, done, total) })
	}
	logits, err := s.eval(ctx, tokens[common:], rows, dump != nil, keys[common:], dump.graphDump())
	if o.OnProgress != nil && s.gs != nil {
		s.gs.SetBatchProgress(nil) // the decode steps that follow are not prefill
	}
	if err != nil {
		return cancelled(ctx, res, err)
	}
	res.Timings.PrefillMS = ms(time.Since(t1))
	if n := len(tokens) - common; res.Timings.PrefillMS > 0 {
		res.Timings.PrefillTPS = float64(n) / (res.Timings.PrefillMS / 1000)
	}
	vocab := m.g.Text.VocabSize
	if dump != nil {
		dump.tokens = tokens
		dump.logits = logits
		if err := m.writeDump(o.DumpDir, p, dump); err != nil {
			return nil, err
		}
		logits = logits[len(logits)-vocab:]
	}

	// Decode.
	t2 := time.Now()
	defer func() {
		res.Timings.DecodeMS = ms(time.Since(t2))
		if res.Timings.DecodeMS > 0 {
			res.Timings.DecodeTPS = float64(len(res.Tokens)) / (res.Timings.DecodeMS / 1000)
		}
		if cons != nil {
			res.Timings.ConstrainMS = ms(cons.spent)
			res.Timings.ConstrainSteps = cons.steps
		}
	}()
	// MaxTokens may come from a request: the context bounds what can be generated, and so the allocation.
	history := append(make([]int32, 0, len(tokens)+min(o.MaxTokens, s.gs.Size())), tokens...)
	dec := m.tok.NewStreamDecoder(true)
	st := newStopper(o.Stop)
	next := make([]int32, 1)
	nextKey := make([]uint64, 1)
	emit := func(text string) error {
		if text == "" || o.OnText == nil {
			return nil
		}
		return o.OnText(text)
	}
	finish := func() error {
		out, _ := st.add(dec.Flush(), true)
		if err := emit(out); err != nil {
			return err
		}
		res.Text = st.text()
		return nil
	}
	if o.MaxTokens == 0 {
		return res, finish()
	}
	for {
		if err := ctx.Err(); err != nil {
			// Flush what was generated: text held back for a possible stop string, or an incomplete UTF-8
			// sequence, is released as at the end of generation.
			res.StopReason = StopCancelled
			if ferr := finish(); ferr != nil {
				return res, ferr
			}
			return res, err
		}
		if cons != nil && cons.mask(logits) == 0 {
			if cons.m.Complete() {
				// The output is complete and the vocabulary has no stop token to say so.
				res.StopReason = StopToken
				return res, finish()
			}
			res.Text = st.text()
			return res, inputErrorf("runner: the grammar allows no token of this vocabulary after %q", res.Text)
		}
		id := sampler.Sample(logits, history)
		if o.Logprobs {
			res.Logprobs = append(res.Logprobs, m.logprob(logits, id, o.TopLogprobs))
		}
		if cons != nil {
			if err := cons.m.Accept(id); err != nil {
				res.Text = st.text()
				return res, fmt.Errorf("runner: constrained sampling picked a refused token: %w", err)
			}
		}
		res.Tokens = append(res.Tokens, id)
		history = append(history, id)
		if o.OnToken != nil {
			if err := o.OnToken(id); err != nil {
				res.Text = st.text()
				return res, err
			}
		}
		if m.isStop(id) {
			res.StopReason = StopToken
			return res, finish()
		}
		out, hit := st.add(dec.Add(id), false)
		if err := emit(out); err != nil {
			res.Text = st.text()
			return res, err
		}
		if hit {
			res.StopReason = StopString
			res.Text = st.text()
			return res, nil
		}
		if len(res.Tokens) >= o.MaxTokens {
			res.StopReason = StopLength
			return res, finish()
		}
		if s.gs.Pos() >= s.gs.Size() {
			res.StopReason = StopContext
			return res, finish()
		}
		next[0] = id
		nextKey[0] = uint64(uint32(id))
		if logits, err = s.eval(ctx, next, nil, false, nextKey, nil); err != nil {
			if ctx.Err() != nil {
				continue // cancelled: ends at the top of the loop, with the text so far
			}
			res.Text = st.text()
			return res, err
		}
	}
}

// cancelled returns the partial result res with StopCancelled when ctx was cancelled (err is then ctx's error, or
// what the cancelled computation returned), otherwise no result and err.
func cancelled(ctx context.Context, res *Result, err error) (*Result, error) {
	if ctx.Err() == nil {
		return nil, err
	}
	res.StopReason = StopCancelled
	return res, err
}

// fit returns the tokens of p to evaluate: all of them when they fit the session, else (with o.Truncate) the
// prompt without its oldest part, and the number of image tokens dropped.
func (s *Session) fit(p *Prompt, o GenerateOptions) ([]int32, int, error) {
	return s.m.fitPrompt(p, o, s.gs.Size())
}

// fitPrompt is Session.fit for a context of size positions.
func (m *Model) fitPrompt(p *Prompt, o GenerateOptions, size int) ([]int32, int, error) {
	tokens := p.Tokens
	if len(tokens) <= size {
		return tokens, 0, nil
	}
	if !o.Truncate {
		return nil, 0, &InputError{Err: &overflowError{promptTokens: len(tokens), ctxSize: size}}
	}
	// Leave room for the answer: up to a quarter of the context.
	target := size - max(1, min(o.MaxTokens, size/4))
	keep := 0
	if len(tokens) > 0 && tokens[0] == m.tok.BOS() {
		keep = 1
	}
	cut := keep + len(tokens) - target // first kept position after the head
	isImg := func(t int32) bool {
		if t == m.imageTokenID {
			return true
		}
		id, ok := m.tok.TokenID(tokenFakeAroundImage)
		return ok && t == id
	}
	// Never keep half an image: move the cut past a run of image tokens it falls into.
	for cut < len(tokens) && cut > keep && isImg(tokens[cut-1]) && isImg(tokens[cut]) {
		cut++
	}
	if cut >= len(tokens) {
		return nil, 0, &InputError{Err: &overflowError{promptTokens: len(tokens), ctxSize: size}}
	}
	dropped := 0
	for _, t := range tokens[keep:cut] {
		if t == m.imageTokenID {
			dropped++
		}
	}
	out := append(append(make([]int32, 0, keep+len(tokens)-cut), tokens[:keep]...), tokens[cut:]...)
	return out, dropped, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// stopper holds back text that may be the start of a stop string and finds stop strings in the text.
type stopper struct {
	stops   []string
	done    strings.Builder // text released
	pending string          // text held back
	maxLen  int
	hit     bool
}

func newStopper(stops []string) *stopper {
	s := &stopper{stops: stops}
	for _, x := range stops {
		s.maxLen = max(s.maxLen, len(x))
	}
	return s
}

// add appends text and returns what can be released, and whether a stop string was reached (the text is then
// cut before it). With final, everything not part of a stop string is released.
func (s *stopper) add(text string, final bool) (string, bool) {
	if s.hit {
		return "", true
	}
	if len(s.stops) == 0 {
		s.done.WriteString(text)
		return text, false
	}
	buf := s.pending + text
	// A stop string may span the boundary between the released text and buf, but it cannot begin in released
	// text: that would have been held back.
	best := -1
	for _, x := range s.stops {
		if i := strings.Index(buf, x); i >= 0 && (best < 0 || i < best) {
			best = i
		}
	}
	if best >= 0 {
		out := buf[:best]
		s.done.WriteString(out)
		s.pending = ""
		s.hit = true
		return out, true
	}
	hold := 0
	if !final {
		// The longest suffix of buf that is a proper prefix of some stop string.
		for _, x := range s.stops {
			for k := min(len(x)-1, len(buf)); k > hold; k-- {
				if strings.HasSuffix(buf, x[:k]) {
					hold = k
					break
				}
			}
		}
	}
	out := buf[:len(buf)-hold]
	s.pending = buf[len(buf)-hold:]
	s.done.WriteString(out)
	return out, false
}

// text is everything released so far.
func (s *stopper) text() string { return s.done.String() }
