package convert

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/quant"
	"github.com/idefics2-go/idefics2/safetensors"
)

// Options configures a conversion.
type Options struct {
	// InDir is the Hugging Face checkpoint folder.
	InDir string
	// Out is the path of model.gguf.
	Out string
	// MMProjOut is the path of mmproj.gguf; "" means "mmproj-<base name of Out>" next to Out.
	MMProjOut string
	// Type is the --type scheme name (ParseScheme); "" means f16.
	Type string
	// VisionType is the type of the vision and connector matrices (ParseStorageType); "" means
	// f32 when Type is f32 and f16 otherwise.
	VisionType string
	// Overrides are "REGEX=TYPE" strings (ParseOverride), tried in order; the first match wins.
	Overrides []string
	// Force allows replacing existing output files.
	Force bool
	// Threads is the number of goroutines that quantize rows; 0 means GOMAXPROCS.
	Threads int
	// LoRA lists PEFT LoRA adapter folders merged into the weights, in order: each adds
	// scale·B·A to the weights it targets and replaces its modules_to_save tensors.
	LoRA []LoRASpec
	// Logger receives warnings (nil: slog.Default()).
	Logger *slog.Logger
}

// DefaultMMProjPath returns the mmproj path used when Options.MMProjOut is empty:
// "mmproj-<base name of out>" in the folder of out.
func DefaultMMProjPath(out string) string {
	return filepath.Join(filepath.Dir(out), "mmproj-"+filepath.Base(out))
}

// TensorPlan is one tensor of an output file.
type TensorPlan struct {
	Name        string     // GGUF name, e.g. "blk.0.attn_q.weight"
	Source      string     // HF name, e.g. "model.text_model.layers.0.self_attn.q_proj.weight"
	SourceDType string     // safetensors dtype ("F32", "F16", "BF16"), or "NF4" for a bitsandbytes weight
	SourceShape []int64    // PyTorch order
	Shape       []uint64   // ggml order (logical; NF4 tensors are stored as an I8 byte stream)
	Type        quant.Type // type written (quant.NF4 for NF4 streams)
	Requested   quant.Type // type asked for before a row-length fallback
	Note        string     // why Type differs from the file's base type ("" when it does not)
	Bytes       uint64     // data bytes in the file
	InputBytes  int64      // bytes read from the checkpoint
	// PermuteHeads is the head count of the Q/K row permutation applied (0: none).
	PermuteHeads int
	// BlockSize is the number of values per NF4 block (0 unless Type is NF4).
	BlockSize int

	bnb    *quant.BNBQuantState // the quant state of a bitsandbytes NF4 source; nil for float sources
	repack bool                 // bnb source written as NF4 without loss
	deltas []*loraDelta         // LoRA pairs merged into the tensor, in --lora order
	saved  *Adapter             // the adapter whose modules_to_save tensor replaces the source; nil when none
}

// Merged returns the names of the adapters merged into the tensor ("name" for a LoRA pair,
// "name (replaced)" for a modules_to_save tensor), in order.
func (t *TensorPlan) Merged() []string {
	var out []string
	if t.saved != nil {
		out = append(out, t.saved.Name+" (replaced)")
	}
	for _, d := range t.deltas {
		out = append(out, fmt.Sprintf("%s (r %d, scale %g)", d.adapter.Name, d.rank, d.scale))
	}
	return out
}

// Repacked reports whether the tensor is a bitsandbytes NF4 weight copied without loss.
func (t *TensorPlan) Repacked() bool { return t.repack }

// StorageShape returns the shape written to the GGUF tensor info: Shape, or [Bytes] for NF4.
func (t *TensorPlan) StorageShape() []uint64 {
	if t.Type == quant.NF4 {
		return []uint64{t.Bytes}
	}
	return t.Shape
}

// OutputPlan is one output file.
type OutputPlan struct {
	Path     string
	FileType gguf.FileType
	KV       []gguf.KV
	Tensors  []TensorPlan
}

