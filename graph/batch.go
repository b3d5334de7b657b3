package graph

import (
	"errors"
	"fmt"

	"github.com/idefics2-go/idefics2/ggml"
)

// StepPart is one sequence's share of a batched decoder step: Tokens appended to its cache (a generated token, or a
// chunk of prompt), the connector rows of its image tokens ([k][textHidden] flattened, nil without image tokens)
// and whether the logits of its last token are wanted.
type StepPart struct {
	Seq    *Sequence
	Tokens []int32
	Images []float32
	Logits bool
}

// Batch runs decoder steps over several sequences at once. Each sequence keeps its own KV cache (Sequence); one
// step concatenates the new tokens of every part, so that the weight products, norms and the FFN read each weight
// once for all of them, and splits per sequence only where sequences differ: the cache store, and the attention of
// each sequence over its own cache under its own causal mask (RoPE takes one position per token, so it needs no
// split). The attention outputs are concatenated again for the output projection.
//
// Batch invariance: a sequence's results must not depend on what else is in the step. Every op outside the weight
// products works row by row (norms, RoPE, SwiGLU, residual adds, get-rows) or per sequence (attention), and the
// products compute each output element from one weight row and one activation row. On the CPU, ggml's mul_mat takes
// llamafile's sgemm for two or more activation rows when it supports the types (one vector accumulator per output
// element over k, then a horizontal sum: the order depends on neither the tile shape nor the row count), and
// ggml's vec_dot otherwise (one call per element, whatever the row count) — but with a single row it always takes
// vec_dot, whose order differs from sgemm's. Where a step's products go through ggml's mul_mat (rowsInvariant
// false), a step of one token therefore carries a ghost copy of that token through the products (its attention
// output is the real token's), so that every step has two or more rows and a row's float order is the same in
// every step. The 16-row interleaved kernels of this project (q4x16, q4kx16, q6kx16; x16.h) keep one accumulator
// per token and walk the blocks in the same order for any tile width, one token included, so a decoder whose
// products all take them needs no ghost row. This argument holds for ggml's x86-64 CPU paths, where the tests check
// it bit for bit; ggml's arm64 paths do not keep a row's order across row counts (batched and solo results differ
// there by a few 1e-6 relative), so on arm64 a greedy token at a near-tie can depend on the step's company.
//
// A Batch holds the graph scratch of its steps; it is used by one goroutine at a time.
type Batch struct {
	m      *Model
	ghost  bool // one-token steps carry a ghost row (see above)
	ctx    *ggml.Context
	graph  ggml.Graph
	ids    []int32
	pos    []int32
	sel    []int32
	rows   []int32
	imgs   []float32
	logits []float32
	out    [][]float32
}

// MaxStepParts bounds the sequences of one step: each adds about a dozen graph nodes per layer (views, the cache
// store, attention), and the graph holds graphSize nodes.
func (m *Model) MaxStepParts() int {
	return max(1, (graphSize-64*m.Text.Layers-256)/(16*m.Text.Layers))
}

// NewBatch returns an empty batch runner for m.
func (m *Model) NewBatch() *Batch {
	return &Batch{m: m, ghost: !m.decoder.rowsInvariant(), ctx: ggml.NewContext(graphSize, graphSize)}
}

// rowsInvariant reports whether every product of a decoder step sums each output element in an order that does not
// depend on the number of activation rows, one row included: each matrix (or its stacked group) multiplied by one
// of this project's 16-row kernels, with no plain tail rows and no run-time adapter pairs (those take ggml's
// mul_mat), and an output projection of its own.
func (d *Decoder) rowsInvariant() bool {
	ok := func(l Linear) bool {
		k := l.kernel
		if l.group != nil {
			k = l.group.kernel
		}
		return (k == KernelQ4X16 || k == KernelQ4KX16 || k == KernelQ6KX16) && l.Tail.IsNil() && len(l.loras) == 0
	}
	// The output projection's plain tail rows (a vocabulary that is not a multiple of 16) are multiplied over two
	// rows or more (outputStep).
	out := d.Output
	out.Tail = ggml.Tensor{}
	if d.Output.Weight.IsNil() || !ok(out) {
		return false
	}
	for _, l := range d.Layers {
		for _, lin := range []Linear{l.Attn.Query, l.Attn.Key, l.Attn.Value, l.Attn.Output, l.MLP.Gate, l.MLP.Up, l.MLP.Down} {
			if !ok(lin) {
				return false
			}
		}
	}
	return true
}

