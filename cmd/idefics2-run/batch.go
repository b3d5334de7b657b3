package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/idefics2-go/idefics2/internal/cli"
	"github.com/idefics2-go/idefics2/runner"
)

// batchResult is one output line of `batch`.
type batchResult struct {
	ID         json.RawMessage `json:"id"`
	Text       *string         `json:"text,omitempty"`
	Tokens     *[]int32        `json:"tokens,omitempty"`
	StopReason string          `json:"stop_reason,omitempty"`
	Usage      *tokenUsage     `json:"usage,omitempty"`
	Timings    *runner.Timings `json:"timings,omitempty"`
	Error      *apiError       `json:"error,omitempty"`
	// ImageSettings are the image processor settings the line's images were preprocessed with.
	ImageSettings *imageSettingsJSON `json:"image_settings,omitempty"`
	// Logprobs are the tokens' log-probabilities when the request asks for them (OpenAI's logprobs.content).
	Logprobs []runner.TokenLogprob `json:"logprobs,omitempty"`
	// Choices are every answer of a request with n > 1 (the fields above describe the first).
	Choices []batchChoice `json:"choices,omitempty"`
}

// batchChoice is one answer of a request with n > 1.
type batchChoice struct {
	Index      int                   `json:"index"`
	Text       string                `json:"text"`
	Tokens     []int32               `json:"tokens"`
	StopReason string                `json:"stop_reason"`
	Logprobs   []runner.TokenLogprob `json:"logprobs,omitempty"`
}

// apiError is OpenAI's error object: param names the request field at fault and code is a machine-readable reason;
// both are null when they do not apply.
type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// maxBatchLine bounds one request line (images as data URIs included).
const maxBatchLine = 256 << 20

// cmdBatch answers JSONL requests from stdin, one result line per request, in order. A failing request gets an
// error object and the batch goes on; the exit code is 1 when any request failed.
func cmdBatch(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := cli.New("batch", "idefics2-run batch -m model.gguf [options] < requests.jsonl > results.jsonl")
	fs.Describe(`Each input line is a JSON object: {"id": …, "messages": [OpenAI-style messages, content parts "text" and
"image_url" with a data: URI or a local path], "max_tokens": …, "temperature": …, "top_p": …, "top_k": …,
"min_p": …, "seed": …, "stop": …, "presence_penalty": …, "frequency_penalty": …, "repetition_penalty": …},
or {"id": …, "prompt": TEXT, "images": [PATH…], "raw": true|false, …}. Each output line is
{"id", "text", "tokens", "stop_reason", "usage", "timings"} (with "logprobs" when asked for, "choices" with n > 1)
or {"id", "error": {"message", "type"}}. With --parallel N, N requests are decoded together; results are still
written in input order unless --unordered. Options give the defaults of the sampling fields.`)
	var mf modelFlags
	var sf samplingFlags
	var rf remoteFlags
	mf.register(fs)
	sf.register(fs)
	rf.register(fs)
	parallel, unordered := 1, false
	fs.Int(&parallel, "parallel", "requests answered together (each line's answer is the same as alone)")
	fs.Bool(&unordered, "unordered", "write each result as soon as it is ready instead of in input order")
	if code, done := parseOnlyFlags(fs, "batch", "requests come on standard input", args, stdout, stderr); done {
		return code
	}
	if err := mf.check("batch"); err != nil {
		return fail(stderr, err)
	}
	if parallel < 1 || parallel > maxParallel {
		return fail(stderr, cli.Usagef("batch: --parallel %d: want 1…%d", parallel, maxParallel))
	}
	def, err := sf.options("batch")
	if err != nil {
		return fail(stderr, err)
	}
	remote, err := rf.fetcher("batch", fs, maxImageBytes)
	if err != nil {
		return fail(stderr, err)
	}
	m, err := mf.load(ctx, stderr)
	if err != nil {
		return failCtx(ctx, stderr, err)
	}
	defer m.Close()
	// No cache memory: every request starts from an empty cache, so that its answer does not depend on the
	// requests before it.
	sched, err := m.NewScheduler(runner.SchedulerOptions{Parallel: parallel, CtxSize: mf.ctxSize, CacheMem: 1})
	if err != nil {
		return fail(stderr, err)
	}
	defer sched.Close()
	pol := imagePolicy{allowLocal: true, remote: remote} // the user's own files, as with --image
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	bar := newBatchProgress(stderr, mf.progress, stdin)
	defer bar.finish()
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64<<10), maxBatchLine)
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)

	// Lines are read and handed to the scheduler by this goroutine, at most 2·parallel at a time; the writer
	// below receives the results in order of completion and writes them in input order (or at once, unordered).
	type done struct {
		seq int
		res batchResult
	}
	results := make(chan done, 2*parallel)
	slots := make(chan struct{}, 2*parallel)
	var wg sync.WaitGroup
	failed, written, line, seq := 0, 0, 0, 0
	var writeErr error
	pending := map[int]batchResult{}
	next := 0
	write := func(res batchResult) {
		if writeErr != nil {
			return
		}
		if res.Error != nil {
			failed++
		}
		if err := enc.Encode(res); err != nil {
			writeErr = err
			return
		}
		if err := out.Flush(); err != nil {
			writeErr = err
			return
		}
		written++
		bar.lineDone()
		if mf.verbose && res.Timings != nil {
			fmt.Fprintf(stderr, "result %d: %d prompt + %d generated tokens, prefill %.0f ms, decode %.0f ms\n", written,
				res.Usage.PromptTokens, res.Usage.CompletionTokens, res.Timings.PrefillMS, res.Timings.DecodeMS)
		}
	}
	collect := func(d done) {
		if unordered {
			write(d.res)
			return
		}
		pending[d.seq] = d.res
		for {
			r, ok := pending[next]
			if !ok {
				return
			}
			delete(pending, next)
			next++
			write(r)
		}
	}
	for sc.Scan() && ctx.Err() == nil && writeErr == nil {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		for waiting := true; waiting; {
			select {
			case slots <- struct{}{}:
				waiting = false
			case d := <-results:
				collect(d)
			}
		}
		b = bytes.Clone(b)
		wg.Add(1)
		go func(seq, line int) {
			defer wg.Done()
			res := batchOne(ctx, m, sched, b, line, def, pol)
			<-slots
			results <- done{seq, res}
		}(seq, line)
		seq++
	}
	go func() {
		wg.Wait()
		close(results)
	}()
	for d := range results {
		collect(d)
	}
	if writeErr != nil {
		return fail(stderr, fmt.Errorf("batch: writing results: %w", writeErr))
	}
	if err := sc.Err(); err != nil {
		return fail(stderr, fmt.Errorf("batch: reading requests (line %d): %w", line+1, err))
	}
	if in := interruption(ctx); in != nil {
		out.Flush()
		fmt.Fprintf(stderr, "idefics2-run: batch: %v after %s\n", in, plural(line, "line"))
		return in.exitCode()
	}
	if ctx.Err() != nil {
		return fail(stderr, fmt.Errorf("batch: interrupted after %s", plural(line, "line")))
	}
	if failed > 0 {
		fmt.Fprintf(stderr, "idefics2-run: batch: %d of the requests failed (see their error objects)\n", failed)
		return exitRuntime
	}
	return exitOK
}