// Bytes returns the tensor data bytes of the file.
func (o *OutputPlan) Bytes() uint64 {
	var n uint64
	for i := range o.Tensors {
		n += o.Tensors[i].Bytes
	}
	return n
}

// Plan is a validated conversion: every hyper-parameter, tokenizer entry and tensor has been
// read and checked, every output tensor has its type. Run executes it; Close releases the
// checkpoint.
type Plan struct {
	InDir      string
	Scheme     Scheme
	VisionType quant.Type
	Model      OutputPlan
	MMProj     OutputPlan
	// Adapters are the LoRA adapters merged, in --lora order.
	Adapters []*Adapter

	ckpt    *safetensors.Checkpoint
	force   bool
	threads int
	log     *slog.Logger
}

// NewPlan reads and validates the checkpoint in opts.InDir and decides the layout and type of
// every output tensor. It writes nothing. Problems with the checkpoint or the options are
// InputErrors naming the file and field or tensor.
func NewPlan(opts Options) (*Plan, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.InDir == "" {
		return nil, inputErrorf("convert: no input folder")
	}
	if opts.Out == "" {
		return nil, inputErrorf("convert: no output path")
	}
	if opts.Threads < 0 {
		return nil, inputErrorf("convert: threads %d is negative", opts.Threads)
	}
	if st, err := os.Stat(opts.InDir); err != nil {
		return nil, inputErrorf("convert: %v", err)
	} else if !st.IsDir() {
		return nil, inputErrorf("convert: %s: not a folder", opts.InDir)
	}
	typeName := opts.Type
	if typeName == "" {
		typeName = "f16"
	}
	scheme, err := ParseScheme(typeName)
	if err != nil {
		return nil, err
	}
	visionType := quant.F16
	if scheme.Base == quant.F32 {
		visionType = quant.F32
	}
	if opts.VisionType != "" {
		if visionType, err = ParseStorageType(opts.VisionType); err != nil {
			return nil, inputErrorf("convert: --vision-type %q: %s", opts.VisionType, unknownStorageType())
		}
	}
	var overrides []Override
	for _, s := range opts.Overrides {
		o, err := ParseOverride(s)
		if err != nil {
			return nil, err
		}
		overrides = append(overrides, o)
	}
	mmprojPath := opts.MMProjOut
	if mmprojPath == "" {
		mmprojPath = DefaultMMProjPath(opts.Out)
	}
	if filepath.Clean(mmprojPath) == filepath.Clean(opts.Out) {
		return nil, inputErrorf("convert: model and mmproj outputs are the same file %s", opts.Out)
	}

	if _, err := os.Stat(filepath.Join(opts.InDir, configFile)); errors.Is(err, os.ErrNotExist) && isAdapterFolder(opts.InDir) {
		return nil, inputErrorf("convert: %s: a PEFT adapter folder (%s), not a checkpoint: pass the base checkpoint with --in and the adapter with --lora or --lora-only", opts.InDir, adapterConfigFile)
	}
	h, err := parseConfig(opts.InDir)
	if err != nil {
		return nil, err
	}
	pre, err := parsePreprocessor(opts.InDir, h)
	if err != nil {
		return nil, err
	}
	// The checkpoint's headers first: the token embedding's row count must equal text_config.vocab_size before the
	// vocabulary is padded to that size (a bad size would otherwise pad millions of placeholder tokens).
	ckpt, err := safetensors.OpenCheckpoint(opts.InDir)
	if err != nil {
		return nil, asInput(fmt.Errorf("convert: %w", err))
	}
	if err := checkEmbeddingRows(ckpt, h); err != nil {
		ckpt.Close()
		return nil, err
	}
	voc, tokCfg, err := buildVocab(opts.InDir, h.text.vocabSize, log)
	if err == nil {
		err = checkVocab(voc, h)
	}
	var chatTemplate string
	if err == nil {
		chatTemplate, err = readChatTemplate(opts.InDir, tokCfg)
	}
	if err != nil {
		ckpt.Close()
		return nil, err
	}
	if chatTemplate == "" {
		log.Warn("convert: no chat template in the checkpoint; tokenizer.chat_template is not written", "dir", opts.InDir)
	}
	genEOS, err := readGenerationEOS(opts.InDir)
	if err != nil {
		ckpt.Close()
		return nil, err
	}
	for _, id := range genEOS {
		if id < 0 || id >= len(voc.tokens) {
			ckpt.Close()
			return nil, inputErrorf("convert: %s: eos_token_id %d is outside the vocabulary of %d tokens", generationConfigFile, id, len(voc.tokens))
		}
		if int32(id) != voc.eos && int32(id) != voc.eot {
			log.Warn("convert: generation_config.json stops on a token that is neither eos nor <end_of_utterance>; llama.cpp will not stop on it", "id", id, "token", voc.tokens[id])
		}
	}

	adapters, err := openAdapters(opts.LoRA, h)
	if err != nil {
		ckpt.Close()
		return nil, err
	}
	p := &Plan{
		Adapters:   adapters,
		InDir:      opts.InDir,
		Scheme:     scheme,
		VisionType: visionType,
		Model:      OutputPlan{Path: opts.Out, FileType: scheme.FileType},
		MMProj:     OutputPlan{Path: mmprojPath, FileType: fileTypeOf(visionType)},
		ckpt:       ckpt,
		force:      opts.Force,
		threads:    opts.Threads,
		log:        log,
	}
	chooser := &typeChooser{
		scheme: scheme, visionType: visionType, overrides: overrides, used: make([]bool, len(overrides)),
		numLayers: h.text.numLayers, tied: h.tieEmbedding,
	}
	if err := p.planTensors(h, chooser); err != nil {
		p.Close()
		return nil, err
	}
	if unused := chooser.unusedOverrides(); len(unused) > 0 {
		p.Close()
		return nil, inputErrorf("convert: --override %s matches no matrix (norms, biases, embeddings of the vision tower and latents always stay f32)", strings.Join(unused, ", "))
	}
	if p.Model.KV, err = modelMetadata(h, voc, chatTemplate, scheme.FileType); err != nil {
		p.Close()
		return nil, err
	}
	if p.MMProj.KV, err = mmprojMetadata(h, pre, p.MMProj.FileType); err != nil {
		p.Close()
		return nil, err
	}
	if err := p.addAdapterKeys(); err != nil {
		p.Close()
		return nil, err
	}
	for _, o := range []*OutputPlan{&p.Model, &p.MMProj} {
		if err := addNF4Keys(o); err != nil {
			p.Close()
			return nil, err
		}
	}
	return p, nil
}