// Close frees the batch's graph scratch. Idempotent.
func (b *Batch) Close() {
	if b != nil && b.ctx != nil {
		b.ctx.Close()
		b.ctx = nil
	}
}

// CheckBatchMemory refuses, before anything is allocated, a batch of seqs sequences of ctxSize positions each whose
// KV caches and step scratch (a prompt chunk of the batch size plus one token per sequence) would not fit the
// device.
func (m *Model) CheckBatchMemory(seqs, ctxSize int) error {
	if seqs <= 0 || ctxSize <= 0 || ctxSize > m.Text.ContextLength {
		return fmt.Errorf("graph: %d sequences of %d positions: want 1 or more sequences of 1…%d positions", seqs, ctxSize, m.Text.ContextLength)
	}
	kv := uint64(seqs) * m.kvBytes(ctxSize)
	scratch := decodeScratchBytes(m.Text, min(m.opts.BatchSize, ctxSize)+seqs, ctxSize)
	return checkMemory(m.Device, fmt.Sprintf("%d sequences of %d positions (KV caches %d MiB + compute %d MiB)",
		seqs, ctxSize, kv>>20, scratch>>20), kv+scratch)
}

// kvBytes is the KV cache size of one sequence of ctxSize positions.
func (m *Model) kvBytes(ctxSize int) uint64 {
	return uint64(2*m.Text.Layers) * uint64(m.Text.HeadDim*m.Text.KVHeads) * uint64(ctxSize) * uint64(m.kvType().TypeSize())
}

// KVBytes is the KV cache size of one sequence of ctxSize positions, as NewSequence allocates it.
func (m *Model) KVBytes(ctxSize int) int64 { return int64(m.kvBytes(ctxSize)) }

// stepInputs are the inputs of one batched step.
type stepInputs struct {
	ids      ggml.Tensor // I32 [n]
	images   ggml.Tensor // F32 [hidden, nImg] or nil
	selector ggml.Tensor // I32 [n] or nil
	pos      ggml.Tensor // I32 [n]
	rows     ggml.Tensor // I32 [r]: the rows whose logits are computed
	masks    []ggml.Tensor
	offsets  []int // first row of each part
	ghost    bool  // row 1 is a copy of row 0 (a one-token step)
	graph    *ggml.Graph
	rope     ggml.RoPEOptions
}

