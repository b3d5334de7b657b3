package graph

// SetBatchProgress makes Eval call fn after each batch of prompt tokens it evaluates, with the tokens done so far
// and the total of that call (nil: no calls). fn runs on Eval's goroutine, between two decoder graphs.
func (s *Sequence) SetBatchProgress(fn func(done, total int)) { s.onBatch = fn }