// checkVocab checks the tokens the runtime looks up by text against config.json.
func checkVocab(v *vocab, h *hparams) error {
	img := v.lookup(imageToken)
	if img < 0 {
		return inputErrorf("convert: %s: token %q is not in the vocabulary", v.source, imageToken)
	}
	if int(img) != h.imageTokenID {
		return inputErrorf("convert: %s: image_token_id %d, but the tokenizer has %q at id %d", configFile, h.imageTokenID, imageToken, img)
	}
	if v.lookup(fakeImageToken) < 0 {
		return inputErrorf("convert: %s: token %q is not in the vocabulary", v.source, fakeImageToken)
	}
	return nil
}

// planTensors matches the checkpoint's tensors against the mapping table, checks shapes and
// dtypes and chooses types.
func (p *Plan) planTensors(h *hparams, chooser *typeChooser) error {
	if p.savesTiedHead(h) {
		// A modules_to_save copy of a tied lm_head unties it (PEFT's merge_and_unload puts the
		// trained copy in place of lm_head only): output.weight is written from the adapter.
		untied := *h
		untied.tieEmbedding = false
		h = &untied
	}
	expected := expandTable(h)
	want := make(map[string]bool, len(expected))
	for _, m := range expected {
		want[m.hf] = true
	}
	matcher := newRuleMatcher()
	for _, name := range p.ckpt.Names() {
		if want[name] {
			continue
		}
		if base, ok := bnbBase(name); ok && want[base] {
			continue // a companion of a bitsandbytes weight, checked with it
		}
		why := matcher.explain(name, h)
		if why == "" {
			continue // lm_head.weight of a tied checkpoint: not written
		}
		return inputErrorf("convert: %s: tensor %q: %s", p.shardOf(name), name, why)
	}
	for _, m := range expected {
		dtype, shape, ok := p.ckpt.Info(m.hf)
		saved, savedKey := p.savedBy(m.hf)
		if saved != nil {
			dtype, shape, ok = saved.file.Info(savedKey)
		}
		if !ok {
			return inputErrorf("convert: %s: tensor %q is missing (needed for %s %q)", p.weightsName(), m.hf, m.rule.out, m.gguf)
		}
		wantShape := m.rule.shape(h)
		tp := TensorPlan{Name: m.gguf, Source: m.hf, SourceDType: string(dtype), SourceShape: shape}
		_, _, isBNB := p.ckpt.Info(m.hf + quant.BNBSuffixQuantStateNF4)
		if _, _, fp4 := p.ckpt.Info(m.hf + quant.BNBSuffixQuantStateFP4); fp4 {
			isBNB = true
		}
		if saved != nil {
			isBNB = false
			tp.saved, tp.Source = saved, savedKey
		}
		for _, a := range p.Adapters {
			if d := a.deltas[m.hf]; d != nil {
				tp.deltas = append(tp.deltas, d)
			}
		}
		switch {
		case isBNB:
			st, n, err := bnbPlan(p.ckpt, m.hf, wantShape)
			if err != nil {
				return inputErrorf("convert: %s: tensor %q: %v", p.shardOf(m.hf), m.hf, err)
			}
			tp.bnb, tp.SourceDType, tp.InputBytes = st, "NF4", n
			tp.SourceShape = make([]int64, len(st.Shape))
			for i, d := range st.Shape {
				tp.SourceShape[i] = int64(d)
			}
		case !sameShape(shape, wantShape):
			return inputErrorf("convert: %s: tensor %q: shape %v, want %v from %s", p.shardOf(m.hf), m.hf, shape, wantShape, configFile)
		case dtype != safetensors.F32 && dtype != safetensors.F16 && dtype != safetensors.BF16:
			return inputErrorf("convert: %s: tensor %q: dtype %s is not supported (want F32, F16 or BF16)", p.shardOf(m.hf), m.hf, dtype)
		default:
			numel := int64(1)
			for _, d := range shape {
				numel *= d
			}
			tp.InputBytes = numel * int64(dtype.Size())
		}
		tp.Shape = make([]uint64, len(wantShape))
		for i, d := range wantShape {
			tp.Shape[len(wantShape)-1-i] = uint64(d)
		}
		ne0 := int(tp.Shape[0])
		choice := chooser.choose(m, ne0)
		tp.Type, tp.Requested, tp.Note = choice.final, choice.requested, choice.note
		if m.rule.permuteHeads != nil {
			tp.PermuteHeads = m.rule.permuteHeads(h)
		}
		if tp.Type == quant.NF4 {
			tp.BlockSize = quant.NF4BlockSize
			if tp.bnb != nil {
				if len(tp.deltas) > 0 {
					tp.Note = strings.TrimPrefix(tp.Note+"; bitsandbytes NF4 dequantized, LoRA added, re-quantized", "; ")
				} else if tp.PermuteHeads == 0 || ne0%tp.bnb.BlockSize == 0 {
					tp.BlockSize, tp.repack = tp.bnb.BlockSize, true
					tp.Note = strings.TrimPrefix(tp.Note+"; bitsandbytes NF4 repacked without loss", "; ")
				} else {
					tp.Note = strings.TrimPrefix(tp.Note+fmt.Sprintf("; bitsandbytes blocks of %d straddle the %d-value rows the Q/K permutation moves: re-quantized", tp.bnb.BlockSize, ne0), "; ")
				}
			}
		}
		size, err := tensorBytes(tp.Type, tp.Shape, tp.BlockSize)
		if err != nil {
			return inputErrorf("convert: tensor %q: %v", m.gguf, err)
		}
		tp.Bytes = size
		if len(m.gguf) > gguf.MaxNameLen {
			return inputErrorf("convert: tensor %q: GGUF name longer than %d bytes", m.gguf, gguf.MaxNameLen)
		}
		if m.rule.out == outModel {
			p.Model.Tensors = append(p.Model.Tensors, tp)
		} else {
			p.MMProj.Tensors = append(p.MMProj.Tensors, tp)
		}
	}
	return nil
}

