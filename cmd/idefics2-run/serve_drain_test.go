package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/idefics2-go/idefics2/runner"
)

func TestLifecycle(t *testing.T) {
	closed := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	tests := []struct {
		name string
		// admitted requests before the drain, and how many of them end before it
		before, endBefore int
		wantHeld          int
	}{
		{"idle", 0, 0, 0},
		{"all ended", 3, 3, 0},
		{"two held", 3, 1, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLifecycle()
			for i := 0; i < tc.before; i++ {
				if !l.admit() {
					t.Fatal("refused before the drain")
				}
			}
			for i := 0; i < tc.endBefore; i++ {
				l.done()
			}
			if !l.ready() {
				t.Fatal("not ready before the drain")
			}
			held, idle := l.drain()
			if held != tc.wantHeld || l.held() != tc.wantHeld {
				t.Fatalf("held %d (%d), want %d", held, l.held(), tc.wantHeld)
			}
			if l.ready() || l.admit() {
				t.Fatal("ready or admitting while draining")
			}
			if closed(idle) != (tc.wantHeld == 0) {
				t.Fatalf("idle closed %v with %d held", closed(idle), tc.wantHeld)
			}
			for i := 0; i < tc.wantHeld; i++ {
				l.done()
			}
			if !closed(idle) {
				t.Fatal("idle not closed once every request ended")
			}
			if held, again := l.drain(); held != 0 || again != idle {
				t.Fatal("a second drain changed the state")
			}
		})
	}
}

// TestFrontDoorLoading: before the model is loaded the port answers /health 200, /ready 503 and every other request
// 503 with Retry-After; once the server is handed over, its own routes answer.
func TestFrontDoorLoading(t *testing.T) {
	door := &frontDoor{}
	hs := httptest.NewServer(door)
	defer hs.Close()
	tests := []struct {
		method, path string
		status       int
		retry        bool
		want         string
	}{
		{"GET", "/health", 200, false, `"status":"loading"`},
		{"HEAD", "/health", 200, false, ""},
		{"GET", "/ready", 503, true, `"status":"loading"`},
		{"POST", "/v1/chat/completions", 503, true, "the model is loading"},
		{"GET", "/v1/models", 503, true, "the model is loading"},
		{"GET", "/metrics", 503, true, "the model is loading"},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, hs.URL+tc.path, strings.NewReader("{}"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || (resp.Header.Get("Retry-After") != "") != tc.retry || !strings.Contains(string(b), tc.want) {
				t.Fatalf("status %d, Retry-After %q, body %s; want %d, Retry-After %v, naming %q",
					resp.StatusCode, resp.Header.Get("Retry-After"), b, tc.status, tc.retry, tc.want)
			}
		})
	}
	srv, err := newServer(serverModel(t, "p1"), serverConfig{defaults: runner.GenerateOptions{MaxTokens: 2}, tokenLimit: 10,
		maxBody: 1 << 20, timeout: time.Minute, queue: 1, ctxSize: 256})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.close()
	door.srv.Store(srv)
	if resp, err := http.Get(hs.URL + "/ready"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/ready once loaded: %v %v", resp, err)
	}
}

