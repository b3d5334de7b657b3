package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func pngDataURI(b []byte) string {
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(b)
}

// TestServerImageLimits: an image over the byte limit is refused with 413, one whose header declares more pixels
// than the limit with 400 before it is decoded, and one within both limits is answered.
func TestServerImageLimits(t *testing.T) {
	small, _ := os.ReadFile(demoPNG("demo_00.png"))  // 918 bytes, 96×96
	larger, _ := os.ReadFile(demoPNG("demo_02.png")) // 26,647 bytes, 160×120
	pol, _ := newImagePolicy("", 4)
	pol.maxBytes, pol.maxPixels = 20000, 100*100
	_, url := startServer(t, "p1", func(c *serverConfig) { c.policy = pol })
	body := func(uri string) string {
		return fmt.Sprintf(`{"max_tokens":2,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":%q}},{"type":"text","text":"What?"}]}]}`, uri)
	}
	mid := pngWithSize(small, 120, 120) // within the byte limit, over the pixel limit (header only)
	tests := []struct {
		name   string
		data   []byte
		status int
		want   string
	}{
		{"within the limits", small, 200, `"completion_tokens":2`},
		{"over the byte limit", larger, 413, "26647 bytes, more than this server's limit of 20000"},
		{"over the pixel limit", mid, 400, "120x120 = 14400 pixels, limit 10000"},
		{"huge header", pngWithSize(small, 100000, 100000), 400, "limit 10000"},
		{"zero-size image", nil, 400, "empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, b := post(t, url+"/v1/chat/completions", body(pngDataURI(tc.data)))
			if code != tc.status || !strings.Contains(string(b), tc.want) {
				t.Fatalf("status %d: %s; want %d naming %q", code, b, tc.status, tc.want)
			}
		})
	}
}

// TestServerLocalImageEscapes: symbolic links to folders outside, link loops, folders and devices are refused.
func TestServerLocalImageEscapes(t *testing.T) {
	root := t.TempDir()
	allowed := filepath.Join(root, "allowed")
	outside := filepath.Join(root, "outside")
	os.MkdirAll(filepath.Join(allowed, "dir"), 0o755)
	os.MkdirAll(outside, 0o755)
	png, _ := os.ReadFile(demoPNG("demo_00.png"))
	os.WriteFile(filepath.Join(outside, "secret.png"), png, 0o644)
	if err := os.Symlink(outside, filepath.Join(allowed, "linkdir")); err != nil {
		t.Skip("no symlinks:", err)
	}
	os.Symlink(filepath.Join(allowed, "loop2"), filepath.Join(allowed, "loop1"))
	os.Symlink(filepath.Join(allowed, "loop1"), filepath.Join(allowed, "loop2"))
	os.Symlink("/dev/zero", filepath.Join(allowed, "zero.png"))
	pol, err := newImagePolicy(allowed, 4)
	if err != nil {
		t.Fatal(err)
	}
	_, url := startServer(t, "p1", func(c *serverConfig) { c.policy = pol })
	for _, tc := range []struct {
		ref    string
		status int
		want   string
	}{
		{"linkdir/secret.png", 400, "outside the allowed folder"},
		{"loop1", 400, "loop1"},
		{"dir", 400, "not a regular file"},
		{"zero.png", 400, "outside the allowed folder"},
		{"/dev/zero", 400, "outside the allowed folder"},
		{"/etc/passwd", 400, "outside the allowed folder"},
		{"file:///etc/passwd", 400, "outside the allowed folder"},
		{"file://" + allowed + "/../outside/secret.png", 400, "not allowed"},
		{"dir/../../outside/secret.png", 400, "not allowed"},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			body := fmt.Sprintf(`{"max_tokens":2,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":%q}},{"type":"text","text":"What?"}]}]}`, tc.ref)
			code, _, b := post(t, url+"/v1/chat/completions", body)
			if code != tc.status || !strings.Contains(string(b), tc.want) {
				t.Fatalf("status %d: %s; want %d naming %q", code, b, tc.status, tc.want)
			}
		})
	}
}

// TestServerTimeoutAndCancel: a generation that outlives the per-request timeout returns what it generated with
// finish_reason "timeout" (its worker is free again at once), and a client that goes away from a non-streamed
// request cancels its generation.
func TestServerTimeoutAndCancel(t *testing.T) {
	long := `{"max_tokens":3900,"messages":[{"role":"user","content":"Tell me everything."}]}`
	t.Run("timeout", func(t *testing.T) {
		srv, url := startServer(t, "p1", func(c *serverConfig) { c.timeout = 500 * time.Millisecond })
		start := time.Now()
		code, _, b := post(t, url+"/v1/chat/completions", long)
		var r chatResponse
		if code != 200 || json.Unmarshal(b, &r) != nil || len(r.Choices) != 1 || r.Usage == nil {
			t.Fatalf("status %d: %s", code, b)
		}
		if f := r.Choices[0].FinishReason; f == nil || *f != finishTimeout || r.Usage.CompletionTokens == 0 ||
			r.Usage.CompletionTokens >= 3900 || *r.Choices[0].Message.Content == "" {
			t.Fatalf("want the partial answer with finish_reason %q: %s", finishTimeout, b)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("answered after %v", d)
		}
		code, _, b = post(t, url+"/v1/chat/completions", `{"max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`)
		if code != 200 || srv.cancelled.Load() != 1 {
			t.Fatalf("next request: %d %s (cancelled %d)", code, b, srv.cancelled.Load())
		}
	})
	t.Run("client gone", func(t *testing.T) {
		srv, url := startServer(t, "p1", nil)
		ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "POST", url+"/v1/chat/completions", strings.NewReader(long))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("answered with %d before the client went away", resp.StatusCode)
		}
		deadline := time.Now().Add(30 * time.Second)
		for srv.cancelled.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("generation not cancelled (served %d)", srv.served.Load())
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// loadAnswer reads one response of the load test: the text of a JSON answer or of an SSE stream, checking that it
// is complete (finish_reason, usage, [DONE]).
func loadAnswer(resp *http.Response, stream bool) (string, error) {
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	if !stream {
		var r chatResponse
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return "", err
		}
		if len(r.Choices) != 1 || r.Choices[0].Message == nil || r.Choices[0].Message.Content == nil || r.Choices[0].FinishReason == nil || r.Usage == nil {
			return "", fmt.Errorf("incomplete answer %+v", r)
		}
		return *r.Choices[0].Message.Content, nil
	}
	var text strings.Builder
	sc := bufio.NewScanner(resp.Body)
	finished := false
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			if !finished {
				return "", errors.New("[DONE] without a finish_reason")
			}
			return text.String(), nil
		}
		var c chatResponse
		if err := json.Unmarshal([]byte(data), &c); err != nil || c.Error != nil {
			return "", fmt.Errorf("chunk %q: %v", data, err)
		}
		for _, ch := range c.Choices {
			if ch.Delta != nil && ch.Delta.Content != nil {
				text.WriteString(*ch.Delta.Content)
			}
			finished = finished || ch.FinishReason != nil
		}
	}
	return "", fmt.Errorf("the stream ended without [DONE] (%v)", sc.Err())
}