// Step appends each part's tokens to its sequence and returns, for each part that asks for them, the logits of its
// last token ([vocab], nil for the others). The slices are the batch's scratch, valid until the next Step. Every
// part's sequence must be distinct and belong to m; a part's tokens must fit its cache. On error no cache
// advances (the positions written by a failed step are past each cache's end and are overwritten later).
func (b *Batch) Step(parts []StepPart) ([][]float32, error) {
	m := b.m
	if b.ctx == nil {
		return nil, errors.New("graph: the batch is closed")
	}
	if len(parts) == 0 {
		return nil, errors.New("graph: a step needs at least one sequence")
	}
	if len(parts) > m.MaxStepParts() {
		return nil, fmt.Errorf("graph: %d sequences in one step, at most %d", len(parts), m.MaxStepParts())
	}
	hidden, imageID := m.Text.Hidden, int32(-1)
	if m.HasVision {
		imageID = int32(m.Connector.ImageTokenID)
	}
	total := 0
	seen := make(map[*Sequence]bool, len(parts))
	for i, p := range parts {
		s := p.Seq
		switch {
		case s == nil || s.cache == nil:
			return nil, fmt.Errorf("graph: step part %d: no sequence", i)
		case s.m != m:
			return nil, fmt.Errorf("graph: step part %d: the sequence belongs to another model", i)
		case seen[s]:
			return nil, fmt.Errorf("graph: step part %d: the sequence appears twice in one step", i)
		case len(p.Tokens) == 0:
			return nil, fmt.Errorf("graph: step part %d: no tokens to evaluate", i)
		case s.cache.pos+len(p.Tokens) > s.cache.size:
			return nil, fmt.Errorf("graph: step part %d: %d tokens after %d cached exceed the context size %d", i, len(p.Tokens), s.cache.pos, s.cache.size)
		}
		seen[s] = true
		nImg := 0
		for _, t := range p.Tokens {
			if t < 0 || int(t) >= m.Text.VocabSize {
				return nil, fmt.Errorf("graph: step part %d: token id %d is outside the vocabulary (%d)", i, t, m.Text.VocabSize)
			}
			if t == imageID {
				nImg++
			}
		}
		if p.Images != nil && len(p.Images) != nImg*hidden {
			return nil, fmt.Errorf("graph: step part %d: %d image tokens but %d image feature rows", i, nImg, len(p.Images)/hidden)
		}
		total += len(p.Tokens)
	}
	if limit := m.opts.BatchSize + m.MaxStepParts(); total > limit {
		return nil, fmt.Errorf("graph: %d tokens in one step, at most %d", total, limit)
	}
	b.fillRows(parts, imageID, b.ghost)
	in := stepInputs{graph: &b.graph, ghost: b.ghost && total == 1,
		rope: ggml.RoPEOptions{Dims: m.Text.RoPEDims, Mode: ggml.RoPENormal, Base: m.Text.RoPEBase, CtxOrig: m.Text.ContextLength}}
	n := len(b.ids)
	ctx := b.ctx
	ctx.Reset()
	var logits ggml.Tensor
	err := ggml.Catch(func() {
		in.ids = ctx.NewTensor(ggml.TypeI32, n).SetInput()
		in.pos = ctx.NewTensor(ggml.TypeI32, n).SetInput()
		in.rows = ctx.NewTensor(ggml.TypeI32, len(b.rows)).SetInput()
		if len(b.imgs) > 0 {
			in.images = ctx.NewTensor(ggml.TypeF32, hidden, len(b.imgs)/hidden).SetInput()
			in.selector = ctx.NewTensor(ggml.TypeI32, n).SetInput()
		}
		maskType := ggml.TypeF32
		if m.opts.TextAttn == AttnFlash {
			maskType = ggml.TypeF16
		}
		off := 0
		for _, p := range parts {
			k := len(p.Tokens)
			in.masks = append(in.masks, ctx.NewTensor(maskType, p.Seq.cache.pos+k, k).SetInput())
			in.offsets = append(in.offsets, off)
			off += k
		}
		ctx.InitGraph(in.graph, graphSize)
		logits = m.decoder.forwardStep(ctx, &in, parts).SetOutput()
		in.graph.Build(logits)
	})
	if err != nil {
		return nil, fmt.Errorf("graph: building the batched decoder graph: %w", err)
	}
	sched := m.runner.Sched
	sched.Reset()
	defer sched.Reset()
	if err := sched.Alloc(in.graph); err != nil {
		return nil, err
	}
	if err := b.setInputs(&in, parts); err != nil {
		return nil, err
	}
	if err := sched.Compute(in.graph); err != nil {
		return nil, err
	}
	b.logits = grow(b.logits, logits.NumElements())
	if err := logits.ReadFloat32(b.logits); err != nil {
		return nil, err
	}
	vocab := m.Text.VocabSize
	b.out = grow(b.out, len(parts))
	r := 0
	for i, p := range parts {
		b.out[i] = nil
		if p.Logits {
			b.out[i] = b.logits[r*vocab : (r+1)*vocab]
			r++
		}
		p.Seq.cache.pos += len(p.Tokens)
	}
	return b.out, nil
}

