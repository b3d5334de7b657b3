package synth

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// TextConfig holds the Mistral decoder sizes (config.json text_config).
type TextConfig struct {
	VocabSize        int     // vocab_size; at least MinVocabSize so the embedded tokenizer fits
	HiddenSize       int     // hidden_size
	IntermediateSize int     // intermediate_size (SwiGLU inner width)
	NumLayers        int     // num_hidden_layers
	NumHeads         int     // num_attention_heads
	NumKVHeads       int     // num_key_value_heads; divides NumHeads
	HeadDim          int     // head_dim; NumHeads·HeadDim need not equal HiddenSize
	MaxPositions     int     // max_position_embeddings
	RMSNormEps       float64 // rms_norm_eps
	RopeTheta        float64 // rope_theta
	SlidingWindow    int     // sliding_window
}

// VisionConfig holds the SigLIP-style vision tower sizes (config.json vision_config).
type VisionConfig struct {
	HiddenSize       int     // hidden_size; a multiple of NumHeads
	IntermediateSize int     // intermediate_size (fc1 output width)
	NumLayers        int     // num_hidden_layers
	NumHeads         int     // num_attention_heads
	NumChannels      int     // num_channels
	PatchSize        int     // patch_size (pixels per patch side)
	ImageSize        int     // image_size; a multiple of PatchSize
	LayerNormEps     float64 // layer_norm_eps
}

// PerceiverConfig holds the perceiver resampler sizes (config.json perceiver_config). Its hidden
// size is the text hidden size and its MLP is 4× that wide (both fixed by the HF model class).
type PerceiverConfig struct {
	NumLatents int // resampler_n_latents: image tokens per (sub-)image
	Depth      int // resampler_depth
	NumHeads   int // resampler_n_heads
	HeadDim    int // resampler_head_dim
	NumKVHeads int // num_key_value_heads; divides NumHeads
}

// Config describes a synthetic checkpoint: the model sizes, the processor settings, and how the
// weights are drawn and stored.
type Config struct {
	// Name is written as the top-level _name_or_path of config.json (the converter's general.name).
	Name      string
	Text      TextConfig
	Vision    VisionConfig
	Perceiver PerceiverConfig
	// ImageSeqLen is processor_config.json image_seq_len; must equal Perceiver.NumLatents.
	ImageSeqLen int
	// ShortestEdge and LongestEdge are preprocessor_config.json size (pixels).
	ShortestEdge, LongestEdge int
	// ImageSplitting is preprocessor_config.json do_image_splitting.
	ImageSplitting bool
	// DType is the safetensors dtype of every weight: "BF16" or "F32".
	DType string
	// MaxShardBytes bounds a shard's tensor data: tensors (in name order) are added to a shard
	// until the next one would exceed it; a tensor larger than the bound gets a shard of its own
	// (the rule of transformers' max_shard_size).
	MaxShardBytes int64
	// InitStd is the standard deviation of every matrix, embedding, convolution and latent
	// (PretrainedConfig.initializer_range, 0.02 in idefics2); norm weights are 1, biases 0.
	InitStd float64
}

// MinVocabSize is the number of tokens of the embedded idefics2 tokenizer (32000 SentencePiece
// pieces + <fake_token_around_image>, <image>, <end_of_utterance>); vocab_size must cover them.
const MinVocabSize = 32003

// imageTokenID is the id of <image> in the embedded tokenizer (Idefics2Config.image_token_id).
const imageTokenID = 32001

// maxLayers bounds every layer count so a mistaken Config cannot expand into millions of tensors.
const maxLayers = 1024

// maxShardBytes is the default shard bound: about 4 GB, close to the shards of the published
// idefics2-8b checkpoint.
const maxShardBytes int64 = 4_000_000_000

