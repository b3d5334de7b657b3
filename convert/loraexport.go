package convert

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/quant"
	"github.com/idefics2-go/idefics2/safetensors"
)

// A run-time adapter is written in llama.cpp's LoRA adapter layout (llama-adapter.cpp,
// convert_lora_to_gguf.py): general.type "adapter", adapter.type "lora", adapter.lora.alpha,
// and for every adapted weight "<name>.weight" the tensors "<name>.weight.lora_a" (ne [in, r]:
// PEFT's lora_A [r, in] as it is) and "<name>.weight.lora_b" (ne [r, out]: lora_B [out, r]),
// so that W·x + s·B·(A·x) with s = scale × alpha / r (r = lora_b's ne[0]).
//
// llama.cpp has one alpha per file, while PEFT's scale varies per module (rank_pattern,
// alpha_pattern, rsLoRA's alpha/√r) and the user may scale the adapter: each B is multiplied by
// its module's whole scale s_module and adapter.lora.alpha is 0, for which llama.cpp applies the
// run-time scale alone (llama_adapter_lora_weight::get_scale). The PEFT alpha stays on record in
// idefics2.adapters.alphas. With the scale inside B, a layer computes W·x + B·(A·x) at run-time
// scale 1: no scaling op per layer. Q and K rows of B are permuted as the base's are
// (permuteRows). A modules_to_save copy W' of a linear weight becomes an exact pair of rank in:
// A = I, B = W' − W.
//
// The text part (architecture "llama") goes to Out, the vision, connector and perceiver part
// (architecture "clip") to MMProjOut, written only when the adapter touches them.

// AdapterOptions configures an adapter export.
type AdapterOptions struct {
	InDir     string   // the base checkpoint folder
	Adapter   LoRASpec // the PEFT adapter folder
	Out       string   // adapter.gguf
	MMProjOut string   // the vision part; "" means "mmproj-<base name of Out>" next to Out
	Force     bool
	Logger    *slog.Logger
}

// adapterTensor is one tensor of an adapter GGUF.
type adapterTensor struct {
	name  string   // GGUF name
	shape []uint64 // ggml order
	vals  func() ([]float32, error)
}

// AdapterPlan is a validated adapter export.
type AdapterPlan struct {
	Adapter *Adapter
	Text    OutputPlan
	MMProj  OutputPlan // no tensors when the adapter leaves the vision side alone

	text, mmproj []adapterTensor
	ckpt         *safetensors.Checkpoint
	force        bool
}

