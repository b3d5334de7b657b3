package main

// schedStats are the engine's counters that /metrics exports, in the shape of runner.SchedulerStats: sequences
// running and requests waiting, and the lookups of the prompt-prefix and image-embedding caches across requests.
type schedStats struct {
	Active, Waiting          int   // sequences in the running batch; requests admitted but not yet running
	PrefixHits, PrefixMisses int64 // prompt-prefix cache lookups across requests
	ImageHits, ImageMisses   int64 // image-embedding cache lookups
	CacheBytes               int64 // bytes held by the caches
}

// workerStats reads the single worker's state as schedStats: one sequence at most is active and the queue holds
// the waiting requests. The worker resets its session before each request and keeps no cache across requests, so
// it looks nothing up: the cache counters and CacheBytes are 0.
type workerStats struct {
	s *server
}

// Stats returns the worker's counters now.
func (w workerStats) Stats() schedStats {
	return schedStats{Active: int(w.s.running.Load()), Waiting: int(w.s.waiting.Load())}
}
