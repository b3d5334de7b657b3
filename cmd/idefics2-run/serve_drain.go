package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// errDrainTimeout is the cancellation cause of the requests still running when --drain-timeout ends the drain.
var errDrainTimeout = errors.New("serve: the drain timeout ended the request")

const (
	// drainRetryAfter is the Retry-After, in seconds, of the 503 a draining server answers: another replica can
	// take the request at once, as soon as the load balancer has seen this one's /ready fail.
	drainRetryAfter = 1
	// loadingRetryAfter is the Retry-After, in seconds, of the 503 answered while the model loads.
	loadingRetryAfter = 5
	// cutWait is how long the drain waits, after cancelling the requests that outlived --drain-timeout, for their
	// handlers to return before closing their connections: a cancelled generation stops before its next token.
	cutWait = 10 * time.Second
	// shutdownWait bounds the closing of idle connections once no request is left.
	shutdownWait = 5 * time.Second
)

// lifecycle is whether the server takes new chat requests, and how many it holds (reading the body, queued or
// generating). Draining is one-way: once started, new requests are refused and idle is closed when the last
// request held ends.
type lifecycle struct {
	mu       sync.Mutex
	draining bool
	inflight int
	idle     chan struct{}
}

func newLifecycle() *lifecycle { return &lifecycle{idle: make(chan struct{})} }

// admit takes a new request in, unless the server drains.
func (l *lifecycle) admit() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.draining {
		return false
	}
	l.inflight++
	return true
}

// done ends a request admit took in.
func (l *lifecycle) done() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inflight--
	if l.draining && l.inflight == 0 {
		close(l.idle)
	}
}

// drain stops taking requests in and returns how many are held and a channel closed once none is. Calling it again
// changes nothing.
func (l *lifecycle) drain() (held int, idle <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.draining {
		l.draining = true
		if l.inflight == 0 {
			close(l.idle)
		}
	}
	return l.inflight, l.idle
}

// ready reports whether new requests are taken.
func (l *lifecycle) ready() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.draining
}

// held is the number of requests in the server now.
func (l *lifecycle) held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inflight
}

// writeDraining answers a request that arrives while the server drains: 503 with a short Retry-After, so that the
// client retries and its load balancer sends the retry to another replica.
func writeDraining(w http.ResponseWriter) {
	w.Header().Set("Retry-After", strconv.Itoa(drainRetryAfter))
	writeError(w, http.StatusServiceUnavailable, "server_busy", "the server is shutting down; retry the request")
}

// handleReady is the readiness probe: 200 while the model is loaded and the server takes requests, 503 once it
// drains (and, before the model is loaded, frontDoor answers 503).
func (s *server) handleReady(w http.ResponseWriter, r *http.Request) {
	if !s.life.ready() {
		w.Header().Set("Retry-After", strconv.Itoa(drainRetryAfter))
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "draining", "model": s.m.Name()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "model": s.m.Name()})
}

// frontDoor is the handler of `serve`'s listener, which opens before the model is loaded: until open hands it the
// server, /health answers 200 (the process is alive), /ready 503, and every other request 503 with Retry-After.
type frontDoor struct {
	srv atomic.Pointer[server]
}

func (d *frontDoor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s := d.srv.Load(); s != nil {
		s.ServeHTTP(w, r)
		return
	}
	get := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch {
	case get && r.URL.Path == "/health":
		writeJSON(w, http.StatusOK, map[string]any{"status": "loading"})
	case get && r.URL.Path == "/ready":
		w.Header().Set("Retry-After", strconv.Itoa(loadingRetryAfter))
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "loading"})
	default:
		w.Header().Set("Retry-After", strconv.Itoa(loadingRetryAfter))
		writeError(w, http.StatusServiceUnavailable, "server_busy", "the model is loading; retry later")
	}
}

// httpFront is `serve`'s HTTP server: its listener, its front door, and the cancellation of every request's
// context, which the drain uses on the requests that outlive --drain-timeout.
type httpFront struct {
	hs   *http.Server
	door *frontDoor
	errc chan error
	cut  context.CancelCauseFunc
}

// startHTTP serves ln at once (see frontDoor). A request's body must arrive within readTimeout; there is no write
// timeout, as answers stream.
func startHTTP(ln net.Listener, readTimeout time.Duration) *httpFront {
	base, cut := context.WithCancelCause(context.Background())
	f := &httpFront{door: &frontDoor{}, errc: make(chan error, 1), cut: cut}
	f.hs = &http.Server{Handler: f.door, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: readTimeout,
		IdleTimeout: 2 * time.Minute, BaseContext: func(net.Listener) context.Context { return base }}
	go func() { f.errc <- f.hs.Serve(ln) }()
	return f
}

// open hands the requests to srv.
func (f *httpFront) open(srv *server) { f.door.srv.Store(srv) }

// close stops serving at once (for a model that failed to load).
func (f *httpFront) close() {
	_ = f.hs.Close()
	f.cut(nil)
}

// serveUntilDrained serves until ctx ends (SIGINT, SIGTERM), then drains: /ready turns 503, new requests get 503
// with Retry-After, keep-alive ends, and the requests held finish; those still running after drainTimeout are
// cancelled (a stream gets an error chunk, a request not yet answered a 503). Then the listener closes and the
// exit code is 0. A failing listener ends it with 1.
func (f *httpFront) serveUntilDrained(ctx context.Context, srv *server, drainTimeout time.Duration, stderr io.Writer) int {
	select {
	case err := <-f.errc:
		return fail(stderr, fmt.Errorf("serve: %w", err))
	case <-ctx.Done():
	}
	why := "stopping"
	if in := interruption(ctx); in != nil {
		why = in.Error()
	}
	f.hs.SetKeepAlivesEnabled(false)
	held, idle := srv.life.drain()
	fmt.Fprintf(stderr, "idefics2-run: %s: draining (/ready answers 503, new requests 503), %d requests in progress, --drain-timeout %gs\n",
		why, held, drainTimeout.Seconds())
	timer := time.NewTimer(drainTimeout)
	defer timer.Stop()
	select {
	case <-idle:
	case <-timer.C:
		select {
		case <-idle: // the last request ended as the timer fired
		default:
			fmt.Fprintf(stderr, "idefics2-run: drain timeout: cancelling the %d requests still in progress\n", srv.life.held())
			f.cut(errDrainTimeout)
			select {
			case <-idle:
			case <-time.After(cutWait):
			}
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownWait)
	defer cancel()
	if err := f.hs.Shutdown(sctx); err != nil {
		_ = f.hs.Close()
	}
	f.cut(nil)
	fmt.Fprintln(stderr, "idefics2-run: server stopped")
	return exitOK
}
