package convert

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// output names one of the two GGUF files.
type output int

const (
	outModel  output = iota // model.gguf: the Mistral decoder as llama.cpp's "llama"
	outMMProj               // mmproj.gguf: vision tower, modality projection, perceiver
)

func (o output) String() string {
	if o == outModel {
		return "model"
	}
	return "mmproj"
}

// tensorClass decides which type setting applies to a tensor.
type tensorClass int

const (
	classText   tensorClass = iota // a text matrix: --type (with the mix rules)
	classVision                    // a vision or connector matrix: --vision-type
	classF32                       // norms, biases, embeddings of the vision tower, latents: always F32
)

// tensorRule maps one HF tensor (or one per layer) to its GGUF name. "{N}" in both names stands
// for the layer index.
type tensorRule struct {
	hf     string
	gguf   string
	out    output
	class  tensorClass
	layers func(h *hparams) int   // number of layers for {N}; nil when the name has no {N}
	shape  func(h *hparams) []int // expected PyTorch shape, outermost first
	// permuteHeads gives the head count of llama.cpp's Q/K row permutation (LlamaModel.permute);
	// nil for tensors stored as they are.
	permuteHeads func(h *hparams) int
}

// Layer counts.
func textLayers(h *hparams) int      { return h.text.numLayers }
func visionLayers(h *hparams) int    { return h.vision.numLayers }
func perceiverLayers(h *hparams) int { return h.perceiver.numLayers }

// Shapes (PyTorch order: Linear weights are (out, in)).
func textVec(h *hparams) []int   { return []int{h.text.hiddenSize} }
func visionVec(h *hparams) []int { return []int{h.vision.hiddenSize} }
func percVec(h *hparams) []int   { return []int{h.perceiver.hiddenSize} }

