package synth

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// AdapterModules are the text model's linear layers a synthetic adapter adapts (PEFT module name suffixes): every
// projection of every decoder layer, as LoraConfig(target_modules=[…all seven…]) selects them.
var AdapterModules = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// adapterStd is the standard deviation of a synthetic lora_A and lora_B value: with rank 16 and alpha 16 the update
// s·B·A has entries of about 0.02²·4 = 1.6e-3, a small change against weights of InitStd, as a fine-tune makes.
const adapterStd = 0.02

// WriteAdapter writes a synthetic PEFT LoRA adapter folder for cfg into dir (which must not exist): the layout
// peft's save_pretrained writes — adapter_config.json (peft_type LORA, r, lora_alpha, target_modules
// AdapterModules) and adapter_model.safetensors with "base_model.model.model.text_model.layers.N.<module>.lora_A.weight"
// [rank, in] and ".lora_B.weight" [out, rank] in F32 — with random values drawn from seed (same seed, same bytes).
// Next to it, in dir/base, it writes the small files of cfg's checkpoint (config.json, processor and tokenizer
// files, no weights): what a run-time adapter export needs of its base.
func WriteAdapter(dir string, cfg Config, rank int, alpha float64, seed uint64) (err error) {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if rank <= 0 || rank > min(cfg.Text.HiddenSize, cfg.Text.IntermediateSize) {
		return fmt.Errorf("synth: adapter rank %d: want 1 to %d", rank, min(cfg.Text.HiddenSize, cfg.Text.IntermediateSize))
	}
	if math.IsNaN(alpha) || math.IsInf(alpha, 0) || alpha == 0 {
		return fmt.Errorf("synth: adapter alpha %v is not a finite non-zero number", alpha)
	}
	dir = filepath.Clean(dir)
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("synth: output folder %s already exists", dir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("synth: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "base"), 0o755); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	if err := writeSmallFiles(filepath.Join(dir, "base"), cfg, nil); err != nil {
		return err
	}
	conf, err := json.MarshalIndent(map[string]any{
		"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": AdapterModules,
		"bias": "none", "use_rslora": false, "use_dora": false, "fan_in_fan_out": false,
		"rank_pattern": map[string]int{}, "alpha_pattern": map[string]float64{}, "modules_to_save": nil,
		"base_model_name_or_path": cfg.Name, "task_type": nil, "init_lora_weights": true, "lora_dropout": 0.0,
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("synth: adapter_config.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "adapter_config.json"), conf, 0o644); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	return writeAdapterWeights(filepath.Join(dir, "adapter_model.safetensors"), cfg, rank, seed)
}

// writeAdapterWeights writes the lora_A/lora_B pairs as one safetensors file, tensors in name order.
func writeAdapterWeights(path string, cfg Config, rank int, seed uint64) error {
	t := cfg.Text
	sizes := map[string][2]int{ // module → out, in
		"q_proj": {t.NumHeads * t.HeadDim, t.HiddenSize}, "k_proj": {t.NumKVHeads * t.HeadDim, t.HiddenSize},
		"v_proj": {t.NumKVHeads * t.HeadDim, t.HiddenSize}, "o_proj": {t.HiddenSize, t.NumHeads * t.HeadDim},
		"gate_proj": {t.IntermediateSize, t.HiddenSize}, "up_proj": {t.IntermediateSize, t.HiddenSize},
		"down_proj": {t.HiddenSize, t.IntermediateSize},
	}
	sub := map[string]string{"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
		"gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
	type tensor struct {
		name  string
		shape [2]int
	}
	var ts []tensor
	for l := 0; l < t.NumLayers; l++ {
		for _, m := range AdapterModules {
			p := fmt.Sprintf("base_model.model.model.text_model.layers.%d.%s.%s.", l, sub[m], m)
			ts = append(ts, tensor{p + "lora_A.weight", [2]int{rank, sizes[m][1]}}, tensor{p + "lora_B.weight", [2]int{sizes[m][0], rank}})
		}
	}
	// Name order, as the safetensors library writes a state dict.
	slices.SortFunc(ts, func(a, b tensor) int { return strings.Compare(a.name, b.name) })
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var off int
	for _, x := range ts {
		n := 4 * x.shape[0] * x.shape[1]
		header[x.name] = map[string]any{"dtype": "F32", "shape": x.shape, "data_offsets": []int{off, off + n}}
		off += n
	}
	hj, err := json.Marshal(header)
	if err != nil {
		return fmt.Errorf("synth: %s: %w", path, err)
	}
	for len(hj)%8 != 0 {
		hj = append(hj, ' ')
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	defer f.Close()
	if err := binary.Write(f, binary.LittleEndian, uint64(len(hj))); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	if _, err := f.Write(hj); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	for _, x := range ts {
		r := rng{s: tensorKey(seed, x.name)}
		buf := make([]byte, 4*x.shape[0]*x.shape[1])
		for i := 0; i < len(buf); i += 4 {
			binary.LittleEndian.PutUint32(buf[i:], math.Float32bits(r.normal()*adapterStd))
		}
		if _, err := f.Write(buf); err != nil {
			return fmt.Errorf("synth: %w", err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	return nil
}
