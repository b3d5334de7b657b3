package processor

import (
	"image"
)

// JPEG pixels are decoded by Go's image/jpeg, whose inverse DCT is not libjpeg-turbo's
// (JDCT_ISLOW, which Pillow uses), so sample values differ by about ±1 before colour conversion.
// What happens after the DCT is reproduced here: libjpeg-turbo's "fancy" chroma upsampling
// (jdsample.c: triangle filters for 2×1, 1×2 and 2×2 subsampling, replication otherwise) and its
// YCbCr→RGB fixed-point conversion (jdcolor.c), and Pillow's CMYK→RGB formula (Convert.c). Go's
// own YCbCr→RGB conversion uses nearest-neighbour chroma and a different rounding, which would
// add much larger errors at colour edges.

// libjpeg's jdcolor.c tables: SCALEBITS 16, FIX(x) = round(x·2^16).
var (
	jpegCrR [256]int32
	jpegCbB [256]int32
	jpegCrG [256]int32
	jpegCbG [256]int32
)

func init() {
	const scaleBits = 16
	const oneHalf = 1 << (scaleBits - 1)
	fix := func(x float64) int32 { return int32(x*(1<<scaleBits) + 0.5) }
	for i := range 256 {
		x := int32(i - 128)
		jpegCrR[i] = (fix(1.40200)*x + oneHalf) >> scaleBits
		jpegCbB[i] = (fix(1.77200)*x + oneHalf) >> scaleBits
		jpegCrG[i] = -fix(0.71414) * x
		jpegCbG[i] = -fix(0.34414)*x + oneHalf
	}
}

func clampU8(v int32) uint8 {
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}

// jpegToPIL converts Go's decoded JPEG: grey → "L", YCbCr → "RGB" (libjpeg arithmetic), Adobe
// RGB → "RGB", CMYK/YCCK → "CMYK" converted to RGB with Pillow's cmyk2rgb.
func jpegToPIL(img image.Image) (*pilImage, error) {
	switch m := img.(type) {
	case *image.Gray:
		return genericToPIL(m, "L"), nil
	case *image.YCbCr:
		return jpegYCbCrToPIL(m), nil
	case *image.CMYK:
		return cmykToPIL(m), nil
	case *image.RGBA:
		return genericToPIL(m, "RGB"), nil
	}
	p := genericToPIL(img, "RGB")
	p.alpha = nil
	return p, nil
}

// cmykToPIL applies Pillow's cmyk2rgb (Convert.c, Pillow ≥ 9.4): with nk = 255 − K,
// R = nk − MULDIV255(C, nk) where MULDIV255(a, b) = (t + (t >> 8)) >> 8 for t = a·b + 128.
// Go's decoder already inverted Adobe's stored CMYK to ink amounts, as Pillow's "CMYK;I" raw
// mode does.
func cmykToPIL(m *image.CMYK) *pilImage {
	b := m.Bounds()
	p := newPILImage(b.Dx(), b.Dy(), "CMYK")
	muldiv255 := func(a, b int32) int32 {
		t := a*b + 128
		return ((t >> 8) + t) >> 8
	}
	for y := range p.h {
		row := m.Pix[y*m.Stride : y*m.Stride+p.w*4]
		for x := range p.w {
			c, mg, ye, k := int32(row[x*4]), int32(row[x*4+1]), int32(row[x*4+2]), int32(row[x*4+3])
			nk := 255 - k
			i := (y*p.w + x) * 3
			p.rgb[i] = clampU8(nk - muldiv255(c, nk))
			p.rgb[i+1] = clampU8(nk - muldiv255(mg, nk))
			p.rgb[i+2] = clampU8(nk - muldiv255(ye, nk))
		}
	}
	return p
}

