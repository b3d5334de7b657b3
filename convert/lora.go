package convert

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/safetensors"
)

// PEFT adapter folders, as peft.PeftModel.save_pretrained writes them for a LoRA fine-tune of
// Idefics2ForConditionalGeneration (PEFT's LoraConfig and LoraLayer are the source of truth):
//
//   - adapter_config.json: peft_type "LORA", r, lora_alpha, target_modules (a list of module
//     name suffixes, or one regex string matched against the whole module name), rank_pattern
//     and alpha_pattern (per-module r and lora_alpha), use_rslora, modules_to_save, use_dora,
//     bias, fan_in_fan_out;
//   - adapter_model.safetensors: "base_model.model.<module>.lora_A.weight" [r, in] and
//     ".lora_B.weight" [out, r] for each adapted nn.Linear, and for modules_to_save the whole
//     replacement tensors "base_model.model.<module>.weight" (and ".bias").
//
// The adapted layer computes W·x + s·B·(A·x) with s = lora_alpha / r, or lora_alpha / √r with
// use_rslora (LoraLayer.update_layer); merging (merge_and_unload) adds s·B·A to W.

// Adapter folder file names (PEFT's SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME and CONFIG_NAME).
const (
	adapterConfigFile   = "adapter_config.json"
	adapterWeightsFile  = "adapter_model.safetensors"
	adapterPickleFile   = "adapter_model.bin"
	peftKeyPrefix       = "base_model.model."
	maxAdapterRank      = 1 << 16
	defaultAdapterScale = 1.0
)

// LoRASpec names one PEFT adapter folder and the factor its scale is multiplied by (1 by
// default; "DIR:0.5" on the command line).
type LoRASpec struct {
	Dir   string
	Scale float64
}

// ParseLoRASpec parses "DIR[:SCALE]". A suffix after the last colon that is not a number is
// part of the folder name.
func ParseLoRASpec(s string) (LoRASpec, error) {
	if s == "" {
		return LoRASpec{}, inputErrorf("convert: --lora: empty adapter path")
	}
	spec := LoRASpec{Dir: s, Scale: defaultAdapterScale}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		if v, err := strconv.ParseFloat(s[i+1:], 64); err == nil {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return LoRASpec{}, inputErrorf("convert: --lora %s: scale %s is not a finite number", s, s[i+1:])
			}
			spec.Dir, spec.Scale = s[:i], v
		}
	}
	if spec.Dir == "" {
		return LoRASpec{}, inputErrorf("convert: --lora %s: empty adapter path", s)
	}
	return spec, nil
}

// loraDelta is the LoRA pair of one base weight: ΔW = scale·B·A.
type loraDelta struct {
	adapter  *Adapter
	module   string // HF module path, e.g. "model.text_model.layers.0.self_attn.q_proj"
	keyA     string // adapter tensor names
	keyB     string
	a        []float32 // [rank, in], row-major
	b        []float32 // [out, rank], row-major
	rank     int
	in, out  int
	alpha    float64 // the module's lora_alpha (alpha_pattern applied)
	scale    float64 // alpha/rank (or alpha/√rank) × the user's scale
	peftRank int     // the module's configured r (rank_pattern applied)
}

// Adapter is one opened PEFT LoRA adapter folder.
type Adapter struct {
	Dir       string
	Name      string  // base name of Dir
	SHA256    string  // hex digest of adapter_model.safetensors
	UserScale float64 // the factor from LoRASpec
	Rank      int     // r of adapter_config.json
	Alpha     float64 // lora_alpha of adapter_config.json
	RSLoRA    bool

	cfg    loraConfig
	file   *safetensors.File
	deltas map[string]*loraDelta // by base HF weight name
	saved  map[string]string     // base HF tensor name → adapter tensor name (modules_to_save)
}

// Close releases the adapter's safetensors file. It is idempotent.
func (a *Adapter) Close() error {
	if a == nil || a.file == nil {
		return nil
	}
	err := a.file.Close()
	a.file = nil
	return err
}

