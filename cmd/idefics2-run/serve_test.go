package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idefics2-go/idefics2/constrain"
	"github.com/idefics2-go/idefics2/runner"
)

var (
	serverModelsMu sync.Mutex
	serverModels   = map[string]*runner.Model{}
)

func serverModel(t *testing.T, name string) *runner.Model {
	t.Helper()
	serverModelsMu.Lock()
	defer serverModelsMu.Unlock()
	if m, ok := serverModels[name]; ok {
		return m
	}
	model, mm := pair(t, name)
	m, err := runner.Load(context.Background(), runner.Options{ModelPath: model, MMProjPath: mm, Device: "cpu", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	serverModels[name] = m
	return m
}

// startServer serves the named model over real HTTP on 127.0.0.1 (an ephemeral port).
func startServer(t *testing.T, name string, edit func(*serverConfig)) (*server, string) {
	t.Helper()
	pol, _ := newImagePolicy("", 4)
	cfg := serverConfig{defaults: runner.GenerateOptions{MaxTokens: 24}, tokenLimit: 4000, maxBody: 8 << 20,
		timeout: time.Minute, queue: 8, policy: pol, ctxSize: 4096}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := newServer(serverModel(t, name), cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		hs.Close()
		srv.close()
	})
	return srv, hs.URL
}

func post(t *testing.T, url, body string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func chatBody(t *testing.T, img, text string, extra string) string {
	t.Helper()
	return fmt.Sprintf(`{"model":"x","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":%q}},{"type":"text","text":%q}]}]%s}`,
		dataURI(t, img), text, extra)
}

// sse reads a text/event-stream response: the concatenated content deltas, the finish reason and the usage, which
// may come only in a chunk with empty choices (as OpenAI sends it with stream_options.include_usage).
func sse(t *testing.T, r io.Reader) (text, finish string, usage *tokenUsage) {
	t.Helper()
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	done := false
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("SSE line %q", line)
		}
		if data == "[DONE]" {
			done = true
			break
		}
		var c chatResponse
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("SSE chunk %q: %v", data, err)
		}
		if c.Error != nil {
			t.Fatalf("SSE error %+v", c.Error)
		}
		if c.Object != "chat.completion.chunk" {
			t.Fatalf("chunk object %q", c.Object)
		}
		for _, ch := range c.Choices {
			if ch.Delta != nil && ch.Delta.Content != nil {
				text += *ch.Delta.Content
			}
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
		}
		if c.Usage != nil {
			if c.Choices == nil || len(c.Choices) > 0 {
				t.Fatalf("usage in a chunk with choices %s", data)
			}
			usage = c.Usage
		}
	}
	if !done {
		t.Fatal("the stream did not end with data: [DONE]")
	}
	return text, finish, usage
}

func TestServerAgrees(t *testing.T) {
	img := demoPNG("demo_00.png")
	want := libAnswer(t, "demo", question, img)
	_, url := startServer(t, "demo", nil)

	code, _, b := post(t, url+"/v1/chat/completions", chatBody(t, img, question, ""))
	var r chatResponse
	if code != 200 || json.Unmarshal(b, &r) != nil || len(r.Choices) != 1 {
		t.Fatalf("status %d: %s", code, b)
	}
	if got := *r.Choices[0].Message.Content; got != want.Text || *r.Choices[0].FinishReason != "stop" || r.Object != "chat.completion" {
		t.Fatalf("answer %q (%s), want %q", got, b, want.Text)
	}
	if r.Usage.PromptTokens != want.PromptTokens || r.Usage.CompletionTokens != len(want.Tokens) || r.Usage.TotalTokens != want.PromptTokens+len(want.Tokens) {
		t.Fatalf("usage %+v, want %d + %d", r.Usage, want.PromptTokens, len(want.Tokens))
	}

	resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(chatBody(t, img, question, `,"stream":true,"stream_options":{"include_usage":true}`)))
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	text, finish, u := sse(t, resp.Body)
	resp.Body.Close()
	if text != want.Text || finish != "stop" || u == nil || u.CompletionTokens != len(want.Tokens) {
		t.Fatalf("stream: %q %q %+v, want %q", text, finish, u, want.Text)
	}

	// Concurrent requests queue for the model and all get the same answer.
	var wg sync.WaitGroup
	errs := make(chan string, 6)
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			stream := i%2 == 1
			body := chatBody(t, img, question, fmt.Sprintf(`,"stream":%v,"temperature":0`, stream))
			resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
			if err != nil {
				errs <- err.Error()
				return
			}
			defer resp.Body.Close()
			var got string
			if stream {
				got, _, _ = sse(t, resp.Body)
			} else {
				var r chatResponse
				if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || len(r.Choices) == 0 {
					errs <- fmt.Sprintf("request %d: %v", i, err)
					return
				}
				got = *r.Choices[0].Message.Content
			}
			if got != want.Text {
				errs <- fmt.Sprintf("request %d: %q, want %q", i, got, want.Text)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}

	resp, err = http.Get(url + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	var models struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	json.NewDecoder(resp.Body).Decode(&models)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(models.Data) != 1 || models.Data[0].ID == "" {
		t.Fatalf("models: %d %+v", resp.StatusCode, models)
	}
	resp, err = http.Get(url + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("health: %v %v", err, resp)
	}
	resp.Body.Close()
}

