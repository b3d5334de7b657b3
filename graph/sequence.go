package graph

import (
	"context"
	"errors"
	"fmt"

	"github.com/idefics2-go/idefics2/ggml"
)

// Sequence is one sequence's decoding state: its KV cache and the scratch a step reuses, so that a decode step
// allocates no Go memory.
type Sequence struct {
	m      *Model
	cache  *KVCache
	pos    []int32
	sel    []int32
	logits []float32
	ctx    *ggml.Context // graph metadata, reset for every step
	graph  ggml.Graph
	// onBatch, when set (SetBatchProgress), is called after each batch of Eval with the tokens done and the total.
	onBatch func(done, total int)
}

// NewSequence allocates a KV cache for ctxSize positions (at most the model's context length).
func (m *Model) NewSequence(ctxSize int) (*Sequence, error) {
	if ctxSize <= 0 || ctxSize > m.Text.ContextLength {
		return nil, fmt.Errorf("graph: context size %d is outside 1…%d", ctxSize, m.Text.ContextLength)
	}
	typ := m.kvType()
	kvBytes := m.kvBytes(ctxSize)
	scratch := decodeScratchBytes(m.Text, min(m.opts.BatchSize, ctxSize), ctxSize)
	if err := checkMemory(m.Device, fmt.Sprintf("a context of %d positions (KV cache %d MiB + compute %d MiB)",
		ctxSize, kvBytes>>20, scratch>>20), kvBytes+scratch); err != nil {
		return nil, err
	}
	// The transposed V layout serves the plain attention path on the CPU (flash attention reads V by rows).
	vTrans := m.opts.TextAttn != AttnFlash && m.Target.CPU
	c, err := newKVCache(m.runner.Main, m.Text, ctxSize, typ, vTrans)
	if err != nil {
		return nil, err
	}
	return &Sequence{m: m, cache: c, ctx: ggml.NewContext(graphSize, graphSize)}, nil
}

// kvType is the KV cache's element type: Options.KVType, else F32 for an F32 model file and F16 otherwise; flash
// attention reads F16.
func (m *Model) kvType() ggml.Type {
	typ := m.opts.KVType
	if typ == 0 {
		typ = ggml.TypeF16
		if ft, err := m.TextFile.Metadata.Int("general.file_type"); err == nil && ft == 0 {
			typ = ggml.TypeF32
		}
	}
	if m.opts.TextAttn == AttnFlash {
		typ = ggml.TypeF16
	}
	return typ
}

// Close frees the sequence's cache. Idempotent.
func (s *Sequence) Close() {
	if s != nil {
		s.cache.Close()
		s.ctx.Close()
		s.ctx = nil
	}
}

// Pos is the number of positions already in the cache.
func (s *Sequence) Pos() int { return s.cache.Pos() }

// Size is the cache capacity in positions.
func (s *Sequence) Size() int { return s.cache.Size() }

// Truncate drops cached positions from n on (0 empties the cache).
func (s *Sequence) Truncate(n int) { s.cache.Truncate(n) }

// Eval appends tokens to the sequence and returns logits: [vocab] for the last token, or [len(tokens)][vocab] when
// allLogits. images are the connector outputs ([k·imageSeqLen][textHidden] flattened, in order) that replace the
// embeddings of the image tokens among tokens; nil leaves image tokens with their own embedding. Prompts longer
// than the batch size are evaluated in chunks, and ctx is checked between them; after an error the cache holds the
// chunks evaluated before it. With dump, the named intermediates it matches are passed to it, chunk by chunk. The
// slice returned for the last token alone is the sequence's scratch buffer, overwritten by the next Eval; copy it
// to keep it.
func (s *Sequence) Eval(ctx context.Context, tokens []int32, images []float32, allLogits bool, dump *Dump) ([]float32, error) {
	m := s.m
	if len(tokens) == 0 {
		return nil, errors.New("graph: no tokens to evaluate")
	}
	if s.cache.pos+len(tokens) > s.cache.size {
		return nil, fmt.Errorf("graph: %d tokens after %d cached exceed the context size %d", len(tokens), s.cache.pos, s.cache.size)
	}
	hidden, imageID := m.Text.Hidden, int32(-1)
	if m.HasVision {
		imageID = int32(m.Connector.ImageTokenID)
	}
	nImg := 0
	for _, t := range tokens {
		if t < 0 || int(t) >= m.Text.VocabSize {
			return nil, fmt.Errorf("graph: token id %d is outside the vocabulary (%d)", t, m.Text.VocabSize)
		}
		if t == imageID {
			nImg++
		}
	}
	if images != nil && (!m.HasVision || len(images) != nImg*hidden) {
		return nil, fmt.Errorf("graph: %d image tokens in the prompt but %d image feature rows", nImg, len(images)/hidden)
	}
	var all []float32
	imgUsed := 0
	for start := 0; start < len(tokens); start += m.opts.BatchSize {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		chunk := tokens[start:min(start+m.opts.BatchSize, len(tokens))]
		var rows []float32
		if images != nil {
			n := 0
			for _, t := range chunk {
				if t == imageID {
					n++
				}
			}
			rows = images[imgUsed*hidden : (imgUsed+n)*hidden]
			imgUsed += n
		}
		last := start+len(chunk) == len(tokens)
		logits, err := s.eval(chunk, rows, allLogits || !last, dump)
		if err != nil {
			return nil, err
		}
		if allLogits {
			all = append(all, logits...)
		} else if last {
			all = logits
		}
		if s.onBatch != nil {
			s.onBatch(start+len(chunk), len(tokens))
		}
	}
	return all, nil
}

