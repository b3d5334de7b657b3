package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idefics2-go/idefics2/internal/cli"
	"github.com/idefics2-go/idefics2/runner"
)

// serverConfig holds the limits and defaults of `serve`.
type serverConfig struct {
	defaults   runner.GenerateOptions
	tokenLimit int           // most tokens one request may generate
	maxBody    int64         // request body bytes
	timeout    time.Duration // per request, queueing included
	queue      int           // requests that may wait beyond the running ones
	policy     imagePolicy
	apiKey     string
	ctxSize    int
	cors       corsPolicy   // origins allowed to call the API from other pages (--cors-origins)
	log        *slog.Logger // the request log (nil: none)
	parallel   int          // sequences decoded together (0: 1)
	cacheMem   int64        // bytes of the cross-request caches (0: runner.DefaultCacheMem)
}

// server is the OpenAI-compatible HTTP front end. Handlers parse and validate requests (and build prompts)
// concurrently and hand them to the model's Scheduler, which decodes up to cfg.parallel of them together and
// queues the rest.
type server struct {
	m     *runner.Model
	cfg   serverConfig
	sched *runner.Scheduler
	// admitted bounds the requests handed to the scheduler (running or waiting in its queue): parallel + queue;
	// more get 503.
	admitted chan struct{}
	// slots bounds the chat requests inside the server (reading the body, building the prompt, queued or
	// running), so that a burst cannot make it read and decode an unbounded number of bodies and images at once.
	slots chan struct{}
	// served and cancelled count finished generations, and those stopped by a cancelled request (client gone).
	served, cancelled atomic.Int64
	created           int64
	mux               *http.ServeMux
	life              *lifecycle     // ready or draining, and the chat requests held (serve_drain.go)
	engine            engineStats    // the engine's counters for /metrics (serve_metrics.go)
	metrics           *serverMetrics // serve_metrics.go
	closeOnce         sync.Once
}

func newServer(m *runner.Model, cfg serverConfig) (*server, error) {
	cfg.parallel = max(cfg.parallel, 1)
	sched, err := m.NewScheduler(runner.SchedulerOptions{Parallel: cfg.parallel, CtxSize: cfg.ctxSize, CacheMem: cfg.cacheMem})
	if err != nil {
		return nil, err
	}
	s := &server{m: m, cfg: cfg, sched: sched, admitted: make(chan struct{}, cfg.parallel+max(cfg.queue, 0)), created: time.Now().Unix(),
		slots: make(chan struct{}, max(cfg.queue, 0)+cfg.parallel+runtime.NumCPU()),
		mux:   http.NewServeMux(), life: newLifecycle()}
	s.engine = sched
	s.metrics = newServerMetrics(s.engine, s.life.ready)
	// A GET pattern also matches HEAD.
	routes := []struct {
		method, path string
		handler      http.HandlerFunc
	}{
		{http.MethodPost, "/v1/chat/completions", s.instrumentChat(s.handleChat)},
		{http.MethodGet, "/v1/models", s.handleModels},
		{http.MethodGet, "/v1/models/{id}", s.handleModel},
		{http.MethodGet, "/health", s.handleHealth},
		{http.MethodGet, "/ready", s.handleReady},
		{http.MethodGet, "/metrics", s.handleMetrics},
		{http.MethodGet, "/lora-adapters", s.handleAdapters},
	}
	for _, rt := range routes {
		s.mux.HandleFunc(rt.method+" "+rt.path, rt.handler)
		// The same path without a method is less specific: it gets the other methods, answered with the JSON error
		// object every other error has (ServeMux's own 405 is plain text).
		s.mux.HandleFunc(rt.path, methodNotAllowed(rt.method, rt.path))
	}
	s.addPageRoutes()
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no route %s %s (see / for the chat page, /v1/chat/completions, /v1/models, /health, /ready, /metrics)", r.Method, r.URL.Path))
	})
	return s, nil
}