func TestServerBadRequests(t *testing.T) {
	img := demoPNG("demo_00.png")
	_, url := startServer(t, "p1", func(c *serverConfig) { c.maxBody = 64 << 10 })
	chat := url + "/v1/chat/completions"
	user := func(content string) string { return `{"messages":[{"role":"user","content":` + content + `}]}` }
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		status int
		want   string
	}{
		{"not JSON", "POST", chat, `{"messages": [`, 400, "not a valid chat request"},
		{"no messages", "POST", chat, `{"messages": []}`, 400, "at least one message"},
		{"bad role", "POST", chat, `{"messages":[{"role":"tool","content":"x"}]}`, 400, `role "tool"`},
		{"no content", "POST", chat, `{"messages":[{"role":"user"}]}`, 400, "no content"},
		{"content a number", "POST", chat, user(`3`), 400, "string or a list"},
		{"part type", "POST", chat, user(`[{"type":"audio"}]`), 400, `part type "audio"`},
		{"text part without text", "POST", chat, user(`[{"type":"text"}]`), 400, "without text"},
		{"image part without url", "POST", chat, user(`[{"type":"image_url"}]`), 400, "without image_url"},
		{"remote image", "POST", chat, user(`[{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]`), 400, "--allow-remote-images"},
		{"local image refused", "POST", chat, user(fmt.Sprintf(`[{"type":"image_url","image_url":{"url":%q}}]`, img)), 400, "--allow-local-images"},
		{"bad base64", "POST", chat, user(`[{"type":"image_url","image_url":{"url":"data:image/png;base64,!!!"}}]`), 400, "base64"},
		{"not an image", "POST", chat, user(`[{"type":"image_url","image_url":{"url":"data:image/png;base64,aGVsbG8="}}]`), 400, "image"},
		{"too many images", "POST", chat, user(`[` + strings.Repeat(`{"type":"image_url","image_url":{"url":"data:,x"}},`, 5) + `{"type":"text","text":"x"}]`), 400, "more than 4 images"},
		{"marker mismatch", "POST", chat, user(`"<image> what?"`), 400, "1 <image> marker but 0 images were given"},
		{"max_tokens over limit", "POST", chat, `{"max_tokens":5000,"messages":[{"role":"user","content":"x"}]}`, 400, "limit of 4000"},
		{"negative max_tokens", "POST", chat, `{"max_tokens":-1,"messages":[{"role":"user","content":"x"}]}`, 400, "max_tokens -1"},
		{"n=2", "POST", chat, `{"n":2,"messages":[{"role":"user","content":"x"}]}`, 400, "n 2: at most 1"},
		{"bad temperature", "POST", chat, `{"temperature":-2,"messages":[{"role":"user","content":"x"}]}`, 400, "temperature"},
		{"bad top_p", "POST", chat, `{"top_p":7,"messages":[{"role":"user","content":"x"}]}`, 400, "top_p"},
		{"bad stop", "POST", chat, `{"stop":5,"messages":[{"role":"user","content":"x"}]}`, 400, "stop"},
		{"empty stop", "POST", chat, `{"stop":[""],"messages":[{"role":"user","content":"x"}]}`, 400, "stop[0]"},
		{"batch fields", "POST", chat, `{"prompt":"x"}`, 400, "batch-only"},
		{"lora without adapters", "POST", chat, `{"lora":[{"id":0,"scale":1}],"messages":[{"role":"user","content":"x"}]}`, 400, "no run-time adapters are loaded"},
		{"prompt over context", "POST", chat, user(fmt.Sprintf("%q", strings.Repeat("word ", 5000))), 400, "context size"},
		{"body too large", "POST", chat, user(fmt.Sprintf("%q", strings.Repeat("x", 70<<10))), 413, "larger than"},
		{"GET chat", "GET", chat, "", 405, "POST"},
		{"POST models", "POST", url + "/v1/models", "{}", 405, "GET"},
		{"unknown route", "GET", url + "/v2/else", "", 404, "/v2/else"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e struct {
				Error *apiError `json:"error"`
			}
			b, _ := io.ReadAll(resp.Body)
			if err := json.Unmarshal(b, &e); err != nil || e.Error == nil {
				t.Fatalf("status %d, body %q: not a JSON error", resp.StatusCode, b)
			}
			if resp.StatusCode != tc.status || !strings.Contains(e.Error.Message, tc.want) || e.Error.Type == "" {
				t.Fatalf("status %d, error %+v; want %d naming %q", resp.StatusCode, e.Error, tc.status, tc.want)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("content type %q", ct)
			}
		})
	}
}