// Targets returns the base HF weight names the adapter changes by a LoRA pair, sorted.
func (a *Adapter) Targets() []string {
	out := make([]string, 0, len(a.deltas))
	for k := range a.deltas {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Saved returns the base HF tensor names the adapter replaces whole (modules_to_save), sorted.
func (a *Adapter) Saved() []string {
	out := make([]string, 0, len(a.saved))
	for k := range a.saved {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// baseTensor is what an adapter needs to know of one base tensor.
type baseTensor struct {
	shape []int64 // PyTorch order
}

// openAdapter opens the PEFT adapter folder of spec and resolves every one of its tensors
// against base (HF tensor name → shape, for every tensor the conversion writes). Every adapter
// tensor must map to a base tensor of a matching shape; the LoRA pairs are read into memory
// and checked for finite values.
func openAdapter(spec LoRASpec, base map[string]baseTensor) (_ *Adapter, err error) {
	dir := spec.Dir
	if st, err := os.Stat(dir); err != nil {
		return nil, inputErrorf("convert: --lora: %v", err)
	} else if !st.IsDir() {
		return nil, inputErrorf("convert: --lora %s: not a folder (want a PEFT adapter folder)", dir)
	}
	cfg, err := openAdapterConfig(dir)
	if err != nil {
		return nil, err
	}
	name := filepath.Base(filepath.Clean(dir))
	wpath := filepath.Join(dir, adapterWeightsFile)
	if _, err := os.Stat(wpath); errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(filepath.Join(dir, adapterPickleFile)); err == nil {
			return nil, inputErrorf("convert: %s: %s is a Python pickle, which is not read (it can run code); save the adapter with safe_serialization=True to get %s",
				dir, adapterPickleFile, adapterWeightsFile)
		}
		return nil, inputErrorf("convert: %s: %s is missing", dir, adapterWeightsFile)
	}
	sum, err := fileSHA256(wpath)
	if err != nil {
		return nil, inputErrorf("convert: %s: %v", wpath, err)
	}
	f, err := safetensors.Open(wpath)
	if err != nil {
		return nil, asInput(fmt.Errorf("convert: %s: %w", name, err))
	}
	a := &Adapter{Dir: dir, Name: name, SHA256: sum, UserScale: spec.Scale, Rank: cfg.rank, Alpha: cfg.alpha,
		RSLoRA: cfg.rsLoRA, cfg: *cfg, file: f, deltas: map[string]*loraDelta{}, saved: map[string]string{}}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	fileName := filepath.Join(name, adapterWeightsFile)
	pairs := map[string][2]string{} // module → lora_A, lora_B keys
	for _, key := range f.Names() {
		rest, ok := strings.CutPrefix(key, peftKeyPrefix)
		if !ok {
			return nil, inputErrorf("convert: %s: tensor %q: not a PEFT key (want the prefix %q)", fileName, key, peftKeyPrefix)
		}
		switch {
		case strings.HasSuffix(rest, ".lora_A.weight"):
			m := strings.TrimSuffix(rest, ".lora_A.weight")
			p := pairs[m]
			p[0] = key
			pairs[m] = p
		case strings.HasSuffix(rest, ".lora_B.weight"):
			m := strings.TrimSuffix(rest, ".lora_B.weight")
			p := pairs[m]
			p[1] = key
			pairs[m] = p
		case strings.Contains(rest, "lora_magnitude_vector"):
			return nil, inputErrorf("convert: %s: tensor %q: DoRA magnitude vectors are not supported", fileName, key)
		case strings.Contains(rest, "lora_embedding_"):
			return nil, inputErrorf("convert: %s: tensor %q: LoRA on an embedding layer is not supported", fileName, key)
		case strings.HasSuffix(rest, ".lora_A.bias") || strings.HasSuffix(rest, ".lora_B.bias"):
			return nil, inputErrorf("convert: %s: tensor %q: LoRA biases are not supported", fileName, key)
		default:
			if err := a.addSaved(fileName, key, rest, base); err != nil {
				return nil, err
			}
		}
	}
	for _, m := range slices.Sorted(mapKeys(pairs)) {
		if err := a.addPair(fileName, m, pairs[m], base); err != nil {
			return nil, err
		}
	}
	if len(a.deltas) == 0 && len(a.saved) == 0 {
		return nil, inputErrorf("convert: %s: holds no LoRA tensor", fileName)
	}
	return a, nil
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// addSaved records a modules_to_save tensor: a whole replacement of a base tensor.
func (a *Adapter) addSaved(fileName, key, hfName string, base map[string]baseTensor) error {
	module := hfName
	if i := strings.LastIndexByte(hfName, '.'); i >= 0 {
		module = hfName[:i]
	}
	bt, ok := base[hfName]
	if !ok {
		return inputErrorf("convert: %s: tensor %q maps to no base tensor (%q is not in the base checkpoint)", fileName, key, hfName)
	}
	if !a.cfg.saves(module) {
		return inputErrorf("convert: %s: tensor %q: module %q is not in modules_to_save of %s", fileName, key, module, adapterConfigFile)
	}
	dt, shape, _ := a.file.Info(key)
	if !slices.Equal(shape, bt.shape) {
		why := ""
		if strings.HasSuffix(module, "embed_tokens") || strings.HasSuffix(module, "lm_head") {
			why = " (a fine-tune that added tokens needs its own tokenizer: merge it with PEFT and convert the merged checkpoint)"
		}
		return inputErrorf("convert: %s: tensor %q: shape %v, base %q has %v%s", fileName, key, shape, hfName, bt.shape, why)
	}
	if dt != safetensors.F32 && dt != safetensors.F16 && dt != safetensors.BF16 {
		return inputErrorf("convert: %s: tensor %q: dtype %s is not supported (want F32, F16 or BF16)", fileName, key, dt)
	}
	a.saved[hfName] = key
	return nil
}

// addPair reads and checks the LoRA pair of one module.
func (a *Adapter) addPair(fileName, module string, keys [2]string, base map[string]baseTensor) error {
	for i, k := range keys {
		if k == "" {
			have := keys[1-i]
			return inputErrorf("convert: %s: tensor %q has no %s partner", fileName, have, [2]string{"lora_A", "lora_B"}[i])
		}
	}
	weight := module + ".weight"
	bt, ok := base[weight]
	if !ok || len(bt.shape) != 2 {
		return inputErrorf("convert: %s: tensor %q maps to no base weight (%q is not a linear layer of the base checkpoint)", fileName, keys[0], weight)
	}
	if !a.cfg.targetsModule(module) {
		return inputErrorf("convert: %s: tensor %q: module %q is not selected by target_modules (less exclude_modules, within layers_to_transform) of %s", fileName, keys[0], module, adapterConfigFile)
	}
	if a.cfg.saves(module) {
		return inputErrorf("convert: %s: tensor %q: module %q is both adapted and in modules_to_save", fileName, keys[0], module)
	}
	out, in := int(bt.shape[0]), int(bt.shape[1])
	ta, err := a.file.Tensor(keys[0])
	if err != nil {
		return asInput(fmt.Errorf("convert: %s: %w", fileName, err))
	}
	tb, err := a.file.Tensor(keys[1])
	if err != nil {
		return asInput(fmt.Errorf("convert: %s: %w", fileName, err))
	}
	if len(ta.Shape) != 2 || ta.Shape[1] != int64(in) || ta.Shape[0] <= 0 {
		return inputErrorf("convert: %s: tensor %q: shape %v, want [r, %d] for base %q %v", fileName, keys[0], ta.Shape, in, weight, bt.shape)
	}
	rank := int(ta.Shape[0])
	if len(tb.Shape) != 2 || tb.Shape[0] != int64(out) || tb.Shape[1] != int64(rank) {
		return inputErrorf("convert: %s: tensor %q: shape %v, want [%d, %d] for base %q %v and lora_A rank %d", fileName, keys[1], tb.Shape, out, rank, weight, bt.shape, rank)
	}
	peftRank, alpha := a.cfg.moduleRankAlpha(module)
	if rank != peftRank {
		return inputErrorf("convert: %s: tensor %q: rank %d, but %s gives module %q rank %d", fileName, keys[0], rank, adapterConfigFile, module, peftRank)
	}
	d := &loraDelta{adapter: a, module: module, keyA: keys[0], keyB: keys[1], rank: rank, in: in, out: out,
		alpha: alpha, peftRank: peftRank}
	if a.cfg.rsLoRA {
		d.scale = alpha / math.Sqrt(float64(rank))
	} else {
		d.scale = alpha / float64(rank)
	}
	d.scale *= a.UserScale
	if d.a, err = adapterFloats(fileName, ta); err != nil {
		return err
	}
	if d.b, err = adapterFloats(fileName, tb); err != nil {
		return err
	}
	a.deltas[weight] = d
	return nil
}

// adapterFloats decodes a small adapter tensor and checks that every value is finite.
func adapterFloats(fileName string, t safetensors.Tensor) ([]float32, error) {
	dt := t.DType
	if dt != safetensors.F32 && dt != safetensors.F16 && dt != safetensors.BF16 {
		return nil, inputErrorf("convert: %s: tensor %q: dtype %s is not supported (want F32, F16 or BF16)", fileName, t.Name, dt)
	}
	vals := make([]float32, int(t.NumElements()))
	if len(t.Data) != len(vals)*dt.Size() {
		return nil, inputErrorf("convert: %s: tensor %q: %d data bytes, want %d", fileName, t.Name, len(t.Data), len(vals)*dt.Size())
	}
	if err := decodeFloats(vals, t.Data, dt); err != nil {
		return nil, inputErrorf("convert: %s: tensor %q: %v", fileName, t.Name, err)
	}
	for i, v := range vals {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, inputErrorf("convert: %s: tensor %q: value %v at %d is not finite", fileName, t.Name, v, i)
		}
	}
	return vals, nil
}

// addTo adds scale·B·A to rows [row0, row0+len(vals)/in) of the base weight, row-major
// [out, in] (PyTorch order, before any Q/K permutation). B·A is summed over the rank in
// float32 and then scaled, as PEFT's get_delta_weight computes (B @ A) * scaling.
func (d *loraDelta) addTo(vals []float32, row0 int) {
	s := float32(d.scale)
	rows := len(vals) / d.in
	acc := make([]float32, d.in)
	for r := 0; r < rows; r++ {
		o := row0 + r
		clear(acc)
		brow := d.b[o*d.rank : (o+1)*d.rank]
		for k, bk := range brow {
			arow := d.a[k*d.in : (k+1)*d.in]
			for i, av := range arow {
				acc[i] += bk * av
			}
		}
		dst := vals[r*d.in : (r+1)*d.in]
		for i := range dst {
			dst[i] += acc[i] * s
		}
	}
}

// mergeDeltas adds the LoRA updates of t to rows [row0, …) of vals and checks that the merged
// values stay finite (F32 outputs are not checked by quantization).
func mergeDeltas(t *TensorPlan, vals []float32, row0 int) error {
	if len(t.deltas) == 0 {
		return nil
	}
	for _, d := range t.deltas {
		d.addTo(vals, row0)
	}
	for i, v := range vals {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			names := make([]string, len(t.deltas))
			for k, d := range t.deltas {
				names[k] = d.adapter.Name
			}
			return inputErrorf("convert: tensor %q: value %v at %d after merging %s is not finite", t.Source, v, row0*int(t.Shape[0])+i, strings.Join(names, ", "))
		}
	}
	return nil
}

// fileSHA256 returns the hex SHA-256 of a file.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// baseTensors lists every tensor a conversion of h can write, by HF name with its PyTorch
// shape; lm_head is included even when tied, so that a modules_to_save copy of it is found.
func baseTensors(h *hparams) map[string]baseTensor {
	untied := *h
	untied.tieEmbedding = false
	out := map[string]baseTensor{}
	for _, m := range expandTable(&untied) {
		want := m.rule.shape(h)
		shape := make([]int64, len(want))
		for i, d := range want {
			shape[i] = int64(d)
		}
		out[m.hf] = baseTensor{shape: shape}
	}
	return out
}

// openAdapters opens every --lora folder against the base described by h.
func openAdapters(specs []LoRASpec, h *hparams) ([]*Adapter, error) {
	base := baseTensors(h)
	var out []*Adapter
	fail := func(err error) ([]*Adapter, error) {
		for _, a := range out {
			a.Close()
		}
		return nil, err
	}
	for _, s := range specs {
		a, err := openAdapter(s, base)
		if err != nil {
			return fail(err)
		}
		out = append(out, a)
		if d := a.deltas[lmHeadName]; d != nil && h.tieEmbedding {
			return fail(inputErrorf("convert: %s: tensor %q: lm_head is tied to embed_tokens (%s tie_word_embeddings), so a LoRA pair on it cannot be merged into lm_head alone",
				a.Name, d.keyA, configFile))
		}
	}
	return out, nil
}

// savedBy returns the last adapter that replaces the HF tensor name (modules_to_save) and its
// tensor name there; a later --lora's copy wins, as loading adapters one after the other would.
func (p *Plan) savedBy(name string) (*Adapter, string) {
	for i := len(p.Adapters) - 1; i >= 0; i-- {
		if k, ok := p.Adapters[i].saved[name]; ok {
			return p.Adapters[i], k
		}
	}
	return nil, ""
}

// savesTiedHead reports whether a modules_to_save copy of lm_head meets a tied base.
func (p *Plan) savesTiedHead(h *hparams) bool {
	a, _ := p.savedBy(lmHeadName)
	return a != nil && h.tieEmbedding
}

// adapterKeys returns the metadata that records merged adapters, in --lora order:
// idefics2.adapters.{names,sha256,scales,ranks,alphas} (docs/formats.md).
func adapterKeys(adapters []*Adapter) ([]gguf.KV, error) {
	if len(adapters) == 0 {
		return nil, nil
	}
	var names, sums []string
	var scales, alphas []float32
	var ranks []uint32
	for _, a := range adapters {
		names = append(names, a.Name)
		sums = append(sums, a.SHA256)
		scales = append(scales, float32(a.UserScale))
		ranks = append(ranks, uint32(a.Rank))
		alphas = append(alphas, float32(a.Alpha))
	}
	var l kvList
	l.add("idefics2.adapters.names", names)
	l.add("idefics2.adapters.sha256", sums)
	l.add("idefics2.adapters.scales", scales)
	l.add("idefics2.adapters.ranks", ranks)
	l.add("idefics2.adapters.alphas", alphas)
	return l.kvs, l.err
}

// addAdapterKeys appends the adapter record to both outputs.
func (p *Plan) addAdapterKeys() error {
	kvs, err := adapterKeys(p.Adapters)
	if err != nil {
		return err
	}
	p.Model.KV = append(p.Model.KV, kvs...)
	p.MMProj.KV = append(p.MMProj.KV, kvs...)
	return nil
}
