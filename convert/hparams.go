package convert

import (
	"path/filepath"
	"slices"
	"strings"
)

// configFile is the name of the model configuration in a checkpoint folder.
const configFile = "config.json"

// textParams are the Mistral decoder hyper-parameters (text_config, transformers' MistralConfig).
type textParams struct {
	vocabSize     int
	hiddenSize    int
	ffnSize       int // intermediate_size
	numLayers     int
	numHeads      int
	numKVHeads    int
	headDim       int
	maxPositions  int
	eps           float64 // rms_norm_eps
	ropeBase      float64 // rope_theta
	slidingWindow int     // 0 when the config has null (no window)
	hiddenAct     string
}

// visionParams are the SigLIP-style encoder hyper-parameters (vision_config,
// Idefics2VisionConfig).
type visionParams struct {
	hiddenSize  int
	ffnSize     int
	numLayers   int
	numHeads    int
	numChannels int
	imageSize   int
	patchSize   int
	eps         float64 // layer_norm_eps
	hiddenAct   string
}

// numPositions is the number of position embeddings: (image_size / patch_size)².
func (v *visionParams) numPositions() int {
	n := v.imageSize / v.patchSize
	return n * n
}

// perceiverParams are the perceiver resampler hyper-parameters (perceiver_config,
// Idefics2PerceiverConfig, plus the values the resampler takes from text_config).
type perceiverParams struct {
	hiddenSize int // = text hidden size
	numLatents int
	numLayers  int
	numHeads   int
	numKVHeads int
	headDim    int
	ffnSize    int     // 4 × hiddenSize, hard-coded in Idefics2PerceiverLayer
	eps        float64 // see parsePerceiver
	hiddenAct  string
}

// hparams are the hyper-parameters of an Idefics2ForConditionalGeneration checkpoint, all read from
// config.json.
type hparams struct {
	name         string // general.name
	imageTokenID int
	tieEmbedding bool // tie_word_embeddings: lm_head shares embed_tokens
	text         textParams
	vision       visionParams
	perceiver    perceiverParams
}

// maxLayers bounds every layer count (idefics2-8b has 32; the bound only keeps a hostile config
// from expanding millions of tensor names).
const maxLayers = 4096

// checkLayers checks a layer count read with positive.
func checkLayers(o *jsonObject, key string, n int) error {
	if n > maxLayers {
		return o.errorf(key, "%d layers is more than %d", n, maxLayers)
	}
	return nil
}

// idefics2Architecture is the only architecture this converter handles.
const idefics2Architecture = "Idefics2ForConditionalGeneration"

// parseConfig reads and validates dir/config.json.
func parseConfig(dir string) (*hparams, error) {
	cfg, _, err := readJSONObject(dir, configFile, false)
	if err != nil {
		return nil, err
	}
	return parseConfigObject(dir, cfg)
}

func parseConfigObject(dir string, cfg *jsonObject) (*hparams, error) {
	h := &hparams{}
	modelType, err := required[string](cfg, "model_type")
	if err != nil {
		return nil, err
	}
	if modelType != "idefics2" {
		return nil, cfg.errorf("model_type", "%q is not supported (want \"idefics2\")", modelType)
	}
	archs, ok, err := optional[[]string](cfg, "architectures")
	if err != nil {
		return nil, err
	}
	if ok && !slices.Contains(archs, idefics2Architecture) {
		return nil, cfg.errorf("architectures", "%q is not supported (want %q)", archs, idefics2Architecture)
	}

	if err := checkQuantizationConfig(cfg); err != nil {
		return nil, err
	}
	// Idefics2Config defaults: image_token_id=32_001, tie_word_embeddings=False.
	if h.imageTokenID, err = withDefault(cfg, "image_token_id", 32001); err != nil {
		return nil, err
	}
	if h.imageTokenID < 0 {
		return nil, cfg.errorf("image_token_id", "%d is negative", h.imageTokenID)
	}
	if h.tieEmbedding, err = withDefault(cfg, "tie_word_embeddings", false); err != nil {
		return nil, err
	}

	h.name = filepath.Base(filepath.Clean(dir))
	if n, ok, err := optional[string](cfg, "_name_or_path"); err != nil {
		return nil, err
	} else if ok && strings.TrimSpace(n) != "" {
		h.name = filepath.Base(filepath.Clean(n))
	}

	textCfg, ok, err := cfg.object("text_config")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, cfg.errorf("text_config", "missing")
	}
	if err := parseText(textCfg, &h.text); err != nil {
		return nil, err
	}
	visionCfg, ok, err := cfg.object("vision_config")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, cfg.errorf("vision_config", "missing")
	}
	if err := parseVision(visionCfg, &h.vision); err != nil {
		return nil, err
	}
	percCfg, ok, err := cfg.object("perceiver_config")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, cfg.errorf("perceiver_config", "missing")
	}
	if err := parsePerceiver(percCfg, &h.text, &h.perceiver); err != nil {
		return nil, err
	}
	if h.imageTokenID >= h.text.vocabSize {
		return nil, cfg.errorf("image_token_id", "%d is outside the vocabulary (text_config.vocab_size %d)", h.imageTokenID, h.text.vocabSize)
	}
	return h, nil
}

