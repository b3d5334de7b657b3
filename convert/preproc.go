package convert

import (
	"math"
)

// File names of the processor side of a checkpoint.
const (
	preprocessorConfigFile = "preprocessor_config.json"
	processorConfigFile    = "processor_config.json"
	chatTemplateFile       = "chat_template.json"
	generationConfigFile   = "generation_config.json"
)

// preprocParams are the Idefics2ImageProcessor settings (preprocessor_config.json) and the
// Idefics2Processor's image_seq_len (processor_config.json).
type preprocParams struct {
	shortestEdge, longestEdge int
	doImageSplitting          bool
	doResize                  bool
	doRescale                 bool
	doNormalize               bool
	doPad                     bool
	doConvertRGB              bool
	rescaleFactor             float64
	resample                  int // PIL filter id
	imageMean, imageStd       []float32
	imageSeqLen               int
}

// parsePreprocessor reads preprocessor_config.json (required) and processor_config.json
// (optional: older checkpoints lack it; Idefics2Processor's default image_seq_len applies).
func parsePreprocessor(dir string, h *hparams) (*preprocParams, error) {
	o, _, err := readJSONObject(dir, preprocessorConfigFile, false)
	if err != nil {
		return nil, err
	}
	p := &preprocParams{}
	if t, ok, err := optional[string](o, "image_processor_type"); err != nil {
		return nil, err
	} else if ok && t != "Idefics2ImageProcessor" {
		return nil, o.errorf("image_processor_type", "%q is not supported (want \"Idefics2ImageProcessor\")", t)
	}
	// Idefics2ImageProcessor defaults: size={"shortest_edge": 378, "longest_edge": 980},
	// resample=BILINEAR (2), do_convert_rgb/do_resize/do_rescale/do_normalize/do_pad=True,
	// rescale_factor=1/255, image_mean/image_std=IDEFICS_STANDARD_MEAN/STD ([0.5]*3),
	// do_image_splitting=False.
	p.shortestEdge, p.longestEdge = 378, 980
	if size, ok, err := o.object("size"); err != nil {
		return nil, err
	} else if ok {
		if p.shortestEdge, err = positive(size, "shortest_edge"); err != nil {
			return nil, err
		}
		if p.longestEdge, err = positive(size, "longest_edge"); err != nil {
			return nil, err
		}
	}
	if p.shortestEdge > p.longestEdge {
		return nil, o.errorf("size", "shortest_edge %d exceeds longest_edge %d", p.shortestEdge, p.longestEdge)
	}
	for _, f := range []struct {
		key string
		def bool
		dst *bool
	}{
		{"do_image_splitting", false, &p.doImageSplitting},
		{"do_resize", true, &p.doResize},
		{"do_rescale", true, &p.doRescale},
		{"do_normalize", true, &p.doNormalize},
		{"do_pad", true, &p.doPad},
		{"do_convert_rgb", true, &p.doConvertRGB},
	} {
		if *f.dst, err = withDefault(o, f.key, f.def); err != nil {
			return nil, err
		}
	}
	if p.rescaleFactor, err = positiveFloatDefault(o, "rescale_factor", 1.0/255); err != nil {
		return nil, err
	}
	if p.resample, err = withDefault(o, "resample", 2); err != nil {
		return nil, err
	}
	if p.resample < 0 || p.resample > 5 {
		return nil, o.errorf("resample", "%d is not a PIL resampling filter (0..5)", p.resample)
	}
	for _, f := range []struct {
		key string
		dst *[]float32
	}{{"image_mean", &p.imageMean}, {"image_std", &p.imageStd}} {
		v, err := withDefault(o, f.key, []float64{0.5, 0.5, 0.5})
		if err != nil {
			return nil, err
		}
		if len(v) != h.vision.numChannels {
			return nil, o.errorf(f.key, "%d values, want %d (vision_config.num_channels)", len(v), h.vision.numChannels)
		}
		out := make([]float32, len(v))
		for i, x := range v {
			// Checked after rounding to float32, the type GGUF stores: 1e70 would become +Inf
			// and a standard deviation of 1e-50 would become 0.
			out[i] = float32(x)
			if y := float64(out[i]); math.IsNaN(y) || math.IsInf(y, 0) || (f.key == "image_std" && y == 0) {
				return nil, o.errorf(f.key, "value %v at index %d is not usable", x, i)
			}
		}
		*f.dst = out
	}

	// Idefics2Processor default: image_seq_len=64.
	p.imageSeqLen = 64
	po, ok, err := readJSONObject(dir, processorConfigFile, true)
	if err != nil {
		return nil, err
	}
	if ok {
		if p.imageSeqLen, err = positiveDefault(po, "image_seq_len", 64); err != nil {
			return nil, err
		}
	}
	if p.imageSeqLen != h.perceiver.numLatents {
		file := processorConfigFile
		if !ok {
			file = processorConfigFile + " (absent, default 64)"
		}
		return nil, inputErrorf("convert: %s: image_seq_len %d differs from config.json perceiver_config.resampler_n_latents %d", file, p.imageSeqLen, h.perceiver.numLatents)
	}
	return p, nil
}

// readChatTemplate returns the chat template from chat_template.json, processor_config.json or
// tokenizer_config.json, the first that has one, and "" when none does. A list of named
// templates (newer tokenizer_config.json files) gives the one named "default".
func readChatTemplate(dir string, tokCfg *jsonObject) (string, error) {
	for _, name := range []string{chatTemplateFile, processorConfigFile} {
		o, ok, err := readJSONObject(dir, name, true)
		if err != nil {
			return "", err
		}
		if !ok {
			continue
		}
		if t, ok, err := chatTemplateOf(o); err != nil || ok {
			return t, err
		}
	}
	if tokCfg != nil {
		t, _, err := chatTemplateOf(tokCfg)
		return t, err
	}
	return "", nil
}

func chatTemplateOf(o *jsonObject) (string, bool, error) {
	if !o.has("chat_template") {
		return "", false, nil
	}
	if s, ok, err := optional[string](o, "chat_template"); err == nil && ok {
		return s, true, nil
	}
	named, err := required[[]struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}](o, "chat_template")
	if err != nil {
		return "", false, o.errorf("chat_template", "neither a string nor a list of {name, template}")
	}
	for _, t := range named {
		if t.Name == "default" {
			return t.Template, true, nil
		}
	}
	return "", false, o.errorf("chat_template", "no template named \"default\"")
}

// readGenerationEOS returns the eos_token_id list of generation_config.json (an int or a list),
// or nil when the file or key is absent.
func readGenerationEOS(dir string) ([]int, error) {
	o, ok, err := readJSONObject(dir, generationConfigFile, true)
	if err != nil || !ok {
		return nil, err
	}
	if !o.has("eos_token_id") {
		return nil, nil
	}
	if id, ok, err := optional[int](o, "eos_token_id"); err == nil && ok {
		return []int{id}, nil
	}
	ids, err := required[[]int](o, "eos_token_id")
	if err != nil {
		return nil, o.errorf("eos_token_id", "neither an integer nor a list of integers")
	}
	return ids, nil
}
