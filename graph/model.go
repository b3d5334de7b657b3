package graph

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"

	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/quant"
)

// graphSize bounds the nodes of one graph (the 8B decoder needs about 1,000 per 32 layers; the vision tower about
// 1,200 per 27 layers with exact GELU).
const graphSize = 16384

// MaxThreads bounds Options.Threads: ggml starts one OS thread per compute thread, and an absurd count would
// exhaust the machine rather than speed anything up.
const MaxThreads = 512

// Options control how a model pair is placed and computed.
type Options struct {
	Device  string // auto, cpu, cuda, metal, vulkan or a device name
	Threads int    // CPU threads; 0: physical cores
	// FlashAttn uses ggml's fused attention (F16 K/V) in the decoder; vision and perceiver keep the F32 path.
	FlashAttn bool
	// TableGELU uses ggml's fp16-table GELU in the vision tower instead of the exact tanh form (faster, ~1e-3
	// relative error). By default the table is used when the mmproj's weights are not F32 (general.file_type ≠ 0)
	// and the exact form when they are.
	TableGELU bool
	// ExactGELU forces the exact tanh GELU whatever the mmproj's type.
	ExactGELU bool
	// VisionFlashAttn uses ggml's fused attention (F16 K/V) in the vision tower and perceiver.
	VisionFlashAttn bool
	// UnfusedAttn keeps ggml's separate products and softmax on the CPU for the vision tower's and perceiver's
	// attention and for the decoder's attention while generating, instead of this project's fused kernels
	// (ggml.FusedAttention and ggml.DecodeAttention, used where the CPU has AVX-512). For comparisons.
	UnfusedAttn bool
	// KVType is the cache type; 0 means F32 for F32 text models and F16 otherwise.
	KVType ggml.Type
	// BatchSize is the number of prompt tokens per decoder graph (default 512).
	BatchSize int
	// NoRepack keeps every weight in the file's layout (used in place from the mapping) instead of reading
	// Q4_0/Q4_K/IQ4_NL matrices into the CPU's faster row-interleaved layout.
	NoRepack bool
}

// Model is a loaded Idefics2 GGUF pair (the mmproj is optional: without it the model is text-only).
type Model struct {
	Text      TextOptions
	Vision    VisionOptions
	Connector ConnectorOptions
	HasVision bool
	TextFile  *gguf.File
	MMProj    *gguf.File
	Device    ggml.Device

	runner  *ggml.Runner
	tw, vw  *Weights
	decoder *Decoder
	vision  *VisionModel
	conn    *Connector
	opts    Options
}