// tensorBytes returns the data size of a tensor of type t and ggml shape ne (NF4: in blocks of
// blockSize).
func tensorBytes(t quant.Type, ne []uint64, blockSize int) (uint64, error) {
	numel := uint64(1)
	for _, d := range ne {
		numel *= d
	}
	if t == quant.NF4 {
		n, err := quant.NF4StreamSize(int(numel), blockSize)
		return uint64(n), err
	}
	row, err := t.RowSize(int(ne[0]))
	if err != nil {
		return 0, err
	}
	return uint64(row) * (numel / ne[0]), nil
}

// addNF4Keys records the logical shape and block size of every NF4 tensor (docs/formats.md).
func addNF4Keys(o *OutputPlan) error {
	var l kvList
	l.kvs = o.KV
	for i := range o.Tensors {
		t := &o.Tensors[i]
		if t.Type != quant.NF4 {
			continue
		}
		l.add(quant.NF4ShapeKey(t.Name), slices.Clone(t.Shape))
		l.add(quant.NF4BlockSizeKey(t.Name), uint32(t.BlockSize))
	}
	o.KV = l.kvs
	return l.err
}

func sameShape(got []int64, want []int) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != int64(want[i]) {
			return false
		}
	}
	return true
}

// weightsName names the checkpoint's weight files for messages.
func (p *Plan) weightsName() string {
	if len(p.ckpt.Files) == 1 {
		return filepath.Base(p.ckpt.Files[0].Path)
	}
	return safetensors.IndexFileName
}