// presets are the named configurations; idefics2-8b values are those of IDEFICS2.md §2.
var presets = map[string]Config{
	"idefics2-8b": {
		Name: "synthetic-idefics2-8b",
		Text: TextConfig{
			VocabSize: 32003, HiddenSize: 4096, IntermediateSize: 14336, NumLayers: 32,
			NumHeads: 32, NumKVHeads: 8, HeadDim: 128, MaxPositions: 32768,
			RMSNormEps: 1e-5, RopeTheta: 10000, SlidingWindow: 4096,
		},
		Vision: VisionConfig{
			HiddenSize: 1152, IntermediateSize: 4304, NumLayers: 27, NumHeads: 16,
			NumChannels: 3, PatchSize: 14, ImageSize: 980, LayerNormEps: 1e-6,
		},
		Perceiver:      PerceiverConfig{NumLatents: 64, Depth: 3, NumHeads: 16, HeadDim: 96, NumKVHeads: 4},
		ImageSeqLen:    64,
		ShortestEdge:   378,
		LongestEdge:    980,
		ImageSplitting: true,
		DType:          "BF16",
		MaxShardBytes:  maxShardBytes,
		InitStd:        0.02,
	},
	// tiny has the hidden sizes of the p1 test fixture (testdata/hf/checkpoints/p1) with the
	// real vocabulary; its shard bound is small so that even it is split into several shards.
	"tiny": {
		Name: "synthetic-tiny",
		Text: TextConfig{
			VocabSize: 32003, HiddenSize: 32, IntermediateSize: 64, NumLayers: 2,
			NumHeads: 4, NumKVHeads: 1, HeadDim: 8, MaxPositions: 4096,
			RMSNormEps: 1e-5, RopeTheta: 10000, SlidingWindow: 4096,
		},
		Vision: VisionConfig{
			HiddenSize: 32, IntermediateSize: 64, NumLayers: 2, NumHeads: 2,
			NumChannels: 3, PatchSize: 14, ImageSize: 56, LayerNormEps: 1e-6,
		},
		Perceiver:      PerceiverConfig{NumLatents: 4, Depth: 2, NumHeads: 4, HeadDim: 8, NumKVHeads: 2},
		ImageSeqLen:    4,
		ShortestEdge:   28,
		LongestEdge:    56,
		ImageSplitting: true,
		DType:          "BF16",
		MaxShardBytes:  2 << 20,
		InitStd:        0.02,
	},
}

// PresetNames returns the names Preset accepts, sorted.
func PresetNames() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Preset returns the named configuration: "idefics2-8b" (the real idefics2-8b shapes) or "tiny"
// (the sizes of the p1 test fixture).
func Preset(name string) (Config, error) {
	c, ok := presets[name]
	if !ok {
		return Config{}, fmt.Errorf("synth: unknown preset %q (want one of %s)", name, strings.Join(PresetNames(), ", "))
	}
	return c, nil
}

// dtypeSize returns the bytes per value of a supported DType.
func dtypeSize(dtype string) (int, bool) {
	switch dtype {
	case "BF16":
		return 2, true
	case "F32":
		return 4, true
	}
	return 0, false
}

