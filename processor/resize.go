package processor

import (
	"fmt"
	"math"
)

// This file reproduces Pillow's convolution resampler (libImaging/Resample.c, as shipped in
// Pillow 9.4, which produced the Hugging Face fixtures) bit for bit on 8-bit RGB images:
//
//   - separable: a horizontal pass over only the source rows the vertical pass reads, its
//     result rounded to uint8, then a vertical pass; a pass runs only if that dimension changes,
//     and an unchanged size returns a copy;
//   - per axis: scale = in/out; filterscale = max(scale, 1); support = filter support ×
//     filterscale; for output o: center = (o + 0.5)·scale, taps from int(center − support + 0.5)
//     (≥ 0) to int(center + support + 0.5) (≤ in), weight of tap x = filter((x − center + 0.5) /
//     filterscale) computed as a product with 1/filterscale, weights divided by their sum;
//   - weights in fixed point with 22 fractional bits (round half away from zero), each output
//     (2^21 + Σ pixel·weight) >> 22 clipped to 0…255.
//
// All float arithmetic is float64 as in the C code. Products that feed an addition are wrapped in
// explicit float64 conversions: the Go spec lets the compiler fuse x*y+z into an FMA on some
// architectures, and a fused result can round differently from Pillow's separate operations.

// pillowPrecisionBits is PRECISION_BITS in Resample.c: 32 − 8 − 2 fractional bits for weights.
const pillowPrecisionBits = 32 - 8 - 2

// resampleFilter is one of Pillow's convolution filters: its kernel and support (radius at
// scale 1).
type resampleFilter struct {
	name    string
	kernel  func(x float64) float64
	support float64
}

// Kernels as defined in Resample.c.
var (
	filterBox = resampleFilter{"box", func(x float64) float64 {
		if x > -0.5 && x <= 0.5 {
			return 1
		}
		return 0
	}, 0.5}
	filterBilinear = resampleFilter{"bilinear", func(x float64) float64 {
		if x < 0 {
			x = -x
		}
		if x < 1 {
			return 1 - x
		}
		return 0
	}, 1}
	filterHamming = resampleFilter{"hamming", func(x float64) float64 {
		if x < 0 {
			x = -x
		}
		if x == 0 {
			return 1
		}
		if x >= 1 {
			return 0
		}
		x = x * math.Pi
		// The C source writes 0.54f and 0.46f: float32 literals promoted to double.
		return math.Sin(x) / x * (float64(float32(0.54)) + float64(float64(float32(0.46))*math.Cos(x)))
	}, 1}
	filterBicubic = resampleFilter{"bicubic", func(x float64) float64 {
		const a = -0.5
		if x < 0 {
			x = -x
		}
		if x < 1 {
			t := float64((a+2)*x) - (a + 3)
			return float64(t*x*x) + 1
		}
		if x < 2 {
			t := float64((x-5)*x) + 8
			return (float64(t*x) - 4) * a
		}
		return 0
	}, 2}
	filterLanczos = resampleFilter{"lanczos", func(x float64) float64 {
		if -3 <= x && x < 3 {
			return sinc(x) * sinc(x/3)
		}
		return 0
	}, 3}
)

func sinc(x float64) float64 {
	if x == 0 {
		return 1
	}
	x = x * math.Pi
	return math.Sin(x) / x
}

// resampleFilterFor maps a Pillow filter code to its kernel. NEAREST (0) goes through a different
// Pillow code path (an affine transform) that this package does not implement.
func resampleFilterFor(code int) (resampleFilter, error) {
	switch code {
	case ResampleLanczos:
		return filterLanczos, nil
	case ResampleBilinear:
		return filterBilinear, nil
	case ResampleBicubic:
		return filterBicubic, nil
	case ResampleBox:
		return filterBox, nil
	case ResampleHamming:
		return filterHamming, nil
	case ResampleNearest:
		return resampleFilter{}, fmt.Errorf("processor: image config: resample %d (nearest) is not supported; use 1-5 (lanczos, bilinear, bicubic, box, hamming)", code)
	}
	return resampleFilter{}, fmt.Errorf("processor: image config: resample %d: unknown Pillow filter code (want 1-5)", code)
}

// resampleCoeffs are the fixed-point weights of one axis: for output i, taps start at
// start[i], count[i] of them, with weights k[i*ksize : i*ksize+count[i]].
type resampleCoeffs struct {
	ksize        int
	start, count []int
	k            []int32
}

// precomputeCoeffs mirrors precompute_coeffs and normalize_coeffs_8bpc for the box (0, in).
func precomputeCoeffs(inSize, outSize int, f resampleFilter) resampleCoeffs {
	// Pillow passes the box as C floats: (double)(in1 - in0) with in0 = 0 is exact below 2^24.
	scale := float64(float32(inSize)) / float64(outSize)
	filterscale := scale
	if filterscale < 1 {
		filterscale = 1
	}
	support := f.support * filterscale
	ksize := int(math.Ceil(support))*2 + 1
	c := resampleCoeffs{
		ksize: ksize,
		start: make([]int, outSize),
		count: make([]int, outSize),
		k:     make([]int32, outSize*ksize),
	}
	w := make([]float64, ksize)
	ss := 1.0 / filterscale
	for xx := range outSize {
		center := float64((float64(xx) + 0.5) * scale)
		xmin := int(center - support + 0.5) // C (int) truncates toward zero, as Go does
		if xmin < 0 {
			xmin = 0
		}
		xmax := int(center + support + 0.5)
		if xmax > inSize {
			xmax = inSize
		}
		xmax -= xmin
		ww := 0.0
		for x := range xmax {
			v := f.kernel((float64(x+xmin) - center + 0.5) * ss)
			w[x] = v
			ww += v
		}
		row := c.k[xx*ksize : xx*ksize+ksize]
		for x := range xmax {
			v := w[x]
			if ww != 0 {
				v /= ww
			}
			p := float64(v * (1 << pillowPrecisionBits))
			if v < 0 {
				row[x] = int32(-0.5 + p)
			} else {
				row[x] = int32(0.5 + p)
			}
		}
		c.start[xx] = xmin
		c.count[xx] = xmax
	}
	return c
}

