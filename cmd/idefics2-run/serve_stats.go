package main

import (
	"sync/atomic"

	"github.com/idefics2-go/idefics2/runner"
)

// schedStats are the engine's counters that /metrics exports, in the shape of runner.SchedulerStats: sequences
// running and requests waiting, and the lookups of the prompt-prefix and image-embedding caches across requests.
type schedStats struct {
	Active, Waiting          int   // sequences in the running batch; requests admitted but not yet running
	PrefixHits, PrefixMisses int64 // prompt-prefix cache lookups across requests
	ImageHits, ImageMisses   int64 // image-embedding cache lookups
	CacheBytes               int64 // bytes held by the caches
}

// workerStats reads the single worker's state as schedStats: one sequence at most is active, the queue holds the
// waiting requests, and a request whose prompt reused a prefix of the session's KV cache counts as a prefix hit
// (the worker resets the session before each request, so every lookup is a miss). The worker keeps no
// image-embedding cache and no cache beyond the session's KV cache, so those counters and CacheBytes stay 0.
type workerStats struct {
	s                        *server
	prefixHits, prefixMisses atomic.Int64
}

// Stats returns the worker's counters now.
func (w *workerStats) Stats() schedStats {
	return schedStats{Active: int(w.s.running.Load()), Waiting: int(w.s.waiting.Load()),
		PrefixHits: w.prefixHits.Load(), PrefixMisses: w.prefixMisses.Load()}
}

// record counts the prefix lookup of one answered request.
func (w *workerStats) record(res *runner.Result) {
	if res == nil {
		return
	}
	if res.CachedTokens > 0 {
		w.prefixHits.Add(1)
	} else {
		w.prefixMisses.Add(1)
	}
}
