package synth

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
)

// transformersVersion is the version save_pretrained records; that of the test fixtures, whose
// config.json layout is copied here.
const transformersVersion = "4.44.2"

// chatTemplate is the idefics2 chat template (processor_config.json, chat_template.json).
const chatTemplate = "{% for message in messages %}{{message['role'].capitalize()}}{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"

// pyFloat is a float written as Python's json module writes it (repr): "1e-05", "10000.0",
// "0.02", so that config.json reads like one written by save_pretrained.
type pyFloat float64

// MarshalJSON formats f as Python's float repr: the shortest round-trip digits, fixed notation
// with a ".0" for integral values when 1e-4 ≤ |f| < 1e16, scientific with a two-digit exponent
// otherwise.
func (f pyFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if a := math.Abs(v); v == 0 || (a >= 1e-4 && a < 1e16) {
		s := strconv.FormatFloat(v, 'f', -1, 64)
		if !strings.ContainsAny(s, ".") {
			s += ".0"
		}
		return []byte(s), nil
	}
	// Go's 'e' format already writes at least two exponent digits ("1e-05", "1e+16").
	return []byte(strconv.FormatFloat(v, 'e', -1, 64)), nil
}

// pretrainedDefaults returns the keys PretrainedConfig.to_dict writes for every sub-config in
// transformers 4.44 (generation and fine-tuning settings at their defaults), as in the fixtures.
func pretrainedDefaults() map[string]any {
	return map[string]any{
		"_name_or_path":                    "",
		"add_cross_attention":              false,
		"architectures":                    nil,
		"bad_words_ids":                    nil,
		"begin_suppress_tokens":            nil,
		"bos_token_id":                     nil,
		"chunk_size_feed_forward":          0,
		"cross_attention_hidden_size":      nil,
		"decoder_start_token_id":           nil,
		"diversity_penalty":                pyFloat(0),
		"do_sample":                        false,
		"early_stopping":                   false,
		"encoder_no_repeat_ngram_size":     0,
		"eos_token_id":                     nil,
		"exponential_decay_length_penalty": nil,
		"finetuning_task":                  nil,
		"forced_bos_token_id":              nil,
		"forced_eos_token_id":              nil,
		"id2label":                         map[string]any{"0": "LABEL_0", "1": "LABEL_1"},
		"is_decoder":                       false,
		"is_encoder_decoder":               false,
		"label2id":                         map[string]any{"LABEL_0": 0, "LABEL_1": 1},
		"length_penalty":                   pyFloat(1),
		"max_length":                       20,
		"min_length":                       0,
		"no_repeat_ngram_size":             0,
		"num_beam_groups":                  1,
		"num_beams":                        1,
		"num_return_sequences":             1,
		"output_attentions":                false,
		"output_hidden_states":             false,
		"output_scores":                    false,
		"pad_token_id":                     nil,
		"prefix":                           nil,
		"problem_type":                     nil,
		"pruned_heads":                     map[string]any{},
		"remove_invalid_values":            false,
		"repetition_penalty":               pyFloat(1),
		"return_dict":                      true,
		"return_dict_in_generate":          false,
		"sep_token_id":                     nil,
		"suppress_tokens":                  nil,
		"task_specific_params":             nil,
		"temperature":                      pyFloat(1),
		"tf_legacy_loss":                   false,
		"tie_encoder_decoder":              false,
		"tie_word_embeddings":              true,
		"tokenizer_class":                  nil,
		"top_k":                            50,
		"top_p":                            pyFloat(1),
		"torch_dtype":                      nil,
		"torchscript":                      false,
		"typical_p":                        pyFloat(1),
		"use_bfloat16":                     false,
	}
}