// Load opens the text GGUF at textPath and, unless mmprojPath is empty, the mmproj GGUF, checks that they belong
// together and places their weights on the chosen device.
func Load(textPath, mmprojPath string, o Options) (m *Model, err error) {
	if o.Threads <= 0 {
		o.Threads = ggml.DefaultThreads()
	}
	if o.Threads > MaxThreads {
		return nil, fmt.Errorf("graph: %d threads: at most %d are allowed (this machine has %d logical CPUs)", o.Threads, MaxThreads, runtime.NumCPU())
	}
	if o.BatchSize < 0 || o.BatchSize > 1<<16 {
		return nil, fmt.Errorf("graph: batch size %d: want 1…65536", o.BatchSize)
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 512
	}
	m = &Model{opts: o}
	defer func() {
		if err != nil {
			m.Close()
			m = nil
		}
	}()
	if m.TextFile, err = gguf.Open(textPath); err != nil {
		return nil, err
	}
	if m.Text, err = newTextOptions(m.TextFile); err != nil {
		return nil, err
	}
	if mmprojPath != "" {
		if m.MMProj, err = gguf.Open(mmprojPath); err != nil {
			return nil, err
		}
		if m.Vision, m.Connector, err = newVisionOptions(m.MMProj); err != nil {
			return nil, err
		}
		if m.Connector.TextHidden != m.Text.Hidden || m.Connector.ProjectionSize != m.Text.Hidden {
			return nil, fmt.Errorf("graph: %s projects to %d, but %s has hidden size %d: the files are not a pair",
				mmprojPath, m.Connector.TextHidden, textPath, m.Text.Hidden)
		}
		if m.Connector.ImageTokenID >= m.Text.VocabSize {
			return nil, fmt.Errorf("graph: %s: image token id %d is outside the vocabulary (%d) of %s",
				mmprojPath, m.Connector.ImageTokenID, m.Text.VocabSize, textPath)
		}
		m.HasVision = true
	}
	if m.Device, err = ggml.SelectDevice(o.Device); err != nil {
		return nil, err
	}
	if m.runner, err = ggml.NewRunner(m.Device, o.Threads, graphSize); err != nil {
		return nil, err
	}
	if m.tw, err = LoadWeights(m.TextFile, m.runner.Main, !o.NoRepack); err != nil {
		return nil, err
	}
	m.decoder = &Decoder{Layers: make([]DecoderLayer, m.Text.Layers), opts: m.Text, flash: o.FlashAttn,
		decAttn: m.Device.Kind == ggml.DeviceCPU && ggml.AttnFast() && !o.UnfusedAttn && !o.FlashAttn &&
			m.Text.HeadDim <= ggml.DecodeAttnMaxHead && m.Text.Heads/m.Text.KVHeads <= ggml.DecodeAttnMaxGroup}
	m.decoder.layerName(0)
	if err = m.tw.Bind("", m.decoder); err != nil {
		return nil, err
	}
	m.decoder.Output.Tail = m.tw.Tail("output.weight")
	sc := &shapeCheck{path: textPath}
	m.decoder.check(sc)
	if err = sc.err(); err != nil {
		return nil, err
	}
	if u := m.tw.Unused(); len(u) > 0 {
		return nil, fmt.Errorf("graph: %s: %d tensors the model does not use: %s", textPath, len(u), first(u))
	}
	if m.HasVision {
		if m.vw, err = LoadWeights(m.MMProj, m.runner.Main, !o.NoRepack); err != nil {
			return nil, err
		}
		// The exact tanh GELU costs several element-wise passes per layer; it matters only where the weights are
		// exact too. With reduced-precision vision weights (F16 by default) ggml's fp16-table GELU (~1e-3
		// relative) is well inside their error and about a third faster on the vision tower.
		exact := !o.TableGELU
		if ft, err := m.MMProj.Metadata.Int("general.file_type"); err == nil && ft != 0 && !o.ExactGELU {
			exact = false
		}
		pad := m.Device.Kind == ggml.DeviceCPU
		fused := pad && ggml.AttnFast() && !o.UnfusedAttn && !o.VisionFlashAttn
		m.vision = &VisionModel{Layers: make([]VisionLayer, m.Vision.Layers), opts: m.Vision, exactGELU: exact, flashAttn: o.VisionFlashAttn, padGEMM: pad, fusedAttn: fused}
		m.conn = &Connector{opts: m.Connector, visHidden: m.Vision.Hidden, flashAttn: o.VisionFlashAttn, padGEMM: pad, fusedAttn: fused}
		m.conn.Perceiver.Layers = make([]PerceiverLayer, m.Connector.Depth)
		if err = m.vw.Bind("v", m.vision); err != nil {
			return nil, err
		}
		if err = m.vw.Bind("mm", m.conn); err != nil {
			return nil, err
		}
		sc := &shapeCheck{path: mmprojPath}
		m.vision.check(sc)
		m.conn.check(sc)
		if err = sc.err(); err != nil {
			return nil, err
		}
		if u := m.vw.Unused(); len(u) > 0 {
			return nil, fmt.Errorf("graph: %s: %d tensors the model does not use: %s", mmprojPath, len(u), first(u))
		}
	}
	return m, nil
}

func first(names []string) string {
	if len(names) > 5 {
		return strings.Join(names[:5], ", ") + ", …"
	}
	return strings.Join(names, ", ")
}

// Close frees everything. Idempotent.
func (m *Model) Close() {
	if m == nil {
		return
	}
	m.tw.Close()
	m.vw.Close()
	m.runner.Close()
	if m.TextFile != nil {
		m.TextFile.Close()
	}
	if m.MMProj != nil {
		m.MMProj.Close()
	}
	m.tw, m.vw, m.runner = nil, nil, nil
}

