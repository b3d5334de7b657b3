package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/graph"
	"github.com/idefics2-go/idefics2/processor"
)

// SchedulerOptions size a Scheduler.
type SchedulerOptions struct {
	// Parallel is the most sequences decoded together (each with its own KV cache); 0 means 1.
	Parallel int
	// CtxSize is each sequence's context in positions; 0 means DefaultContextSize capped at the model's length.
	CtxSize int
	// CacheMem bounds, in bytes, what the cross-request caches hold: the KV caches of finished sequences kept for
	// their prompt prefix, and the image embeddings; 0 means DefaultCacheMem. The least recently used entry goes
	// first.
	CacheMem int64
}

// DefaultCacheMem is SchedulerOptions.CacheMem when none is given.
const DefaultCacheMem = 1 << 30

// SchedulerStats are a Scheduler's counters.
type SchedulerStats struct {
	Active, Waiting          int   // sequences in the running batch; requests admitted but not yet running
	PrefixHits, PrefixMisses int64 // prompt-prefix cache lookups across requests
	ImageHits, ImageMisses   int64 // image-embedding cache lookups
	CacheBytes               int64 // bytes held by the two caches
	OverlapStretches         int64 // stretches of image work computed beside decoder steps (see encodeOverlap)
}

// Scheduler answers many generation requests at once by continuous batching: one goroutine owns the model and
// runs decoder steps (graph.Batch) over the active sequences. Each step carries the next token of every generating
// sequence plus a chunk of prompt (at most the model's batch size) of one sequence still evaluating its prompt, so
// that a long prompt does not stop the others; sequences join and leave at step boundaries. Every sequence has its
// own KV cache of CtxSize positions (graph.Sequence), its own sampler, stop rules, limits, cancellation and
// callbacks. Image features are encoded by the same goroutine between steps, or on a CPU beside them, on a second
// runner with half the threads (encodeOverlap).
//
// Caches across requests: a finished sequence's KV cache is kept with the identity of its positions, and a new
// request starts from the kept cache that shares the longest prefix with its prompt (prompt-prefix cache); image
// features are kept by content hash (image-embedding cache). Both are bounded together by CacheMem, least recently
// used first.
type Scheduler struct {
	m         *Model
	parallel  int
	ctxSize   int
	cacheMem  int64
	chunk     int
	admit     chan *schedRequest
	closing   chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	// Counters read by Stats.
	active, waiting          atomic.Int64
	prefixHits, prefixMisses atomic.Int64
	imageHits, imageMisses   atomic.Int64
	overlapStretches         atomic.Int64
	cacheBytes               atomic.Int64

	// Owned by the loop goroutine.
	batch   *graph.Batch
	queue   []*schedRequest
	running []*schedSeq
	idle    []*idleSeq
	images  []*imageEntry
	nSeqs   int // sequences allocated (running and idle)
	// reserved counts the sequences of the started requests (n each, before their answers fork), which Parallel
	// bounds.
	reserved int
	tick     int64
	kvBytes  int64
	// Image encoding between steps: the sequences waiting for image rows, first come first served, the job of the
	// head's current sub-image, its measured seconds per row by phase, and the last step's duration.
	encodeQueue []*schedSeq
	job         *graph.ImageJob
	jobSub      int
	jobRate     [graph.NumImagePhases]float64
	lastStep    time.Duration
	lastPrefill bool // the last step evaluated a chunk of prompt
	// Overlapped encoding (encodeOverlap): the image runner, the job's seconds per row on it by phase, when the
	// current job began and the decoder steps without prompt run beside it, and the last such steps' times with
	// every thread.
	side      *ggml.Runner
	noOverlap bool
	sideRate  [graph.NumImagePhases]float64
	jobStart  time.Time
	jobSteps  int
	stepFull  stepTimes
}

// stepTimes keeps the last durations of decoder steps without prompt; their median is robust to the odd slow step
// (another goroutine preparing an image, the garbage collector).
type stepTimes struct {
	d [9]time.Duration
	n int
}

func (t *stepTimes) add(d time.Duration) {
	t.d[t.n%len(t.d)] = d
	t.n++
}

// median is the median of the kept durations, 0 before the first.
func (t *stepTimes) median() time.Duration {
	k := min(t.n, len(t.d))
	if k == 0 {
		return 0
	}
	v := slices.Clone(t.d[:k])
	slices.Sort(v)
	return v[k/2]
}

// imageShare is the time of an image piece run between two decoder steps, in units of the last step's time: the
// running sequences then keep 1/(1+imageShare) of their token rate during an encode, and the encode takes
// (1+imageShare)/imageShare of its time alone. 2 gives a third and 1.5×.
const imageShare = 2.0

// firstPieceRows is the size of the first piece of each phase of an image job while sequences are decoding, which
// measures the phase's time per row.
const firstPieceRows = 16

// Overlapped encoding. On a CPU with at least 2 threads and no adapters loaded, an image encoded while sequences
// decode runs its pieces on a second runner with half the threads, in another goroutine, while the decoder steps go
// on with the other half: generation is bound by reading the weights and the vision tower by arithmetic, so each
// keeps much of its speed on half the cores. Between overlapped stretches the image also gets pieces alone with
// every thread, as many as keep the running sequences at overlapStreamShare of their token rate: the steps run
// since the job began, each worth a step with every thread (the median of the last ones before), against the job's
// time so far.
const (
	overlapStreamShare = 0.345
	overlapPiece       = 4 * time.Second        // the aimed duration of an overlapped stretch
	overlapSlice       = 500 * time.Millisecond // the aimed duration of one piece within it
)