// close waits for the running requests (their contexts decide when they end) and frees the scheduler.
func (s *server) close() {
	s.closeOnce.Do(s.sched.Close)
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.cfg.cors.apply(w, r) {
		return
	}
	s.serveLogged(w, r)
}

// handleAdapters lists the run-time adapters loaded with --lora, as llama.cpp's server does: id (the index a
// request's "lora" list names), path and the scale a request without "lora" uses.
func (s *server) handleAdapters(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	type adapter struct {
		ID     int     `json:"id"`
		Path   string  `json:"path"`
		MMProj string  `json:"mmproj,omitempty"`
		Scale  float32 `json:"scale"`
	}
	out := []adapter{}
	for i, a := range s.m.Adapters() {
		out = append(out, adapter{ID: i, Path: a.Path, MMProj: a.MMProjPath, Scale: a.Scale})
	}
	writeJSON(w, http.StatusOK, out)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, typ, msg string) {
	writeJSON(w, status, map[string]any{"error": apiError{Message: msg, Type: typ}})
}

// methodNotAllowed answers a request to path with a method other than method: 405 with an Allow header.
func methodNotAllowed(method, path string) http.HandlerFunc {
	allow := method
	if method == http.MethodGet {
		allow += ", " + http.MethodHead
	}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, "invalid_request_error", fmt.Sprintf("use %s %s", method, path))
	}
}

// writeErr writes err with the status its kind calls for.
func writeErr(w http.ResponseWriter, err error) {
	var re *requestError
	switch {
	case errors.As(err, &re):
		writeAPIError(w, re.status, errorObject(err))
	case runner.IsInputError(err):
		writeError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, "timeout", "the request timed out")
	case errors.Is(err, context.Canceled):
		writeError(w, 499, "cancelled", "the request was cancelled")
	default:
		writeError(w, http.StatusInternalServerError, "server_error", err.Error())
	}
}

func (s *server) authorized(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.apiKey == "" {
		return true
	}
	if r.Header.Get("Authorization") == "Bearer "+s.cfg.apiKey {
		return true
	}
	writeError(w, http.StatusUnauthorized, "authentication_error", "missing or wrong API key (Authorization: Bearer KEY)")
	return false
}

func (s *server) handleHealth(w http.ResponseWriter, r *http.Request) {
	st := s.sched.Stats()
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "model": s.m.Name(), "queued": st.Waiting, "active": st.Active,
		"served": s.served.Load(), "cancelled": s.cancelled.Load(), "ready": s.life.ready()})
}

func (s *server) handleModels(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []map[string]any{{
		"id": s.m.Name(), "object": "model", "created": s.created, "owned_by": "idefics2-go",
	}}})
}

type chatChoice struct {
	Index        int             `json:"index"`
	Message      *chatOutMessage `json:"message,omitempty"`
	Delta        *chatOutMessage `json:"delta,omitempty"`
	FinishReason *string         `json:"finish_reason"`
	Logprobs     *choiceLogprobs `json:"logprobs,omitempty"`
}

type chatOutMessage struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type chatResponse struct {
	ID      string          `json:"id"`
	Object  string          `json:"object"`
	Created int64           `json:"created"`
	Model   string          `json:"model"`
	Choices []chatChoice    `json:"choices"`
	Usage   *tokenUsage     `json:"usage,omitempty"`
	Tokens  []int32         `json:"tokens,omitempty"`
	Timings *runner.Timings `json:"timings,omitempty"`
	Error   *apiError       `json:"error,omitempty"`
}

// newChunk is a chat.completion.chunk of the streamed answer base: choices (nil in an error chunk, empty in the
// usage-only chunk), usage and the error where given.
func newChunk(base chatResponse, choices []chatChoice, usage *tokenUsage, apiErr *apiError) chatResponse {
	c := base
	c.Object = "chat.completion.chunk"
	c.Choices, c.Usage, c.Error = choices, usage, apiErr
	return c
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "chatcmpl-" + hex.EncodeToString(b[:])
}