// StepWeights returns the memory of the weights one decoding step reads in full (every decoder matrix and norm and
// the output projection; of the token embeddings a step reads one row), as stored, and ok false when some of them
// are not in CPU memory. Reading them once (ggml.StreamRead) times the memory's lower bound on a step: the limit
// generation speed is judged against. The slices are valid until Close.
func (m *Model) StepWeights() (regions [][]byte, ok bool) {
	for _, t := range m.decoder.stepWeights() {
		if t.IsNil() {
			continue
		}
		b, ok := t.StorageBytes()
		if !ok {
			return nil, false
		}
		regions = append(regions, b)
	}
	return regions, true
}

// TextParams counts the text model's parameters: its tensors' elements, with NF4 tensors (stored as I8 block
// streams) counted by their logical shapes.
func (m *Model) TextParams() int64 {
	layouts, _ := nf4Layouts(m.TextFile) // a file whose layouts are bad does not load
	var n int64
	for _, ti := range m.TextFile.Tensors {
		if info, ok := layouts[ti.Name]; ok {
			e := int64(1)
			for _, d := range info.shape {
				e *= int64(d)
			}
			n += e
			continue
		}
		n += int64(ti.NumElements())
	}
	return n
}

// StepFileBytes is the size in the text file of the weights one decoding step reads in full (those of StepWeights):
// every tensor but the token embeddings, or every tensor when the embeddings are the output projection.
func (m *Model) StepFileBytes() int64 {
	tied := m.decoder.Output.Weight.IsNil()
	var n int64
	for _, ti := range m.TextFile.Tensors {
		if ti.Name != "token_embd.weight" || tied {
			n += int64(ti.Size())
		}
	}
	return n
}

// SetThreads changes the number of CPU threads.
func (m *Model) SetThreads(n int) { m.runner.SetThreads(n) }

// ImageFeatures are the outputs of encoding one (sub-)image.
type ImageFeatures struct {
	Rows, Cols int       // real patch grid
	Vision     []float32 // post-layernorm vision states, [rows·cols][visionHidden] (only with keepIntermediate)
	Projection []float32 // modality projection output, [rows·cols][textHidden] (only with keepIntermediate)
	Embeddings []float32 // perceiver output: [imageSeqLen][textHidden], the rows that replace <image> tokens
}

// ImageInput is one preprocessed (sub-)image as the image processor returns it: normalized values, channels
// first ([3][H][W]), zero-padded at the bottom and right to the batch's H×W; RealH×RealW is its own region.
type ImageInput struct {
	Pixels       []float32
	H, W         int
	RealH, RealW int
}

// PatchGrid is the patch grid the model uses for an image: HF marks a patch real when any of its pixels is real
// (Idefics2VisionTransformer: patches_subgrid.sum() > 0) and the valid convolution only sees whole patches of the
// padded image, so rows = min(⌈RealH/p⌉, ⌊H/p⌋) and likewise for columns. Padded pixels inside the last
// row/column of patches are zeros, as in HF.
func (in ImageInput) PatchGrid(p int) (rows, cols int) {
	return min((in.RealH+p-1)/p, in.H/p), min((in.RealW+p-1)/p, in.W/p)
}

