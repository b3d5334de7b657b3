package runner

import (
	"fmt"

	"github.com/idefics2-go/idefics2/processor"
)

// ImageSettings are run-time changes to the image processor settings the mmproj holds: the options the model's
// documentation shows for Idefics2Processor (do_image_splitting, size["longest_edge"], size["shortest_edge"]). The
// zero value changes nothing.
type ImageSettings struct {
	// Splitting, when set, turns image splitting on or off.
	Splitting *bool
	// LongestEdge and ShortestEdge, when positive, replace size["longest_edge"] and size["shortest_edge"] (pixels).
	LongestEdge, ShortestEdge int
}

// IsZero reports whether s changes nothing.
func (s ImageSettings) IsZero() bool {
	return s.Splitting == nil && s.LongestEdge == 0 && s.ShortestEdge == 0
}

// ApplyImageSettings returns base with s applied, or an error naming the setting when the result is one the vision
// tower (patch size patch, image size imageSize; 0 skips that check) cannot take: a longest edge below one patch, a
// longest edge above the tower's image size (its position table covers image_size/patch_size patches per side; a
// larger image would give several patches one position, which the model never saw), a shortest edge above the
// longest, or edges for a configuration that resizes to a fixed height and width or does not resize.
func ApplyImageSettings(base processor.ImageConfig, s ImageSettings, patch, imageSize int) (processor.ImageConfig, error) {
	c := base
	if s.Splitting != nil {
		c.DoImageSplitting = *s.Splitting
	}
	if s.LongestEdge == 0 && s.ShortestEdge == 0 {
		return c, nil
	}
	switch {
	case s.LongestEdge < 0:
		return c, inputErrorf("runner: longest edge %d: want a positive number of pixels", s.LongestEdge)
	case s.ShortestEdge < 0:
		return c, inputErrorf("runner: shortest edge %d: want a positive number of pixels", s.ShortestEdge)
	case !c.DoResize:
		return c, inputErrorf("runner: the image processor settings do not resize (do_resize false): the longest and shortest edges cannot be changed")
	case c.Height > 0 && c.Width > 0:
		return c, inputErrorf("runner: the image processor settings resize to a fixed %d×%d: the longest and shortest edges cannot be changed", c.Width, c.Height)
	}
	if s.LongestEdge > 0 {
		c.LongestEdge = s.LongestEdge
	}
	if s.ShortestEdge > 0 {
		c.ShortestEdge = s.ShortestEdge
	}
	if patch > 0 && c.LongestEdge < patch {
		return c, inputErrorf("runner: longest edge %d: smaller than one %d-pixel patch (want %d to %d)", c.LongestEdge, patch, patch, max(imageSize, patch))
	}
	if imageSize > 0 && c.LongestEdge > imageSize {
		return c, inputErrorf("runner: longest edge %d: larger than the vision tower's image size %d (want %d to %d)", c.LongestEdge, imageSize, max(patch, 1), imageSize)
	}
	if c.ShortestEdge > c.LongestEdge {
		return c, inputErrorf("runner: shortest edge %d is larger than the longest edge %d", c.ShortestEdge, c.LongestEdge)
	}
	if err := c.Validate(); err != nil {
		return c, asInput(fmt.Errorf("runner: %w", err))
	}
	return c, nil
}

// ImageConfigWith returns the model's image processor settings with s applied (see ApplyImageSettings).
func (m *Model) ImageConfigWith(s ImageSettings) (processor.ImageConfig, error) {
	if !m.HasVision() {
		if s.IsZero() {
			return m.imgCfg, nil
		}
		return m.imgCfg, inputErrorf("runner: image settings given but the model has no mmproj (vision) file")
	}
	v := m.g.Vision
	return ApplyImageSettings(m.imgCfg, s, v.Patch, v.ImageSize)
}

// PatchSize is the vision tower's patch size in pixels (0 without an mmproj).
func (m *Model) PatchSize() int {
	if !m.HasVision() {
		return 0
	}
	return m.g.Vision.Patch
}

// ImageSeqLen is the number of <image> tokens each (sub-)image becomes (0 without an mmproj).
func (m *Model) ImageSeqLen() int { return m.seqLen }

// ImageView is what the vision tower receives for the images of one prompt, before rescaling and normalizing: the
// resized (sub-)images in order and how they are padded and cut into patches.
type ImageView struct {
	// Config is the image processor settings used (the mmproj's with the prompt's ImageSettings applied).
	Config processor.ImageConfig
	// Patch is the vision tower's patch size in pixels; SeqLen the <image> tokens per (sub-)image.
	Patch, SeqLen int
	// Originals holds the decoded size (width, height) of each input image.
	Originals [][2]int
	// PerImage holds how many (sub-)images each input image became (1 or 5).
	PerImage []int
	// SubImages are the resized RGB (sub-)images (processor.ImageConfig.SubImages), Views their descriptions.
	SubImages []*processor.RGBImage
	Views     []processor.SubImageView
}

// ViewImages decodes and resizes images exactly as a prompt holding them would (o.Image, o.NoSplit and
// o.MaxImagePixels apply) and describes what the vision tower receives.
func (m *Model) ViewImages(images []Image, o PromptOptions) (*ImageView, error) {
	if !m.HasVision() {
		return nil, inputErrorf("runner: the model has no mmproj (vision) file")
	}
	if len(images) == 0 {
		return nil, inputErrorf("runner: no images")
	}
	cfg, err := m.ImageConfigWith(o.Image)
	if err != nil {
		return nil, err
	}
	if o.NoSplit {
		cfg.DoImageSplitting = false
	}
	v := &ImageView{Config: cfg, Patch: m.g.Vision.Patch, SeqLen: m.seqLen}
	decoded := make([]*processor.RGBImage, len(images))
	for i, img := range images {
		name := img.Name
		if name == "" {
			name = fmt.Sprintf("image %d", i+1)
		}
		if decoded[i], err = processor.DecodeImage(img.Data, processor.DecodeOptions{Name: name, MaxPixels: max(o.MaxImagePixels, 0)}); err != nil {
			return nil, asInput(err)
		}
		v.Originals = append(v.Originals, [2]int{decoded[i].W, decoded[i].H})
	}
	if v.SubImages, v.PerImage, err = cfg.SubImages(decoded); err != nil {
		return nil, asInput(fmt.Errorf("runner: preprocessing the images: %w", err))
	}
	if v.Views, err = processor.ViewSubImages(v.SubImages, v.PerImage, v.Patch, cfg.DoPad); err != nil {
		return nil, err
	}
	return v, nil
}
