package runner

import (
	"fmt"

	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/processor"
)

// GGUF keys of the image processor settings in an idefics2 mmproj file (written by convert/ from the checkpoint's
// preprocessor_config.json; IDEFICS2.md §10.3).
const (
	keyImageMean        = "clip.vision.image_mean"
	keyImageStd         = "clip.vision.image_std"
	keyPreprocImageSize = "clip.vision.preproc_image_size"
	keyShortestEdge     = "idefics2.preproc.shortest_edge"
	keyLongestEdge      = "idefics2.preproc.longest_edge"
	keyRescaleFactor    = "idefics2.preproc.rescale_factor"
	keyResample         = "idefics2.preproc.resample"
	keyImageSeqLen      = "idefics2.image_seq_len"
	keyImageTokenID     = "idefics2.image_token_id"
)

// ImageConfigFromGGUF builds the image processor settings stored in an mmproj GGUF. path names the file in
// errors. Keys that are absent keep Idefics2ImageProcessor's class defaults (processor.DefaultImageConfig), except
// that a missing longest edge falls back to clip.vision.preproc_image_size, the llama.cpp key holding it. A key of
// the wrong type or an unusable combination (processor.ImageConfig.Validate) is an error naming the key.
func ImageConfigFromGGUF(md gguf.Metadata, path string) (processor.ImageConfig, error) {
	c := processor.DefaultImageConfig()
	for _, b := range []struct {
		key string
		dst *bool
	}{
		{"idefics2.preproc.do_image_splitting", &c.DoImageSplitting},
		{"idefics2.preproc.do_resize", &c.DoResize},
		{"idefics2.preproc.do_rescale", &c.DoRescale},
		{"idefics2.preproc.do_normalize", &c.DoNormalize},
		{"idefics2.preproc.do_pad", &c.DoPad},
		{"idefics2.preproc.do_convert_rgb", &c.DoConvertRGB},
	} {
		if !md.Has(b.key) {
			continue
		}
		v, err := md.Bool(b.key)
		if err != nil {
			return c, fmt.Errorf("runner: %s: %w", path, err)
		}
		*b.dst = v
	}
	ints := []struct {
		key string
		dst *int
	}{{keyShortestEdge, &c.ShortestEdge}, {keyLongestEdge, &c.LongestEdge}, {keyResample, &c.Resample}}
	if !md.Has(keyLongestEdge) && md.Has(keyPreprocImageSize) {
		ints = append(ints, struct {
			key string
			dst *int
		}{keyPreprocImageSize, &c.LongestEdge})
	}
	for _, k := range ints {
		if !md.Has(k.key) {
			continue
		}
		v, err := md.Int(k.key)
		if err != nil {
			return c, fmt.Errorf("runner: %s: %w", path, err)
		}
		if v < 0 || v > 1<<20 {
			return c, fmt.Errorf("runner: %s: key %q is %d, want 0…%d", path, k.key, v, 1<<20)
		}
		*k.dst = v
	}
	if md.Has(keyRescaleFactor) {
		v, err := md.Float64(keyRescaleFactor)
		if err != nil {
			// Some writers store it as f32; accept that too (the value then carries f32 rounding).
			f, err2 := md.Float32(keyRescaleFactor)
			if err2 != nil {
				return c, fmt.Errorf("runner: %s: %w", path, err)
			}
			v = float64(f)
		}
		c.RescaleFactor = v
	}
	for _, p := range []struct {
		key string
		dst *[3]float32
	}{{keyImageMean, &c.ImageMean}, {keyImageStd, &c.ImageStd}} {
		if !md.Has(p.key) {
			continue
		}
		v, err := md.Float32s(p.key)
		if err != nil {
			return c, fmt.Errorf("runner: %s: %w", path, err)
		}
		switch len(v) {
		case 1:
			*p.dst = [3]float32{v[0], v[0], v[0]}
		case 3:
			*p.dst = [3]float32{v[0], v[1], v[2]}
		default:
			return c, fmt.Errorf("runner: %s: key %q has %d values, want 3", path, p.key, len(v))
		}
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("runner: %s: %w", path, err)
	}
	return c, nil
}
