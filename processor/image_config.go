package processor

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
)

// Pillow resampling filter codes, as stored in preprocessor_config.json's "resample" field
// (PIL.Image.Resampling; transformers' PILImageResampling uses the same numbers).
const (
	ResampleNearest  = 0 // PIL.Image.NEAREST: not supported by this package
	ResampleLanczos  = 1 // PIL.Image.LANCZOS
	ResampleBilinear = 2 // PIL.Image.BILINEAR, the Idefics2 default
	ResampleBicubic  = 3 // PIL.Image.BICUBIC
	ResampleBox      = 4 // PIL.Image.BOX
	ResampleHamming  = 5 // PIL.Image.HAMMING
)

// ImageConfig holds the settings of Hugging Face's Idefics2ImageProcessor, as found in a
// checkpoint's preprocessor_config.json. The zero value is not useful; start from
// DefaultImageConfig or ParseImageConfig.
type ImageConfig struct {
	// DoConvertRGB converts images to RGB; with ImageProcessorPipeline decoding this is where
	// non-RGB images are composited over white. Decoding always yields RGB, so Preprocess ignores it.
	DoConvertRGB bool
	// DoResize resizes each (sub-)image with the shortest/longest-edge rule (or to Height×Width).
	DoResize bool
	// DoRescale multiplies the uint8 pixels by RescaleFactor.
	DoRescale bool
	// DoNormalize subtracts ImageMean and divides by ImageStd per channel.
	DoNormalize bool
	// DoPad zero-pads every (sub-)image to the largest height and width of the batch and returns
	// the pixel attention mask.
	DoPad bool
	// DoImageSplitting splits each image into 4 crops plus the whole image before resizing.
	DoImageSplitting bool
	// ShortestEdge and LongestEdge are size["shortest_edge"] and size["longest_edge"] in pixels.
	ShortestEdge, LongestEdge int
	// Height and Width, when both are positive, are a fixed output size (size["height"],
	// size["width"]); then ShortestEdge and LongestEdge are 0.
	Height, Width int
	// RescaleFactor is the rescale multiplier, normally 1/255.
	RescaleFactor float64
	// ImageMean and ImageStd are the per-channel (R, G, B) normalization constants. They are
	// float32 because transformers casts them to the image dtype (float32) before use.
	ImageMean, ImageStd [3]float32
	// Resample is the Pillow filter code (Resample* constants); only the convolution filters
	// 1–5 are supported.
	Resample int
}

// DefaultImageConfig returns the defaults of Idefics2ImageProcessor.__init__ in transformers
// v4.44.2 (image_processing_idefics2.py): convert to RGB, resize with shortest edge 378 and longest
// edge 980, bilinear, rescale by 1/255, normalize with IMAGENET_STANDARD_MEAN/STD (0.5, 0.5, 0.5),
// pad, and no image splitting (the class default; idefics2-8b's own config turns it on).
func DefaultImageConfig() ImageConfig {
	return ImageConfig{
		DoConvertRGB:     true,
		DoResize:         true,
		DoRescale:        true,
		DoNormalize:      true,
		DoPad:            true,
		DoImageSplitting: false,
		ShortestEdge:     378,
		LongestEdge:      980,
		RescaleFactor:    1.0 / 255,
		ImageMean:        [3]float32{0.5, 0.5, 0.5},
		ImageStd:         [3]float32{0.5, 0.5, 0.5},
		Resample:         ResampleBilinear,
	}
}

// LoadImageConfig reads a Hugging Face preprocessor_config.json file; see ParseImageConfig.
func LoadImageConfig(path string) (ImageConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return ImageConfig{}, fmt.Errorf("processor: image config: %w", err)
	}
	c, err := ParseImageConfig(data)
	if err != nil {
		return ImageConfig{}, fmt.Errorf("processor: %s: %w", path, unprefix(err))
	}
	return c, nil
}