// tensorTable is THE mapping from Hugging Face Idefics2ForConditionalGeneration state-dict names
// to GGUF names. Text names follow llama.cpp's "llama" architecture (gguf-py tensor_mapping.py),
// vision names llama.cpp's clip conventions (v.*, SigLIP fc1 = ffn_up, fc2 = ffn_down) and the
// connector this project's mm.* names (IDEFICS2.md §10.3). Order here is the order in the files:
// consecutive per-layer rules are written layer by layer. A checkpoint tensor that matches no
// rule is an error.
var tensorTable = []tensorRule{
	// model.gguf
	{hf: "model.text_model.embed_tokens.weight", gguf: "token_embd.weight", out: outModel, class: classText,
		shape: func(h *hparams) []int { return []int{h.text.vocabSize, h.text.hiddenSize} }},
	{hf: "model.text_model.layers.{N}.input_layernorm.weight", gguf: "blk.{N}.attn_norm.weight", out: outModel, class: classF32,
		layers: textLayers, shape: textVec},
	{hf: "model.text_model.layers.{N}.self_attn.q_proj.weight", gguf: "blk.{N}.attn_q.weight", out: outModel, class: classText,
		layers: textLayers, shape: func(h *hparams) []int { return []int{h.text.numHeads * h.text.headDim, h.text.hiddenSize} },
		permuteHeads: func(h *hparams) int { return h.text.numHeads }},
	{hf: "model.text_model.layers.{N}.self_attn.k_proj.weight", gguf: "blk.{N}.attn_k.weight", out: outModel, class: classText,
		layers: textLayers, shape: func(h *hparams) []int { return []int{h.text.numKVHeads * h.text.headDim, h.text.hiddenSize} },
		permuteHeads: func(h *hparams) int { return h.text.numKVHeads }},
	{hf: "model.text_model.layers.{N}.self_attn.v_proj.weight", gguf: "blk.{N}.attn_v.weight", out: outModel, class: classText,
		layers: textLayers, shape: func(h *hparams) []int { return []int{h.text.numKVHeads * h.text.headDim, h.text.hiddenSize} }},
	{hf: "model.text_model.layers.{N}.self_attn.o_proj.weight", gguf: "blk.{N}.attn_output.weight", out: outModel, class: classText,
		layers: textLayers, shape: func(h *hparams) []int { return []int{h.text.hiddenSize, h.text.numHeads * h.text.headDim} }},
	{hf: "model.text_model.layers.{N}.post_attention_layernorm.weight", gguf: "blk.{N}.ffn_norm.weight", out: outModel, class: classF32,
		layers: textLayers, shape: textVec},
	{hf: "model.text_model.layers.{N}.mlp.gate_proj.weight", gguf: "blk.{N}.ffn_gate.weight", out: outModel, class: classText,
		layers: textLayers, shape: func(h *hparams) []int { return []int{h.text.ffnSize, h.text.hiddenSize} }},
	{hf: "model.text_model.layers.{N}.mlp.up_proj.weight", gguf: "blk.{N}.ffn_up.weight", out: outModel, class: classText,
		layers: textLayers, shape: func(h *hparams) []int { return []int{h.text.ffnSize, h.text.hiddenSize} }},
	{hf: "model.text_model.layers.{N}.mlp.down_proj.weight", gguf: "blk.{N}.ffn_down.weight", out: outModel, class: classText,
		layers: textLayers, shape: func(h *hparams) []int { return []int{h.text.hiddenSize, h.text.ffnSize} }},
	{hf: "model.text_model.norm.weight", gguf: "output_norm.weight", out: outModel, class: classF32, shape: textVec},
	{hf: lmHeadName, gguf: "output.weight", out: outModel, class: classText,
		shape: func(h *hparams) []int { return []int{h.text.vocabSize, h.text.hiddenSize} }},

	// mmproj.gguf: vision tower
	{hf: "model.vision_model.embeddings.patch_embedding.weight", gguf: "v.patch_embd.weight", out: outMMProj, class: classF32,
		shape: func(h *hparams) []int {
			return []int{h.vision.hiddenSize, h.vision.numChannels, h.vision.patchSize, h.vision.patchSize}
		}},
	{hf: "model.vision_model.embeddings.patch_embedding.bias", gguf: "v.patch_embd.bias", out: outMMProj, class: classF32, shape: visionVec},
	{hf: "model.vision_model.embeddings.position_embedding.weight", gguf: "v.position_embd.weight", out: outMMProj, class: classF32,
		shape: func(h *hparams) []int { return []int{h.vision.numPositions(), h.vision.hiddenSize} }},
	{hf: "model.vision_model.encoder.layers.{N}.layer_norm1.weight", gguf: "v.blk.{N}.ln1.weight", out: outMMProj, class: classF32,
		layers: visionLayers, shape: visionVec},
	{hf: "model.vision_model.encoder.layers.{N}.layer_norm1.bias", gguf: "v.blk.{N}.ln1.bias", out: outMMProj, class: classF32,
		layers: visionLayers, shape: visionVec},
	{hf: "model.vision_model.encoder.layers.{N}.self_attn.q_proj.weight", gguf: "v.blk.{N}.attn_q.weight", out: outMMProj, class: classVision,
		layers: visionLayers, shape: visionSquare},
	{hf: "model.vision_model.encoder.layers.{N}.self_attn.q_proj.bias", gguf: "v.blk.{N}.attn_q.bias", out: outMMProj, class: classF32,
		layers: visionLayers, shape: visionVec},
	{hf: "model.vision_model.encoder.layers.{N}.self_attn.k_proj.weight", gguf: "v.blk.{N}.attn_k.weight", out: outMMProj, class: classVision,
		layers: visionLayers, shape: visionSquare},
	{hf: "model.vision_model.encoder.layers.{N}.self_attn.k_proj.bias", gguf: "v.blk.{N}.attn_k.bias", out: outMMProj, class: classF32,
		layers: visionLayers, shape: visionVec},
	{hf: "model.vision_model.encoder.layers.{N}.self_attn.v_proj.weight", gguf: "v.blk.{N}.attn_v.weight", out: outMMProj, class: classVision,
		layers: visionLayers, shape: visionSquare},
	{hf: "model.vision_model.encoder.layers.{N}.self_attn.v_proj.bias", gguf: "v.blk.{N}.attn_v.bias", out: outMMProj, class: classF32,
		layers: visionLayers, shape: visionVec},
	{hf: "model.vision_model.encoder.layers.{N}.self_attn.out_proj.weight", gguf: "v.blk.{N}.attn_out.weight", out: outMMProj, class: classVision,
		layers: visionLayers, shape: visionSquare},
	{hf: "model.vision_model.encoder.layers.{N}.self_attn.out_proj.bias", gguf: "v.blk.{N}.attn_out.bias", out: outMMProj, class: classF32,
		layers: visionLayers, shape: visionVec},
	{hf: "model.vision_model.encoder.layers.{N}.layer_norm2.weight", gguf: "v.blk.{N}.ln2.weight", out: outMMProj, class: classF32,
		layers: visionLayers, shape: visionVec},
	{hf: "model.vision_model.encoder.layers.{N}.layer_norm2.bias", gguf: "v.blk.{N}.ln2.bias", out: outMMProj, class: classF32,
		layers: visionLayers, shape: visionVec},
	{hf: "model.vision_model.encoder.layers.{N}.mlp.fc1.weight", gguf: "v.blk.{N}.ffn_up.weight", out: outMMProj, class: classVision,
		layers: visionLayers, shape: func(h *hparams) []int { return []int{h.vision.ffnSize, h.vision.hiddenSize} }},
	{hf: "model.vision_model.encoder.layers.{N}.mlp.fc1.bias", gguf: "v.blk.{N}.ffn_up.bias", out: outMMProj, class: classF32,
		layers: visionLayers, shape: func(h *hparams) []int { return []int{h.vision.ffnSize} }},
	{hf: "model.vision_model.encoder.layers.{N}.mlp.fc2.weight", gguf: "v.blk.{N}.ffn_down.weight", out: outMMProj, class: classVision,
		layers: visionLayers, shape: func(h *hparams) []int { return []int{h.vision.hiddenSize, h.vision.ffnSize} }},
	{hf: "model.vision_model.encoder.layers.{N}.mlp.fc2.bias", gguf: "v.blk.{N}.ffn_down.bias", out: outMMProj, class: classF32,
		layers: visionLayers, shape: visionVec},
	{hf: "model.vision_model.post_layernorm.weight", gguf: "v.post_ln.weight", out: outMMProj, class: classF32, shape: visionVec},
	{hf: "model.vision_model.post_layernorm.bias", gguf: "v.post_ln.bias", out: outMMProj, class: classF32, shape: visionVec},

	// mmproj.gguf: connector (modality projection MLP, then the perceiver resampler)
	{hf: "model.connector.modality_projection.gate_proj.weight", gguf: "mm.gate.weight", out: outMMProj, class: classVision,
		shape: func(h *hparams) []int { return []int{h.text.ffnSize, h.vision.hiddenSize} }},
	{hf: "model.connector.modality_projection.up_proj.weight", gguf: "mm.up.weight", out: outMMProj, class: classVision,
		shape: func(h *hparams) []int { return []int{h.text.ffnSize, h.vision.hiddenSize} }},
	{hf: "model.connector.modality_projection.down_proj.weight", gguf: "mm.down.weight", out: outMMProj, class: classVision,
		shape: func(h *hparams) []int { return []int{h.text.hiddenSize, h.text.ffnSize} }},
	{hf: "model.connector.perceiver_resampler.latents", gguf: "mm.perceiver.latents", out: outMMProj, class: classF32,
		shape: func(h *hparams) []int { return []int{h.perceiver.numLatents, h.perceiver.hiddenSize} }},
	{hf: "model.connector.perceiver_resampler.layers.{N}.input_latents_norm.weight", gguf: "mm.perceiver.blk.{N}.ln_latents.weight", out: outMMProj, class: classF32,
		layers: perceiverLayers, shape: percVec},
	{hf: "model.connector.perceiver_resampler.layers.{N}.input_context_norm.weight", gguf: "mm.perceiver.blk.{N}.ln_context.weight", out: outMMProj, class: classF32,
		layers: perceiverLayers, shape: percVec},
	{hf: "model.connector.perceiver_resampler.layers.{N}.self_attn.q_proj.weight", gguf: "mm.perceiver.blk.{N}.attn_q.weight", out: outMMProj, class: classVision,
		layers: perceiverLayers, shape: func(h *hparams) []int {
			return []int{h.perceiver.numHeads * h.perceiver.headDim, h.perceiver.hiddenSize}
		}},
	{hf: "model.connector.perceiver_resampler.layers.{N}.self_attn.k_proj.weight", gguf: "mm.perceiver.blk.{N}.attn_k.weight", out: outMMProj, class: classVision,
		layers: perceiverLayers, shape: func(h *hparams) []int {
			return []int{h.perceiver.numKVHeads * h.perceiver.headDim, h.perceiver.hiddenSize}
		}},
	{hf: "model.connector.perceiver_resampler.layers.{N}.self_attn.v_proj.weight", gguf: "mm.perceiver.blk.{N}.attn_v.weight", out: outMMProj, class: classVision,
		layers: perceiverLayers, shape: func(h *hparams) []int {
			return []int{h.perceiver.numKVHeads * h.perceiver.headDim, h.perceiver.hiddenSize}
		}},
	{hf: "model.connector.perceiver_resampler.layers.{N}.self_attn.o_proj.weight", gguf: "mm.perceiver.blk.{N}.attn_out.weight", out: outMMProj, class: classVision,
		layers: perceiverLayers, shape: func(h *hparams) []int {
			return []int{h.perceiver.hiddenSize, h.perceiver.numHeads * h.perceiver.headDim}
		}},
	{hf: "model.connector.perceiver_resampler.layers.{N}.post_attention_layernorm.weight", gguf: "mm.perceiver.blk.{N}.ln_post.weight", out: outMMProj, class: classF32,
		layers: perceiverLayers, shape: percVec},
	{hf: "model.connector.perceiver_resampler.layers.{N}.mlp.gate_proj.weight", gguf: "mm.perceiver.blk.{N}.ffn_gate.weight", out: outMMProj, class: classVision,
		layers: perceiverLayers, shape: func(h *hparams) []int { return []int{h.perceiver.ffnSize, h.perceiver.hiddenSize} }},
	{hf: "model.connector.perceiver_resampler.layers.{N}.mlp.up_proj.weight", gguf: "mm.perceiver.blk.{N}.ffn_up.weight", out: outMMProj, class: classVision,
		layers: perceiverLayers, shape: func(h *hparams) []int { return []int{h.perceiver.ffnSize, h.perceiver.hiddenSize} }},
	{hf: "model.connector.perceiver_resampler.layers.{N}.mlp.down_proj.weight", gguf: "mm.perceiver.blk.{N}.ffn_down.weight", out: outMMProj, class: classVision,
		layers: perceiverLayers, shape: func(h *hparams) []int { return []int{h.perceiver.hiddenSize, h.perceiver.ffnSize} }},
	{hf: "model.connector.perceiver_resampler.norm.weight", gguf: "mm.perceiver.norm.weight", out: outMMProj, class: classF32, shape: percVec},
}