// EncodeImage runs the vision tower and the connector on one preprocessed (sub-)image. Running each image alone on
// its patch grid gives HF's padded-batch result, because padded patches are masked out of every attention
// (IDEFICS2.md §5.9).
func (m *Model) EncodeImage(in ImageInput, keepIntermediate bool) (*ImageFeatures, error) {
	if !m.HasVision {
		return nil, errors.New("graph: the model has no mmproj (vision) file")
	}
	p := m.Vision.Patch
	h, w := in.H, in.W
	if h <= 0 || w <= 0 || len(in.Pixels) != 3*h*w || in.RealH <= 0 || in.RealW <= 0 || in.RealH > h || in.RealW > w {
		return nil, fmt.Errorf("graph: image of %d×%d (real %d×%d) with %d values, want %d", w, h, in.RealW, in.RealH, len(in.Pixels), 3*h*w)
	}
	rows, cols := in.PatchGrid(p)
	if rows == 0 || cols == 0 {
		return nil, fmt.Errorf("graph: image of %d×%d is smaller than one %d×%d patch", w, h, p, p)
	}
	if err := checkMemory(m.Device, fmt.Sprintf("encoding a %d×%d-patch image", cols, rows),
		imageScratchBytes(m.Vision, m.Connector, rows*cols)); err != nil {
		return nil, err
	}
	H, W := rows*p, cols*p
	crop := make([]float32, 3*H*W)
	for c := 0; c < 3; c++ {
		for y := 0; y < H; y++ {
			dst := crop[(c*H+y)*W:][:W]
			if y < in.RealH {
				copy(dst[:min(W, in.RealW)], in.Pixels[(c*h+y)*w:][:min(W, in.RealW)])
			}
		}
	}
	ids := PositionIDs(rows, cols, m.Vision.PosSide)

	ctx := ggml.NewContext(graphSize, graphSize)
	defer ctx.Close()
	var pix, pos, vis, proj, out ggml.Tensor
	var g *ggml.Graph
	err := ggml.Catch(func() {
		pix = ctx.NewTensor(ggml.TypeF32, W, H, 3, 1).SetName("inp.pixels").SetInput()
		pos = ctx.NewTensor(ggml.TypeI32, rows*cols).SetName("inp.positions").SetInput()
		vis = m.vision.Forward(ctx, pix, pos)
		proj = m.conn.Project(ctx, vis)
		out = m.conn.Resample(ctx, proj).SetOutput()
		g = ctx.NewGraph(graphSize)
		if keepIntermediate {
			vis.SetOutput()
			proj.SetOutput()
			g.Build(vis)
			g.Build(proj)
		}
		g.Build(out)
	})
	if err != nil {
		return nil, fmt.Errorf("graph: building the vision graph: %w", err)
	}
	f := &ImageFeatures{Rows: rows, Cols: cols}
	err = m.runner.Run(g, func() error {
		if err := pix.SetFloat32(crop); err != nil {
			return err
		}
		return pos.SetInt32(ids)
	}, func() error {
		var err error
		if f.Embeddings, err = out.Float32s(); err != nil {
			return err
		}
		if keepIntermediate {
			if f.Vision, err = vis.Float32s(); err != nil {
				return err
			}
			f.Projection, err = proj.Float32s()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// Session is one conversation's decoding state: a KV cache and the number of positions filled.
type Session struct {
	m     *Model
	cache *KVCache
	nPast int
	// Scratch reused across steps so that a decode step allocates no Go memory.
	pos    []int32
	mask   []float32
	mask16 []byte
	logits []float32
	ctx    *ggml.Context // graph metadata, reset for every step
	graph  ggml.Graph
}

// NewSession allocates a KV cache for ctxSize positions (at most the model's context length).
func (m *Model) NewSession(ctxSize int) (*Session, error) {
	if ctxSize <= 0 || ctxSize > m.Text.ContextLength {
		return nil, fmt.Errorf("graph: context size %d is outside 1…%d", ctxSize, m.Text.ContextLength)
	}
	typ := m.opts.KVType
	if typ == 0 {
		typ = ggml.TypeF16
		if ft, err := m.TextFile.Metadata.Int("general.file_type"); err == nil && ft == 0 {
			typ = ggml.TypeF32
		}
	}
	if m.opts.FlashAttn {
		typ = ggml.TypeF16
	}
	kvBytes := uint64(2*m.Text.Layers) * uint64(m.Text.HeadDim*m.Text.KVHeads) * uint64(ctxSize) * uint64(typ.TypeSize())
	scratch := decodeScratchBytes(m.Text, min(m.opts.BatchSize, ctxSize), ctxSize)
	if err := checkMemory(m.Device, fmt.Sprintf("a context of %d positions (KV cache %d MiB + compute %d MiB)",
		ctxSize, kvBytes>>20, scratch>>20), kvBytes+scratch); err != nil {
		return nil, err
	}
	// The transposed V layout serves the plain attention path on the CPU (flash attention reads V by rows).
	vTrans := !m.opts.FlashAttn && m.Device.Kind == ggml.DeviceCPU
	c, err := newKVCache(m.runner.Main, m.Text.Layers, m.Text.HeadDim*m.Text.KVHeads, ctxSize, typ, vTrans)
	if err != nil {
		return nil, err
	}
	return &Session{m: m, cache: c, ctx: ggml.NewContext(graphSize, graphSize)}, nil
}

// Close frees the session's cache. Idempotent.
func (s *Session) Close() {
	if s != nil {
		s.cache.Close()
		s.ctx.Close()
	}
}

// Pos is the number of positions already in the cache.
func (s *Session) Pos() int { return s.nPast }

// Size is the cache capacity in positions.
func (s *Session) Size() int { return s.cache.Size }

// Reset empties the cache (for a new conversation).
func (s *Session) Reset() { s.nPast = 0 }

// Truncate drops cached positions from n on.
func (s *Session) Truncate(n int) {
	if n >= 0 && n < s.nPast {
		s.nPast = n
	}
}

// Eval appends tokens to the session and returns logits: [vocab] for the last token, or [len(tokens)][vocab] when
// allLogits. images are the connector outputs ([k·imageSeqLen][textHidden] flattened, in order) that replace the
// embeddings of the image tokens among tokens; nil leaves image tokens with their own embedding. Prompts longer
// than the batch size are evaluated in chunks. The slice returned for the last token alone is the session's scratch
// buffer, overwritten by the next Eval (so a decode step allocates no Go memory); copy it to keep it.
func (s *Session) Eval(tokens []int32, images []float32, allLogits bool) ([]float32, error) {
	m := s.m
	if len(tokens) == 0 {
		return nil, errors.New("graph: no tokens to evaluate")
	}
	if s.nPast+len(tokens) > s.cache.Size {
		return nil, fmt.Errorf("graph: %d tokens after %d cached exceed the context size %d", len(tokens), s.nPast, s.cache.Size)
	}
	hidden := m.Text.Hidden
	nImg := 0
	if images != nil {
		if !m.HasVision {
			return nil, errors.New("graph: image features given to a text-only model")
		}
		for _, t := range tokens {
			if int(t) == m.Connector.ImageTokenID {
				nImg++
			}
		}
		if len(images) != nImg*hidden {
			return nil, fmt.Errorf("graph: %d image tokens in the prompt but %d image feature rows", nImg, len(images)/hidden)
		}
	}
	for _, t := range tokens {
		if t < 0 || int(t) >= m.Text.VocabSize {
			return nil, fmt.Errorf("graph: token id %d is outside the vocabulary (%d)", t, m.Text.VocabSize)
		}
	}
	var all []float32
	imgUsed := 0
	for start := 0; start < len(tokens); start += m.opts.BatchSize {
		end := min(start+m.opts.BatchSize, len(tokens))
		chunk := tokens[start:end]
		var rows []float32
		var sel []int32
		if images != nil {
			for i, t := range chunk {
				if int(t) == m.Connector.ImageTokenID {
					sel = append(sel, int32(len(chunk)+len(rows)/hidden))
					rows = append(rows, images[imgUsed*hidden:(imgUsed+1)*hidden]...)
					imgUsed++
				} else {
					sel = append(sel, int32(i))
				}
			}
			if len(rows) == 0 {
				sel = nil
			}
		}
		last := end == len(tokens)
		logits, err := s.eval(chunk, rows, sel, allLogits || !last)
		if err != nil {
			return nil, err
		}
		if allLogits {
			all = append(all, logits...)
		} else if last {
			all = logits
		}
	}
	return all, nil
}

// eval runs one decoder graph over chunk; wantAll asks for logits of every position (otherwise the last only).
// The returned slice is the session's scratch, valid until the next call.
func (s *Session) eval(chunk []int32, imgRows []float32, sel []int32, wantAll bool) ([]float32, error) {
	m := s.m
	n := len(chunk)
	nKV := s.nPast + n
	ctx := s.ctx
	ctx.Reset()
	var in decodeInputs
	var logits ggml.Tensor
	g := &s.graph
	flash := m.opts.FlashAttn
	err := ggml.Catch(func() {
		in.ids = ctx.NewTensor(ggml.TypeI32, n).SetInput()
		in.pos = ctx.NewTensor(ggml.TypeI32, n).SetInput()
		if flash {
			in.mask = ctx.NewTensor(ggml.TypeF16, nKV, n).SetInput()
		} else {
			in.mask = ctx.NewTensor(ggml.TypeF32, nKV, n).SetInput()
		}
		if len(imgRows) > 0 {
			in.images = ctx.NewTensor(ggml.TypeF32, m.Text.Hidden, len(imgRows)/m.Text.Hidden).SetInput()
			in.selector = ctx.NewTensor(ggml.TypeI32, n).SetInput()
		}
		ctx.InitGraph(g, graphSize)
		logits = m.decoder.Forward(ctx, g, in, s.cache, s.nPast, !wantAll).SetOutput()
		g.Build(logits)
	})
	if err != nil {
		return nil, fmt.Errorf("graph: building the decoder graph: %w", err)
	}
	s.pos = grow(s.pos, n)
	for i := range s.pos {
		s.pos[i] = int32(s.nPast + i)
	}
	s.mask = causalMask(s.mask, s.nPast, n, m.Text.SlidingWindow)
	sched := m.runner.Sched
	sched.Reset()
	defer sched.Reset()
	if err := sched.Alloc(g); err != nil {
		return nil, err
	}
	if err := in.ids.SetInt32(chunk); err != nil {
		return nil, err
	}
	if err := in.pos.SetInt32(s.pos); err != nil {
		return nil, err
	}
	if flash {
		s.mask16 = f16Bytes(s.mask16, s.mask)
		err = in.mask.SetBytes(s.mask16)
	} else {
		err = in.mask.SetFloat32(s.mask)
	}
	if err != nil {
		return nil, err
	}
	if !in.images.IsNil() {
		if err := in.images.SetFloat32(imgRows); err != nil {
			return nil, err
		}
		if err := in.selector.SetInt32(sel); err != nil {
			return nil, err
		}
	}
	if err := sched.Compute(g); err != nil {
		return nil, err
	}
	s.logits = grow(s.logits, logits.NumElements())
	if err := logits.ReadFloat32(s.logits); err != nil {
		return nil, err
	}
	s.nPast += n
	return s.logits, nil
}

// grow returns b resized to n, reallocating (with room to spare) only when its capacity is too small.
func grow[T any](b []T, n int) []T {
	if cap(b) < n {
		return make([]T, n, max(n, 2*cap(b)))
	}
	return b[:n]
}

// causalMask is the additive mask [n queries][nPast+n keys]: query i (at position nPast+i) sees key j iff
// j ≤ nPast+i and, with a sliding window W > 0, j > nPast+i−W (MistralAttention's sliding-window causal mask).
func causalMask(buf []float32, nPast, n, window int) []float32 {
	nKV := nPast + n
	mask := grow(buf, n*nKV)
	ninf := float32(math.Inf(-1))
	for i := 0; i < n; i++ {
		p := nPast + i
		for j := 0; j < nKV; j++ {
			if j > p || (window > 0 && j <= p-window) {
				mask[i*nKV+j] = ninf
			} else {
				mask[i*nKV+j] = 0
			}
		}
	}
	return mask
}

// f16Bytes encodes float32 values (0 and −Inf in masks) as IEEE half into buf's memory.
func f16Bytes(buf []byte, v []float32) []byte {
	b := grow(buf, 2*len(v))
	if err := quant.F32ToF16Slice(b, v); err != nil {
		panic(err) // lengths are equal by construction
	}
	return b
}

// RunPerceiver runs the perceiver resampler alone on a context of n patch rows ([n][textHidden], e.g. a modality
// projection output) and returns the [latents][textHidden] features. Used by benchmarks and checks.
func (m *Model) RunPerceiver(context []float32, n int) ([]float32, error) {
	if !m.HasVision {
		return nil, errors.New("graph: the model has no mmproj (vision) file")
	}
	th := m.Connector.TextHidden
	if n <= 0 || len(context) != n*th {
		return nil, fmt.Errorf("graph: perceiver context of %d values, want %d×%d", len(context), n, th)
	}
	ctx := ggml.NewContext(graphSize, graphSize)
	defer ctx.Close()
	var in, out ggml.Tensor
	var g *ggml.Graph
	if err := ggml.Catch(func() {
		in = ctx.NewTensor(ggml.TypeF32, th, n).SetName("inp.context").SetInput()
		out = m.conn.Resample(ctx, in).SetOutput()
		g = ctx.NewGraph(graphSize)
		g.Build(out)
	}); err != nil {
		return nil, fmt.Errorf("graph: building the perceiver graph: %w", err)
	}
	var res []float32
	err := m.runner.Run(g, func() error { return in.SetFloat32(context) }, func() error {
		var err error
		res, err = out.Float32s()
		return err
	})
	return res, err
}