// TestServeDrain: the drain of a server with a request queued behind a busy worker (the request is held: admitted,
// not answered). While it drains, /ready is 503, /health 200 and a new request gets 503 with Retry-After. Then
// either the held request finishes with its full answer and the server stops with 0, or --drain-timeout ends first:
// the held request gets 503 with Retry-After and the server still stops with 0.
func TestServeDrain(t *testing.T) {
	img := demoPNG("demo_00.png")
	want := libAnswer(t, "demo", question, img)
	tests := []struct {
		name         string
		drainTimeout time.Duration
		release      bool // free the worker once draining was checked
		wantStatus   int
	}{
		{"held request finishes", time.Minute, true, 200},
		{"drain timeout cancels it", 200 * time.Millisecond, false, 503},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pol, _ := newImagePolicy("", 4)
			srv, err := newServer(serverModel(t, "demo"), serverConfig{defaults: runner.GenerateOptions{MaxTokens: 24},
				tokenLimit: 100, maxBody: 8 << 20, timeout: time.Minute, queue: 4, policy: pol, ctxSize: 4096})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(srv.close)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			url := "http://" + ln.Addr().String()
			front := startHTTP(ln, time.Minute)
			t.Cleanup(front.close)
			front.open(srv)
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			var stderr lockedBuffer
			exit := make(chan int, 1)
			go func() { exit <- front.serveUntilDrained(ctx, srv, tc.drainTimeout, &stderr) }()

			release := blockWorker(t, srv)
			t.Cleanup(release) // before srv.close, which waits for the worker
			held := make(chan answer, 1)
			heldErr := make(chan error, 1)
			go func() {
				a, err := ask(url, chatBody(t, img, question, `,"max_tokens":24,"stream":true`))
				held <- a
				heldErr <- err
			}()
			for deadline := time.Now().Add(30 * time.Second); srv.engine.Stats().Waiting != 1; {
				if time.Now().After(deadline) {
					t.Fatal("the request did not reach the queue")
				}
				time.Sleep(5 * time.Millisecond)
			}
			stop() // what SIGTERM does to the command's context
			for deadline := time.Now().Add(10 * time.Second); srv.life.ready(); {
				if time.Now().After(deadline) {
					t.Fatal("the server did not start draining")
				}
				time.Sleep(5 * time.Millisecond)
			}
			if !tc.release {
				// The drain timeout must end the drain with the worker still busy.
				select {
				case code := <-exit:
					if code != 0 {
						t.Fatalf("exit code %d: %s", code, stderr.String())
					}
				case <-time.After(30 * time.Second):
					t.Fatalf("the drain did not end at its timeout: %s", stderr.String())
				}
				a := <-held
				if err := <-heldErr; err != nil || a.status != tc.wantStatus {
					t.Fatalf("held request: status %d, %v; want %d", a.status, err, tc.wantStatus)
				}
				if !strings.Contains(stderr.String(), "drain timeout: cancelling the 1 requests") {
					t.Fatalf("stderr: %s", stderr.String())
				}
				return
			}
			checks := []struct {
				method, path, body string
				status             int
				retry              bool
			}{
				{"GET", "/ready", "", 503, true},
				{"GET", "/health", "", 200, false},
				{"POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`, 503, true},
			}
			for _, c := range checks {
				req, _ := http.NewRequest(c.method, url+c.path, strings.NewReader(c.body))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatalf("%s %s while draining: %v", c.method, c.path, err)
				}
				var body map[string]any
				json.NewDecoder(resp.Body).Decode(&body)
				resp.Body.Close()
				if resp.StatusCode != c.status || (resp.Header.Get("Retry-After") != "") != c.retry {
					t.Fatalf("%s %s while draining: status %d, Retry-After %q, %v; want %d", c.method, c.path, resp.StatusCode,
						resp.Header.Get("Retry-After"), body, c.status)
				}
				if c.path == "/health" && body["ready"] != false {
					t.Fatalf("/health while draining: %v, want ready false", body)
				}
			}
			select {
			case code := <-exit:
				t.Fatalf("the server stopped (%d) with a request held: %s", code, stderr.String())
			default:
			}
			release()
			a := <-held
			if err := <-heldErr; err != nil || a.status != 200 || a.text != want.Text || a.finish != "stop" {
				t.Fatalf("held request: %+v, %v; want %q", a, err, want.Text)
			}
			select {
			case code := <-exit:
				if code != 0 {
					t.Fatalf("exit code %d: %s", code, stderr.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("the server did not stop after the last request: %s", stderr.String())
			}
			if _, err := http.Get(url + "/health"); err == nil {
				t.Fatal("the listener is still open after the drain")
			}
		})
	}
}