// schedRequest is one Generate call inside the scheduler.
type schedRequest struct {
	ctx       context.Context
	p         *Prompt
	o         GenerateOptions
	n         int
	tokens    []int32
	keys      []uint64
	imgOffset int
	scales    []float32
	res       *Result
	err       error
	seqs      []*schedSeq
	left      int // sequences not finished
	done      chan struct{}
	t0        time.Time
	begun     bool // begin ran: r.n sequences are reserved
}

// schedSeq is one sequence of a request: its cache, what it must evaluate next and its sampling state.
type schedSeq struct {
	r       *schedRequest
	index   int
	gs      *graph.Sequence
	keys    []uint64 // identity of each cached position
	pending []int32  // tokens to evaluate next
	pkeys   []uint64 // their identities
	rows    []float32
	sampler *Sampler
	cons    *constraint
	history []int32
	dec     *processor.StreamDecoder
	stop    *stopper
	choice  Choice
	started bool // the prompt is evaluated (generation began)
	done    bool
	err     error
	last    int64 // step of the last evaluation (fairness between adapter-scale groups)
	tDecode time.Time
	// Image rows: the sub-images whose connector rows the prompt still needs (imgSubs, in order) and their rows
	// (imgRows, nil until encoded); imgFrom is the first needed row of the first one.
	imgSubs  []int
	imgRows  [][]float32
	imgFrom  int
	encoding bool
}

// idleSeq is a finished sequence's cache kept for its prefix.
type idleSeq struct {
	gs     *graph.Sequence
	keys   []uint64
	scales []float32
	used   int64
}

// imageEntry is one sub-image's connector rows kept in the image-embedding cache.
type imageEntry struct {
	key  uint64
	rows []float32
	used int64
}

// NewScheduler checks that Parallel sequences of CtxSize positions fit (KV caches and step scratch, refused up
// front with the figures) and starts the scheduler's goroutine. Close stops it.
func (m *Model) NewScheduler(o SchedulerOptions) (*Scheduler, error) {
	if o.Parallel < 0 || o.CtxSize < 0 || o.CacheMem < 0 {
		return nil, inputErrorf("runner: scheduler: parallel %d, context size %d, cache memory %d: want 0 (default) or more", o.Parallel, o.CtxSize, o.CacheMem)
	}
	if m.g == nil {
		return nil, errors.New("runner: the model is closed")
	}
	if o.Parallel == 0 {
		o.Parallel = 1
	}
	if maxP := m.g.MaxStepParts(); o.Parallel > maxP {
		return nil, inputErrorf("runner: scheduler: parallel %d: at most %d sequences per step for this model", o.Parallel, maxP)
	}
	if o.CtxSize == 0 {
		o.CtxSize = min(DefaultContextSize, m.g.Text.ContextLength)
	}
	if o.CtxSize > m.g.Text.ContextLength {
		return nil, inputErrorf("runner: context size %d is larger than the model's context length %d", o.CtxSize, m.g.Text.ContextLength)
	}
	if o.CacheMem == 0 {
		o.CacheMem = DefaultCacheMem
	}
	if err := m.g.CheckBatchMemory(o.Parallel, o.CtxSize); err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	s := &Scheduler{m: m, parallel: o.Parallel, ctxSize: o.CtxSize, cacheMem: o.CacheMem, chunk: m.g.Options().BatchSize,
		admit: make(chan *schedRequest), closing: make(chan struct{}), done: make(chan struct{}),
		batch: m.g.NewBatch(), kvBytes: m.g.KVBytes(o.CtxSize)}
	go s.loop()
	return s, nil
}

// DefaultParallel is a parallel count for a Scheduler that keeps the KV caches of ctxSize positions within a
// quarter of the memory available now, between 1 and 8.
func (m *Model) DefaultParallel(ctxSize int) int {
	if ctxSize <= 0 {
		ctxSize = min(DefaultContextSize, m.g.Text.ContextLength)
	}
	avail := m.g.AvailableMemory()
	kv := uint64(m.g.KVBytes(min(ctxSize, m.g.Text.ContextLength)))
	if kv == 0 || avail == 0 {
		return 1
	}
	return max(1, min(8, m.g.MaxStepParts(), int(avail/4/kv)))
}

// Parallel is the most sequences decoded together.
func (s *Scheduler) Parallel() int { return s.parallel }

// CtxSize is each sequence's context size in positions.
func (s *Scheduler) CtxSize() int { return s.ctxSize }

// Stats returns the scheduler's counters.
func (s *Scheduler) Stats() SchedulerStats {
	return SchedulerStats{Active: int(s.active.Load()), Waiting: int(s.waiting.Load()),
		PrefixHits: s.prefixHits.Load(), PrefixMisses: s.prefixMisses.Load(),
		ImageHits: s.imageHits.Load(), ImageMisses: s.imageMisses.Load(), CacheBytes: s.cacheBytes.Load(),
		OverlapStretches: s.overlapStretches.Load()}
}

