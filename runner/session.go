package runner

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/idefics2-go/idefics2/graph"
)

// Session is one conversation's decoding state: a KV cache and what it holds. Successive Generate calls on a
// session reuse the longest cached prefix of the new prompt (a chat that re-renders the conversation each turn
// only evaluates the new part). A session is used by one goroutine at a time.
type Session struct {
	m    *Model
	gs   *graph.Sequence
	keys []uint64 // identity of each cached position: the token id, or the image row it holds
	// scales are the run-time adapters' scales in use (SetAdapterScales); nil: the scales the model was loaded
	// with.
	scales []float32
}

// SetAdapterScales chooses the scale of each loaded run-time adapter (Options.Adapters order; 0 turns one off) for
// what the session computes from now on; nil restores the scales the model was loaded with. A change empties the
// cache, whose positions were computed with the previous scales. A wrong count or a non-finite scale is an
// *InputError.
func (s *Session) SetAdapterScales(scales []float32) error {
	n := len(s.m.defaultScales)
	if scales != nil && len(scales) != n {
		return inputErrorf("runner: %d adapter scales, but %d adapters are loaded", len(scales), n)
	}
	for i, v := range scales {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return inputErrorf("runner: adapter %d: scale %v is not a finite number", i, v)
		}
	}
	if slices.Equal(scales, s.scales) {
		return nil
	}
	s.Reset()
	s.scales = slices.Clone(scales)
	return nil
}

// adapterScales are the scales the session computes with.
func (s *Session) adapterScales() []float32 {
	if s.scales == nil {
		return s.m.defaultScales
	}
	return s.scales
}

// NewSession allocates a KV cache of ctxSize positions; 0 means DefaultContextSize, capped at the model's context
// length. A size beyond the model's context length is an *InputError.
func (m *Model) NewSession(ctxSize int) (*Session, error) {
	if ctxSize < 0 {
		return nil, inputErrorf("runner: context size %d: want 0 (default) or more", ctxSize)
	}
	if ctxSize == 0 {
		ctxSize = min(DefaultContextSize, m.g.Text.ContextLength)
	}
	if ctxSize > m.g.Text.ContextLength {
		return nil, inputErrorf("runner: context size %d is larger than the model's context length %d", ctxSize, m.g.Text.ContextLength)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.g == nil {
		return nil, fmt.Errorf("runner: the model is closed")
	}
	gs, err := m.g.NewSequence(ctxSize)
	if err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	return &Session{m: m, gs: gs}, nil
}

// Size is the session's context size in positions.
func (s *Session) Size() int { return s.gs.Size() }

// Cached is the number of positions in the cache.
func (s *Session) Cached() int { return len(s.keys) }

// Reset empties the cache.
func (s *Session) Reset() {
	s.gs.Truncate(0)
	s.keys = s.keys[:0]
}

// Close frees the cache. Idempotent.
func (s *Session) Close() {
	if s == nil || s.gs == nil {
		return
	}
	s.m.mu.Lock()
	s.gs.Close()
	s.m.mu.Unlock()
	s.gs = nil
}

// truncate keeps the first n cached positions.
func (s *Session) truncate(n int) {
	if n < len(s.keys) {
		s.gs.Truncate(n)
		s.keys = s.keys[:n]
	}
}

// eval appends tokens (with the connector rows of their image tokens, or nil) to the cache under the model lock
// and returns the logits (last position, or all with allLogits). The graph evaluates a long prompt in batches and
// checks ctx between them; dump, when set, receives the named intermediates it asks for.
func (s *Session) eval(ctx context.Context, tokens []int32, images []float32, allLogits bool, keys []uint64, dump *graph.Dump) ([]float32, error) {
	m := s.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.g == nil || s.gs == nil {
		return nil, fmt.Errorf("runner: the model or session is closed")
	}
	if s.gs.Pos() != len(s.keys) {
		// A failed evaluation may have left part of a batch in the cache; drop it.
		s.gs.Truncate(len(s.keys))
	}
	if err := m.g.SetAdapterScales(s.adapterScales()); err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	logits, err := s.gs.Eval(ctx, tokens, images, allLogits, dump)
	if err != nil {
		s.gs.Truncate(len(s.keys))
		return nil, fmt.Errorf("runner: %w", err)
	}
	s.keys = append(s.keys, keys...)
	return logits, nil
}
