package graph

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/gguf"
)

// Adapter is one run-time LoRA adapter: a GGUF in llama.cpp's LoRA adapter layout (general.type "adapter",
// adapter.type "lora", adapter.lora.alpha, tensors "<weight name>.lora_a" [in, r] and ".lora_b" [r, out]) for the
// text model, and optionally one in the same layout for the mmproj. Every adapted Linear computes
// W·x + s·B·(A·x) with s = Scale·alpha/r (llama.cpp's llama_adapter_lora_weight::get_scale; s = Scale when alpha is
// 0), whatever W's layout: the base weights are not touched.
type Adapter struct {
	Path       string
	MMProjPath string  // "" when the adapter leaves the vision side alone
	Scale      float32 // 1 applies the adapter as trained
}

// ErrNotAdapter is matched (errors.Is) by the error for a file given as an adapter that is not a LoRA adapter of
// this model, or whose mmproj part belongs to another adapter.
var ErrNotAdapter = errors.New("not a LoRA adapter of this model")

// adapterWeights is one adapter file placed on the backend.
type adapterWeights struct {
	file  *gguf.File
	w     *Weights
	alpha float32
	scale float32 // the user's scale now in force (SetAdapterScales); graphs read it when they are built
	index int     // position in Options.Adapters
	sha   string  // idefics2.adapters.sha256[0], "" when absent
}

// pairScale is s = scale·alpha/r (llama.cpp's llama_adapter_lora_weight::get_scale; scale alone when alpha is 0).
func (a *adapterWeights) pairScale(rank int) float32 {
	if a.alpha == 0 {
		return a.scale
	}
	return a.scale * a.alpha / float32(rank)
}

func (a *adapterWeights) close() {
	if a.w != nil {
		a.w.Close()
	}
	if a.file != nil {
		a.file.Close()
	}
}

// loraPair is one adapter's low-rank update of a Linear.
type loraPair struct {
	a, b ggml.Tensor // [in, r], [r, out]
	src  *adapterWeights
	rank int
}

// loadAdapter opens the adapter GGUF at path, checks that it is a LoRA adapter for architecture arch and places its
// tensors in the file's layout.
func loadAdapter(path, arch string, scale float32, b *ggml.Backend, t Target) (*adapterWeights, error) {
	if math.IsNaN(float64(scale)) || math.IsInf(float64(scale), 0) {
		return nil, fileErrorf(path, ErrNotAdapter, "scale %v is not a finite number", scale)
	}
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	a := &adapterWeights{file: f, scale: scale}
	fail := func(err error) (*adapterWeights, error) {
		a.close()
		return nil, err
	}
	md := f.Metadata
	for _, kv := range []struct{ key, want string }{{"general.type", "adapter"}, {"adapter.type", "lora"}, {"general.architecture", arch}} {
		got, err := md.String(kv.key)
		if err != nil {
			return fail(fileErrorf(path, ErrNotAdapter, "%s: %v", kv.key, err))
		}
		if got != kv.want {
			return fail(fileErrorf(path, ErrNotAdapter, "%s is %q, want %q", kv.key, got, kv.want))
		}
	}
	if a.alpha, err = md.Float32("adapter.lora.alpha"); err != nil {
		return fail(fileErrorf(path, ErrNotAdapter, "adapter.lora.alpha: %v", err))
	}
	if math.IsNaN(float64(a.alpha)) || math.IsInf(float64(a.alpha), 0) {
		return fail(fileErrorf(path, ErrNotAdapter, "adapter.lora.alpha %v is not finite", a.alpha))
	}
	if sums, err := md.Strings("idefics2.adapters.sha256"); err == nil && len(sums) > 0 {
		a.sha = sums[0]
	}
	if a.w, err = LoadWeights(f, b, t, LayoutsFile); err != nil {
		return fail(err)
	}
	return a, nil
}

// loadAdapters loads the text parts (and, with vision, the mmproj parts) of every adapter of o.
func (m *Model) loadAdapters(o Options) error {
	for i, ad := range o.Adapters {
		a, err := loadAdapter(ad.Path, "llama", ad.Scale, m.runner.Main, m.Target)
		if err != nil {
			return err
		}
		a.index = i
		m.textAdapters = append(m.textAdapters, a)
		if ad.MMProjPath == "" {
			continue
		}
		if !m.HasVision {
			return fileErrorf(ad.MMProjPath, ErrNotAdapter, "an mmproj adapter needs the model's mmproj, and none is loaded")
		}
		v, err := loadAdapter(ad.MMProjPath, "clip", ad.Scale, m.runner.Main, m.Target)
		if err != nil {
			return err
		}
		v.index = i
		m.visionAdapters = append(m.visionAdapters, v)
		if a.sha != "" && v.sha != "" && a.sha != v.sha {
			return fileErrorf(ad.MMProjPath, ErrNotAdapter, "made from adapter %.12s, but %s from adapter %.12s", v.sha, ad.Path, a.sha)
		}
	}
	return nil
}