// shardOf names the file holding a tensor, for messages.
func (p *Plan) shardOf(name string) string {
	t, err := p.ckpt.Tensor(name)
	if err != nil || t.File == "" {
		return p.weightsName()
	}
	return filepath.Base(t.File)
}

// InputBytes returns the checkpoint bytes the conversion reads (the progress total).
func (p *Plan) InputBytes() int64 {
	var n int64
	for _, o := range []*OutputPlan{&p.MMProj, &p.Model} {
		for i := range o.Tensors {
			n += o.Tensors[i].InputBytes
		}
	}
	return n
}

// Close releases the checkpoint. It is idempotent.
func (p *Plan) Close() error {
	var err error
	for _, a := range p.Adapters {
		err = errors.Join(err, a.Close())
	}
	if p.ckpt == nil {
		return err
	}
	err = errors.Join(err, p.ckpt.Close())
	p.ckpt = nil
	return err
}

// Print writes the plan: for each output its path, file type and every tensor (source name and
// dtype → GGUF name, type, shape, size), then the totals.
func (p *Plan) Print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, o := range []struct {
		label string
		plan  *OutputPlan
	}{{"model", &p.Model}, {"mmproj", &p.MMProj}} {
		fmt.Fprintf(tw, "%s: %s (file type %d, %d tensors, %s)\n", o.label, o.plan.Path, o.plan.FileType, len(o.plan.Tensors), formatBytes(int64(o.plan.Bytes())))
		fmt.Fprintf(tw, "source\tdtype\t\tname\ttype\tshape\tsize\tnote\n")
		for i := range o.plan.Tensors {
			t := &o.plan.Tensors[i]
			note := t.Note
			if t.PermuteHeads > 0 {
				note = strings.TrimPrefix(note+fmt.Sprintf("; Q/K rows permuted (%d heads)", t.PermuteHeads), "; ")
			}
			if m := t.Merged(); len(m) > 0 {
				note = strings.TrimPrefix(note+"; LoRA "+strings.Join(m, " + "), "; ")
			}
			fmt.Fprintf(tw, "%s\t%s\t→\t%s\t%s\t%s\t%s\t%s\n", t.Source, t.SourceDType, t.Name, t.Type, gguf.FormatShape(t.Shape), formatBytes(int64(t.Bytes)), note)
		}
		fmt.Fprintln(tw)
	}
	for _, a := range p.Adapters {
		fmt.Fprintf(tw, "adapter: %s (sha256 %s, r %d, alpha %g%s, scale ×%g): %d LoRA pairs merged, %d tensors replaced\n",
			a.Dir, a.SHA256[:12], a.Rank, a.Alpha, map[bool]string{true: ", rsLoRA"}[a.RSLoRA], a.UserScale, len(a.deltas), len(a.saved))
	}
	in := p.InputBytes()
	out := int64(p.Model.Bytes() + p.MMProj.Bytes())
	fmt.Fprintf(tw, "total: %d tensors, %s read → %s written (type %s, vision type %s)\n",
		len(p.Model.Tensors)+len(p.MMProj.Tensors), formatBytes(in), formatBytes(out), p.Scheme.Name, p.VisionType)
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("convert: print plan: %w", err)
	}
	return nil
}