// takeSlot takes one of the server's request slots, or answers busy (503 + Retry-After) and reports false; the
// caller gives the slot back with <-s.slots.
func (s *server) takeSlot(w http.ResponseWriter) bool {
	select {
	case s.slots <- struct{}{}:
		return true
	default:
		s.busy(w, fmt.Sprintf("the server is busy (%s in progress); retry later", plural(cap(s.slots), "request")))
		return false
	}
}

func (s *server) handleChat(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	if !s.takeSlot(w) {
		return
	}
	defer func() { <-s.slots }()
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.timeout)
	defer cancel()
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "the body is not a valid chat request: "+err.Error())
		return
	}
	if req.Prompt != nil || len(req.Images) > 0 || req.Raw {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "prompt, images and raw are batch-only fields; send messages")
		return
	}
	if len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "messages: at least one message is required")
		return
	}
	opts, err := req.generateOptions(s.cfg.defaults, limits{maxTokens: s.cfg.tokenLimit})
	if err != nil {
		writeErr(w, err)
		return
	}
	s.metrics.traceTokens(r.Context(), &opts)
	scales, err := req.adapterScales(len(s.m.Adapters()))
	if err != nil {
		writeErr(w, err)
		return
	}
	p, err := req.prompt(s.m, s.cfg.policy)
	if err != nil {
		writeErr(w, err)
		return
	}
	statsFrom(r.Context()).notePrompt(p)
	if n := len(p.Tokens); n > s.sched.CtxSize() {
		writeError(w, http.StatusBadRequest, "invalid_request_error",
			fmt.Sprintf("the prompt has %d tokens, more than the context size %d", n, s.sched.CtxSize()))
		return
	}
	if opts.N > s.cfg.parallel {
		writeError(w, http.StatusBadRequest, "invalid_request_error",
			fmt.Sprintf("n %d: at most %d (the server's --parallel)", opts.N, s.cfg.parallel))
		return
	}
	select {
	case s.admitted <- struct{}{}:
		defer func() { <-s.admitted }()
	default:
		s.busy(w, fmt.Sprintf("the queue is full (%s waiting); retry later", plural(s.cfg.queue, "request")))
		return
	}
	opts.AdapterScales = scales
	s.generate(ctx, w, &req, p, opts, requestID(r.Context()))
}

// busy answers 503 with a Retry-After of a tenth of the request timeout (at least a second).
func (s *server) busy(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(s.cfg.timeout.Seconds()/10))))
	writeError(w, http.StatusServiceUnavailable, "server_busy", msg)
}

// choiceLogprobs is a choice's "logprobs" object in OpenAI's chat format.
type choiceLogprobs struct {
	Content []runner.TokenLogprob `json:"content"`
}

func newLogprobs(lp []runner.TokenLogprob, asked bool) *choiceLogprobs {
	if !asked {
		return nil
	}
	if lp == nil {
		lp = []runner.TokenLogprob{}
	}
	return &choiceLogprobs{Content: lp}
}