func parseText(o *jsonObject, t *textParams) error {
	modelType, err := required[string](o, "model_type")
	if err != nil {
		return err
	}
	if modelType != "mistral" {
		return o.errorf("model_type", "%q is not supported (want \"mistral\")", modelType)
	}
	// Structural sizes are required: MistralConfig's defaults are Mistral-7B's, and a checkpoint
	// written by save_pretrained always carries them.
	for _, f := range []struct {
		key string
		dst *int
	}{
		{"vocab_size", &t.vocabSize},
		{"hidden_size", &t.hiddenSize},
		{"intermediate_size", &t.ffnSize},
		{"num_hidden_layers", &t.numLayers},
		{"num_attention_heads", &t.numHeads},
	} {
		if *f.dst, err = positive(o, f.key); err != nil {
			return err
		}
	}
	// MistralConfig defaults: num_key_value_heads=8, max_position_embeddings=4096*32,
	// rms_norm_eps=1e-6, rope_theta=10000.0, sliding_window=4096, hidden_act="silu",
	// head_dim=hidden_size // num_attention_heads.
	if t.numKVHeads, err = positiveDefault(o, "num_key_value_heads", 8); err != nil {
		return err
	}
	if t.maxPositions, err = positiveDefault(o, "max_position_embeddings", 4096*32); err != nil {
		return err
	}
	if t.eps, err = positiveFloatDefault(o, "rms_norm_eps", 1e-6); err != nil {
		return err
	}
	if t.ropeBase, err = positiveFloatDefault(o, "rope_theta", 10000.0); err != nil {
		return err
	}
	if t.hiddenAct, err = withDefault(o, "hidden_act", "silu"); err != nil {
		return err
	}
	if t.hiddenAct != "silu" {
		return o.errorf("hidden_act", "%q is not supported (llama architecture: silu)", t.hiddenAct)
	}
	if _, present := o.m["sliding_window"]; !present {
		t.slidingWindow = 4096
	} else if o.has("sliding_window") {
		if t.slidingWindow, err = positive(o, "sliding_window"); err != nil {
			return err
		}
	}
	if o.has("head_dim") {
		if t.headDim, err = positive(o, "head_dim"); err != nil {
			return err
		}
	} else {
		if t.hiddenSize%t.numHeads != 0 {
			return o.errorf("hidden_size", "%d is not divisible by num_attention_heads %d (and head_dim is absent)", t.hiddenSize, t.numHeads)
		}
		t.headDim = t.hiddenSize / t.numHeads
	}
	if err := checkLayers(o, "num_hidden_layers", t.numLayers); err != nil {
		return err
	}
	if t.numHeads%t.numKVHeads != 0 {
		return o.errorf("num_key_value_heads", "%d does not divide num_attention_heads %d", t.numKVHeads, t.numHeads)
	}
	if t.headDim%2 != 0 {
		return o.errorf("head_dim", "%d is odd; rotary embeddings need an even head dimension", t.headDim)
	}
	if rs, ok, err := optional[map[string]any](o, "rope_scaling"); err != nil {
		return err
	} else if ok && len(rs) > 0 {
		return o.errorf("rope_scaling", "not supported")
	}
	return nil
}

