package convert

import (
	"fmt"

	"github.com/idefics2-go/idefics2/gguf"
)

// kvList collects metadata pairs in write order.
type kvList struct {
	kvs []gguf.KV
	err error
}

// add appends key = v; v must be a fixed-width value gguf.NewValue accepts.
func (l *kvList) add(key string, v any) {
	if l.err != nil {
		return
	}
	val, err := gguf.NewValue(v)
	if err != nil {
		l.err = fmt.Errorf("convert: metadata %q: %w", key, err)
		return
	}
	l.kvs = append(l.kvs, gguf.KV{Key: key, Value: val})
}

// modelMetadata returns the key-value pairs of model.gguf: llama.cpp's "llama" architecture
// keys, in the order llama.cpp's converter (convert_hf_to_gguf.py) writes them for Mistral-7B.
func modelMetadata(h *hparams, v *vocab, chatTemplate string, fileType gguf.FileType) ([]gguf.KV, error) {
	t := &h.text
	var l kvList
	l.add("general.architecture", "llama")
	l.add("general.type", "model")
	l.add("general.name", h.name)
	l.add("llama.block_count", uint32(t.numLayers))
	l.add("llama.context_length", uint32(t.maxPositions))
	l.add("llama.embedding_length", uint32(t.hiddenSize))
	l.add("llama.feed_forward_length", uint32(t.ffnSize))
	l.add("llama.attention.head_count", uint32(t.numHeads))
	l.add("llama.attention.head_count_kv", uint32(t.numKVHeads))
	l.add("llama.rope.freq_base", float32(t.ropeBase))
	l.add("llama.attention.layer_norm_rms_epsilon", float32(t.eps))
	if t.headDim*t.numHeads != t.hiddenSize {
		// llama.cpp derives the head size as n_embd / n_head unless these keys say otherwise.
		l.add("llama.attention.key_length", uint32(t.headDim))
		l.add("llama.attention.value_length", uint32(t.headDim))
	}
	if t.slidingWindow > 0 {
		l.add("llama.attention.sliding_window", uint32(t.slidingWindow))
	}
	l.add("general.file_type", uint32(fileType))
	l.add("llama.vocab_size", uint32(len(v.tokens)))
	l.add("llama.rope.dimension_count", uint32(t.headDim))

	l.add("tokenizer.ggml.model", "llama")
	l.add("tokenizer.ggml.tokens", v.tokens)
	l.add("tokenizer.ggml.scores", v.scores)
	l.add("tokenizer.ggml.token_type", v.types)
	for _, s := range []struct {
		key string
		id  int32
	}{
		{"tokenizer.ggml.bos_token_id", v.bos},
		{"tokenizer.ggml.eos_token_id", v.eos},
		{"tokenizer.ggml.unknown_token_id", v.unk},
		{"tokenizer.ggml.padding_token_id", v.pad},
	} {
		if s.id >= 0 {
			l.add(s.key, uint32(s.id))
		}
	}
	l.add("tokenizer.ggml.add_bos_token", v.addBOS)
	l.add("tokenizer.ggml.add_eos_token", v.addEOS)
	l.add("tokenizer.ggml.add_space_prefix", v.addSpacePrefix)
	if v.eot >= 0 {
		l.add("tokenizer.ggml.eot_token_id", uint32(v.eot))
	}
	if chatTemplate != "" {
		l.add("tokenizer.chat_template", chatTemplate)
	}
	l.add("general.quantization_version", uint32(2))
	return l.kvs, l.err
}

// mmprojMetadata returns the key-value pairs of mmproj.gguf: llama.cpp's clip keys where they fit
// and this project's idefics2.* keys (IDEFICS2.md §10.3) for the rest.
func mmprojMetadata(h *hparams, p *preprocParams, fileType gguf.FileType) ([]gguf.KV, error) {
	vis, perc := &h.vision, &h.perceiver
	var l kvList
	l.add("general.architecture", "clip")
	l.add("general.type", "mmproj")
	l.add("general.name", h.name)
	l.add("general.file_type", uint32(fileType))
	l.add("clip.projector_type", "idefics2")
	l.add("clip.has_vision_encoder", true)
	l.add("clip.has_audio_encoder", false)
	l.add("clip.use_gelu", true)
	l.add("clip.vision.image_size", uint32(vis.imageSize))
	l.add("clip.vision.patch_size", uint32(vis.patchSize))
	l.add("clip.vision.embedding_length", uint32(vis.hiddenSize))
	l.add("clip.vision.feed_forward_length", uint32(vis.ffnSize))
	l.add("clip.vision.block_count", uint32(vis.numLayers))
	l.add("clip.vision.attention.head_count", uint32(vis.numHeads))
	l.add("clip.vision.attention.layer_norm_epsilon", float32(vis.eps))
	l.add("clip.vision.projection_dim", uint32(h.text.hiddenSize))
	l.add("clip.vision.image_mean", p.imageMean)
	l.add("clip.vision.image_std", p.imageStd)
	l.add("clip.vision.preproc_image_size", uint32(p.longestEdge))

	l.add("idefics2.image_token_id", uint32(h.imageTokenID))
	l.add("idefics2.image_seq_len", uint32(p.imageSeqLen))
	l.add("idefics2.text_embedding_length", uint32(h.text.hiddenSize))
	l.add("idefics2.vision.hidden_act", vis.hiddenAct)
	l.add("idefics2.connector.feed_forward_length", uint32(h.text.ffnSize))
	l.add("idefics2.perceiver.embedding_length", uint32(perc.hiddenSize))
	l.add("idefics2.perceiver.latent_count", uint32(perc.numLatents))
	l.add("idefics2.perceiver.block_count", uint32(perc.numLayers))
	l.add("idefics2.perceiver.head_count", uint32(perc.numHeads))
	l.add("idefics2.perceiver.head_count_kv", uint32(perc.numKVHeads))
	l.add("idefics2.perceiver.key_length", uint32(perc.headDim))
	l.add("idefics2.perceiver.feed_forward_length", uint32(perc.ffnSize))
	l.add("idefics2.perceiver.layer_norm_rms_epsilon", float32(perc.eps))
	l.add("idefics2.perceiver.hidden_act", perc.hiddenAct)

	l.add("idefics2.preproc.shortest_edge", uint32(p.shortestEdge))
	l.add("idefics2.preproc.longest_edge", uint32(p.longestEdge))
	l.add("idefics2.preproc.do_image_splitting", p.doImageSplitting)
	l.add("idefics2.preproc.do_resize", p.doResize)
	l.add("idefics2.preproc.do_rescale", p.doRescale)
	l.add("idefics2.preproc.do_normalize", p.doNormalize)
	l.add("idefics2.preproc.do_pad", p.doPad)
	l.add("idefics2.preproc.do_convert_rgb", p.doConvertRGB)
	l.add("idefics2.preproc.rescale_factor", p.rescaleFactor)
	l.add("idefics2.preproc.resample", uint32(p.resample))
	return l.kvs, l.err
}