// Validate checks that c describes a checkpoint the Idefics2 model classes can build: positive
// sizes, head counts that divide, the image a whole number of patches, image_seq_len equal to
// the latent count, a supported dtype and a positive shard bound.
func (c Config) Validate() error {
	type field struct {
		name string
		v    int
	}
	for _, f := range []field{
		{"Text.VocabSize", c.Text.VocabSize},
		{"Text.HiddenSize", c.Text.HiddenSize},
		{"Text.IntermediateSize", c.Text.IntermediateSize},
		{"Text.NumLayers", c.Text.NumLayers},
		{"Text.NumHeads", c.Text.NumHeads},
		{"Text.NumKVHeads", c.Text.NumKVHeads},
		{"Text.HeadDim", c.Text.HeadDim},
		{"Text.MaxPositions", c.Text.MaxPositions},
		{"Text.SlidingWindow", c.Text.SlidingWindow},
		{"Vision.HiddenSize", c.Vision.HiddenSize},
		{"Vision.IntermediateSize", c.Vision.IntermediateSize},
		{"Vision.NumLayers", c.Vision.NumLayers},
		{"Vision.NumHeads", c.Vision.NumHeads},
		{"Vision.NumChannels", c.Vision.NumChannels},
		{"Vision.PatchSize", c.Vision.PatchSize},
		{"Vision.ImageSize", c.Vision.ImageSize},
		{"Perceiver.NumLatents", c.Perceiver.NumLatents},
		{"Perceiver.Depth", c.Perceiver.Depth},
		{"Perceiver.NumHeads", c.Perceiver.NumHeads},
		{"Perceiver.HeadDim", c.Perceiver.HeadDim},
		{"Perceiver.NumKVHeads", c.Perceiver.NumKVHeads},
		{"ImageSeqLen", c.ImageSeqLen},
		{"ShortestEdge", c.ShortestEdge},
		{"LongestEdge", c.LongestEdge},
	} {
		if f.v <= 0 {
			return fmt.Errorf("synth: config %s: %d is not positive", f.name, f.v)
		}
		// Bound every size so that products of a few of them cannot overflow int64.
		if f.v > 1<<24 {
			return fmt.Errorf("synth: config %s: %d is more than %d", f.name, f.v, 1<<24)
		}
	}
	for _, f := range []field{
		{"Text.NumLayers", c.Text.NumLayers},
		{"Vision.NumLayers", c.Vision.NumLayers},
		{"Perceiver.Depth", c.Perceiver.Depth},
	} {
		if f.v > maxLayers {
			return fmt.Errorf("synth: config %s: %d layers is more than %d", f.name, f.v, maxLayers)
		}
	}
	if c.Text.VocabSize < MinVocabSize {
		return fmt.Errorf("synth: config Text.VocabSize: %d is less than the %d tokens of the idefics2 tokenizer", c.Text.VocabSize, MinVocabSize)
	}
	if c.Text.NumHeads%c.Text.NumKVHeads != 0 {
		return fmt.Errorf("synth: config Text.NumKVHeads: %d does not divide Text.NumHeads %d", c.Text.NumKVHeads, c.Text.NumHeads)
	}
	if c.Perceiver.NumHeads%c.Perceiver.NumKVHeads != 0 {
		return fmt.Errorf("synth: config Perceiver.NumKVHeads: %d does not divide Perceiver.NumHeads %d", c.Perceiver.NumKVHeads, c.Perceiver.NumHeads)
	}
	if c.Vision.HiddenSize%c.Vision.NumHeads != 0 {
		return fmt.Errorf("synth: config Vision.NumHeads: %d does not divide Vision.HiddenSize %d", c.Vision.NumHeads, c.Vision.HiddenSize)
	}
	if c.Vision.ImageSize%c.Vision.PatchSize != 0 {
		return fmt.Errorf("synth: config Vision.ImageSize: %d is not a multiple of Vision.PatchSize %d", c.Vision.ImageSize, c.Vision.PatchSize)
	}
	if c.ImageSeqLen != c.Perceiver.NumLatents {
		return fmt.Errorf("synth: config ImageSeqLen: %d differs from Perceiver.NumLatents %d", c.ImageSeqLen, c.Perceiver.NumLatents)
	}
	if c.ShortestEdge > c.LongestEdge {
		return fmt.Errorf("synth: config ShortestEdge: %d is more than LongestEdge %d", c.ShortestEdge, c.LongestEdge)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"Text.RMSNormEps", c.Text.RMSNormEps},
		{"Text.RopeTheta", c.Text.RopeTheta},
		{"Vision.LayerNormEps", c.Vision.LayerNormEps},
	} {
		if !(f.v > 0) || math.IsInf(f.v, 0) {
			return fmt.Errorf("synth: config %s: %v is not a positive finite number", f.name, f.v)
		}
	}
	if !(c.InitStd >= 0) || math.IsInf(c.InitStd, 0) {
		return fmt.Errorf("synth: config InitStd: %v is not a finite non-negative number", c.InitStd)
	}
	if _, ok := dtypeSize(c.DType); !ok {
		return fmt.Errorf("synth: config DType: %q is not supported (want \"BF16\" or \"F32\")", c.DType)
	}
	if c.MaxShardBytes <= 0 {
		return fmt.Errorf("synth: config MaxShardBytes: %d is not positive", c.MaxShardBytes)
	}
	// Sizes are bounded one by one above, but a product of several could still overflow int64:
	// bound every tensor and the total in float64 first.
	size, _ := dtypeSize(c.DType)
	var total float64
	for _, t := range c.Tensors() {
		n := float64(size)
		for _, d := range t.Shape {
			n *= float64(d)
		}
		if n > maxTensorBytes {
			return fmt.Errorf("synth: config: tensor %s %v would be %.3g bytes, more than %d", t.Name, t.Shape, n, int64(maxTensorBytes))
		}
		total += n
	}
	if total > maxTotalBytes {
		return fmt.Errorf("synth: config: %.3g bytes of weights, more than %d", total, int64(maxTotalBytes))
	}
	return nil
}

// Bounds that keep every size computation far from int64 overflow (the idefics2-8b preset has
// 16.8 GB of weights, its largest tensor 262 MB).
const (
	maxTensorBytes = 1 << 40
	maxTotalBytes  = 1 << 44
)
