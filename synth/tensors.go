package synth

import (
	"fmt"
	"slices"
	"strings"
)

// Init says how a tensor's values are drawn.
type Init int

const (
	// Normal draws each value from N(0, Config.InitStd²) (see Tensor values for the generator).
	Normal Init = iota
	// Ones fills the tensor with 1 (norm weights, as the HF classes initialize them).
	Ones
	// Zeros fills the tensor with 0 (biases).
	Zeros
)

// String returns "normal", "ones" or "zeros".
func (i Init) String() string {
	switch i {
	case Normal:
		return "normal"
	case Ones:
		return "ones"
	case Zeros:
		return "zeros"
	}
	return fmt.Sprintf("Init(%d)", int(i))
}

// Tensor is one weight of the checkpoint.
type Tensor struct {
	Name  string  // Hugging Face state-dict name, e.g. "model.text_model.layers.0.self_attn.q_proj.weight"
	Shape []int64 // PyTorch shape, outermost first
	Init  Init
}

// Elements returns the number of values of t.
func (t Tensor) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Tensors returns every weight of an Idefics2ForConditionalGeneration with c's sizes, sorted by
// name (the order of the shards and of each shard's header). Names and shapes follow
// modeling_idefics2.py (IDEFICS2.md §4); lm_head is untied. c must be valid (Validate).
func (c Config) Tensors() []Tensor {
	var ts []Tensor
	add := func(name string, init Init, shape ...int) {
		s := make([]int64, len(shape))
		for i, d := range shape {
			s[i] = int64(d)
		}
		ts = append(ts, Tensor{Name: name, Shape: s, Init: init})
	}
	linear := func(prefix string, out, in int, bias bool) {
		add(prefix+".weight", Normal, out, in)
		if bias {
			add(prefix+".bias", Zeros, out)
		}
	}
	layerNorm := func(prefix string, n int) {
		add(prefix+".weight", Ones, n)
		add(prefix+".bias", Zeros, n)
	}

	// Vision tower (Idefics2VisionTransformer).
	v := c.Vision
	const vp = "model.vision_model."
	add(vp+"embeddings.patch_embedding.weight", Normal, v.HiddenSize, v.NumChannels, v.PatchSize, v.PatchSize)
	add(vp+"embeddings.patch_embedding.bias", Zeros, v.HiddenSize)
	side := v.ImageSize / v.PatchSize
	add(vp+"embeddings.position_embedding.weight", Normal, side*side, v.HiddenSize)
	for i := 0; i < v.NumLayers; i++ {
		p := fmt.Sprintf("%sencoder.layers.%d.", vp, i)
		layerNorm(p+"layer_norm1", v.HiddenSize)
		for _, proj := range []string{"q_proj", "k_proj", "v_proj", "out_proj"} {
			linear(p+"self_attn."+proj, v.HiddenSize, v.HiddenSize, true)
		}
		layerNorm(p+"layer_norm2", v.HiddenSize)
		linear(p+"mlp.fc1", v.IntermediateSize, v.HiddenSize, true)
		linear(p+"mlp.fc2", v.HiddenSize, v.IntermediateSize, true)
	}
	layerNorm(vp+"post_layernorm", v.HiddenSize)

	// Connector: modality projection (SwiGLU vision → text width) and perceiver resampler.
	t := c.Text
	const cp = "model.connector."
	linear(cp+"modality_projection.gate_proj", t.IntermediateSize, v.HiddenSize, false)
	linear(cp+"modality_projection.up_proj", t.IntermediateSize, v.HiddenSize, false)
	linear(cp+"modality_projection.down_proj", t.HiddenSize, t.IntermediateSize, false)
	pc := c.Perceiver
	const pp = cp + "perceiver_resampler."
	add(pp+"latents", Normal, pc.NumLatents, t.HiddenSize)
	for i := 0; i < pc.Depth; i++ {
		p := fmt.Sprintf("%slayers.%d.", pp, i)
		add(p+"input_latents_norm.weight", Ones, t.HiddenSize)
		add(p+"input_context_norm.weight", Ones, t.HiddenSize)
		linear(p+"self_attn.q_proj", pc.NumHeads*pc.HeadDim, t.HiddenSize, false)
		linear(p+"self_attn.k_proj", pc.NumKVHeads*pc.HeadDim, t.HiddenSize, false)
		linear(p+"self_attn.v_proj", pc.NumKVHeads*pc.HeadDim, t.HiddenSize, false)
		linear(p+"self_attn.o_proj", t.HiddenSize, pc.NumHeads*pc.HeadDim, false)
		add(p+"post_attention_layernorm.weight", Ones, t.HiddenSize)
		// Idefics2PerceiverLayer builds its MLP with intermediate_size = hidden_size * 4.
		linear(p+"mlp.gate_proj", 4*t.HiddenSize, t.HiddenSize, false)
		linear(p+"mlp.up_proj", 4*t.HiddenSize, t.HiddenSize, false)
		linear(p+"mlp.down_proj", t.HiddenSize, 4*t.HiddenSize, false)
	}
	add(pp+"norm.weight", Ones, t.HiddenSize)

	// Mistral decoder and the untied output head.
	const tp = "model.text_model."
	add(tp+"embed_tokens.weight", Normal, t.VocabSize, t.HiddenSize)
	for i := 0; i < t.NumLayers; i++ {
		p := fmt.Sprintf("%slayers.%d.", tp, i)
		add(p+"input_layernorm.weight", Ones, t.HiddenSize)
		linear(p+"self_attn.q_proj", t.NumHeads*t.HeadDim, t.HiddenSize, false)
		linear(p+"self_attn.k_proj", t.NumKVHeads*t.HeadDim, t.HiddenSize, false)
		linear(p+"self_attn.v_proj", t.NumKVHeads*t.HeadDim, t.HiddenSize, false)
		linear(p+"self_attn.o_proj", t.HiddenSize, t.NumHeads*t.HeadDim, false)
		add(p+"post_attention_layernorm.weight", Ones, t.HiddenSize)
		linear(p+"mlp.gate_proj", t.IntermediateSize, t.HiddenSize, false)
		linear(p+"mlp.up_proj", t.IntermediateSize, t.HiddenSize, false)
		linear(p+"mlp.down_proj", t.HiddenSize, t.IntermediateSize, false)
	}
	add(tp+"norm.weight", Ones, t.HiddenSize)
	add("lm_head.weight", Normal, t.VocabSize, t.HiddenSize)

	slices.SortFunc(ts, func(a, b Tensor) int { return strings.Compare(a.Name, b.Name) })
	return ts
}