// jpegYCbCrToPIL upsamples the chroma planes as libjpeg-turbo does with do_fancy_upsampling (its
// default, which Pillow keeps) and converts with ycc_rgb_convert.
func jpegYCbCrToPIL(m *image.YCbCr) *pilImage {
	b := m.Bounds()
	w, h := b.Dx(), b.Dy()
	var hs, vs int // chroma subsampling factors
	switch m.SubsampleRatio {
	case image.YCbCrSubsampleRatio444:
		hs, vs = 1, 1
	case image.YCbCrSubsampleRatio422:
		hs, vs = 2, 1
	case image.YCbCrSubsampleRatio420:
		hs, vs = 2, 2
	case image.YCbCrSubsampleRatio440:
		hs, vs = 1, 2
	case image.YCbCrSubsampleRatio411:
		hs, vs = 4, 1
	case image.YCbCrSubsampleRatio410:
		hs, vs = 4, 2
	default:
		return genericToPIL(m, "RGB")
	}
	cw, ch := (w+hs-1)/hs, (h+vs-1)/vs // libjpeg's downsampled_width/height
	cb := upsampleJPEGPlane(m.Cb, m.CStride, cw, ch, hs, vs, w, h)
	cr := upsampleJPEGPlane(m.Cr, m.CStride, cw, ch, hs, vs, w, h)
	p := newPILImage(w, h, "RGB")
	for y := range h {
		yrow := m.Y[y*m.YStride : y*m.YStride+w]
		for x, yv := range yrow {
			yy := int32(yv)
			cbv, crv := cb[y*w+x], cr[y*w+x]
			i := (y*w + x) * 3
			p.rgb[i] = clampU8(yy + jpegCrR[crv])
			p.rgb[i+1] = clampU8(yy + ((jpegCbG[cbv] + jpegCrG[crv]) >> 16))
			p.rgb[i+2] = clampU8(yy + jpegCbB[cbv])
		}
	}
	return p
}

// upsampleJPEGPlane expands a cw×ch chroma plane to w×h with libjpeg-turbo's jdsample.c methods.
// Rows above the first and below the last are copies of the edge rows (jdmainct.c's context
// row pointers).
func upsampleJPEGPlane(src []uint8, stride, cw, ch, hs, vs, w, h int) []uint8 {
	row := func(r int) []uint8 {
		r = max(0, min(r, ch-1))
		return src[r*stride : r*stride+cw]
	}
	fullW := cw * hs
	out := make([]uint8, w*h)
	line := make([]uint8, fullW)
	emit := func(y int) {
		if y < h {
			copy(out[y*w:(y+1)*w], line[:w])
		}
	}
	switch {
	case hs == 2 && vs == 1 && cw > 2: // h2v1_fancy_upsample
		for r := range ch {
			in := row(r)
			v := int32(in[0])
			line[0] = uint8(v)
			line[1] = uint8((v*3 + int32(in[1]) + 2) >> 2)
			for c := 1; c < cw-1; c++ {
				v := int32(in[c]) * 3
				line[2*c] = uint8((v + int32(in[c-1]) + 1) >> 2)
				line[2*c+1] = uint8((v + int32(in[c+1]) + 2) >> 2)
			}
			v = int32(in[cw-1])
			line[2*cw-2] = uint8((v*3 + int32(in[cw-2]) + 1) >> 2)
			line[2*cw-1] = uint8(v)
			emit(r)
		}
	case hs == 1 && vs == 2: // h1v2_fancy_upsample
		for r := range ch {
			in0 := row(r)
			for v := range 2 {
				in1, bias := row(r-1), int32(1)
				if v == 1 {
					in1, bias = row(r+1), 2
				}
				for c := range cw {
					line[c] = uint8((int32(in0[c])*3 + int32(in1[c]) + bias) >> 2)
				}
				emit(2*r + v)
			}
		}
	case hs == 2 && vs == 2 && cw > 2: // h2v2_fancy_upsample
		for r := range ch {
			in0 := row(r)
			for v := range 2 {
				in1 := row(r - 1)
				if v == 1 {
					in1 = row(r + 1)
				}
				colsum := func(c int) int32 { return int32(in0[c])*3 + int32(in1[c]) }
				this, next := colsum(0), colsum(1)
				line[0] = uint8((this*4 + 8) >> 4)
				line[1] = uint8((this*3 + next + 7) >> 4)
				last := this
				this = next
				for c := 1; c < cw-1; c++ {
					next = colsum(c + 1)
					line[2*c] = uint8((this*3 + last + 8) >> 4)
					line[2*c+1] = uint8((this*3 + next + 7) >> 4)
					last, this = this, next
				}
				line[2*cw-2] = uint8((this*3 + last + 8) >> 4)
				line[2*cw-1] = uint8((this*4 + 7) >> 4)
				emit(2*r + v)
			}
		}
	default: // int_upsample / h2v1_upsample / h2v2_upsample: replication
		for r := range ch {
			in := row(r)
			for c, v := range in {
				for k := range hs {
					line[c*hs+k] = v
				}
			}
			for v := range vs {
				emit(r*vs + v)
			}
		}
	}
	return out
}
