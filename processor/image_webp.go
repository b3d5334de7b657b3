package processor

import (
	"image"
)

// Lossy WebP stores VP8 YUV 4:2:0 planes, which Go's x/image/webp decodes exactly (VP8
// reconstruction is specified bit for bit). Pillow gets RGB from libwebp, which upsamples chroma
// with its "fancy" 9-3-3-1 filter (dsp/upsampling.c, driven row pair by row pair as in
// dec/io_dec.c EmitFancyRGB) and converts BT.601 limited-range YUV with 14-bit fixed point
// (dsp/yuv.h). Converting Go's planes with color.YCbCrToRGB instead (full-range JFIF maths and
// nearest-neighbour chroma) would be off by up to ~10% in contrast, so the libwebp arithmetic is
// reproduced here.

// webpToPIL converts Go's decoded WebP: lossless (*image.NRGBA) keeps its values, mode "RGBA"
// (compositing an opaque pixel over white is the identity, so a WebP without alpha gives the same
// bytes as Pillow's mode "RGB"); lossy (*image.YCbCr, *image.NYCbCrA) goes through libwebp's
// conversion, with the alpha plane kept.
func webpToPIL(img image.Image) (*pilImage, error) {
	switch m := img.(type) {
	case *image.YCbCr:
		if m.SubsampleRatio == image.YCbCrSubsampleRatio420 {
			return webpYUVToPIL(m, nil, 0), nil
		}
	case *image.NYCbCrA:
		if m.SubsampleRatio == image.YCbCrSubsampleRatio420 {
			return webpYUVToPIL(&m.YCbCr, m.A, m.AStride), nil
		}
	}
	return genericToPIL(img, "RGBA"), nil
}

// webpYUVToRGB is libwebp's VP8YuvToRgb: MultHi(v, c) = (v·c) >> 8, result >> 6 clipped.
func webpYUVToRGB(y, u, v int32, dst []uint8) {
	mulHi := func(v, c int32) int32 { return (v * c) >> 8 }
	clip := func(v int32) uint8 {
		const mask = (256 << 6) - 1
		if v&^mask == 0 {
			return uint8(v >> 6)
		}
		if v < 0 {
			return 0
		}
		return 255
	}
	dst[0] = clip(mulHi(y, 19077) + mulHi(v, 26149) - 14234)
	dst[1] = clip(mulHi(y, 19077) - mulHi(u, 6419) - mulHi(v, 13320) + 8708)
	dst[2] = clip(mulHi(y, 19077) + mulHi(u, 33050) - 17685)
}

// webpUpsampleRow fills out (length n) with one chroma channel of an output row from chroma rows
// top and cur, as libwebp's UPSAMPLE_FUNC does for its top (bottom=false) or bottom line.
func webpUpsampleRow(top, cur []uint8, n int, bottom bool, out []int32) {
	near, far := top, cur
	if bottom {
		near, far = cur, top
	}
	out[0] = (3*int32(near[0]) + int32(far[0]) + 2) >> 2
	last := (n - 1) >> 1
	for x := 1; x <= last; x++ {
		tl, t := int32(top[x-1]), int32(top[x])
		l, c := int32(cur[x-1]), int32(cur[x])
		avg := tl + t + l + c + 8
		d12 := (avg + 2*(t+l)) >> 3
		d03 := (avg + 2*(tl+c)) >> 3
		if !bottom {
			out[2*x-1] = (d12 + tl) >> 1
			out[2*x] = (d03 + t) >> 1
		} else {
			out[2*x-1] = (d03 + l) >> 1
			out[2*x] = (d12 + c) >> 1
		}
	}
	if n&1 == 0 {
		out[n-1] = (3*int32(near[last]) + int32(far[last]) + 2) >> 2
	}
}

// webpYUVToPIL converts 4:2:0 planes (plus an optional alpha plane) the way libwebp's
// EmitFancyRGB drives the upsampler: row 0 from chroma row 0 alone, rows 2k−1 and 2k from chroma
// rows k−1 and k, and for an even height the last row from the last chroma row alone.
func webpYUVToPIL(m *image.YCbCr, alpha []uint8, astride int) *pilImage {
	b := m.Bounds()
	w, h := b.Dx(), b.Dy()
	mode := "RGB"
	if alpha != nil {
		mode = "RGBA"
	}
	p := newPILImage(w, h, mode)
	cw := (w + 1) / 2
	crow := func(plane []uint8, r int) []uint8 { return plane[r*m.CStride : r*m.CStride+cw] }
	u := make([]int32, w)
	v := make([]int32, w)
	emit := func(y, topRow, curRow int, bottom bool) {
		webpUpsampleRow(crow(m.Cb, topRow), crow(m.Cb, curRow), w, bottom, u)
		webpUpsampleRow(crow(m.Cr, topRow), crow(m.Cr, curRow), w, bottom, v)
		yrow := m.Y[y*m.YStride : y*m.YStride+w]
		for x, yv := range yrow {
			webpYUVToRGB(int32(yv), u[x], v[x], p.rgb[(y*w+x)*3:])
		}
	}
	emit(0, 0, 0, false)
	for k := 1; 2*k < h; k++ {
		emit(2*k-1, k-1, k, false)
		emit(2*k, k-1, k, true)
	}
	if h%2 == 0 {
		// The last row of an even height pairs with nothing: the last chroma row alone.
		emit(h-1, h/2-1, h/2-1, false)
	}
	if alpha != nil {
		p.ensureAlpha()
		for y := range h {
			copy(p.alpha[y*w:(y+1)*w], alpha[y*astride:y*astride+w])
		}
		opaque := true
		for _, a := range p.alpha {
			if a != 255 {
				opaque = false
				break
			}
		}
		if opaque {
			p.alpha = nil
		}
	}
	return p
}