// DataBytes returns the bytes of tensor data the checkpoint holds (the index's total_size).
// c must be valid (Validate).
func (c Config) DataBytes() int64 {
	size, _ := dtypeSize(c.DType)
	var n int64
	for _, t := range c.Tensors() {
		n += t.Elements() * int64(size)
	}
	return n
}

// shard is one safetensors file: its tensors in header order.
type shard struct {
	file    string
	tensors []Tensor
	bytes   int64
}

// planShards splits ts (in order) into shards of at most maxBytes of data each, a tensor larger
// than maxBytes getting a shard of its own, and names them as save_pretrained does:
// model.safetensors for a single shard, model-0000N-of-0000M.safetensors otherwise.
func planShards(ts []Tensor, elemSize int, maxBytes int64) []shard {
	var shards []shard
	var cur shard
	for _, t := range ts {
		n := t.Elements() * int64(elemSize)
		if len(cur.tensors) > 0 && cur.bytes+n > maxBytes {
			shards = append(shards, cur)
			cur = shard{}
		}
		cur.tensors = append(cur.tensors, t)
		cur.bytes += n
	}
	if len(cur.tensors) > 0 {
		shards = append(shards, cur)
	}
	if len(shards) == 1 {
		shards[0].file = singleWeightsFile
		return shards
	}
	for i := range shards {
		shards[i].file = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
	}
	return shards
}

// Weight file names written by save_pretrained (transformers' SAFE_WEIGHTS_NAME and
// SAFE_WEIGHTS_INDEX_NAME).
const (
	singleWeightsFile = "model.safetensors"
	indexFile         = "model.safetensors.index.json"
)