// clip8 mirrors Resample.c's clip8: the accumulator shifted down by the precision bits, clamped.
func clip8(ss int32) uint8 {
	v := ss >> pillowPrecisionBits
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}

// pillowResize resizes a packed RGB image to outW×outH exactly as Pillow's Image.resize does with
// the convolution filter f (reducing_gap None, default box). It never modifies src.
func pillowResize(src *RGBImage, outW, outH int, f resampleFilter) *RGBImage {
	if outW == src.W && outH == src.H {
		return src.clone()
	}
	needH := outW != src.W
	needV := outH != src.H
	vert := precomputeCoeffs(src.H, outH, f)
	// Rows of the source the vertical pass reads.
	yFirst := vert.start[0]
	yLast := vert.start[outH-1] + vert.count[outH-1]

	cur := src
	if needH {
		horiz := precomputeCoeffs(src.W, outW, f)
		tmp := &RGBImage{W: outW, H: yLast - yFirst, Pix: make([]uint8, outW*(yLast-yFirst)*3)}
		resampleHorizontal(tmp, src, yFirst, horiz)
		for i := range vert.start {
			vert.start[i] -= yFirst
		}
		cur = tmp
	}
	if needV {
		out := &RGBImage{W: cur.W, H: outH, Pix: make([]uint8, cur.W*outH*3)}
		resampleVertical(out, cur, vert)
		return out
	}
	return cur
}

// resampleHorizontal mirrors ImagingResampleHorizontal_8bpc: output row y reads source row
// y+offset.
func resampleHorizontal(dst, src *RGBImage, offset int, c resampleCoeffs) {
	const half = int32(1) << (pillowPrecisionBits - 1)
	for yy := range dst.H {
		in := src.Pix[(yy+offset)*src.W*3 : (yy+offset+1)*src.W*3]
		out := dst.Pix[yy*dst.W*3 : (yy+1)*dst.W*3]
		for xx := range dst.W {
			k := c.k[xx*c.ksize : xx*c.ksize+c.count[xx]]
			taps := in[c.start[xx]*3 : (c.start[xx]+len(k))*3]
			s0, s1, s2 := half, half, half
			for x, w := range k {
				p := taps[x*3 : x*3+3 : x*3+3]
				s0 += int32(p[0]) * w
				s1 += int32(p[1]) * w
				s2 += int32(p[2]) * w
			}
			out[xx*3] = clip8(s0)
			out[xx*3+1] = clip8(s1)
			out[xx*3+2] = clip8(s2)
		}
	}
}

// resampleVertical mirrors ImagingResampleVertical_8bpc.
func resampleVertical(dst, src *RGBImage, c resampleCoeffs) {
	const half = int32(1) << (pillowPrecisionBits - 1)
	stride := src.W * 3
	acc := make([]int32, stride)
	for yy := range dst.H {
		k := c.k[yy*c.ksize : yy*c.ksize+c.count[yy]]
		for i := range acc {
			acc[i] = half
		}
		// Accumulate row by row; integer addition is exact and associative, so this equals
		// Pillow's per-pixel loop over taps.
		for y, w := range k {
			row := src.Pix[(c.start[yy]+y)*stride : (c.start[yy]+y+1)*stride]
			for i, p := range row {
				acc[i] += int32(p) * w
			}
		}
		out := dst.Pix[yy*stride : (yy+1)*stride]
		for i, s := range acc {
			out[i] = clip8(s)
		}
	}
}

// ResizeOutputSize returns the height and width Idefics2ImageProcessor.resize gives an image of
// h×w pixels: the fixed Height×Width when set, otherwise get_resize_output_image_size of
// image_processing_idefics2.py — the longer side is capped at LongestEdge keeping the aspect ratio
// (float64, truncated toward zero), then each side is raised to at least ShortestEdge
// independently (small images are stretched, not scaled). There is no rounding to multiples of
// the patch size.
func (c ImageConfig) ResizeOutputSize(h, w int) (outH, outW int) {
	if c.Height > 0 && c.Width > 0 {
		return c.Height, c.Width
	}
	minLen, maxLen := c.ShortestEdge, c.LongestEdge
	aspect := float64(w) / float64(h)
	switch {
	case w >= h && w > maxLen:
		w = maxLen
		h = int(float64(w) / aspect)
	case h > w && h > maxLen:
		h = maxLen
		w = int(float64(h) * aspect)
	}
	return max(h, minLen), max(w, minLen)
}