// Close waits for the running and admitted requests to end (their contexts decide when), then frees the sequences
// and the caches. Generate calls after Close fail. Idempotent.
func (s *Scheduler) Close() {
	s.closeOnce.Do(func() { close(s.closing) })
	<-s.done
}

// ErrSchedulerClosed is returned by Generate on a closed Scheduler.
var ErrSchedulerClosed = errors.New("runner: the scheduler is closed")

// Generate is safe for concurrent use: it admits the request, blocks until it is finished, and returns as
// Session.Generate does (the partial result and ctx's error on cancellation). o.OnText, o.OnChoiceText and
// o.OnToken are called from the scheduler's goroutine, in order, for this request only. Each request starts from
// the longest prompt prefix kept from earlier requests with the same adapter scales.
func (s *Scheduler) Generate(ctx context.Context, p *Prompt, o GenerateOptions) (*Result, error) {
	m := s.m
	if o.N == 0 {
		o.N = 1
	}
	if err := m.checkOptions(o, s.parallel); err != nil {
		return nil, err
	}
	if o.DumpDir != "" || o.DumpTensors != "" {
		return nil, inputErrorf("runner: dumps are written by a single session, not by the scheduler")
	}
	if _, err := NewSampler(o.Sampler, m.g.Text.VocabSize, m.banned); err != nil {
		return nil, asInput(err)
	}
	scales := o.AdapterScales
	if scales == nil {
		scales = m.defaultScales
	} else if err := checkScales(scales, len(m.defaultScales)); err != nil {
		return nil, err
	}
	if p == nil || len(p.Tokens) == 0 {
		return nil, inputErrorf("runner: the prompt is empty")
	}
	tokens, imgOffset, err := m.fitPrompt(p, o, s.ctxSize)
	if err != nil {
		return nil, err
	}
	r := &schedRequest{ctx: ctx, p: p, o: o, n: o.N, tokens: tokens, imgOffset: imgOffset, scales: scales,
		keys: m.positionKeys(p, tokens, imgOffset), done: make(chan struct{}),
		res: &Result{PromptTokens: len(tokens), StopReason: StopLength}}
	if o.AdapterScales != nil {
		r.keys = slices.Clone(r.keys)
	}
	for i := range r.keys {
		for _, v := range scales {
			r.keys[i] = mixKey(r.keys[i], uint64(math.Float32bits(v)))
		}
	}
	select {
	case <-s.closing:
		return nil, ErrSchedulerClosed
	default:
	}
	select {
	case s.admit <- r:
	case <-s.closing:
		return nil, ErrSchedulerClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	<-r.done
	return r.res, r.err
}

// checkScales checks a request's adapter scales.
func checkScales(scales []float32, n int) error {
	if len(scales) != n {
		return inputErrorf("runner: %d adapter scales, but %d adapters are loaded", len(scales), n)
	}
	for i, v := range scales {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return inputErrorf("runner: adapter %d: scale %v is not a finite number", i, v)
		}
	}
	return nil
}

// loop is the scheduler's goroutine: it admits requests, starts them when sequences are free, runs steps and
// finishes requests, until Close and the last request ends.
func (s *Scheduler) loop() {
	defer close(s.done)
	defer func() {
		s.m.mu.Lock()
		defer s.m.mu.Unlock()
		s.free()
	}()
	closing := s.closing
	for {
		if len(s.running) == 0 && len(s.queue) == 0 {
			if closing == nil {
				return
			}
			select {
			case r := <-s.admit:
				s.enqueue(r)
			case <-closing:
				closing = nil
			}
		}
		// Take whatever else arrived without waiting.
		for more := true; more; {
			select {
			case r := <-s.admit:
				s.enqueue(r)
			case <-closing:
				closing = nil
			default:
				more = false
			}
		}
		s.m.mu.Lock()
		if s.m.g == nil {
			s.abort(errors.New("runner: the model is closed"))
		} else {
			s.start()
			if s.job != nil && s.overlapOK() && s.canStep() {
				// The steps run inside the overlapped stretch.
				s.encodeOverlap()
			} else {
				busy := s.step()
				if busy && !s.lastPrefill {
					s.stepFull.add(s.lastStep)
				}
				if busy && s.overlapOK() {
					s.encodeOverlap()
				} else {
					s.encodeSome(busy)
				}
			}
		}
		s.m.mu.Unlock()
	}
}

// abort ends every queued and running request with err.
func (s *Scheduler) abort(err error) {
	for _, r := range s.queue {
		r.err, r.res = err, nil
		close(r.done)
	}
	s.queue = nil
	s.waiting.Store(0)
	for _, q := range s.running {
		s.finishSeq(q, StopLength, err)
	}
	s.reap()
}

func (s *Scheduler) enqueue(r *schedRequest) {
	s.queue = append(s.queue, r)
	s.waiting.Store(int64(len(s.queue)))
}

// start moves queued requests into the running batch while sequences are free (first come, first served), after
// encoding their images.
func (s *Scheduler) start() {
	for len(s.queue) > 0 {
		r := s.queue[0]
		if r.ctx.Err() != nil {
			s.queue = s.queue[1:]
			r.err = r.ctx.Err()
			r.res = nil
			close(r.done)
			continue
		}
		if s.reserved+r.n > s.parallel {
			break
		}
		s.queue = s.queue[1:]
		if err := s.begin(r); err != nil {
			s.fail(r, err)
		}
	}
	s.waiting.Store(int64(len(s.queue)))
}