// TestServerLoad is a bounded load test on loopback: 8 concurrent clients send 20 requests each (streamed and not,
// three prompts, one with an image) to the tiny p1 model; every response must be complete and equal the library's
// greedy answer. The request rate and the latency percentiles are logged (see docs/reliability.md).
func TestServerLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("160 requests")
	}
	const clients, perClient, maxTokens = 8, 20, 16
	img := demoPNG("demo_00.png")
	prompts := []struct{ text, img string }{{"Tell me a story.", ""}, {"What is the capital of France?", ""}, {question, img}}
	want := make([]string, len(prompts))
	for i, p := range prompts {
		var imgs []string
		if p.img != "" {
			imgs = append(imgs, p.img)
		}
		want[i] = libGreedy(t, "p1", p.text, maxTokens, 0, imgs...).Text
	}
	srv, url := startServer(t, "p1", func(c *serverConfig) { c.queue = clients })
	var mu sync.Mutex
	var lat []time.Duration
	var failures []string
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for r := 0; r < perClient; r++ {
				k := (c + r) % len(prompts)
				stream := (c+r)%2 == 1
				var body string
				if prompts[k].img != "" {
					body = chatBody(t, prompts[k].img, prompts[k].text, fmt.Sprintf(`,"max_tokens":%d,"stream":%v`, maxTokens, stream))
				} else {
					body = fmt.Sprintf(`{"max_tokens":%d,"stream":%v,"messages":[{"role":"user","content":%q}]}`, maxTokens, stream, prompts[k].text)
				}
				t0 := time.Now()
				resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
				var got string
				if err == nil {
					got, err = loadAnswer(resp, stream)
					resp.Body.Close()
				}
				d := time.Since(t0)
				mu.Lock()
				lat = append(lat, d)
				if err != nil {
					failures = append(failures, fmt.Sprintf("client %d request %d: %v", c, r, err))
				} else if got != want[k] {
					failures = append(failures, fmt.Sprintf("client %d request %d: %q, want %q", c, r, got, want[k]))
				}
				mu.Unlock()
			}
		}(c)
	}
	wg.Wait()
	total := time.Since(start)
	for _, f := range failures {
		t.Error(f)
	}
	if n := srv.served.Load(); n != clients*perClient {
		t.Errorf("served %d generations, want %d", n, clients*perClient)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	t.Logf("%d requests (%d clients × %d, %d tokens each) in %v: %.1f requests/s, latency p50 %v, p90 %v, p99 %v, max %v",
		len(lat), clients, perClient, maxTokens, total.Round(time.Millisecond), float64(len(lat))/total.Seconds(),
		pct(0.50).Round(time.Millisecond), pct(0.90).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
}

// TestServerAdmission: requests beyond queue + 1 + NumCPU inside the server (here held while sending their bodies)
// get 503 with Retry-After at once, before their bodies are read; the slots free up when those requests end.
func TestServerAdmission(t *testing.T) {
	srv, url := startServer(t, "p1", func(c *serverConfig) { c.queue = 0 })
	var writers []*io.PipeWriter
	var wg sync.WaitGroup
	for i := 0; i < cap(srv.slots); i++ {
		pr, pw := io.Pipe()
		writers = append(writers, pw)
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(url+"/v1/chat/completions", "application/json", pr)
			if err == nil {
				resp.Body.Close()
			}
		}()
		pw.Write([]byte(`{"messages":`))
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(srv.slots) < cap(srv.slots) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d slots taken", len(srv.slots), cap(srv.slots))
		}
		time.Sleep(10 * time.Millisecond)
	}
	code, h, b := post(t, url+"/v1/chat/completions", `{"max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`)
	if code != 503 || h.Get("Retry-After") == "" || !strings.Contains(string(b), "busy") {
		t.Fatalf("status %d, Retry-After %q: %s", code, h.Get("Retry-After"), b)
	}
	for _, pw := range writers {
		pw.Write([]byte(`[{"role":"user","content":"hi"}],"max_tokens":1}`))
		pw.Close()
	}
	wg.Wait()
	if code, _, b := post(t, url+"/v1/chat/completions", `{"max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`); code != 200 {
		t.Fatalf("after the held requests: %d %s", code, b)
	}
}