// eval runs one decoder graph over chunk with the image rows of its image tokens; wantAll asks for logits of every
// position (otherwise the last only). The returned slice is the sequence's scratch, valid until the next call.
func (s *Sequence) eval(chunk []int32, imgRows []float32, wantAll bool, dump *Dump) ([]float32, error) {
	m := s.m
	n := len(chunk)
	ctx := s.ctx
	ctx.Reset()
	in := decodeInputs{cache: s.cache, graph: &s.graph,
		rope: ggml.RoPEOptions{Dims: m.Text.RoPEDims, Mode: ggml.RoPENormal, Base: m.Text.RoPEBase, CtxOrig: m.Text.ContextLength}}
	var nm *namer
	if dump != nil {
		nm = &namer{dump: dump}
	}
	var logits ggml.Tensor
	err := ggml.Catch(func() {
		in.ids = ctx.NewTensor(ggml.TypeI32, n).SetInput()
		in.pos = ctx.NewTensor(ggml.TypeI32, n).SetInput()
		maskType := ggml.TypeF32
		if m.opts.TextAttn == AttnFlash {
			maskType = ggml.TypeF16
		}
		in.mask = ctx.NewTensor(maskType, s.cache.pos+n, n).SetInput()
		if len(imgRows) > 0 {
			in.images = ctx.NewTensor(ggml.TypeF32, m.Text.Hidden, len(imgRows)/m.Text.Hidden).SetInput()
			in.selector = ctx.NewTensor(ggml.TypeI32, n).SetInput()
		}
		ctx.InitGraph(in.graph, graphSize)
		logits = m.decoder.Forward(ctx, &in, !wantAll, nm).SetOutput()
		in.graph.Build(logits)
		nm.build(in.graph)
	})
	if err != nil {
		return nil, fmt.Errorf("graph: building the decoder graph: %w", err)
	}
	sched := m.runner.Sched
	sched.Reset()
	defer sched.Reset()
	if err := sched.Alloc(in.graph); err != nil {
		return nil, err
	}
	if err := s.setInputs(&in, chunk, imgRows); err != nil {
		return nil, err
	}
	if err := sched.Compute(in.graph); err != nil {
		return nil, err
	}
	s.logits = grow(s.logits, logits.NumElements())
	if err := logits.ReadFloat32(s.logits); err != nil {
		return nil, err
	}
	if err := nm.emit(); err != nil {
		return nil, err
	}
	s.cache.pos += n
	return s.logits, nil
}

// setInputs fills a step's inputs: ids, positions, the causal mask and, with image rows, the rows and the selector
// that puts row k of the images at the k-th image token.
func (s *Sequence) setInputs(in *decodeInputs, chunk []int32, imgRows []float32) error {
	n := len(chunk)
	s.pos = grow(s.pos, n)
	for i := range s.pos {
		s.pos[i] = int32(s.cache.pos + i)
	}
	if err := in.ids.SetInt32(chunk); err != nil {
		return err
	}
	if err := in.pos.SetInt32(s.pos); err != nil {
		return err
	}
	if err := s.cache.setMask(in.mask, n); err != nil {
		return err
	}
	if in.images.IsNil() {
		return nil
	}
	imageID := int32(s.m.Connector.ImageTokenID)
	s.sel = grow(s.sel, n)
	k := 0
	for i, t := range chunk {
		if t == imageID {
			s.sel[i] = int32(n + k)
			k++
		} else {
			s.sel[i] = int32(i)
		}
	}
	if err := in.images.SetFloat32(imgRows); err != nil {
		return err
	}
	return in.selector.SetInt32(s.sel)
}