// begin gives r its first sequence, from the prefix cache when one shares a prefix, and its image rows.
func (s *Scheduler) begin(r *schedRequest) error {
	m := s.m
	r.t0 = time.Now()
	r.begun = true
	s.reserved += r.n
	gs, keys, err := s.acquire(r.keys, r.scales)
	if err != nil {
		return err
	}
	common := 0
	for common < len(keys) && common < len(r.keys) && keys[common] == r.keys[common] {
		common++
	}
	if common == len(r.keys) {
		common-- // the last position is evaluated again for its logits
	}
	gs.Truncate(common)
	if common > 0 {
		s.prefixHits.Add(1)
	} else {
		s.prefixMisses.Add(1)
	}
	r.res.CachedTokens = common
	q := &schedSeq{r: r, gs: gs, keys: keys[:common], pending: r.tokens[common:], pkeys: r.keys[common:]}
	r.seqs = []*schedSeq{q}
	r.left = 1
	s.running = append(s.running, q)
	s.active.Store(int64(len(s.running)))
	if r.p.Images == nil {
		return nil
	}
	// Connector rows for the image tokens still to evaluate: from the image-embedding cache, or encoded between
	// steps (encodeSome) before the sequence joins the batch.
	first := r.imgOffset
	for _, t := range r.tokens[:common] {
		if t == m.imageTokenID {
			first++
		}
	}
	total := r.p.Images.N * m.seqLen
	for sub := first / m.seqLen; sub < r.p.Images.N && first < total; sub++ {
		q.imgSubs = append(q.imgSubs, sub)
		rows, ok := s.cachedImage(s.imageKey(r, sub))
		if ok {
			r.res.Timings.ImageCacheHits++
		} else {
			r.res.Timings.ImageCacheMisses++
		}
		q.imgRows = append(q.imgRows, rows)
	}
	q.imgFrom = first % m.seqLen
	q.encoding = true
	s.encodeQueue = append(s.encodeQueue, q)
	s.imagesReady(q)
	return nil
}

// imageKey is the image-embedding cache key of sub-image i of r's prompt (with the vision adapters' scales).
func (s *Scheduler) imageKey(r *schedRequest, i int) uint64 {
	key := r.p.subKeys[i]
	if s.m.g.HasVisionAdapters() {
		for _, v := range r.scales {
			key = mixKey(key, uint64(math.Float32bits(v)))
		}
	}
	return key
}

// cachedImage looks key up in the image-embedding cache.
func (s *Scheduler) cachedImage(key uint64) ([]float32, bool) {
	s.tick++
	for _, e := range s.images {
		if e.key == key {
			e.used = s.tick
			s.imageHits.Add(1)
			return e.rows, true
		}
	}
	s.imageMisses.Add(1)
	return nil, false
}

// keepImage puts rows in the image-embedding cache when they fit.
func (s *Scheduler) keepImage(key uint64, rows []float32) {
	size := int64(4 * len(rows))
	if size > s.cacheMem {
		return
	}
	s.tick++
	s.images = append(s.images, &imageEntry{key: key, rows: rows, used: s.tick})
	s.cacheBytes.Add(size)
	s.evict(0)
}

// imagesReady lets q join the batch once every sub-image it needs has its rows.
func (s *Scheduler) imagesReady(q *schedSeq) {
	for _, rows := range q.imgRows {
		if rows == nil {
			return
		}
	}
	h := s.m.g.Text.Hidden
	for i, rows := range q.imgRows {
		if i == 0 {
			rows = rows[q.imgFrom*h:]
		}
		q.rows = append(q.rows, rows...)
	}
	q.imgRows, q.imgSubs, q.encoding = nil, nil, false
	q.r.res.Timings.ImageEncodeMS = ms(time.Since(q.r.t0))
	if i := slices.Index(s.encodeQueue, q); i >= 0 {
		s.encodeQueue = slices.Delete(s.encodeQueue, i, i+1)
	}
}

// nextJob returns the first sequence waiting for images, with s.job the job of its next sub-image (a new job is
// made as needed and the adapter scales set for it); nil when no sequence waits.
func (s *Scheduler) nextJob() *schedSeq {
	for len(s.encodeQueue) > 0 {
		q := s.encodeQueue[0]
		if q.done || !q.encoding {
			s.dropJob()
			s.encodeQueue = s.encodeQueue[1:]
			continue
		}
		if s.job == nil {
			k := slices.IndexFunc(q.imgRows, func(r []float32) bool { return r == nil })
			if k < 0 {
				s.imagesReady(q)
				continue
			}
			// Another request may have encoded the same image meanwhile.
			if rows, ok := s.peekImage(s.imageKey(q.r, q.imgSubs[k])); ok {
				q.imgRows[k] = rows
				continue
			}
			job, err := s.m.g.NewImageJob(q.r.p.subImageInput(q.imgSubs[k]))
			if err != nil {
				s.finishSeq(q, StopLength, fmt.Errorf("runner: encoding image %d: %w", q.imgSubs[k], err))
				s.reap()
				continue
			}
			s.job, s.jobSub, s.jobRate = job, k, [graph.NumImagePhases]float64{}
			s.sideRate, s.jobStart, s.jobSteps = [graph.NumImagePhases]float64{}, time.Now(), 0
		}
		if err := s.m.g.SetAdapterScales(q.r.scales); err != nil {
			s.finishSeq(q, StopLength, fmt.Errorf("runner: %w", err))
			s.reap()
			continue
		}
		return q
	}
	return nil
}