// loras binds the adapter pairs of the weight name ([in, out]) from every adapter of b.
func (b binder) loras(name string, in, out int) []loraPair {
	var ps []loraPair
	for _, a := range b.adapters {
		w := a.w
		pa, okA := w.plan.Weights[name+".lora_a"]
		pb, okB := w.plan.Weights[name+".lora_b"]
		if !okA && !okB {
			continue
		}
		bad := func(seg, got, want string) {
			*b.errs = append(*b.errs, &WeightError{Path: a.file.Path, Tensor: name + seg, Got: got, Want: want})
		}
		if !okA || !okB {
			seg, have := ".lora_a", ".lora_b"
			if okA {
				seg, have = ".lora_b", ".lora_a"
			}
			w.used[name+have] = true
			bad(seg, "", "the partner of "+name+have)
			continue
		}
		w.used[name+".lora_a"], w.used[name+".lora_b"] = true, true
		if len(pa.Shape) != 2 || len(pb.Shape) != 2 || pa.Shape[0] != in || pb.Shape[1] != out || pa.Shape[1] != pb.Shape[0] || pa.Shape[1] <= 0 {
			bad(".lora_a/.lora_b", fmt.Sprintf("shapes %v and %v", pa.Shape, pb.Shape), fmt.Sprintf("[%d, r] and [r, %d] for base %s [%d, %d]", in, out, name, in, out))
			continue
		}
		if !weightTypeOK(pa.Type, 2) || !weightTypeOK(pb.Type, 2) {
			bad(".lora_a/.lora_b", "types "+pa.Type.String()+" and "+pb.Type.String(), "float or block-quantized matrices")
			continue
		}
		ps = append(ps, loraPair{a: w.tensors[name+".lora_a"], b: w.tensors[name+".lora_b"], src: a, rank: pa.Shape[1]})
	}
	return ps
}

// addLoRA adds every adapter's s·B·(A·x) to y; an adapter whose scale is 0 now adds nothing. A·x is scaled (r values
// per column, not out) before B, and not at all when s is 1 (files from convert --lora-only carry their scale in B).
func addLoRA(ctx *ggml.Context, y, x ggml.Tensor, ps []loraPair) ggml.Tensor {
	for _, p := range ps {
		s := p.src.pairScale(p.rank)
		if s == 0 {
			continue
		}
		if !x.IsContiguous() {
			x = x.Cont(ctx)
		}
		ax := p.a.MulMat(ctx, x)
		if s != 1 {
			ax = ax.Scale(ctx, s)
		}
		y = y.Add(ctx, p.b.MulMat(ctx, ax))
	}
	return y
}

// AdapterScales returns the scale now in force of each adapter of Options.Adapters, in order.
func (m *Model) AdapterScales() []float32 {
	out := make([]float32, len(m.opts.Adapters))
	for _, a := range m.textAdapters {
		out[a.index] = a.scale
	}
	return out
}

// SetAdapterScales sets the scale of each adapter of Options.Adapters (0 turns one off) for the graphs built from
// now on, text and vision parts alike. A sequence's KV cache keeps what earlier scales computed.
func (m *Model) SetAdapterScales(scales []float32) error {
	if len(scales) != len(m.opts.Adapters) {
		return fmt.Errorf("%w: %d adapter scales for %d adapters", ErrBadOptions, len(scales), len(m.opts.Adapters))
	}
	for i, s := range scales {
		if math.IsNaN(float64(s)) || math.IsInf(float64(s), 0) {
			return fmt.Errorf("%w: adapter %d: scale %v is not a finite number", ErrBadOptions, i, s)
		}
	}
	for _, as := range [][]*adapterWeights{m.textAdapters, m.visionAdapters} {
		for _, a := range as {
			a.scale = scales[a.index]
		}
	}
	return nil
}

// HasVisionAdapters reports whether a loaded adapter changes the vision tower, connector or perceiver.
func (m *Model) HasVisionAdapters() bool { return len(m.visionAdapters) > 0 }

