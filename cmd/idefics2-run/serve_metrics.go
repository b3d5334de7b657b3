package main

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/idefics2-go/idefics2/runner"
)

// engineStats is what /metrics reads from the engine that answers the requests: its sequences, queue and caches.
type engineStats interface {
	Stats() runner.SchedulerStats
}

// metricsNamespace prefixes every metric the server exports.
const metricsNamespace = "idefics2"

// Histogram buckets, in seconds. Time to first token spans a prompt of a few tokens on a small model (milliseconds)
// to a 980×980 image on an 8B model on two CPU cores (minutes); a decoder step spans a millisecond to seconds; an
// image encode tens of milliseconds to minutes.
var (
	ttftBuckets     = prometheus.ExponentialBuckets(0.005, 2, 16) // 5 ms … 164 s
	tokenBuckets    = prometheus.ExponentialBuckets(0.001, 2, 14) // 1 ms … 8.2 s
	encodeBuckets   = prometheus.ExponentialBuckets(0.01, 2, 16)  // 10 ms … 328 s
	durationBuckets = prometheus.ExponentialBuckets(0.01, 2, 17)  // 10 ms … 655 s
)

// serverMetrics are the counters and histograms of `serve`, in their own registry (so that several servers in one
// process, as in the tests, do not share them), exported by /metrics in Prometheus' text format.
type serverMetrics struct {
	reg                                     *prometheus.Registry
	http                                    http.Handler
	requests                                *prometheus.CounterVec
	duration, ttft, interToken, imageEncode prometheus.Histogram
	promptTokens, cachedTokens, generated   prometheus.Counter
}

// newServerMetrics registers the server's metrics; engine gives the scheduler's gauges and cache counters and ready
// whether the server takes new requests, both read at each scrape.
func newServerMetrics(engine engineStats, ready func() bool) *serverMetrics {
	m := &serverMetrics{reg: prometheus.NewRegistry()}
	f := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: metricsNamespace, Name: name, Help: help}
	}
	hist := func(name, help string, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: metricsNamespace, Name: name, Help: help, Buckets: buckets})
	}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts(f("requests_total",
		"Chat completion requests answered, by HTTP status (499: the client went away before an answer).")), []string{"status"})
	m.duration = hist("request_duration_seconds", "Time from a chat completion request's arrival to the end of its answer.", durationBuckets)
	m.ttft = hist("time_to_first_token_seconds", "Time from a request's arrival to its first generated token (queueing, image encoding and prefill included).", ttftBuckets)
	m.interToken = hist("inter_token_seconds", "Time between two successive generated tokens of one request.", tokenBuckets)
	m.imageEncode = hist("image_encode_seconds", "Time spent encoding the images of one request (requests whose images were all encoded before are not counted).", encodeBuckets)
	m.promptTokens = prometheus.NewCounter(prometheus.CounterOpts(f("prompt_tokens_total", "Prompt tokens of the answered requests (after truncation), cached ones included.")))
	m.cachedTokens = prometheus.NewCounter(prometheus.CounterOpts(f("prompt_tokens_cached_total", "Prompt tokens taken from a cache instead of being evaluated.")))
	m.generated = prometheus.NewCounter(prometheus.CounterOpts(f("generated_tokens_total", "Tokens generated, stop tokens included.")))
	m.reg.MustRegister(m.requests, m.duration, m.ttft, m.interToken, m.imageEncode, m.promptTokens, m.cachedTokens, m.generated,
		newEngineCollector(engine),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts(f("ready", "1 while the server takes new requests (model loaded, not draining), else 0.")), func() float64 {
			if ready() {
				return 1
			}
			return 0
		}),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The format is the one the scraper asks for: Prometheus text by default.
	m.http = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return m
}

// observeResult counts the prompt tokens and image encode time of one finished generation (res nil: it failed).
func (m *serverMetrics) observeResult(res *runner.Result) {
	if res == nil {
		return
	}
	m.promptTokens.Add(float64(res.PromptTokens))
	m.cachedTokens.Add(float64(res.CachedTokens))
	if res.Timings.ImageEncodeMS > 0 {
		m.imageEncode.Observe(res.Timings.ImageEncodeMS / 1000)
	}
}

