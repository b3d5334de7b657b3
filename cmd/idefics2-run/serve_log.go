package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/idefics2-go/idefics2/internal/cli"
	"github.com/idefics2-go/idefics2/runner"
)

// finishTimeout is the finish_reason of an answer cut by the request timeout (--timeout): the text generated until
// then, in the final chunk of a stream or in the body, instead of a bare 504.
const finishTimeout = "timeout"

// Log formats of serve's request log (--log-format).
const (
	logFormatText = "text"
	logFormatJSON = "json"
)

// newRequestLogger is the request log of serve: one slog record per request on w, as key=value text or as JSON.
func newRequestLogger(w io.Writer, format string) (*slog.Logger, error) {
	switch format {
	case logFormatText:
		return slog.New(slog.NewTextHandler(w, nil)), nil
	case logFormatJSON:
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	}
	return nil, cli.Usagef("serve: --log-format %q: want text or json", format)
}

// requestStats is what the request log says of one request beyond its status and duration. The chat handler and
// the generation fill it; the log line is written after the handler returns, which the generation's end precedes.
type requestStats struct {
	id                           string
	start                        time.Time
	chat                         bool // a chat completion request: the token, image and TTFT fields apply
	images, prompt, completion   int
	ttft                         time.Duration // request arrival to the first generated token; 0: none generated
	finish                       string
	promptKnown, completionKnown bool
}

type statsKey struct{}

// statsFrom returns the request's stats (a throwaway value outside a logged request, as in tests that call
// handlers directly).
func statsFrom(ctx context.Context) *requestStats {
	if st, ok := ctx.Value(statsKey{}).(*requestStats); ok {
		return st
	}
	return &requestStats{start: time.Now()}
}

// requestID is the id of the request ctx belongs to: the id its log line and X-Request-Id header carry, which is
// also a chat completion's id.
func requestID(ctx context.Context) string {
	if st, ok := ctx.Value(statsKey{}).(*requestStats); ok && st.id != "" {
		return st.id
	}
	return newID()
}

// notePrompt records the prompt of a chat request.
func (st *requestStats) notePrompt(p *runner.Prompt) {
	st.images, st.prompt, st.promptKnown = p.NumImages, len(p.Tokens), true
}

// noteToken records the first generated token's time.
func (st *requestStats) noteToken() {
	if st.ttft == 0 {
		st.ttft = max(time.Since(st.start), time.Nanosecond)
	}
}

// noteResult records a generation's outcome (res may be nil after an error).
func (st *requestStats) noteResult(res *runner.Result, finish string) {
	if res == nil {
		return
	}
	st.prompt, st.promptKnown = res.PromptTokens, true
	st.completion, st.completionKnown = len(res.Tokens), true
	st.finish = finish
}

// statusRecorder remembers the status a handler wrote; Unwrap lets http.ResponseController reach the connection's
// Flush through it.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// serveLogged serves one request through the mux and writes its log line: id, method, path, status, duration and,
// for chat completions, the images, prompt and generated tokens, time to first token and finish reason. Every
// response carries the id in X-Request-Id.
func (s *server) serveLogged(w http.ResponseWriter, r *http.Request) {
	st := &requestStats{start: time.Now(), chat: r.URL.Path == "/v1/chat/completions" && r.Method == http.MethodPost}
	if st.chat {
		st.id = newID()
	} else {
		var b [8]byte
		_, _ = rand.Read(b[:])
		st.id = "req-" + hex.EncodeToString(b[:])
	}
	w.Header().Set("X-Request-Id", st.id)
	rec := &statusRecorder{ResponseWriter: w}
	s.mux.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), statsKey{}, st)))
	if s.cfg.log == nil {
		return
	}
	status := rec.status
	if status == 0 {
		status = 499 // the handler wrote nothing: the client went away first
	}
	attrs := []slog.Attr{slog.String("id", st.id), slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.Int("status", status)}
	if st.chat {
		attrs = append(attrs, slog.Int("images", st.images))
		if st.promptKnown {
			attrs = append(attrs, slog.Int("prompt_tokens", st.prompt))
		}
		if st.completionKnown {
			attrs = append(attrs, slog.Int("completion_tokens", st.completion))
		}
		if st.ttft > 0 {
			attrs = append(attrs, slog.Float64("ttft_ms", ms(st.ttft)))
		}
		if st.finish != "" {
			attrs = append(attrs, slog.String("finish_reason", st.finish))
		}
	}
	attrs = append(attrs, slog.Float64("total_ms", ms(time.Since(st.start))))
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelWarn
	}
	s.cfg.log.LogAttrs(context.Background(), level, "request", attrs...)
}

// ms is d in milliseconds, rounded to a tenth.
func ms(d time.Duration) float64 { return float64(d.Round(100*time.Microsecond).Microseconds()) / 1000 }

// exposedHostWarning is the warning serve prints when it listens beyond the loopback interface without an API key
// ("" when it does not apply).
func exposedHostWarning(host, apiKey string, port int) string {
	if apiKey != "" || isLoopbackHost(host) {
		return ""
	}
	return fmt.Sprintf("idefics2-run: serve: warning: --host %s accepts connections from other machines and no --api-key is set: "+
		"anyone who can reach port %d can run the model and use this machine's compute", host, port)
}

// isLoopbackHost reports whether host names only the loopback interface: localhost or a loopback address. An empty
// host, 0.0.0.0, :: and any other name listen beyond it.
func isLoopbackHost(host string) bool {
	h := strings.Trim(host, "[]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// serveTokenLimit is the default of serve's --token-limit, and so of its --max-tokens.
const serveTokenLimit = 4096