func TestServerLocalImages(t *testing.T) {
	root := t.TempDir()
	allowed := filepath.Join(root, "allowed")
	os.MkdirAll(filepath.Join(allowed, "sub"), 0o755)
	png, _ := os.ReadFile(demoPNG("demo_00.png"))
	os.WriteFile(filepath.Join(allowed, "sub", "a.png"), png, 0o644)
	os.WriteFile(filepath.Join(root, "secret.png"), png, 0o644)
	if err := os.Symlink(filepath.Join(root, "secret.png"), filepath.Join(allowed, "escape.png")); err != nil {
		t.Skip("no symlinks:", err)
	}
	os.Symlink(filepath.Join(allowed, "sub", "a.png"), filepath.Join(allowed, "inside.png"))
	pol, err := newImagePolicy(allowed, 4)
	if err != nil {
		t.Fatal(err)
	}
	_, url := startServer(t, "demo", func(c *serverConfig) { c.policy = pol })
	tests := []struct {
		ref    string
		status int
		want   string
	}{
		{"sub/a.png", 200, ""},
		{filepath.Join(allowed, "sub", "a.png"), 200, ""},
		{"file://" + filepath.Join(allowed, "sub", "a.png"), 200, ""},
		{"inside.png", 200, ""},
		{"../secret.png", 400, "not allowed in local image paths"},
		{"sub/../../secret.png", 400, "not allowed in local image paths"},
		{filepath.Join(root, "secret.png"), 400, "outside the allowed folder"},
		{"escape.png", 400, "outside the allowed folder"},
		{"missing.png", 400, "does not exist"},
	}
	for _, tc := range tests {
		t.Run(tc.ref, func(t *testing.T) {
			body := fmt.Sprintf(`{"max_tokens":3,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":%q}},{"type":"text","text":"What?"}]}]}`, tc.ref)
			code, _, b := post(t, url+"/v1/chat/completions", body)
			if code != tc.status || !strings.Contains(string(b), tc.want) {
				t.Fatalf("status %d: %s; want %d naming %q", code, b, tc.status, tc.want)
			}
		})
	}
}