// pieceDone takes the outcome of a piece of s.job run for q: done rows of phase in d (recorded in rate), or err.
func (s *Scheduler) pieceDone(q *schedSeq, phase graph.ImagePhase, done int, d time.Duration, err error, rate *[graph.NumImagePhases]float64) {
	if err != nil {
		sub := q.imgSubs[s.jobSub]
		s.dropJob()
		if !q.done {
			s.finishSeq(q, StopLength, fmt.Errorf("runner: encoding image %d: %w", sub, err))
			s.reap()
		}
		return
	}
	if rate != nil && done > 0 && phase < graph.PhaseDone {
		rate[phase] = d.Seconds() / float64(done)
	}
	if f := s.job.Features(); f != nil {
		s.keepImage(s.imageKey(q.r, q.imgSubs[s.jobSub]), f.Embeddings)
		q.imgRows[s.jobSub] = f.Embeddings
		s.dropJob()
		if !q.done {
			s.imagesReady(q)
		}
	}
}

// encodeSome runs one piece of image work for the first sequence waiting for images. While other sequences decode
// (busy), the piece is sized to take imageShare times the last step; otherwise it covers a whole phase.
func (s *Scheduler) encodeSome(busy bool) {
	q := s.nextJob()
	if q == nil {
		return
	}
	job := s.job
	phase := job.Phase()
	rows := job.Patches()
	if busy {
		if rate := s.jobRate[phase]; rate > 0 {
			rows = int(imageShare * s.lastStep.Seconds() / rate)
		} else {
			rows = firstPieceRows
		}
	}
	t0 := time.Now()
	done, err := job.Step(rows)
	s.pieceDone(q, phase, done, time.Since(t0), err, &s.jobRate)
}

// overlapOK reports whether image pieces may run beside decoder steps: a CPU model with no adapters (the steps and
// the pieces would set their scales at once) and at least 2 threads, and the image runner could be opened.
func (s *Scheduler) overlapOK() bool {
	return !s.noOverlap && s.m.g.Target.CPU && len(s.m.g.Options().Adapters) == 0 && s.m.g.Threads() >= 2
}

// encodeOverlap runs one cycle of image work while sequences decode: solo pieces (every thread, on the model's
// runner) while the steps run since the job began still keep the sequences above overlapStreamShare of their rate,
// then an overlapped stretch of about overlapPiece: pieces on the image runner in another goroutine, one after the
// other, with decoder steps on the other threads, until the stretch ends, the job is done or no sequence has a step
// to run.
func (s *Scheduler) encodeOverlap() {
	q := s.nextJob()
	if q == nil {
		return
	}
	job := s.job
	for {
		owed := time.Duration(float64(s.jobSteps)*s.stepFull.median().Seconds()/overlapStreamShare*float64(time.Second)) -
			time.Since(s.jobStart)
		phase := job.Phase()
		if owed <= 0 || phase == graph.PhaseDone {
			break
		}
		rows := firstPieceRows
		if rate := s.jobRate[phase]; rate > 0 {
			rows = max(2, int(owed.Seconds()/rate))
		}
		t0 := time.Now()
		done, err := job.Step(rows)
		s.pieceDone(q, phase, done, time.Since(t0), err, &s.jobRate)
		if s.job != job {
			return
		}
	}
	full := s.m.g.Threads()
	if s.side == nil {
		side, err := s.m.g.NewImageRunner(full / 2)
		if err != nil {
			// Without a second runner, images are encoded between steps.
			s.noOverlap = true
			return
		}
		s.side = side
	}
	s.side.SetThreads(full / 2)
	job.SetRunner(s.side)
	s.m.g.SetThreads(full - full/2)
	type stretch struct {
		phase graph.ImagePhase
		done  int
		err   error
		rate  [graph.NumImagePhases]float64
	}
	ch := make(chan stretch, 1)
	var stop atomic.Bool
	t0 := time.Now()
	go func(rate [graph.NumImagePhases]float64) {
		// Pieces of about overlapSlice each, so that a stop request is seen soon.
		var r stretch
		for !stop.Load() {
			r.phase = job.Phase()
			if r.phase == graph.PhaseDone {
				break
			}
			rows := firstPieceRows
			if rate[r.phase] > 0 {
				rows = max(2, int(overlapSlice.Seconds()/rate[r.phase]))
			}
			t := time.Now()
			r.done, r.err = job.Step(rows)
			if r.err != nil {
				break
			}
			if r.done > 0 && r.phase < graph.PhaseDone {
				rate[r.phase] = time.Since(t).Seconds() / float64(r.done)
			}
		}
		r.rate = rate
		ch <- r
	}(s.sideRate)
	var r stretch
	for waiting := true; waiting; {
		select {
		case r = <-ch:
			waiting = false
			continue
		default:
		}
		if time.Since(t0) >= overlapPiece || !s.step() {
			stop.Store(true)
			r = <-ch
			waiting = false
		} else if !s.lastPrefill {
			s.jobSteps++
		}
	}
	s.m.g.SetThreads(full)
	job.SetRunner(nil)
	s.overlapStretches.Add(1)
	s.sideRate = r.rate
	// The rates are the stretch's own (recorded above); the last piece's outcome decides the job's end.
	s.pieceDone(q, r.phase, 0, 0, r.err, nil)
}

