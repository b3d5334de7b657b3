package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

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
{"id", "text", "tokens", "stop_reason", "usage", "timings"} or {"id", "error": {"message", "type"}}.
Options give the defaults of the sampling fields.`)
	var mf modelFlags
	var sf samplingFlags
	var rf remoteFlags
	mf.register(fs)
	sf.register(fs)
	rf.register(fs)
	if code, done := parseOnlyFlags(fs, "batch", "requests come on standard input", args, stdout, stderr); done {
		return code
	}
	if err := mf.check("batch"); err != nil {
		return fail(stderr, err)
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
	s, err := m.NewSession(mf.ctxSize)
	if err != nil {
		return fail(stderr, err)
	}
	defer s.Close()
	pol := imagePolicy{allowLocal: true, remote: remote} // the user's own files, as with --image
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	bar := newBatchProgress(stderr, mf.progress, stdin)
	defer bar.finish()
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64<<10), maxBatchLine)
	failed := 0
	line := 0
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		res := batchOne(ctx, m, s, b, line, def, pol)
		if res.Error != nil {
			failed++
		}
		if err := enc.Encode(res); err != nil {
			return fail(stderr, fmt.Errorf("batch: writing results: %w", err))
		}
		if err := out.Flush(); err != nil {
			return fail(stderr, fmt.Errorf("batch: writing results: %w", err))
		}
		bar.lineDone()
		if mf.verbose && res.Timings != nil {
			fmt.Fprintf(stderr, "line %d: %d prompt + %d generated tokens, prefill %.0f ms, decode %.0f ms\n", line,
				res.Usage.PromptTokens, res.Usage.CompletionTokens, res.Timings.PrefillMS, res.Timings.DecodeMS)
		}
		if ctx.Err() != nil {
			break
		}
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
func batchOne(ctx context.Context, m *runner.Model, s *runner.Session, line []byte, n int, def runner.GenerateOptions, pol imagePolicy) batchResult {
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
	// Each request starts from an empty cache, so that its answer does not depend on the requests before it.
	s.Reset()
	if err := s.SetAdapterScales(scales); err != nil {
		return fail(err)
	}
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