// blockWorker occupies the server's only parallel sequence with a long generation until the returned function is
// called.
func blockWorker(t *testing.T, srv *server) func() {
	ctx, cancel := context.WithCancel(context.Background())
	p, err := srv.m.RawPrompt("Tell me everything.", nil, runner.PromptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g, err := constrain.ParseGBNF(`root ::= [a-z]{10000}`)
	if err != nil {
		t.Fatal(err)
	}
	srv.admitted <- struct{}{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() { <-srv.admitted }()
		// The grammar allows a stop token only after 10000 letters, so the model cannot end the generation early
		// (the demo model would stop after a few tokens); the pause per token keeps the sequence busy for tens of
		// seconds without holding the scheduler's goroutine, which must go on admitting requests.
		_, _ = srv.sched.Generate(ctx, p, runner.GenerateOptions{MaxTokens: 3900, Constraint: g,
			OnToken: func(int32) error { time.Sleep(20 * time.Millisecond); return nil }})
	}()
	for srv.sched.Stats().Active == 0 {
		time.Sleep(time.Millisecond)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
}

func TestServerQueue(t *testing.T) {
	body := `{"max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`
	t.Run("full", func(t *testing.T) {
		srv, url := startServer(t, "p1", func(c *serverConfig) { c.queue = 0 })
		release := blockWorker(t, srv)
		defer release()
		code, h, b := post(t, url+"/v1/chat/completions", body)
		if code != 503 || h.Get("Retry-After") == "" || !strings.Contains(string(b), "queue is full") {
			t.Fatalf("status %d, Retry-After %q: %s", code, h.Get("Retry-After"), b)
		}
		release()
		// The worker is free again.
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, _, b = post(t, url+"/v1/chat/completions", body)
			if code == 200 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if code != 200 {
			t.Fatalf("after release: %d %s", code, b)
		}
	})
	t.Run("timeout in the queue", func(t *testing.T) {
		srv, url := startServer(t, "p1", func(c *serverConfig) { c.timeout = 300 * time.Millisecond })
		release := blockWorker(t, srv)
		defer release()
		code, _, b := post(t, url+"/v1/chat/completions", body)
		if code != 504 || !strings.Contains(string(b), "timed out") {
			t.Fatalf("status %d: %s", code, b)
		}
	})
}

// TestServerDisconnect: a client that goes away mid-stream cancels its generation.
func TestServerDisconnect(t *testing.T) {
	srv, url := startServer(t, "p1", nil)
	ctx, cancel := context.WithCancel(context.Background())
	body := `{"max_tokens":3900,"stream":true,"messages":[{"role":"user","content":"Tell me everything."}]}`
	req, _ := http.NewRequestWithContext(ctx, "POST", url+"/v1/chat/completions", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(resp.Body)
	for i := 0; i < 3; i++ { // the role chunk and two content chunks
		if _, err := rd.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		rd.ReadString('\n')
	}
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(60 * time.Second)
	for srv.cancelled.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("generation not cancelled (served %d)", srv.served.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServeCommand starts `serve` itself on an ephemeral port and stops it with its context.
func TestServeCommand(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "--port", "0"}, modelArgs(t, "p1")...), strings.NewReader(""), io.Discard, &stderr)
	}()
	re := regexp.MustCompile(`on (http://127\.0\.0\.1:\d+)`)
	var base string
	for deadline := time.Now().Add(60 * time.Second); base == ""; {
		if m := re.FindStringSubmatch(stderr.String()); m != nil {
			base = m[1]
			break
		}
		select {
		case code := <-done:
			t.Fatalf("serve exited with %d: %s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, _, b := post(t, base+"/v1/chat/completions", `{"max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`)
	if code != 200 || !strings.Contains(string(b), `"completion_tokens":3`) {
		t.Fatalf("status %d: %s", code, b)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("serve exit code %d: %s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
}

func TestServerAPIKey(t *testing.T) {
	_, url := startServer(t, "p1", func(c *serverConfig) { c.apiKey = "s3cret" })
	body := `{"max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`
	for _, tc := range []struct {
		auth   string
		status int
	}{{"", 401}, {"Bearer nope", 401}, {"Bearer s3cret", 200}} {
		req, _ := http.NewRequest("POST", url+"/v1/chat/completions", strings.NewReader(body))
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Fatalf("Authorization %q: status %d (%s), want %d", tc.auth, resp.StatusCode, b, tc.status)
		}
	}
	// /health needs no key.
	resp, err := http.Get(url + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("health: %v %v", err, resp)
	}
	resp.Body.Close()
}

// TestServerMethods: each route answers its own methods; others get 405 with an Allow header and a JSON error
// naming the method to use.
func TestServerMethods(t *testing.T) {
	_, url := startServer(t, "p1", nil)
	tests := []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/v1/chat/completions", 405, "POST"},
		{"PUT", "/v1/chat/completions", 405, "POST"},
		{"POST", "/v1/models", 405, "GET, HEAD"},
		{"DELETE", "/health", 405, "GET, HEAD"},
		{"GET", "/health", 200, ""},
		{"HEAD", "/health", 200, ""},
		{"HEAD", "/v1/models", 200, ""},
		{"GET", "/v1/models", 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, url+tc.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || resp.Header.Get("Allow") != tc.allow {
				t.Fatalf("status %d, Allow %q; want %d, %q", resp.StatusCode, resp.Header.Get("Allow"), tc.status, tc.allow)
			}
			if tc.status != 405 {
				return
			}
			var e struct {
				Error *apiError `json:"error"`
			}
			if err := json.Unmarshal(b, &e); err != nil || e.Error == nil || !strings.Contains(e.Error.Message, "use "+strings.Split(tc.allow, ",")[0]+" "+tc.path) {
				t.Fatalf("body %q: want a JSON error naming the method to use", b)
			}
		})
	}
}