// generate runs one request on the scheduler and writes the response (JSON, or SSE chunks with stream). With n > 1
// the answers are choices 0…n−1; streamed, each chunk names its choice's index.
func (s *server) generate(ctx context.Context, w http.ResponseWriter, req *chatRequest, p *runner.Prompt, opts runner.GenerateOptions, id string) {
	base := chatResponse{ID: id, Created: time.Now().Unix(), Model: s.m.Name()}
	n := max(opts.N, 1)
	rc := http.NewResponseController(w)
	started := false
	includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	send := func(v chatResponse) error {
		b, _ := json.Marshal(v)
		if includeUsage && v.Usage == nil {
			b = withNullUsage(b)
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return err
		}
		return rc.Flush()
	}
	begin := func() error {
		if started {
			return nil
		}
		started = true
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
		empty := ""
		for i := 0; i < n; i++ {
			if err := send(newChunk(base, []chatChoice{{Index: i, Delta: &chatOutMessage{Role: "assistant", Content: &empty}}}, nil, nil)); err != nil {
				return err
			}
		}
		return nil
	}
	if req.Stream {
		onText := func(i int, t string) error {
			if err := begin(); err != nil {
				return err
			}
			return send(newChunk(base, []chatChoice{{Index: i, Delta: &chatOutMessage{Content: &t}}}, nil, nil))
		}
		if n > 1 {
			opts.OnChoiceText = onText
		} else {
			opts.OnText = func(t string) error { return onText(0, t) }
		}
	}
	st := statsFrom(ctx)
	onToken := opts.OnToken
	opts.OnToken = func(id int32) error {
		st.noteToken()
		if onToken != nil {
			return onToken(id)
		}
		return nil
	}
	res, err := s.sched.Generate(ctx, p, opts)
	s.served.Add(1)
	s.metrics.observeResult(res)
	if err != nil && ctx.Err() != nil {
		s.cancelled.Add(1)
	}
	finish := ""
	if err != nil && res != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		// Cut by the request timeout: the answer so far, marked with finish_reason "timeout".
		err, finish = nil, finishTimeout
	}
	if finish == "" && res != nil {
		finish = res.StopReason.FinishReason()
	}
	st.noteResult(res, finish)
	if err != nil {
		slog.Info("request failed", "id", id, "err", err)
		if !started {
			if ctx.Err() != nil && errors.Is(err, context.Canceled) {
				return // the client is gone
			}
			writeErr(w, err)
			return
		}
		_ = send(newChunk(base, nil, nil, errorObject(err)))
		_, _ = io.WriteString(w, "data: [DONE]\n\n")
		_ = rc.Flush()
		return
	}
	u := newUsage(res)
	choices := res.Choices
	if choices == nil {
		choices = []runner.Choice{{Text: res.Text, Tokens: res.Tokens, StopReason: res.StopReason, Logprobs: res.Logprobs}}
	}
	// choiceFinish is a choice's finish_reason: "timeout" for a choice the request timeout cut (the others of n > 1
	// may have ended before it).
	choiceFinish := func(r runner.StopReason) string {
		if finish == finishTimeout && (r == "" || r == runner.StopCancelled) {
			return finishTimeout
		}
		return r.FinishReason()
	}
	if !req.Stream {
		out := base
		out.Object = "chat.completion"
		for i, c := range choices {
			text, finish := c.Text, choiceFinish(c.StopReason)
			out.Choices = append(out.Choices, chatChoice{Index: i, Message: &chatOutMessage{Role: "assistant", Content: &text},
				FinishReason: &finish, Logprobs: newLogprobs(c.Logprobs, opts.Logprobs)})
		}
		out.Usage, out.Tokens, out.Timings = &u, res.Tokens, &res.Timings
		writeJSON(w, http.StatusOK, out)
		return
	}
	if err := begin(); err != nil {
		return
	}
	// Each choice's last chunk carries its finish reason and, when asked for, all of its logprobs. As OpenAI sends
	// it, no finish chunk carries usage; with stream_options.include_usage an extra last chunk with empty choices
	// does.
	for i, c := range choices {
		finish := choiceFinish(c.StopReason)
		ch := []chatChoice{{Index: i, Delta: &chatOutMessage{}, FinishReason: &finish, Logprobs: newLogprobs(c.Logprobs, opts.Logprobs)}}
		if err := send(newChunk(base, ch, nil, nil)); err != nil {
			return
		}
	}
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		if err := send(newChunk(base, []chatChoice{}, &u, nil)); err != nil {
			return
		}
	}
	_, _ = io.WriteString(w, "data: [DONE]\n\n")
	_ = rc.Flush()
}

