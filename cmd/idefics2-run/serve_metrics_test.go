package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape reads url/metrics with Prometheus' own text parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse as Prometheus text: %v", err)
	}
	return fams
}

// sample is the value of the metric name whose labels include labels (pairs "k", "v"): a counter's or gauge's
// value, a histogram's sample count. ok is false when there is no such metric.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) (v float64, typ dto.MetricType, ok bool) {
	f := fams[name]
	if f == nil {
		return 0, 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), f.GetType(), true
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), f.GetType(), true
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount()), f.GetType(), true
		}
		return 0, f.GetType(), true
	}
	return 0, f.GetType(), false
}

// TestServerMetrics: after a known set of requests /metrics parses with Prometheus' parser and its counters and
// histogram counts are those of the requests; the gauges follow the queue and the worker; a drain shows in the
// ready gauge and the 503 count.
func TestServerMetrics(t *testing.T) {
	srv, url := startServer(t, "demo", nil)
	requests := []struct {
		img    string
		stream bool
	}{{"demo_00.png", false}, {"demo_01.png", true}, {"demo_02.png", false}}
	var prompt, generated int
	for i, r := range requests {
		extra := fmt.Sprintf(`,"max_tokens":24,"stream":%v`, r.stream)
		if r.stream {
			extra += `,"stream_options":{"include_usage":true}` // a stream carries usage only when asked
		}
		a, err := ask(url, chatBody(t, demoPNG(r.img), question, extra))
		if err != nil || a.status != 200 || a.usage.CompletionTokens == 0 {
			t.Fatalf("request %d: status %d, %+v, %v", i, a.status, a, err)
		}
		prompt += a.usage.PromptTokens
		generated += a.usage.CompletionTokens
	}
	if code, _, b := post(t, url+"/v1/chat/completions", `{"messages":[]}`); code != 400 {
		t.Fatalf("bad request: status %d: %s", code, b)
	}
	n := float64(len(requests))
	fams := scrape(t, url)
	counter, gauge, histogram := dto.MetricType_COUNTER, dto.MetricType_GAUGE, dto.MetricType_HISTOGRAM
	tests := []struct {
		name   string
		labels []string
		typ    dto.MetricType
		want   float64 // -1: any value
	}{
		{"idefics2_requests_total", []string{"status", "200"}, counter, n},
		{"idefics2_requests_total", []string{"status", "400"}, counter, 1},
		{"idefics2_request_duration_seconds", nil, histogram, n + 1},
		{"idefics2_prompt_tokens_total", nil, counter, float64(prompt)},
		{"idefics2_prompt_tokens_cached_total", nil, counter, -1},
		{"idefics2_generated_tokens_total", nil, counter, float64(generated)},
		{"idefics2_time_to_first_token_seconds", nil, histogram, n},
		{"idefics2_inter_token_seconds", nil, histogram, float64(generated) - n},
		{"idefics2_image_encode_seconds", nil, histogram, n}, // three different images: each is encoded
		{"idefics2_queue_depth", nil, gauge, 0},
		{"idefics2_active_sequences", nil, gauge, 0},
		{"idefics2_ready", nil, gauge, 1},
		{"idefics2_cache_hits_total", []string{"cache", "prefix"}, counter, -1},
		{"idefics2_cache_misses_total", []string{"cache", "prefix"}, counter, -1},
		{"idefics2_cache_hits_total", []string{"cache", "image"}, counter, -1},
		{"idefics2_cache_misses_total", []string{"cache", "image"}, counter, -1},
		{"idefics2_cache_bytes", nil, gauge, -1},
		{"process_resident_memory_bytes", nil, gauge, -1},
		{"go_goroutines", nil, gauge, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name+strings.Join(tc.labels, "="), func(t *testing.T) {
			v, typ, ok := sample(fams, tc.name, tc.labels...)
			if !ok || typ != tc.typ || (tc.want >= 0 && v != tc.want) {
				t.Fatalf("%s%v: %v (type %v, present %v), want %v (type %v)", tc.name, tc.labels, v, typ, ok, tc.want, tc.typ)
			}
		})
	}
	// The cache counters are the engine's own.
	st := srv.engine.Stats()
	for _, c := range []struct {
		name, cache string
		want        int64
	}{
		{"idefics2_cache_hits_total", "prefix", st.PrefixHits}, {"idefics2_cache_misses_total", "prefix", st.PrefixMisses},
		{"idefics2_cache_hits_total", "image", st.ImageHits}, {"idefics2_cache_misses_total", "image", st.ImageMisses},
	} {
		if v, _, _ := sample(fams, c.name, "cache", c.cache); v != float64(c.want) {
			t.Errorf("%s{cache=%q} %v, the engine says %d", c.name, c.cache, v, c.want)
		}
	}

	// A request waiting behind a busy worker shows in the gauges.
	release := blockWorker(t, srv)
	defer release()
	done := make(chan answer, 1)
	go func() {
		a, _ := ask(url, `{"max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`)
		done <- a
	}()
	for deadline := time.Now().Add(30 * time.Second); ; {
		f := scrape(t, url)
		q, _, _ := sample(f, "idefics2_queue_depth")
		a, _, _ := sample(f, "idefics2_active_sequences")
		if q == 1 && a == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue depth %v, active %v; want 1 and 1", q, a)
		}
		time.Sleep(10 * time.Millisecond)
	}
	release()
	if a := <-done; a.status != 200 {
		t.Fatalf("queued request: status %d", a.status)
	}

	// Draining: ready 0, and the refused request is counted as a 503.
	srv.life.drain()
	if code, h, b := post(t, url+"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`); code != 503 || h.Get("Retry-After") == "" {
		t.Fatalf("while draining: status %d, Retry-After %q: %s", code, h.Get("Retry-After"), b)
	}
	fams = scrape(t, url)
	if v, _, _ := sample(fams, "idefics2_ready"); v != 0 {
		t.Errorf("ready while draining: %v, want 0", v)
	}
	if v, _, _ := sample(fams, "idefics2_requests_total", "status", "503"); v != 1 {
		t.Errorf("503 count: %v, want 1", v)
	}
}

// TestServerMetricsAPIKey: with --api-key, /metrics wants the key (as the API does); /health and /ready do not.
func TestServerMetricsAPIKey(t *testing.T) {
	_, url := startServer(t, "p1", func(c *serverConfig) { c.apiKey = "s3cret" })
	tests := []struct {
		path, auth string
		status     int
	}{
		{"/metrics", "", 401},
		{"/metrics", "Bearer s3cret", 200},
		{"/ready", "", 200},
		{"/health", "", 200},
	}
	for _, tc := range tests {
		t.Run(tc.path+" "+tc.auth, func(t *testing.T) {
			req, _ := http.NewRequest("GET", url+tc.path, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
}