// adaptersUnused reports the adapter tensors no weight of the model took (a pair for a weight the base lacks).
func adaptersUnused(as []*adapterWeights) error {
	var errs []error
	for _, a := range as {
		if err := a.w.checkUnused(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// AdapterReport describes the loaded adapters, one line per file, for logs and `inspect`.
func (m *Model) AdapterReport() []string {
	var out []string
	for _, as := range [][]*adapterWeights{m.textAdapters, m.visionAdapters} {
		for _, a := range as {
			out = append(out, fmt.Sprintf("%s: LoRA adapter, alpha %g, scale %g, %d tensors in the file's layout", a.file.Path, a.alpha, a.scale, len(a.file.Tensors)))
		}
	}
	return out
}

// AdapterPair is one LoRA pair of an adapter file: the base weight it updates and its sizes.
type AdapterPair struct {
	Weight  string // base weight name, e.g. "blk.0.attn_q.weight"
	Rank    int
	In, Out int
}

// AdapterInfo describes a LoRA adapter GGUF without loading it: its architecture, alpha and pairs in file order.
type AdapterInfo struct {
	Architecture string
	Alpha        float32
	Pairs        []AdapterPair
}

// DescribeAdapter reads an adapter file's metadata and pairs. A file that is not a LoRA adapter, a tensor that is
// neither half of a pair, a pair without its partner or with inconsistent shapes is an error naming it.
func DescribeAdapter(f *gguf.File) (*AdapterInfo, error) {
	md := f.Metadata
	for _, kv := range []struct{ key, want string }{{"general.type", "adapter"}, {"adapter.type", "lora"}} {
		got, err := md.String(kv.key)
		if err != nil {
			return nil, fileErrorf(f.Path, ErrNotAdapter, "%s: %v", kv.key, err)
		}
		if got != kv.want {
			return nil, fileErrorf(f.Path, ErrNotAdapter, "%s is %q, want %q", kv.key, got, kv.want)
		}
	}
	info := &AdapterInfo{}
	var err error
	if info.Architecture, err = md.String("general.architecture"); err != nil {
		return nil, fileErrorf(f.Path, ErrNotAdapter, "general.architecture: %v", err)
	}
	if info.Alpha, err = md.Float32("adapter.lora.alpha"); err != nil {
		return nil, fileErrorf(f.Path, ErrNotAdapter, "adapter.lora.alpha: %v", err)
	}
	var errs weightErrors
	for _, ti := range f.Tensors {
		name, isA := strings.CutSuffix(ti.Name, ".lora_a")
		if !isA {
			if _, isB := strings.CutSuffix(ti.Name, ".lora_b"); !isB {
				errs = append(errs, &WeightError{Path: f.Path, Tensor: ti.Name, Got: "a tensor", Want: "only <weight>.lora_a and <weight>.lora_b"})
			} else if _, ok := f.Tensor(strings.TrimSuffix(ti.Name, ".lora_b") + ".lora_a"); !ok {
				errs = append(errs, &WeightError{Path: f.Path, Tensor: strings.TrimSuffix(ti.Name, ".lora_b") + ".lora_a", Want: "the partner of " + ti.Name})
			}
			continue
		}
		tb, ok := f.Tensor(name + ".lora_b")
		if !ok {
			errs = append(errs, &WeightError{Path: f.Path, Tensor: name + ".lora_b", Want: "the partner of " + ti.Name})
			continue
		}
		a, b := shapeOf(&ti), shapeOf(tb)
		if len(a) != 2 || len(b) != 2 || a[1] != b[0] || a[1] <= 0 {
			errs = append(errs, &WeightError{Path: f.Path, Tensor: ti.Name, Got: fmt.Sprintf("shapes %v and %v", a, b), Want: "[in, r] and [r, out]"})
			continue
		}
		info.Pairs = append(info.Pairs, AdapterPair{Weight: name, Rank: a[1], In: a[0], Out: b[1]})
	}
	return info, errs.errOrNil()
}

// CheckAdapterBase checks an adapter against a base model file as loading it would, without loading either: the
// same architecture, and for every pair a base weight of shape [in, out]. Each mismatch names the tensor.
func CheckAdapterBase(info *AdapterInfo, adapterPath string, base *gguf.File) error {
	arch, err := base.Metadata.String("general.architecture")
	if err != nil {
		return fileErrorf(base.Path, ErrFileKind, "general.architecture: %v", err)
	}
	if arch != info.Architecture {
		return fileErrorf(adapterPath, ErrNotAdapter, "an adapter for architecture %q, but %s is %q", info.Architecture, base.Path, arch)
	}
	specs, err := tensorSpecs(base)
	if err != nil {
		return err
	}
	shapes := map[string][]int{}
	for _, s := range specs {
		shapes[s.Name] = s.Shape
		if s.NF4 != nil {
			shapes[s.Name] = s.NF4.Shape
		}
	}
	var errs weightErrors
	for _, p := range info.Pairs {
		w, ok := shapes[p.Weight]
		switch {
		case !ok:
			errs = append(errs, &WeightError{Path: adapterPath, Tensor: p.Weight + ".lora_a", Got: fmt.Sprintf("a pair for %s", p.Weight), Want: "a weight of " + base.Path})
		case len(w) != 2 || w[0] != p.In || w[1] != p.Out:
			errs = append(errs, &WeightError{Path: adapterPath, Tensor: p.Weight + ".lora_a", Got: fmt.Sprintf("[%d, %d] (rank %d)", p.In, p.Out, p.Rank), Want: fmt.Sprintf("%v as in %s", w, base.Path)})
		}
	}
	return errs.errOrNil()
}