// lmHeadName is the HF name of the output projection; with tie_word_embeddings it is not
// written (llama.cpp then uses token_embd.weight).
const lmHeadName = "lm_head.weight"

func visionSquare(h *hparams) []int { return []int{h.vision.hiddenSize, h.vision.hiddenSize} }

// mappedTensor is one expanded rule: a concrete HF name, its GGUF name and layer.
type mappedTensor struct {
	rule  *tensorRule
	hf    string
	gguf  string
	layer int // −1 when the rule has no {N}
}

// expandTable lists every tensor the hyper-parameters call for, in file order: consecutive
// per-layer rules are expanded layer by layer (blk.0.*, blk.1.*, …).
func expandTable(h *hparams) []mappedTensor {
	var out []mappedTensor
	for i := 0; i < len(tensorTable); {
		r := &tensorTable[i]
		if r.layers == nil {
			if !(r.hf == lmHeadName && h.tieEmbedding) {
				out = append(out, mappedTensor{rule: r, hf: r.hf, gguf: r.gguf, layer: -1})
			}
			i++
			continue
		}
		j := i
		for j < len(tensorTable) && tensorTable[j].layers != nil && tensorTable[j].out == r.out &&
			sameLayerFunc(&tensorTable[j], r) {
			j++
		}
		n := r.layers(h)
		for l := 0; l < n; l++ {
			for k := i; k < j; k++ {
				rk := &tensorTable[k]
				ls := strconv.Itoa(l)
				out = append(out, mappedTensor{
					rule:  rk,
					hf:    strings.ReplaceAll(rk.hf, "{N}", ls),
					gguf:  strings.ReplaceAll(rk.gguf, "{N}", ls),
					layer: l,
				})
			}
		}
		i = j
	}
	return out
}