// formatBytes formats a byte count with a binary unit.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.2f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// checkOutputs refuses existing outputs unless force is set, and outputs whose folder does not
// exist.
func (p *Plan) checkOutputs() error {
	return checkOutputPaths(p.force, p.Model.Path, p.MMProj.Path)
}

// checkOutputPaths refuses existing outputs unless force is set, and outputs whose folder does
// not exist.
func checkOutputPaths(force bool, paths ...string) error {
	for _, path := range paths {
		dir := filepath.Dir(path)
		if st, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return inputErrorf("convert: %s: output folder %s does not exist", path, dir)
		} else if err != nil {
			return inputErrorf("convert: %s: output folder: %v", path, err)
		} else if !st.IsDir() {
			return inputErrorf("convert: %s: output folder %s is not a folder", path, dir)
		}
		st, err := os.Lstat(path)
		if err == nil {
			if st.IsDir() {
				return inputErrorf("convert: %s: is a folder", path)
			}
			// Renaming over a device, pipe or socket would replace it with a file (for root, even
			// /dev/null); refuse whatever --force says. Symbolic links are replaced, not followed.
			if !st.Mode().IsRegular() && st.Mode()&os.ModeSymlink == 0 {
				return inputErrorf("convert: %s: exists and is not a regular file", path)
			}
			if !force {
				return &InputError{Err: fmt.Errorf("%w: %s (use --force to replace it)", ErrOutputExists, path)}
			}
			continue
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("convert: %w", err)
		}
	}
	return nil
}

// checkEmbeddingRows compares the token embedding's rows with text_config.vocab_size (the tensor map checks every
// shape later; this one must come before the vocabulary is padded to vocab_size).
func checkEmbeddingRows(ckpt *safetensors.Checkpoint, h *hparams) error {
	const name = "model.text_model.embed_tokens.weight"
	_, shape, ok := ckpt.Info(name)
	if !ok || len(shape) != 2 || shape[0] == int64(h.text.vocabSize) {
		return nil
	}
	return inputErrorf("convert: tensor %q has %d rows, but %s text_config.vocab_size is %d", name, shape[0], configFile, h.text.vocabSize)
}
