package processor

import (
	"fmt"
)

// ImageBatch is the output of ImageConfig.Preprocess for the images of one prompt: HF's
// pixel_values and pixel_attention_mask without the leading batch dimension.
type ImageBatch struct {
	// N is the number of (sub-)images: 5 per input image with splitting, else 1 per image.
	// H and W are the padded height and width (the largest of the batch).
	N, H, W int
	// PixelValues holds N×3×H×W float32 values, channels first (PyTorch (N, 3, H, W); ggml
	// [W, H, 3, N]); padding is 0.
	PixelValues []float32
	// Mask holds N×H×W values, true over each image's own top-left h×w region. It is nil when
	// DoPad is false (HF returns no pixel_attention_mask then and the model treats every pixel as
	// real).
	Mask []bool
	// Sizes holds the real (height, width) of each (sub-)image after resizing.
	Sizes [][2]int
	// PerImage holds how many (sub-)images each input image became (1 or 5), in input order.
	PerImage []int
}

// SubImage returns the unpadded pixel values of (sub-)image i as a new 3×h×w slice (channels
// first), with h, w = Sizes[i]: what running each image alone at its own size needs.
func (b *ImageBatch) SubImage(i int) ([]float32, error) {
	if i < 0 || i >= b.N {
		return nil, fmt.Errorf("processor: sub-image %d of %d", i, b.N)
	}
	h, w := b.Sizes[i][0], b.Sizes[i][1]
	out := make([]float32, 3*h*w)
	for c := range 3 {
		for y := range h {
			src := b.PixelValues[((i*3+c)*b.H+y)*b.W:]
			copy(out[(c*h+y)*w:(c*h+y+1)*w], src[:w])
		}
	}
	return out, nil
}

// Preprocess mirrors Idefics2ImageProcessor.preprocess (transformers v4.44.2) on the already
// decoded RGB images of one prompt (see DecodeImage for the conversion to RGB):
//
//  1. with DoImageSplitting, each image becomes its four quadrant crops (split at ⌊W/2⌋ and
//     ⌊H/2⌋: top-left, top-right, bottom-left, bottom-right) followed by the whole image, all
//     before resizing;
//  2. with DoResize, each (sub-)image is resized to ResizeOutputSize with Pillow's resampler
//     (bit-exact, uint8 result);
//  3. with DoRescale, v = float32(float64(u8) × RescaleFactor) (transformers multiplies in float64
//     and casts to float32); without it v = float32(u8);
//  4. with DoNormalize, v = (v − mean[c]) / std[c] in float32;
//  5. with DoPad, zero padding at the bottom and right to the batch's largest height and width,
//     and the mask; without DoPad the images are still stored padded (use SubImage) and Mask is
//     nil.
//
// Images must be non-nil with positive sizes; splitting needs at least 2×2 pixels (a smaller
// image would give empty crops, on which HF fails too).
func (c ImageConfig) Preprocess(images []*RGBImage) (*ImageBatch, error) {
	subs, per, err := c.SubImages(images)
	if err != nil {
		return nil, err
	}
	b := &ImageBatch{N: len(subs), PerImage: per, Sizes: make([][2]int, len(subs))}
	for i, s := range subs {
		b.Sizes[i] = [2]int{s.H, s.W}
		b.H = max(b.H, s.H)
		b.W = max(b.W, s.W)
	}
	b.PixelValues = make([]float32, b.N*3*b.H*b.W)
	if c.DoPad {
		b.Mask = make([]bool, b.N*b.H*b.W)
	}
	lut := c.valueTable()
	for i, s := range subs {
		for ch := range 3 {
			for y := range s.H {
				dst := b.PixelValues[((i*3+ch)*b.H+y)*b.W:]
				src := s.Pix[y*s.W*3:]
				for x := range s.W {
					dst[x] = lut[ch][src[x*3+ch]]
				}
			}
		}
		if b.Mask != nil {
			for y := range s.H {
				m := b.Mask[(i*b.H+y)*b.W:]
				for x := range s.W {
					m[x] = true
				}
			}
		}
	}
	return b, nil
}

// SubImages runs steps 1 and 2 of Preprocess (splitting, then resizing with Pillow's resampler): the RGB
// (sub-)images the model sees before rescaling, normalizing and padding, in Preprocess's order, and how many each
// input image became (1 or 5).
func (c ImageConfig) SubImages(images []*RGBImage) ([]*RGBImage, []int, error) {
	if len(images) == 0 {
		return nil, nil, fmt.Errorf("processor: preprocess: no images")
	}
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	var filter resampleFilter
	if c.DoResize {
		filter, _ = resampleFilterFor(c.Resample)
	}
	var subs []*RGBImage
	per := make([]int, len(images))
	for i, im := range images {
		if im == nil || im.W <= 0 || im.H <= 0 || len(im.Pix) != 3*im.W*im.H {
			return nil, nil, fmt.Errorf("processor: preprocess: image %d: invalid RGB image", i)
		}
		if c.DoImageSplitting {
			if im.W < 2 || im.H < 2 {
				return nil, nil, fmt.Errorf("processor: preprocess: image %d: %dx%d is too small to split (want at least 2x2)", i, im.W, im.H)
			}
			mw, mh := im.W/2, im.H/2
			subs = append(subs,
				im.crop(0, 0, mw, mh),
				im.crop(mw, 0, im.W, mh),
				im.crop(0, mh, mw, im.H),
				im.crop(mw, mh, im.W, im.H),
				im)
			per[i] = 5
		} else {
			subs = append(subs, im)
			per[i] = 1
		}
	}
	for i, s := range subs {
		if c.DoResize {
			h, w := c.ResizeOutputSize(s.H, s.W)
			if h != s.H || w != s.W {
				subs[i] = pillowResize(s, w, h, filter)
			}
		}
	}
	return subs, per, nil
}

// valueTable maps each uint8 value of each channel to its float32 after rescale and normalize.
// A table is exact: every step depends only on the byte and the channel.
func (c ImageConfig) valueTable() *[3][256]float32 {
	var t [3][256]float32
	for ch := range 3 {
		for u := range 256 {
			var v float32
			if c.DoRescale {
				// transformers' rescale: image.astype(float64) * scale, then .astype(float32).
				v = float32(float64(u) * c.RescaleFactor)
			} else {
				v = float32(u)
			}
			if c.DoNormalize {
				// transformers' normalize: (image - mean) / std with mean and std cast to the
				// image's float32 dtype, computed in float32.
				v = (v - c.ImageMean[ch]) / c.ImageStd[ch]
			}
			t[ch][u] = v
		}
	}
	return &t
}