// canStep reports whether some running sequence has a decoder step to run.
func (s *Scheduler) canStep() bool {
	for _, q := range s.running {
		if !q.done && !q.encoding && len(q.pending) > 0 {
			return true
		}
	}
	return false
}

// peekImage is cachedImage without counting a lookup.
func (s *Scheduler) peekImage(key uint64) ([]float32, bool) {
	for _, e := range s.images {
		if e.key == key {
			s.tick++
			e.used = s.tick
			return e.rows, true
		}
	}
	return nil, false
}

func (s *Scheduler) dropJob() {
	if s.job != nil {
		s.job.Close()
		s.job = nil
	}
}

// acquire returns a sequence for a prompt with position identities keys: the kept cache with the longest common
// prefix (with equal scales), else a new sequence, else the least recently used kept one (emptied).
func (s *Scheduler) acquire(keys []uint64, scales []float32) (*graph.Sequence, []uint64, error) {
	best, bestN := -1, 0
	for i, e := range s.idle {
		if !slices.Equal(e.scales, scales) {
			continue
		}
		n := 0
		for n < len(e.keys) && n < len(keys) && e.keys[n] == keys[n] {
			n++
		}
		if n > bestN {
			best, bestN = i, n
		}
	}
	if best >= 0 {
		return s.takeIdle(best)
	}
	gs, err := s.m.g.NewSequence(s.ctxSize)
	if err == nil {
		s.nSeqs++
		return gs, nil, nil
	}
	if len(s.idle) == 0 {
		return nil, nil, fmt.Errorf("runner: %w", err)
	}
	lru := 0
	for i, e := range s.idle {
		if e.used < s.idle[lru].used {
			lru = i
		}
	}
	gs, _, err = s.takeIdle(lru)
	if err != nil {
		return nil, nil, err
	}
	gs.Truncate(0)
	return gs, nil, nil
}

func (s *Scheduler) takeIdle(i int) (*graph.Sequence, []uint64, error) {
	e := s.idle[i]
	s.idle = slices.Delete(s.idle, i, i+1)
	s.cacheBytes.Add(-s.kvBytes)
	return e.gs, e.keys, nil
}

// release keeps a finished sequence's cache for its prefix, or frees it when the cache memory cannot hold it.
func (s *Scheduler) release(q *schedSeq) {
	if q.gs == nil {
		return
	}
	gs := q.gs
	q.gs = nil
	if gs.Pos() != len(q.keys) {
		gs.Truncate(len(q.keys))
	}
	if s.kvBytes > s.cacheMem || len(q.keys) == 0 {
		gs.Close()
		s.nSeqs--
		return
	}
	s.tick++
	s.idle = append(s.idle, &idleSeq{gs: gs, keys: q.keys, scales: q.r.scales, used: s.tick})
	s.cacheBytes.Add(s.kvBytes)
	s.evict(0)
}

// evict drops least recently used entries of both caches until they hold at most cacheMem − room bytes.
func (s *Scheduler) evict(room int64) {
	for s.cacheBytes.Load()+room > s.cacheMem {
		li, ii := -1, -1
		for i, e := range s.idle {
			if li < 0 || e.used < s.idle[li].used {
				li = i
			}
		}
		for i, e := range s.images {
			if ii < 0 || e.used < s.images[ii].used {
				ii = i
			}
		}
		switch {
		case li >= 0 && (ii < 0 || s.idle[li].used <= s.images[ii].used):
			e := s.idle[li]
			s.idle = slices.Delete(s.idle, li, li+1)
			e.gs.Close()
			s.nSeqs--
			s.cacheBytes.Add(-s.kvBytes)
		case ii >= 0:
			e := s.images[ii]
			s.images = slices.Delete(s.images, ii, ii+1)
			s.cacheBytes.Add(-int64(4 * len(e.rows)))
		default:
			return
		}
	}
}

// free closes every sequence and empties the caches (the loop's end).
func (s *Scheduler) free() {
	for _, q := range s.running {
		if q.gs != nil {
			q.gs.Close()
		}
	}
	for _, e := range s.idle {
		e.gs.Close()
	}
	s.dropJob()
	if s.side != nil {
		s.side.Close()
		s.side = nil
	}
	s.running, s.idle, s.images, s.encodeQueue = nil, nil, nil, nil
	s.cacheBytes.Store(0)
	s.active.Store(0)
	s.batch.Close()
}