// sameLayerFunc reports whether two per-layer rules belong to the same block stack (same HF
// prefix before "{N}").
func sameLayerFunc(a, b *tensorRule) bool {
	pa, _, _ := strings.Cut(a.hf, "{N}")
	pb, _, _ := strings.Cut(b.hf, "{N}")
	return pa == pb
}

// ruleMatcher recognises HF names that some rule produces, for any layer index, so that a
// checkpoint tensor outside the expected set can be reported precisely (unknown name versus a
// layer index beyond the configured count).
type ruleMatcher struct {
	patterns []*regexp.Regexp
	rules    []*tensorRule
}

func newRuleMatcher() *ruleMatcher {
	m := &ruleMatcher{}
	for i := range tensorTable {
		r := &tensorTable[i]
		re := "^" + strings.ReplaceAll(regexp.QuoteMeta(r.hf), regexp.QuoteMeta("{N}"), "([0-9]+)") + "$"
		m.patterns = append(m.patterns, regexp.MustCompile(re))
		m.rules = append(m.rules, r)
	}
	return m
}

// explain describes why name is not among the expected tensors.
func (m *ruleMatcher) explain(name string, h *hparams) string {
	for i, re := range m.patterns {
		sub := re.FindStringSubmatch(name)
		if sub == nil {
			continue
		}
		r := m.rules[i]
		if r.hf == lmHeadName && h.tieEmbedding {
			return "" // tied: present but not written
		}
		if len(sub) > 1 {
			if l, err := strconv.Atoi(sub[1]); err == nil && l < r.layers(h) {
				return fmt.Sprintf("layer index %q is not spelled as transformers writes it", sub[1])
			}
			return fmt.Sprintf("layer %s is beyond the %d layers config.json declares", sub[1], r.layers(h))
		}
		return "unexpected"
	}
	return "unknown tensor (no HF → GGUF mapping)"
}