// NewAdapterPlan reads the base checkpoint's config and headers and the adapter, and decides
// every output tensor. It writes nothing.
func NewAdapterPlan(opts AdapterOptions) (*AdapterPlan, error) {
	if opts.InDir == "" {
		return nil, inputErrorf("convert: no input folder (the adapter's base checkpoint)")
	}
	if opts.Out == "" {
		return nil, inputErrorf("convert: no output path")
	}
	if _, err := os.Stat(filepath.Join(opts.InDir, configFile)); errors.Is(err, os.ErrNotExist) && isAdapterFolder(opts.InDir) {
		return nil, inputErrorf("convert: %s: a PEFT adapter folder (%s), not a checkpoint: pass the base checkpoint with --in", opts.InDir, adapterConfigFile)
	}
	mmPath := opts.MMProjOut
	if mmPath == "" {
		mmPath = DefaultMMProjPath(opts.Out)
	}
	if filepath.Clean(mmPath) == filepath.Clean(opts.Out) {
		return nil, inputErrorf("convert: adapter and mmproj adapter outputs are the same file %s", opts.Out)
	}
	h, err := parseConfig(opts.InDir)
	if err != nil {
		return nil, err
	}
	adapters, err := openAdapters([]LoRASpec{opts.Adapter}, h)
	if err != nil {
		return nil, err
	}
	// The base's weights are read only for modules_to_save copies (ΔW = W' − W); names and shapes come from
	// config.json.
	var ckpt *safetensors.Checkpoint
	if len(adapters[0].saved) > 0 {
		if ckpt, err = safetensors.OpenCheckpoint(opts.InDir); err != nil {
			adapters[0].Close()
			return nil, asInput(fmt.Errorf("convert: %w", err))
		}
	}
	p := &AdapterPlan{Adapter: adapters[0], ckpt: ckpt, force: opts.Force,
		Text: OutputPlan{Path: opts.Out, FileType: gguf.FileTypeF32}, MMProj: OutputPlan{Path: mmPath, FileType: gguf.FileTypeF32}}
	if err := p.planTensors(h); err != nil {
		p.Close()
		return nil, err
	}
	if err := p.planMetadata(h); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Close releases the checkpoint and the adapter. It is idempotent.
func (p *AdapterPlan) Close() error {
	err := p.Adapter.Close()
	if p.ckpt != nil {
		err = errors.Join(err, p.ckpt.Close())
		p.ckpt = nil
	}
	return err
}

// HasMMProj reports whether the adapter has a vision part.
func (p *AdapterPlan) HasMMProj() bool { return len(p.mmproj) > 0 }

func (p *AdapterPlan) planTensors(h *hparams) error {
	a := p.Adapter
	done := 0
	for _, m := range expandTable(h) {
		d, saved := a.deltas[m.hf], a.saved[m.hf]
		if d == nil && saved == "" {
			continue
		}
		permute := 0
		if m.rule.permuteHeads != nil {
			permute = m.rule.permuteHeads(h)
		}
		var pair []adapterTensor
		if d != nil {
			pair = p.loraPair(m.gguf, d, permute)
		} else {
			var err error
			if pair, err = p.replacementPair(m, saved, permute); err != nil {
				return err
			}
		}
		if m.rule.out == outModel {
			p.text = append(p.text, pair...)
		} else {
			p.mmproj = append(p.mmproj, pair...)
		}
		done++
	}
	if n := len(a.deltas) + len(a.saved); done != n {
		// Only a tied lm_head is outside expandTable's list.
		return inputErrorf("convert: %s: lm_head is tied to embed_tokens (%s tie_word_embeddings): its modules_to_save copy cannot be applied at run time; merge the adapter with --lora",
			a.Name, configFile)
	}
	for _, o := range []struct {
		plan *OutputPlan
		ts   []adapterTensor
	}{{&p.Text, p.text}, {&p.MMProj, p.mmproj}} {
		for _, t := range o.ts {
			if len(t.name) > gguf.MaxNameLen {
				return inputErrorf("convert: tensor %q: GGUF name longer than %d bytes", t.name, gguf.MaxNameLen)
			}
			n := uint64(4)
			for _, d := range t.shape {
				n *= d
			}
			o.plan.Tensors = append(o.plan.Tensors, TensorPlan{Name: t.name, Shape: t.shape, Type: quant.F32, Bytes: n})
		}
	}
	return nil
}

// loraPair returns the lora_a and lora_b tensors of one module: A as PEFT stores it, B scaled
// to llama.cpp's alpha/r convention and row-permuted like the base.
func (p *AdapterPlan) loraPair(name string, d *loraDelta, permute int) []adapterTensor {
	fold := d.scale // adapter.lora.alpha is 0: the pair carries its whole scale
	return []adapterTensor{
		{name: name + ".lora_a", shape: []uint64{uint64(d.in), uint64(d.rank)}, vals: func() ([]float32, error) { return d.a, nil }},
		{name: name + ".lora_b", shape: []uint64{uint64(d.rank), uint64(d.out)}, vals: func() ([]float32, error) {
			b := make([]float32, len(d.b))
			for i, v := range d.b {
				b[i] = float32(float64(v) * fold)
			}
			if permute > 0 {
				b = permuteRows(b, d.rank, d.out/permute)
			}
			return b, nil
		}},
	}
}

// replacementPair turns a modules_to_save copy of a linear weight into an exact LoRA pair.
func (p *AdapterPlan) replacementPair(m mappedTensor, key string, permute int) ([]adapterTensor, error) {
	a := p.Adapter
	dt, sh, _ := a.file.Info(key)
	if len(sh) != 2 || m.rule.class == classF32 || strings.HasSuffix(m.gguf, "token_embd.weight") {
		return nil, inputErrorf("convert: %s: tensor %q (%s): a modules_to_save copy of %s cannot be applied at run time (only linear weights can); merge the adapter with --lora",
			a.Name, key, dt, m.gguf)
	}
	out, in := int(sh[0]), int(sh[1])
	fold := 1.0 // W + I·(W' − W) = W'; adapter.lora.alpha is 0
	aT := adapterTensor{name: m.gguf + ".lora_a", shape: []uint64{uint64(in), uint64(in)}, vals: func() ([]float32, error) {
		id := make([]float32, in*in)
		for i := 0; i < in; i++ {
			id[i*in+i] = 1
		}
		return id, nil
	}}
	bT := adapterTensor{name: m.gguf + ".lora_b", shape: []uint64{uint64(in), uint64(out)}, vals: func() ([]float32, error) {
		t, err := a.file.Tensor(key)
		if err != nil {
			return nil, asInput(fmt.Errorf("convert: %s: %w", a.Name, err))
		}
		w, err := adapterFloats(a.Name, t)
		if err != nil {
			return nil, err
		}
		base, err := p.baseFloats(m.hf)
		if err != nil {
			return nil, err
		}
		if len(base) != len(w) {
			return nil, inputErrorf("convert: tensor %q: %d values, base %q has %d", key, len(w), m.hf, len(base))
		}
		for i := range w {
			w[i] = float32((float64(w[i]) - float64(base[i])) * fold)
		}
		if permute > 0 {
			w = permuteRows(w, in, out/permute)
		}
		return w, nil
	}}
	return []adapterTensor{aT, bT}, nil
}

// baseFloats reads a base tensor as float32 (a bitsandbytes NF4 weight dequantized).
func (p *AdapterPlan) baseFloats(name string) ([]float32, error) {
	if _, _, ok := p.ckpt.Info(name + quant.BNBSuffixQuantStateNF4); ok {
		bw, err := bnbWeight(p.ckpt, name)
		if err != nil {
			return nil, inputErrorf("convert: tensor %q: %v", name, err)
		}
		nf, _, err := quant.RepackBNB(bw)
		if err != nil {
			return nil, asInput(fmt.Errorf("convert: %w", err))
		}
		return nf.Dequantize()
	}
	t, err := p.ckpt.Tensor(name)
	if err != nil {
		return nil, asInput(fmt.Errorf("convert: %w", err))
	}
	v, err := safetensors.ToFloat32(t)
	if err != nil {
		return nil, asInput(fmt.Errorf("convert: tensor %q: %w", name, err))
	}
	return v, nil
}

func (p *AdapterPlan) planMetadata(h *hparams) error {
	a := p.Adapter
	rec, err := adapterKeys([]*Adapter{a})
	if err != nil {
		return err
	}
	for _, o := range []struct {
		plan *OutputPlan
		arch string
	}{{&p.Text, "llama"}, {&p.MMProj, "clip"}} {
		var l kvList
		l.add("general.architecture", o.arch)
		l.add("general.type", "adapter")
		l.add("general.name", a.Name)
		l.add("adapter.type", "lora")
		l.add("adapter.lora.alpha", float32(0))
		if l.err != nil {
			return l.err
		}
		o.plan.KV = append(l.kvs, rec...)
	}
	return nil
}

// Print lists the adapter's tensors per output file.
func (p *AdapterPlan) Print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	a := p.Adapter
	fmt.Fprintf(tw, "adapter: %s (sha256 %s, r %d, alpha %g, rsLoRA %v, scale ×%g)\n", a.Dir, a.SHA256[:12], a.Rank, a.Alpha, a.RSLoRA, a.UserScale)
	for _, o := range []*OutputPlan{&p.Text, &p.MMProj} {
		if len(o.Tensors) == 0 {
			fmt.Fprintf(tw, "%s: not written (no tensor)\n", o.Path)
			continue
		}
		fmt.Fprintf(tw, "%s: %d tensors, %s\n", o.Path, len(o.Tensors), formatBytes(int64(o.Bytes())))
		for _, t := range o.Tensors {
			fmt.Fprintf(tw, "  %s\tf32\t%s\n", t.Name, gguf.FormatShape(t.Shape))
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("convert: print plan: %w", err)
	}
	return nil
}

// Run writes the adapter file(s) atomically: the mmproj part first, both renamed only when
// both are complete.
func (p *AdapterPlan) Run(ctx context.Context) (err error) {
	if p.Adapter.file == nil {
		return errors.New("convert: plan is closed")
	}
	outs := []*OutputPlan{&p.Text}
	parts := [][]adapterTensor{p.text}
	if p.HasMMProj() {
		outs = append(outs, &p.MMProj)
		parts = append(parts, p.mmproj)
	}
	paths := make([]string, len(outs))
	for i, o := range outs {
		paths[i] = o.Path
	}
	if err := checkOutputPaths(p.force, paths...); err != nil {
		return err
	}
	writers, err := openOutputs(outs, func(i int, w *gguf.Writer) error {
		for _, t := range parts[i] {
			if err := w.AddTensor(t.name, gguf.TypeF32, t.shape); err != nil {
				return fmt.Errorf("convert: %s: %w", outs[i].Path, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer abortOnError(&err, writers)
	for i := range outs {
		for _, t := range parts[i] {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("convert: %w", err)
			}
			vals, err := t.vals()
			if err != nil {
				return err
			}
			buf := make([]byte, 4*len(vals))
			for j, v := range vals {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					return inputErrorf("convert: tensor %q: value %v is not finite", t.name, v)
				}
				binary.LittleEndian.PutUint32(buf[4*j:], math.Float32bits(v))
			}
			if err := writers[i].WriteTensor(t.name, buf); err != nil {
				return fmt.Errorf("convert: %w", err)
			}
		}
	}
	for i := len(outs) - 1; i >= 0; i-- {
		if err := writers[i].Finish(); err != nil {
			return fmt.Errorf("convert: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	for i := len(outs) - 1; i >= 0; i-- {
		if err := writers[i].Close(); err != nil {
			if i == 0 && len(outs) > 1 {
				os.Remove(outs[1].Path)
			}
			return fmt.Errorf("convert: %w", err)
		}
	}
	return nil
}