// step runs one decoder step over the running sequences: the next token of each generating sequence and one chunk
// of prompt. Only sequences with the same adapter scales share a step; the group of the sequence that waited
// longest goes first.
func (s *Scheduler) step() bool {
	s.tick++
	// Cancelled requests end before the step.
	for _, q := range s.running {
		if !q.done && q.r.ctx.Err() != nil {
			s.finishSeq(q, StopCancelled, q.r.ctx.Err())
		}
	}
	s.reap()
	if len(s.running) == 0 {
		return false
	}
	var oldest *schedSeq
	for _, q := range s.running {
		if !q.encoding && (oldest == nil || q.last < oldest.last) {
			oldest = q
		}
	}
	if oldest == nil {
		return false
	}
	scales := oldest.r.scales
	var parts []graph.StepPart
	var seqs []*schedSeq
	prefill := false
	for _, q := range s.running {
		if q.done || q.encoding || !slices.Equal(q.r.scales, scales) || len(q.pending) == 0 {
			continue
		}
		if len(q.pending) > 1 {
			if prefill {
				continue
			}
			prefill = true
		}
		n := min(len(q.pending), s.chunk)
		var rows []float32
		if q.rows != nil {
			k := 0
			for _, t := range q.pending[:n] {
				if t == s.m.imageTokenID {
					k++
				}
			}
			h := s.m.g.Text.Hidden
			rows = q.rows[:k*h]
			if k == 0 {
				rows = nil
			}
		}
		parts = append(parts, graph.StepPart{Seq: q.gs, Tokens: q.pending[:n], Images: rows, Logits: n == len(q.pending)})
		seqs = append(seqs, q)
	}
	if len(parts) == 0 {
		return false
	}
	if err := s.m.g.SetAdapterScales(scales); err != nil {
		for _, q := range seqs {
			s.finishSeq(q, q.choice.StopReason, fmt.Errorf("runner: %w", err))
		}
		s.reap()
		return false
	}
	t0 := time.Now()
	logits, err := s.batch.Step(parts)
	s.lastStep, s.lastPrefill = time.Since(t0), prefill
	if err != nil {
		for _, q := range seqs {
			q.gs.Truncate(len(q.keys))
			s.finishSeq(q, q.choice.StopReason, fmt.Errorf("runner: %w", err))
		}
		s.reap()
		return false
	}
	for i, q := range seqs {
		n := len(parts[i].Tokens)
		q.keys = append(q.keys, q.pkeys[:n]...)
		q.pending, q.pkeys = q.pending[n:], q.pkeys[n:]
		if q.rows != nil {
			q.rows = q.rows[len(parts[i].Images):]
		}
		q.last = s.tick
		if logits[i] != nil {
			s.advance(q, logits[i])
		}
	}
	s.reap()
	return true
}

// advance takes the logits of q's last evaluated token: at the end of the prompt it starts generation (and forks
// the request's other answers), then it samples the next token, streams it and applies the stop rules.
func (s *Scheduler) advance(q *schedSeq, logits []float32) {
	r := q.r
	if !q.started {
		r.res.Timings.PrefillMS = ms(time.Since(r.t0)) - r.res.Timings.ImageEncodeMS
		if n := len(r.tokens) - r.res.CachedTokens; r.res.Timings.PrefillMS > 0 {
			r.res.Timings.PrefillTPS = float64(n) / (r.res.Timings.PrefillMS / 1000)
		}
		if r.o.MaxTokens == 0 {
			q.started = true
			s.finishSeq(q, StopLength, nil)
			return
		}
		seqs := []*schedSeq{q}
		for i := 1; i < r.n; i++ {
			f, err := s.fork(q, i, logits)
			if err != nil {
				s.finishSeq(q, StopLength, err)
				return
			}
			seqs = append(seqs, f)
		}
		for i, f := range seqs {
			if err := s.startSeq(f, i); err != nil {
				s.finishSeq(f, StopLength, err)
				return
			}
		}
		// The others sample from their own copy of the prompt's logits (sampling modifies them).
		for _, f := range seqs[1:] {
			s.sample(f, slices.Clone(logits))
		}
	}
	s.sample(q, logits)
}

// fork gives request answer i a sequence holding a copy of q's prompt cache.
func (s *Scheduler) fork(q *schedSeq, i int, logits []float32) (*schedSeq, error) {
	gs, _, err := s.acquire(nil, nil)
	if err != nil {
		return nil, err
	}
	if err := gs.CopyPrefix(q.gs, len(q.keys)); err != nil {
		gs.Close()
		s.nSeqs--
		return nil, fmt.Errorf("runner: %w", err)
	}
	f := &schedSeq{r: q.r, index: i, gs: gs, keys: slices.Clone(q.keys)}
	q.r.seqs = append(q.r.seqs, f)
	q.r.left++
	s.running = append(s.running, f)
	return f, nil
}

// startSeq sets up answer i's sampling state at the end of the prompt.
func (s *Scheduler) startSeq(q *schedSeq, i int) error {
	m, r := s.m, q.r
	so := r.o.Sampler
	so.Seed += uint64(i)
	var err error
	if q.sampler, err = NewSampler(so, m.g.Text.VocabSize, m.banned); err != nil {
		return asInput(err)
	}
	if q.cons, err = m.newConstraint(r.o.Constraint); err != nil {
		return err
	}
	q.index = i
	q.history = append(make([]int32, 0, len(r.tokens)+min(r.o.MaxTokens, s.ctxSize)), r.tokens...)
	q.dec = m.tok.NewStreamDecoder(true)
	q.stop = newStopper(r.o.Stop)
	q.started = true
	q.tDecode = time.Now()
	return nil
}