// maxParallel bounds --parallel (the scheduler refuses more than a step of the model holds).
const maxParallel = 256

// cmdServe runs the HTTP server until interrupted.
func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := cli.New("serve", "idefics2-run serve -m model.gguf [--host 127.0.0.1] [--port 8080] [options]")
	fs.Describe("Serves the OpenAI-compatible API: POST /v1/chat/completions (images as data: URIs, SSE streaming with\n" +
		"\"stream\": true), GET /v1/models, GET /health (live), GET /ready (model loaded, not draining) and GET /metrics\n" +
		"(Prometheus). SIGTERM or SIGINT drains: /ready turns 503, new requests get 503, those in progress finish\n" +
		"(at most --drain-timeout seconds), then the server exits 0.")
	var mf modelFlags
	var sf samplingFlags
	var rf remoteFlags
	sf.maxTokens = serveTokenLimit // an unset --max-tokens follows --token-limit, whose default this is
	mf.register(fs)
	sf.register(fs)
	rf.register(fs)
	host, port := "127.0.0.1", 8080
	var localDir, apiKey, corsOrigins string
	maxBodyMB, maxImages, tokenLimit, timeoutS, queue := 32, 8, serveTokenLimit, 300, 16
	drainS := 30 // Kubernetes' default terminationGracePeriodSeconds
	maxImageMB, maxImageMP := 20, 36
	fs.String(&host, "host", "address to listen on")
	fs.Int(&port, "port", "port to listen on (0: any free port)")
	fs.String(&localDir, "allow-local-images", "allow image urls that are local file paths inside this folder `DIR`")
	fs.String(&apiKey, "api-key", "require Authorization: Bearer `KEY`")
	fs.String(&corsOrigins, "cors-origins", "let pages from these origins call the API (comma-separated `LIST` of https://host[:port], or *; default none)")
	fs.Int(&maxBodyMB, "max-body-mb", "largest request body in MiB")
	fs.Int(&maxImages, "max-images", "most images per request")
	fs.Int(&maxImageMB, "max-image-mb", "largest image file in MiB (data URI or local file)")
	fs.Int(&maxImageMP, "max-image-mpx", "most pixels of one image in millions (checked in the header, before decoding)")
	fs.Int(&tokenLimit, "token-limit", "most tokens one request may generate (also the default max_tokens)")
	fs.Int(&timeoutS, "timeout", "seconds one request may take, queueing included")
	fs.Int(&queue, "queue", "requests that may wait while the parallel ones run (more get 503)")
	parallel, cacheMB := 0, runner.DefaultCacheMem>>20
	fs.Int(&parallel, "parallel", "sequences decoded together (0: a number the memory allows, printed at start)")
	fs.Int(&cacheMB, "cache-mem", "MiB for the prompt-prefix and image-embedding caches across requests")
	fs.Int(&drainS, "drain-timeout", "seconds the requests in progress may take to finish after SIGTERM or SIGINT (0: cancel them at once)")
	logFormat := logFormatText
	fs.String(&logFormat, "log-format", "request log on stderr, one line per request: text (key=value) or json")
	if code, done := parseOnlyFlags(fs, "serve", "", args, stdout, stderr); done {
		return code
	}
	if err := mf.check("serve"); err != nil {
		return fail(stderr, err)
	}
	for _, c := range []struct {
		name string
		v    int
	}{{"--max-body-mb", maxBodyMB}, {"--max-images", maxImages}, {"--token-limit", tokenLimit}, {"--timeout", timeoutS},
		{"--max-image-mb", maxImageMB}, {"--max-image-mpx", maxImageMP}} {
		if c.v <= 0 {
			return fail(stderr, cli.Usagef("serve: %s %d: want a positive number", c.name, c.v))
		}
	}
	// Bounds that keep the byte and second counts below from overflowing.
	for _, c := range []struct {
		name   string
		v, max int
	}{{"--max-body-mb", maxBodyMB, 1 << 20}, {"--max-image-mb", maxImageMB, maxImageBytes >> 20}, {"--max-image-mpx", maxImageMP, 1 << 20},
		{"--timeout", timeoutS, 1 << 30}, {"--queue", queue, 1 << 20}, {"--drain-timeout", drainS, 1 << 30}} {
		if c.v > c.max {
			return fail(stderr, cli.Usagef("serve: %s %d: at most %d", c.name, c.v, c.max))
		}
	}
	if parallel < 0 || parallel > maxParallel || cacheMB < 0 || cacheMB > 1<<30 {
		return fail(stderr, cli.Usagef("serve: --parallel %d / --cache-mem %d: want 0…%d sequences and 0…%d MiB", parallel, cacheMB, maxParallel, 1<<30))
	}
	if queue < 0 || port < 0 || port > 65535 {
		return fail(stderr, cli.Usagef("serve: --queue %d / --port %d out of range", queue, port))
	}
	if drainS < 0 {
		return fail(stderr, cli.Usagef("serve: --drain-timeout %d: want 0 or more seconds", drainS))
	}
	def, err := sf.options("serve")
	if err != nil {
		return fail(stderr, err)
	}
	if !fs.Set("max-tokens") {
		def.MaxTokens = tokenLimit
	}
	cors, err := parseCORSOrigins(corsOrigins)
	if err != nil {
		return fail(stderr, err)
	}
	reqLog, err := newRequestLogger(stderr, logFormat)
	if err != nil {
		return fail(stderr, err)
	}
	pol, err := newImagePolicy(localDir, maxImages)
	if err != nil {
		return fail(stderr, err)
	}
	pol.maxBytes, pol.maxPixels = maxImageMB<<20, maxImageMP*1000000
	if pol.remote, err = rf.fetcher("serve", fs, pol.byteLimit()); err != nil {
		return fail(stderr, err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fail(stderr, cli.Usagef("serve: %v", err))
	}
	if warn := exposedHostWarning(host, apiKey, port); warn != "" {
		fmt.Fprintln(stderr, warn)
	}
	// The port answers at once: /health 200, /ready 503 until the model is loaded (serve_drain.go).
	front := startHTTP(ln, time.Duration(timeoutS)*time.Second)
	defer front.close()
	m, err := mf.load(ctx, stderr)
	if err != nil {
		return failCtx(ctx, stderr, err)
	}
	defer m.Close()
	if parallel == 0 {
		parallel = m.DefaultParallel(mf.ctxSize)
	}
	fmt.Fprintf(stderr, "idefics2-run: %d parallel sequences, %d MiB of caches\n", parallel, cacheMB)
	srv, err := newServer(m, serverConfig{defaults: def, tokenLimit: tokenLimit, maxBody: int64(maxBodyMB) << 20,
		timeout: time.Duration(timeoutS) * time.Second, queue: queue, policy: pol, apiKey: apiKey, ctxSize: mf.ctxSize, cors: cors,
		log: reqLog, parallel: parallel, cacheMem: max(int64(cacheMB)<<20, 1)})
	if err != nil {
		return fail(stderr, err)
	}
	defer srv.close()
	front.open(srv)
	fmt.Fprintf(stderr, "idefics2-run: serving %s on http://%s (POST /v1/chat/completions)\n", m.Name(), ln.Addr())
	return front.serveUntilDrained(ctx, srv, time.Duration(drainS)*time.Second, stderr)
}

// readBody reads a request body of at most cfg.maxBody bytes; on failure it answers (413 for a body too large, 400
// otherwise) and returns false.
func (s *server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", fmt.Sprintf("request body larger than %d bytes", s.cfg.maxBody))
			return nil, false
		}
		writeError(w, http.StatusBadRequest, "invalid_request_error", "reading the request body: "+err.Error())
		return nil, false
	}
	return body, true
}