// ParseImageConfig parses the JSON of a Hugging Face preprocessor_config.json. Keys that are
// absent keep the DefaultImageConfig values (the class defaults); keys that do not belong to the
// image processor (processor_class, image_seq_len, …) are ignored. A wrong type, an
// image_processor_type other than Idefics2ImageProcessor, an unknown or unsupported resample
// code, a size without a usable edge pair or non-positive values are errors naming the key.
func ParseImageConfig(data []byte) (ImageConfig, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return ImageConfig{}, fmt.Errorf("processor: image config: %w", err)
	}
	c := DefaultImageConfig()
	if v, ok := raw["image_processor_type"]; ok {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return ImageConfig{}, keyError("image_processor_type", v, "a string")
		}
		if s != "Idefics2ImageProcessor" {
			return ImageConfig{}, fmt.Errorf("processor: image config: image_processor_type %q, want Idefics2ImageProcessor", s)
		}
	}
	bools := []struct {
		key string
		dst *bool
	}{
		{"do_convert_rgb", &c.DoConvertRGB},
		{"do_resize", &c.DoResize},
		{"do_rescale", &c.DoRescale},
		{"do_normalize", &c.DoNormalize},
		{"do_pad", &c.DoPad},
		{"do_image_splitting", &c.DoImageSplitting},
	}
	for _, b := range bools {
		v, ok := raw[b.key]
		if !ok || isNull(v) {
			continue
		}
		if err := json.Unmarshal(v, b.dst); err != nil {
			return ImageConfig{}, keyError(b.key, v, "true or false")
		}
	}
	if v, ok := raw["size"]; ok && !isNull(v) {
		var size map[string]json.RawMessage
		if err := json.Unmarshal(v, &size); err != nil {
			return ImageConfig{}, keyError("size", v, "an object")
		}
		get := func(k string) (int, bool, error) {
			sv, ok := size[k]
			if !ok || isNull(sv) {
				return 0, false, nil
			}
			var f float64
			if err := json.Unmarshal(sv, &f); err != nil || f != math.Trunc(f) || f < 1 || f > 1<<20 {
				return 0, true, keyError("size."+k, sv, "a positive integer")
			}
			return int(f), true, nil
		}
		se, hasSE, err := get("shortest_edge")
		if err != nil {
			return ImageConfig{}, err
		}
		le, hasLE, err := get("longest_edge")
		if err != nil {
			return ImageConfig{}, err
		}
		h, hasH, err := get("height")
		if err != nil {
			return ImageConfig{}, err
		}
		w, hasW, err := get("width")
		if err != nil {
			return ImageConfig{}, err
		}
		// Idefics2ImageProcessor.resize accepts exactly these two forms, checked in this order.
		switch {
		case hasSE && hasLE:
			c.ShortestEdge, c.LongestEdge, c.Height, c.Width = se, le, 0, 0
		case hasH && hasW:
			c.ShortestEdge, c.LongestEdge, c.Height, c.Width = 0, 0, h, w
		default:
			return ImageConfig{}, fmt.Errorf("processor: image config: size %s: want shortest_edge and longest_edge, or height and width", compact(v))
		}
	}
	if v, ok := raw["resample"]; ok && !isNull(v) {
		var f float64
		if err := json.Unmarshal(v, &f); err != nil || f != math.Trunc(f) {
			return ImageConfig{}, keyError("resample", v, "an integer Pillow filter code")
		}
		c.Resample = int(f)
	}
	if v, ok := raw["rescale_factor"]; ok && !isNull(v) {
		if err := json.Unmarshal(v, &c.RescaleFactor); err != nil {
			return ImageConfig{}, keyError("rescale_factor", v, "a number")
		}
	}
	for _, p := range []struct {
		key string
		dst *[3]float32
	}{{"image_mean", &c.ImageMean}, {"image_std", &c.ImageStd}} {
		v, ok := raw[p.key]
		if !ok || isNull(v) {
			continue
		}
		// transformers accepts a single float (used for every channel) or one per channel.
		var one float64
		if err := json.Unmarshal(v, &one); err == nil {
			*p.dst = [3]float32{float32(one), float32(one), float32(one)}
			continue
		}
		var three []float64
		if err := json.Unmarshal(v, &three); err != nil || len(three) != 3 {
			return ImageConfig{}, keyError(p.key, v, "a number or a list of 3 numbers")
		}
		*p.dst = [3]float32{float32(three[0]), float32(three[1]), float32(three[2])}
	}
	if err := c.Validate(); err != nil {
		return ImageConfig{}, err
	}
	return c, nil
}

// Validate reports settings Preprocess cannot honour: an unsupported resample filter, a missing
// or non-positive size, a non-finite rescale factor, or a zero or non-finite standard deviation.
func (c ImageConfig) Validate() error {
	if c.DoResize {
		if _, err := resampleFilterFor(c.Resample); err != nil {
			return err
		}
		fixed := c.Height > 0 && c.Width > 0
		edges := c.ShortestEdge > 0 && c.LongestEdge > 0
		if !fixed && !edges {
			return fmt.Errorf("processor: image config: size: shortest_edge %d, longest_edge %d, height %d, width %d: want two positive edges or a positive height and width",
				c.ShortestEdge, c.LongestEdge, c.Height, c.Width)
		}
		if c.ShortestEdge > 1<<20 || c.LongestEdge > 1<<20 || c.Height > 1<<20 || c.Width > 1<<20 {
			return fmt.Errorf("processor: image config: size %d/%d/%d/%d: larger than %d", c.ShortestEdge, c.LongestEdge, c.Height, c.Width, 1<<20)
		}
	}
	if c.DoRescale && (math.IsNaN(c.RescaleFactor) || math.IsInf(c.RescaleFactor, 0)) {
		return fmt.Errorf("processor: image config: rescale_factor %v is not finite", c.RescaleFactor)
	}
	if c.DoNormalize {
		for i := range 3 {
			m, s := float64(c.ImageMean[i]), float64(c.ImageStd[i])
			if math.IsNaN(m) || math.IsInf(m, 0) {
				return fmt.Errorf("processor: image config: image_mean[%d] %v is not finite", i, m)
			}
			if s == 0 || math.IsNaN(s) || math.IsInf(s, 0) {
				return fmt.Errorf("processor: image config: image_std[%d] %v: want a finite non-zero number", i, s)
			}
		}
	}
	return nil
}

func isNull(v json.RawMessage) bool { return string(v) == "null" }

func keyError(key string, v json.RawMessage, want string) error {
	return fmt.Errorf("processor: image config: %s %s: want %s", key, compact(v), want)
}

// compact shortens a raw JSON value for an error message.
func compact(v json.RawMessage) string {
	s := string(v)
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

// unprefix strips the "processor: image config: " prefix so that LoadImageConfig can name the file.
func unprefix(err error) error {
	const p = "processor: image config: "
	if s := err.Error(); len(s) > len(p) && s[:len(p)] == p {
		return fmt.Errorf("%s", s[len(p):])
	}
	return err
}