// with returns m with the entries of extra added (overriding).
func with(m map[string]any, extra map[string]any) map[string]any {
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// torchDType is config.json torch_dtype for a safetensors dtype.
func torchDType(dtype string) string {
	if dtype == "F32" {
		return "float32"
	}
	return "bfloat16"
}

// configJSON returns config.json as Idefics2Config.to_json_string writes it.
func (c Config) configJSON() ([]byte, error) {
	t, v, p := c.Text, c.Vision, c.Perceiver
	text := with(pretrainedDefaults(), map[string]any{
		"attention_dropout":       pyFloat(0),
		"bos_token_id":            1,
		"eos_token_id":            2,
		"head_dim":                t.HeadDim,
		"hidden_act":              "silu",
		"hidden_size":             t.HiddenSize,
		"initializer_range":       pyFloat(c.InitStd),
		"intermediate_size":       t.IntermediateSize,
		"max_position_embeddings": t.MaxPositions,
		"model_type":              "mistral",
		"num_attention_heads":     t.NumHeads,
		"num_hidden_layers":       t.NumLayers,
		"num_key_value_heads":     t.NumKVHeads,
		"pad_token_id":            0,
		"rms_norm_eps":            pyFloat(t.RMSNormEps),
		"rope_theta":              pyFloat(t.RopeTheta),
		"sliding_window":          t.SlidingWindow,
		"tie_word_embeddings":     false,
		"use_cache":               true,
		"vocab_size":              t.VocabSize,
	})
	vision := with(pretrainedDefaults(), map[string]any{
		"attention_dropout":   pyFloat(0),
		"hidden_act":          "gelu_pytorch_tanh",
		"hidden_size":         v.HiddenSize,
		"image_size":          v.ImageSize,
		"initializer_range":   pyFloat(c.InitStd),
		"intermediate_size":   v.IntermediateSize,
		"layer_norm_eps":      pyFloat(v.LayerNormEps),
		"model_type":          "idefics2",
		"num_attention_heads": v.NumHeads,
		"num_channels":        v.NumChannels,
		"num_hidden_layers":   v.NumLayers,
		"patch_size":          v.PatchSize,
	})
	// Like the fixtures (transformers 4.44), perceiver_config carries no hidden_size or
	// rms_norm_eps: the model takes both from text_config.
	perceiver := with(pretrainedDefaults(), map[string]any{
		"attention_dropout":   pyFloat(0),
		"hidden_act":          "silu",
		"model_type":          "idefics2",
		"num_key_value_heads": p.NumKVHeads,
		"resampler_depth":     p.Depth,
		"resampler_head_dim":  p.HeadDim,
		"resampler_n_heads":   p.NumHeads,
		"resampler_n_latents": p.NumLatents,
	})
	top := map[string]any{
		"architectures":        []string{"Idefics2ForConditionalGeneration"},
		"image_token_id":       imageTokenID,
		"model_type":           "idefics2",
		"perceiver_config":     perceiver,
		"text_config":          text,
		"tie_word_embeddings":  false,
		"torch_dtype":          torchDType(c.DType),
		"transformers_version": transformersVersion,
		"use_cache":            true,
		"vision_config":        vision,
	}
	if c.Name != "" {
		top["_name_or_path"] = c.Name
	}
	return pyJSON(top)
}

// pyJSON marshals v as Python's json.dumps(v, indent=2, sort_keys=True) + "\n" does for the
// values used here: sorted keys (encoding/json sorts map keys), two-space indent, no HTML
// escaping ("<image>" stays as is).
func pyJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// preprocessorJSON returns preprocessor_config.json (Idefics2ImageProcessor).
func (c Config) preprocessorJSON() ([]byte, error) {
	half := []pyFloat{0.5, 0.5, 0.5}
	return pyJSON(map[string]any{
		"do_convert_rgb":       true,
		"do_image_splitting":   c.ImageSplitting,
		"do_normalize":         true,
		"do_pad":               true,
		"do_rescale":           true,
		"do_resize":            true,
		"image_mean":           half,
		"image_processor_type": "Idefics2ImageProcessor",
		"image_std":            half,
		"processor_class":      "Idefics2Processor",
		"resample":             2, // PIL.Image.BILINEAR
		"rescale_factor":       pyFloat(1.0 / 255),
		"size":                 map[string]any{"longest_edge": c.LongestEdge, "shortest_edge": c.ShortestEdge},
	})
}

// processorJSON returns processor_config.json (Idefics2Processor).
func (c Config) processorJSON() ([]byte, error) {
	return pyJSON(map[string]any{
		"chat_template":   chatTemplate,
		"image_seq_len":   c.ImageSeqLen,
		"processor_class": "Idefics2Processor",
	})
}

// chatTemplateJSON returns chat_template.json.
func chatTemplateJSON() ([]byte, error) {
	return pyJSON(map[string]any{"chat_template": chatTemplate})
}

// generationConfigJSON returns generation_config.json as GenerationConfig.from_model_config
// writes it for idefics2.
func generationConfigJSON() ([]byte, error) {
	return pyJSON(map[string]any{
		"_from_model_config":   true,
		"bos_token_id":         1,
		"eos_token_id":         2,
		"pad_token_id":         0,
		"transformers_version": transformersVersion,
	})
}

// indexJSON returns model.safetensors.index.json: total_size and the shard of every tensor.
func indexJSON(shards []shard) ([]byte, error) {
	var total int64
	weightMap := map[string]string{}
	for _, s := range shards {
		total += s.bytes
		for _, t := range s.tensors {
			weightMap[t.Name] = s.file
		}
	}
	return pyJSON(map[string]any{
		"metadata":   map[string]any{"total_size": total},
		"weight_map": weightMap,
	})
}