// batchOne answers one request line.
func batchOne(ctx context.Context, m *runner.Model, s *runner.Scheduler, line []byte, n int, def runner.GenerateOptions, pol imagePolicy) batchResult {
	var req chatRequest
	res := batchResult{ID: json.RawMessage("null")}
	if err := decodeBatchLine(line, &req); err != nil {
		res.Error = errorObject(err)
		res.Error.Type, res.Error.Message = "invalid_request_error", fmt.Sprintf("line %d: %v", n, err)
		if len(req.ID) > 0 {
			res.ID = req.ID // the result keeps the line's id when the object itself was readable
		}
		return res
	}
	if len(req.ID) > 0 {
		res.ID = req.ID
	}
	fail := func(err error) batchResult {
		res.Error = errorObject(err)
		res.Error.Message = fmt.Sprintf("line %d: %s", n, res.Error.Message)
		return res
	}
	if req.Stream {
		return fail(badRequest("stream is not supported in batch mode"))
	}
	o, err := req.generateOptions(def, limits{})
	if err != nil {
		return fail(err)
	}
	p, err := req.prompt(m, pol)
	if err != nil {
		return fail(err)
	}
	scales, err := req.adapterScales(len(m.Adapters()))
	if err != nil {
		return fail(err)
	}
	o.AdapterScales = scales
	r, err := s.Generate(ctx, p, o)
	if err != nil {
		return fail(err)
	}
	u := newUsage(r)
	toks := r.Tokens
	if toks == nil {
		toks = []int32{}
	}
	res.Text, res.Tokens, res.StopReason, res.Usage, res.Timings = &r.Text, &toks, string(r.StopReason), &u, &r.Timings
	if p.ImageConfig != nil {
		res.ImageSettings = newImageSettingsJSON(*p.ImageConfig)
	}
	res.Logprobs = r.Logprobs
	for i, c := range r.Choices {
		ct := c.Tokens
		if ct == nil {
			ct = []int32{}
		}
		res.Choices = append(res.Choices, batchChoice{Index: i, Text: c.Text, Tokens: ct, StopReason: string(c.StopReason), Logprobs: c.Logprobs})
	}
	return res
}

// errorObject classifies err for a JSON error: request errors and bad input are invalid_request_error, the rest
// server_error.
func errorObject(err error) *apiError {
	var re *requestError
	switch {
	case errors.As(err, &re):
		return &apiError{Message: re.msg, Type: re.typ, Param: optPtr(re.param), Code: optPtr(re.code)}
	case runner.IsInputError(err):
		return &apiError{Message: err.Error(), Type: "invalid_request_error"}
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{Message: "request timed out", Type: "timeout"}
	case errors.Is(err, context.Canceled):
		return &apiError{Message: "request cancelled", Type: "cancelled"}
	}
	return &apiError{Message: err.Error(), Type: "server_error"}
}
