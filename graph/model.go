package graph

import (
	"fmt"

	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/gguf"
)

// graphSize bounds the nodes of one graph (the 8B decoder needs about 1,000 per 32 layers; the vision tower about
// 1,200 per 27 layers with exact GELU).
const graphSize = 16384

// Model is a loaded Idefics2 GGUF pair (the mmproj is optional: without it the model is text-only).
type Model struct {
	Text      TextOptions
	Vision    VisionOptions
	Connector ConnectorOptions
	HasVision bool
	TextFile  *gguf.File
	MMProj    *gguf.File
	Device    ggml.Device
	// Target is the device as the placement plan saw it.
	Target Target

	runner  *ggml.Runner
	tw, vw  *Weights
	decoder *Decoder
	vision  *VisionModel
	conn    *Connector
	opts    Options

	textAdapters, visionAdapters []*adapterWeights
}

// Load opens the text GGUF at textPath and, unless mmprojPath is empty, the mmproj GGUF, checks that they belong
// together and places their weights on the chosen device. Errors about the files' content match FileError (and
// ErrNotPair, ErrFileKind or *WeightError where they apply); a device that cannot be had is a *DeviceError.
func Load(textPath, mmprojPath string, o Options) (m *Model, err error) {
	if o, err = o.withDefaults(); err != nil {
		return nil, err
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
		if err = checkPair(m.TextFile, m.Text, m.MMProj, m.Connector); err != nil {
			return nil, err
		}
		m.HasVision = true
	}
	if m.Device, err = ggml.SelectDevice(o.Device); err != nil {
		return nil, &DeviceError{Choice: o.Device, Err: err}
	}
	if m.runner, err = ggml.NewRunner(m.Device, o.Threads, graphSize); err != nil {
		return nil, err
	}
	m.Target = targetOf(m.runner.Main)
	if m.tw, err = LoadWeights(m.TextFile, m.runner.Main, m.Target, o.Layouts); err != nil {
		return nil, err
	}
	if err = m.loadAdapters(o); err != nil {
		return nil, err
	}
	b := newBinder(m.tw, "")
	b.adapters = m.textAdapters
	m.decoder = bindDecoder(b, m.Text, m.decodeAttn())
	if err = firstErr(b.err(), m.tw.checkUnused(), adaptersUnused(m.textAdapters)); err != nil || !m.HasVision {
		return m, err
	}
	if m.vw, err = LoadWeights(m.MMProj, m.runner.Main, m.Target, o.Layouts); err != nil {
		return nil, err
	}
	kern := m.visionAttn()
	b = newBinder(m.vw, "")
	b.adapters = m.visionAdapters
	m.vision = bindVision(b.at("v"), m.Vision, m.gelu(), kern)
	m.conn = bindConnector(b.at("mm"), m.Connector, m.Vision.Hidden, kern)
	return m, firstErr(b.err(), m.vw.checkUnused(), adaptersUnused(m.visionAdapters))
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// targetOf describes backend b for the placement plan.
func targetOf(b *ggml.Backend) Target {
	if b.Device.Kind != ggml.DeviceCPU {
		return Target{}
	}
	t := Target{CPU: true}
	// ggml repacks Q4_0, Q4_K and IQ4_NL for AVX2 and, on AArch64, for its dot-product variants (rows in groups of 4
	// or 8 there; the plan's groups of 8 fit both).
	if f := b.Device.Features; len(b.ExtraBufferTypes()) > 0 && (f["AVX2"] == "1" || f["DOTPROD"] == "1") {
		t.Caps |= CapGGMLRepack
	}
	if ggml.Q4X16Fast() {
		t.Caps |= CapX16VNNI
	}
	if isa := ggml.Q4X16BestISA(); isa == ggml.Q4X16AVX2 || isa == ggml.Q4X16AVX2VNNI || isa == ggml.Q4X16AVX512VNNI {
		t.Caps |= CapX16AVX2
	}
	if isa := ggml.Q4X16BestISA(); isa == ggml.Q4X16NEONDotProd || isa == ggml.Q4X16NEONI8MM {
		t.Caps |= CapX16NEON
	}
	if ggml.NF4x16Fast() {
		t.Caps |= CapNF4X16
	}
	if ggml.NF4x16NEON() {
		t.Caps |= CapNF4X16NEON
	}
	if ggml.AttnFast() {
		t.Caps |= CapFusedAttn
	}
	return t
}

// checkPair refuses an mmproj that does not belong to the text model: the connector must project to the text
// model's width, and its image token must be the text vocabulary's `<image>`.
func checkPair(tf *gguf.File, t TextOptions, mf *gguf.File, c ConnectorOptions) error {
	if c.TextHidden != t.Hidden || c.ProjectionSize != t.Hidden {
		return fileErrorf(mf.Path, ErrNotPair, "projects to %d, but %s has hidden size %d", c.TextHidden, tf.Path, t.Hidden)
	}
	if c.ImageTokenID >= t.VocabSize {
		return fileErrorf(mf.Path, ErrNotPair, "image token id %d is outside the vocabulary (%d) of %s", c.ImageTokenID, t.VocabSize, tf.Path)
	}
	if toks, err := tf.Metadata.Array("tokenizer.ggml.tokens"); err == nil {
		if s, ok := toks.Data.([]string); ok && c.ImageTokenID < len(s) && s[c.ImageTokenID] != "<image>" {
			return fileErrorf(mf.Path, ErrNotPair, "image token id %d is %q in %s, not \"<image>\"", c.ImageTokenID, s[c.ImageTokenID], tf.Path)
		}
	}
	return nil
}

// decodeAttn resolves the decoder's attention option for the device.
func (m *Model) decodeAttn() decodeAttn {
	a := decodeAttn{flash: m.opts.TextAttn == AttnFlash, scoreBytes: m.opts.scoreBytes}
	t := m.Text
	a.fused = m.opts.TextAttn == AttnAuto && m.Target.Caps&CapFusedAttn != 0 &&
		t.HeadDim <= ggml.DecodeAttnMaxHead && t.Heads/t.KVHeads <= ggml.DecodeAttnMaxGroup
	return a
}

// visionAttn resolves the vision tower's and perceiver's attention option for the device.
func (m *Model) visionAttn() attnKernel {
	k := attnKernel{flash: m.opts.VisionAttn == AttnFlash, padGEMM: m.Target.CPU, scoreBytes: m.opts.scoreBytes}
	k.fused = m.Target.CPU && m.opts.VisionAttn == AttnAuto && m.Target.Caps&CapFusedAttn != 0
	return k
}

// gelu resolves GELUAuto from the mmproj's file type.
func (m *Model) gelu() GELU {
	if m.opts.GELU != GELUAuto {
		return m.opts.GELU
	}
	if ft, err := m.MMProj.Metadata.Int("general.file_type"); err == nil && ft != 0 {
		return GELUTable
	}
	return GELUExact
}

// Close frees everything. Idempotent.
func (m *Model) Close() {
	if m == nil {
		return
	}
	for _, a := range append(m.textAdapters, m.visionAdapters...) {
		a.close()
	}
	m.textAdapters, m.visionAdapters = nil, nil
	m.tw.Close()
	m.vw.Close()
	m.runner.Close()
	if m.TextFile != nil {
		m.TextFile.Close()
	}
	if m.MMProj != nil {
		m.MMProj.Close()
	}
	m.tw, m.vw, m.runner, m.TextFile, m.MMProj = nil, nil, nil, nil, nil
}

// Options are the options the model was loaded with, defaults filled in.
func (m *Model) Options() Options { return m.opts }

// Plans are the placement plans of the text model and (with vision) the mmproj.
func (m *Model) Plans() (text, mmproj *Plan) {
	if m.vw != nil {
		mmproj = m.vw.plan
	}
	return m.tw.plan, mmproj
}

// PlacementReport describes where the weights went: the device and its capabilities, then per file a summary
// line and one line per weight (layout, kernel, stored type, shape, split tail, stacked group).
func (m *Model) PlacementReport() []string {
	out := []string{fmt.Sprintf("device %s %s, capabilities %s, layouts %s", m.Device.Name, m.Device.Variant, m.Target.Caps, m.opts.Layouts)}
	for _, w := range []*Weights{m.tw, m.vw} {
		if w != nil {
			out = append(out, w.file.Path+": "+w.plan.Summary())
			out = append(out, w.plan.Lines()...)
		}
	}
	return append(out, m.AdapterReport()...)
}

// SetThreads changes the number of CPU threads.
func (m *Model) SetThreads(n int) { m.runner.SetThreads(n) }

// Threads is the number of CPU threads of the model's runner.
func (m *Model) Threads() int { return m.runner.Threads() }

// NewImageRunner opens a second runner on the model's device with threads CPU threads, for image jobs
// (ImageJob.SetRunner) computed while the model's runner computes decoder steps: the weights are shared, each
// runner has its own backend and compute memory. The caller closes it.
func (m *Model) NewImageRunner(threads int) (*ggml.Runner, error) {
	return ggml.NewRunner(m.Device, threads, graphSize)
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
	var n int64
	for _, pl := range m.tw.plan.Weights {
		e := int64(1)
		for _, d := range pl.Shape {
			e *= int64(d)
		}
		n += e
	}
	return n
}

// StepFileBytes is the size in the text file of the weights one decoding step reads in full (those of StepWeights):
// every tensor but the token embeddings, or every tensor when the embeddings are the output projection, plus the
// text adapters in force.
func (m *Model) StepFileBytes() int64 {
	tied := m.decoder.Output.Weight.IsNil()
	var n int64
	for _, ti := range m.TextFile.Tensors {
		if ti.Name != "token_embd.weight" || tied {
			n += int64(ti.Size())
		}
	}
	for _, a := range m.textAdapters {
		if a.scale != 0 {
			for _, ti := range a.file.Tensors {
				n += int64(ti.Size())
			}
		}
	}
	return n
}

// DeviceError is a device choice that cannot be honoured (unknown, absent, or failing to start).
type DeviceError struct {
	Choice string
	Err    error
}

func (e *DeviceError) Error() string { return fmt.Sprintf("graph: --device %s: %v", e.Choice, e.Err) }
func (e *DeviceError) Unwrap() error { return e.Err }