// fillRows lays out a step's rows: ids and positions of every part in order (plus the ghost row of a one-token
// step with ghost), the image rows, the selector that puts image row k at the k-th image token, and the rows whose
// logits are computed (at least one; with ghost at least two, for the product: see Batch).
func (b *Batch) fillRows(parts []StepPart, imageID int32, ghost bool) {
	b.ids, b.pos, b.imgs, b.rows = b.ids[:0], b.pos[:0], b.imgs[:0], b.rows[:0]
	for _, p := range parts {
		for j, t := range p.Tokens {
			b.ids = append(b.ids, t)
			b.pos = append(b.pos, int32(p.Seq.cache.pos+j))
		}
		if p.Logits {
			b.rows = append(b.rows, int32(len(b.ids)-1))
		}
		b.imgs = append(b.imgs, p.Images...)
	}
	if ghost && len(b.ids) == 1 {
		b.ids = append(b.ids, b.ids[0])
		b.pos = append(b.pos, b.pos[0])
	}
	if len(b.rows) == 0 {
		b.rows = append(b.rows, int32(len(b.ids)-1))
	}
	if ghost && len(b.rows) == 1 {
		b.rows = append(b.rows, b.rows[0])
	}
	n := len(b.ids)
	b.sel = b.sel[:0]
	if len(b.imgs) == 0 {
		return
	}
	k := 0
	for _, p := range parts {
		for _, t := range p.Tokens {
			if t == imageID && p.Images != nil {
				b.sel = append(b.sel, int32(n+k))
				k++
			} else {
				b.sel = append(b.sel, int32(len(b.sel)))
			}
		}
	}
	for len(b.sel) < n {
		b.sel = append(b.sel, b.sel[0])
	}
}

// setInputs fills a step's inputs after the graph is allocated.
func (b *Batch) setInputs(in *stepInputs, parts []StepPart) error {
	if err := in.ids.SetInt32(b.ids); err != nil {
		return err
	}
	if err := in.pos.SetInt32(b.pos); err != nil {
		return err
	}
	if err := in.rows.SetInt32(b.rows); err != nil {
		return err
	}
	for i, p := range parts {
		if err := p.Seq.cache.setMask(in.masks[i], len(p.Tokens)); err != nil {
			return err
		}
	}
	if in.images.IsNil() {
		return nil
	}
	if err := in.images.SetFloat32(b.imgs); err != nil {
		return err
	}
	return in.selector.SetInt32(b.sel)
}

// forwardStep is Forward over the rows of a batched step: it returns the logits [vocab, r] of in.rows.
func (d *Decoder) forwardStep(ctx *ggml.Context, in *stepInputs, parts []StepPart) ggml.Tensor {
	h := d.TokEmbd.GetRows(ctx, in.ids) // [hidden, n]
	if !in.images.IsNil() {
		h = h.Concat(ctx, in.images, 1).GetRows(ctx, in.selector)
	}
	for i := range d.Layers {
		h = d.Layers[i].forwardStep(ctx, h, in, parts, d.attn)
	}
	h = h.GetRows(ctx, in.rows)
	h = d.OutNorm.Forward(ctx, h, d.opts.Eps)
	if d.Output.Weight.IsNil() {
		return d.TokEmbd.MulMat(ctx, h)
	}
	return d.outputStep(ctx, h)
}

// outputStep is Output.Forward with the plain tail's product (ggml's mul_mat) taken over two rows or more: a single
// row h [hidden, 1] is multiplied as [h, h] and the first column kept, so that the tail's float order does not
// depend on the row count (see Batch).
func (d *Decoder) outputStep(ctx *ggml.Context, h ggml.Tensor) ggml.Tensor {
	l := d.Output
	if l.Tail.IsNil() || h.Ne(1) > 1 {
		return l.Forward(ctx, h)
	}
	y := mul(l.kernel, l.Weight, ctx, h, l.rows, l.blockSize)
	t := l.Tail.MulMat(ctx, h.Concat(ctx, h, 1))
	y = y.Concat(ctx, t.View(ctx, 0, []int{t.Ne(0), 1}, []int{t.Nb(1)}), 0)
	if !l.Bias.IsNil() {
		y = y.Add(ctx, l.Bias)
	}
	return addLoRA(ctx, y, h, l.loras)
}

// forwardStep is DecoderLayer.Forward over the rows of a batched step.
func (l *DecoderLayer) forwardStep(ctx *ggml.Context, x ggml.Tensor, in *stepInputs, parts []StepPart, attn decodeAttn) ggml.Tensor {
	h := l.AttnNorm.Forward(ctx, x, l.eps)
	h = l.selfAttentionStep(ctx, h, in, parts, attn)
	x = x.Add(ctx, h)
	h = l.MLP.Forward(ctx, l.FFNNorm.Forward(ctx, x, l.eps))
	return x.Add(ctx, h)
}