// engineCollector exports the engine's gauges and cache counters, read once per scrape.
type engineCollector struct {
	engine                               engineStats
	active, waiting, hits, misses, bytes *prometheus.Desc
}

func newEngineCollector(engine engineStats) *engineCollector {
	name := func(n string) string { return prometheus.BuildFQName(metricsNamespace, "", n) }
	return &engineCollector{engine: engine,
		active:  prometheus.NewDesc(name("active_sequences"), "Sequences being generated now.", nil, nil),
		waiting: prometheus.NewDesc(name("queue_depth"), "Requests admitted and waiting to run.", nil, nil),
		hits:    prometheus.NewDesc(name("cache_hits_total"), "Cache lookups that found an entry, by cache (prefix: prompt prefixes, image: image embeddings).", []string{"cache"}, nil),
		misses:  prometheus.NewDesc(name("cache_misses_total"), "Cache lookups that found nothing, by cache.", []string{"cache"}, nil),
		bytes:   prometheus.NewDesc(name("cache_bytes"), "Bytes held by the caches shared across requests.", nil, nil),
	}
}

// Describe sends the descriptors of the engine's metrics.
func (c *engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.active, c.waiting, c.hits, c.misses, c.bytes} {
		ch <- d
	}
}

// Collect sends the engine's metrics as they are now.
func (c *engineCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.engine.Stats()
	ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(st.Active))
	ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, float64(st.Waiting))
	ch <- prometheus.MustNewConstMetric(c.hits, prometheus.CounterValue, float64(st.PrefixHits), "prefix")
	ch <- prometheus.MustNewConstMetric(c.hits, prometheus.CounterValue, float64(st.ImageHits), "image")
	ch <- prometheus.MustNewConstMetric(c.misses, prometheus.CounterValue, float64(st.PrefixMisses), "prefix")
	ch <- prometheus.MustNewConstMetric(c.misses, prometheus.CounterValue, float64(st.ImageMisses), "image")
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(st.CacheBytes))
}

// requestTrace times one chat request's tokens: its arrival and its last token so far. The engine calls OnToken
// for one request in order, from one goroutine at a time, so the trace needs no lock.
type requestTrace struct {
	start, last time.Time
	tokens      int
}

type traceKey struct{}

// traceTokens makes opts.OnToken count the request's generated tokens and time its first token and the gaps
// between tokens, then call the OnToken it had. Requests that did not come through instrumentChat are left alone.
func (m *serverMetrics) traceTokens(ctx context.Context, opts *runner.GenerateOptions) {
	tr, ok := ctx.Value(traceKey{}).(*requestTrace)
	if !ok {
		return
	}
	next := opts.OnToken
	opts.OnToken = func(id int32) error {
		now := time.Now()
		if tr.tokens == 0 {
			m.ttft.Observe(now.Sub(tr.start).Seconds())
		} else {
			m.interToken.Observe(now.Sub(tr.last).Seconds())
		}
		tr.tokens++
		tr.last = now
		m.generated.Inc()
		if next != nil {
			return next(id)
		}
		return nil
	}
}

// instrumentChat wraps the chat route: it refuses new requests while the server drains, holds the drain open
// until the request ends, times it and counts it by status.
func (s *server) instrumentChat(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if !s.life.admit() {
			s.metrics.requests.WithLabelValues(strconv.Itoa(http.StatusServiceUnavailable)).Inc()
			writeDraining(w)
			return
		}
		defer s.life.done()
		rec := &statusRecorder{ResponseWriter: w}
		r = r.WithContext(context.WithValue(r.Context(), traceKey{}, &requestTrace{start: start}))
		next(rec, r)
		if rec.status == 0 {
			switch {
			case context.Cause(r.Context()) == errDrainTimeout:
				// Cut by the end of the drain before anything was written: say so, so the client retries elsewhere.
				writeDraining(rec)
			case r.Context().Err() != nil:
				rec.status = 499 // the client went away; nothing can be written
			}
		}
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		s.metrics.requests.WithLabelValues(strconv.Itoa(rec.status)).Inc()
		s.metrics.duration.Observe(time.Since(start).Seconds())
	}
}

// handleMetrics serves /metrics (behind the API key when one is set).
func (s *server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	s.metrics.http.ServeHTTP(w, r)
}