// sample picks q's next token from logits and applies the stop rules; a sequence that goes on evaluates the token
// in the next step.
func (s *Scheduler) sample(q *schedSeq, logits []float32) {
	if q.done {
		return
	}
	m, r := s.m, q.r
	if q.cons != nil && q.cons.mask(logits) == 0 {
		if q.cons.m.Complete() {
			s.finishSeq(q, StopToken, nil)
			return
		}
		s.finishSeq(q, StopLength, inputErrorf("runner: the grammar allows no token of this vocabulary after %q", q.stop.text()))
		return
	}
	id := q.sampler.Sample(logits, q.history)
	if r.o.Logprobs {
		q.choice.Logprobs = append(q.choice.Logprobs, m.logprob(logits, id, r.o.TopLogprobs))
	}
	if q.cons != nil {
		if err := q.cons.m.Accept(id); err != nil {
			s.finishSeq(q, StopLength, fmt.Errorf("runner: constrained sampling picked a refused token: %w", err))
			return
		}
	}
	q.choice.Tokens = append(q.choice.Tokens, id)
	q.history = append(q.history, id)
	if r.o.OnToken != nil {
		if err := r.o.OnToken(id); err != nil {
			s.finishSeq(q, StopLength, err)
			return
		}
	}
	if m.isStop(id) {
		s.finishSeq(q, StopToken, nil)
		return
	}
	out, hit := q.stop.add(q.dec.Add(id), false)
	if err := s.emit(q, out); err != nil {
		s.finishSeq(q, StopLength, err)
		return
	}
	switch {
	case hit:
		s.finishSeq(q, StopString, nil)
	case len(q.choice.Tokens) >= r.o.MaxTokens:
		s.finishSeq(q, StopLength, nil)
	case q.gs.Pos() >= q.gs.Size():
		s.finishSeq(q, StopContext, nil)
	default:
		q.pending = []int32{id}
		q.pkeys = []uint64{s.tokenKey(r, id)}
	}
}

// tokenKey is the cache identity of a generated token (mixed with the request's adapter scales, as its prompt's).
func (s *Scheduler) tokenKey(r *schedRequest, id int32) uint64 {
	k := uint64(uint32(id))
	for _, v := range r.scales {
		k = mixKey(k, uint64(math.Float32bits(v)))
	}
	return k
}

func (s *Scheduler) emit(q *schedSeq, text string) error {
	if text == "" {
		return nil
	}
	o := &q.r.o
	if o.OnChoiceText != nil {
		return o.OnChoiceText(q.index, text)
	}
	if o.OnText != nil {
		return o.OnText(text)
	}
	return nil
}

// finishSeq ends q with reason (and err, the first error of its request).
func (s *Scheduler) finishSeq(q *schedSeq, reason StopReason, err error) {
	if q.done {
		return
	}
	q.done = true
	q.choice.StopReason = reason
	if q.stop != nil {
		if reason != StopString {
			out, _ := q.stop.add(q.dec.Flush(), true)
			if eerr := s.emit(q, out); eerr != nil && err == nil {
				err = eerr
			}
		}
		q.choice.Text = q.stop.text()
	}
	if err != nil && q.r.err == nil {
		q.r.err = err
	}
	q.r.left--
}

// fail ends a request that could not start.
func (s *Scheduler) fail(r *schedRequest, err error) {
	for _, q := range r.seqs {
		if !q.done {
			s.finishSeq(q, StopLength, err)
		}
	}
	if r.err == nil {
		r.err = err
	}
	s.reap()
	if len(r.seqs) == 0 {
		s.reserved -= r.n
		r.res = nil
		close(r.done)
	}
}

// reap removes finished sequences from the batch, keeps their caches and completes requests whose answers are all
// done. The active count is updated before any Generate call wakes, so that Stats read after a call returns no
// longer counts its sequences.
func (s *Scheduler) reap() {
	kept := s.running[:0]
	var finished []*schedRequest
	for _, q := range s.running {
		if !q.done {
			kept = append(kept, q)
			continue
		}
		s.release(q)
		if q.r.left == 0 {
			finished = append(finished, q.r)
		}
	}
	clear(s.running[len(kept):])
	s.running = kept
	s.active.Store(int64(len(s.running)))
	for _, r := range finished {
		s.complete(r)
	}
}

// complete fills r's result from its answers and wakes its Generate call.
func (s *Scheduler) complete(r *schedRequest) {
	select {
	case <-r.done:
		return
	default:
	}
	s.reserved -= r.n
	res := r.res
	slices.SortFunc(r.seqs, func(a, b *schedSeq) int { return a.index - b.index })
	c := r.seqs[0].choice
	res.Text, res.Tokens, res.StopReason, res.Logprobs = c.Text, c.Tokens, c.StopReason, c.Logprobs
	if r.n > 1 {
		for _, q := range r.seqs {
			res.Choices = append(res.Choices, q.choice)
		}
	}
	if q := r.seqs[0]; !q.tDecode.IsZero() {
		res.Timings.DecodeMS = ms(time.Since(q.tDecode))
		if res.Timings.DecodeMS > 0 {
			n := 0
			for _, q := range r.seqs {
				n += len(q.choice.Tokens)
			}
			res.Timings.DecodeTPS = float64(n) / (res.Timings.DecodeMS / 1000)
		}
	}
	switch {
	case r.err != nil && r.ctx.Err() != nil:
		// Cancelled: the partial result, with ctx's error.
		res.StopReason = StopCancelled
		r.err = r.ctx.Err()
	case r.err != nil && !r.seqs[0].started:
		res = nil
	}
	r.res = res
	if r.err != nil {
		slog.Debug("runner: scheduled request failed", "err", r.err)
	}
	close(r.done)
}