// selfAttentionStep is selfAttention over a batched step: the projections and RoPE take every row at once; each
// part stores its rows in its own cache and attends its own cache; the outputs are joined for the output
// projection.
func (l *DecoderLayer) selfAttentionStep(ctx *ggml.Context, x ggml.Tensor, in *stepInputs, parts []StepPart, attn decodeAttn) ggml.Tensor {
	a := &l.Attn
	q, k, v := a.project(ctx, x, x)
	q = q.RoPE(ctx, in.pos, in.rope) // [hd, heads, n], contiguous
	k = k.RoPE(ctx, in.pos, in.rope) // [hd, kvHeads, n], contiguous
	zs := make([]ggml.Tensor, 0, len(parts)+1)
	for i, p := range parts {
		off, n := in.offsets[i], len(p.Tokens)
		qp := q.View(ctx, off*q.Nb(2), []int{a.headDim, a.heads, n}, []int{q.Nb(1), q.Nb(2)})
		kp := k.View(ctx, off*k.Nb(2), []int{a.headDim, a.kvHeads, n}, []int{k.Nb(1), k.Nb(2)})
		vp := v.View(ctx, off*v.Nb(1), []int{v.Ne(0), n}, []int{v.Nb(1)})
		c := p.Seq.cache
		keys, values := c.store(ctx, in.graph, l.index, kp, vp)
		zs = append(zs, attendCache(ctx, qp, keys, values, in.masks[i], a.scale, c.vTrans, attn))
	}
	if in.ghost {
		zs = append(zs, zs[0])
	}
	return a.Output.Forward(ctx, concatTree(ctx, zs))
}

// CopyPrefix makes the first n positions of s those of src (both sequences of the same model), so that sequences
// that share a prompt evaluate it once. Positions of s past n are dropped.
func (s *Sequence) CopyPrefix(src *Sequence, n int) error {
	m := s.m
	switch {
	case s == src:
		return errors.New("graph: copying a sequence onto itself")
	case src == nil || src.m != m || src.cache == nil || s.cache == nil:
		return errors.New("graph: copying a cache between sequences of different models")
	case n < 0 || n > src.cache.pos || n > s.cache.size:
		return fmt.Errorf("graph: copying %d positions: the source holds %d, the target fits %d", n, src.cache.pos, s.cache.size)
	}
	s.cache.pos = 0
	if n == 0 {
		return nil
	}
	ctx := s.ctx
	ctx.Reset()
	dst, from := s.cache, src.cache
	err := ggml.Catch(func() {
		ctx.InitGraph(&s.graph, graphSize)
		width := dst.headDim * dst.kvHeads
		for il := range dst.k {
			row := dst.k[il].Nb(1)
			s.graph.Build(from.k[il].View(ctx, 0, []int{width, n}, []int{row}).Copy(ctx, dst.k[il].View(ctx, 0, []int{width, n}, []int{row})))
			vrow := dst.v[il].Nb(1)
			if dst.vTrans {
				s.graph.Build(from.v[il].View(ctx, 0, []int{n, width}, []int{vrow}).Copy(ctx, dst.v[il].View(ctx, 0, []int{n, width}, []int{vrow})))
			} else {
				s.graph.Build(from.v[il].View(ctx, 0, []int{width, n}, []int{vrow}).Copy(ctx, dst.v[il].View(ctx, 0, []int{width, n}, []int{vrow})))
			}
		}
	})
	if err != nil {
		return fmt.Errorf("graph: building the cache copy: %w", err)
	}
	sched := m.runner.Sched
	sched.Reset()
	defer sched.Reset()
	if err := sched.Alloc(&s.graph); err != nil {
		return err
	}
	if err := sched.Compute(&s.graph); err != nil {
		return err
	}
	s.cache.pos = n
	return nil
}

// AvailableMemory is what a new allocation on the model's device may use now, in bytes (0: unknown).
func (m *Model) AvailableMemory() uint64 { return availableMemory(m.Device) }