func parseVision(o *jsonObject, v *visionParams) error {
	var err error
	for _, f := range []struct {
		key string
		dst *int
	}{
		{"hidden_size", &v.hiddenSize},
		{"intermediate_size", &v.ffnSize},
		{"num_hidden_layers", &v.numLayers},
		{"num_attention_heads", &v.numHeads},
		{"image_size", &v.imageSize},
		{"patch_size", &v.patchSize},
	} {
		if *f.dst, err = positive(o, f.key); err != nil {
			return err
		}
	}
	// Idefics2VisionConfig defaults: num_channels=3, layer_norm_eps=1e-6,
	// hidden_act="gelu_pytorch_tanh".
	if v.numChannels, err = positiveDefault(o, "num_channels", 3); err != nil {
		return err
	}
	if v.eps, err = positiveFloatDefault(o, "layer_norm_eps", 1e-6); err != nil {
		return err
	}
	if v.hiddenAct, err = withDefault(o, "hidden_act", "gelu_pytorch_tanh"); err != nil {
		return err
	}
	if err := checkLayers(o, "num_hidden_layers", v.numLayers); err != nil {
		return err
	}
	if v.hiddenSize%v.numHeads != 0 {
		return o.errorf("hidden_size", "%d is not divisible by num_attention_heads %d", v.hiddenSize, v.numHeads)
	}
	if v.imageSize%v.patchSize != 0 {
		return o.errorf("image_size", "%d is not a multiple of patch_size %d", v.imageSize, v.patchSize)
	}
	if v.numChannels != 3 {
		return o.errorf("num_channels", "%d is not supported (the image processor produces 3 channels)", v.numChannels)
	}
	return nil
}

// parsePerceiver reads perceiver_config. The resampler's width is the text hidden size: the
// transformers v4.44 resampler reads text_config.hidden_size, and later versions' Idefics2Config
// overwrite a differing perceiver hidden_size (and its rms_norm_eps) with the text values. The
// RMSNorm epsilon follows IDEFICS2.md §2.3: perceiver_config.rms_norm_eps when the file has it
// (and the hidden sizes agree), else text_config.rms_norm_eps.
func parsePerceiver(o *jsonObject, text *textParams, p *perceiverParams) error {
	var err error
	p.hiddenSize = text.hiddenSize
	p.eps = text.eps
	hs, hasHidden, err := optional[int](o, "hidden_size")
	if err != nil {
		return err
	}
	if !hasHidden || hs == text.hiddenSize {
		if eps, ok, err := optional[float64](o, "rms_norm_eps"); err != nil {
			return err
		} else if ok {
			if !positiveFloat32(eps) {
				return o.errorf("rms_norm_eps", "%v is not a positive finite float32 number", eps)
			}
			p.eps = eps
		}
	}
	// Idefics2PerceiverConfig defaults: hidden_act="silu", resampler_n_latents=64,
	// resampler_depth=3, resampler_n_heads=16, resampler_head_dim=96, num_key_value_heads=4.
	for _, f := range []struct {
		key string
		def int
		dst *int
	}{
		{"resampler_n_latents", 64, &p.numLatents},
		{"resampler_depth", 3, &p.numLayers},
		{"resampler_n_heads", 16, &p.numHeads},
		{"resampler_head_dim", 96, &p.headDim},
		{"num_key_value_heads", 4, &p.numKVHeads},
	} {
		if *f.dst, err = positiveDefault(o, f.key, f.def); err != nil {
			return err
		}
	}
	if p.hiddenAct, err = withDefault(o, "hidden_act", "silu"); err != nil {
		return err
	}
	if err := checkLayers(o, "resampler_depth", p.numLayers); err != nil {
		return err
	}
	if p.numHeads%p.numKVHeads != 0 {
		return o.errorf("num_key_value_heads", "%d does not divide resampler_n_heads %d", p.numKVHeads, p.numHeads)
	}
	// Idefics2PerceiverLayer builds its MLP with intermediate_size = hidden_size * 4.
	p.ffnSize = 4 * p.hiddenSize
	return nil
}
