package processor

import (
	"fmt"
	"image"
	"image/color"
)

// pilImage is a decoded image as Pillow sees it, reduced to what both pipelines need: rgb holds
// what PIL convert("RGB") gives (packed), alpha what PIL convert("RGBA") puts in the alpha band
// (nil when every pixel is opaque), and rgbMode says whether Pillow opened the file in mode "RGB"
// (then transformers' convert_to_rgb returns it untouched, ignoring any tRNS transparency).
type pilImage struct {
	w, h    int
	rgb     []uint8
	alpha   []uint8
	rgbMode bool
	mode    string // Pillow's mode name, for tests and messages
}

func newPILImage(w, h int, mode string) *pilImage {
	return &pilImage{w: w, h: h, rgb: make([]uint8, w*h*3), mode: mode, rgbMode: mode == "RGB"}
}

func (p *pilImage) ensureAlpha() {
	if p.alpha == nil {
		p.alpha = make([]uint8, p.w*p.h)
		for i := range p.alpha {
			p.alpha[i] = 255
		}
	}
}

// compositeOverWhite mirrors transformers' convert_to_rgb for a non-RGB PIL image:
// Image.alpha_composite(white RGBA background, image.convert("RGBA")).convert("RGB"). The
// arithmetic is Pillow's ImagingAlphaComposite (AlphaComposite.c) with an opaque white
// destination: 7 extra bits of precision and division by 255 as ((t >> 8) + t) >> 8.
func (p *pilImage) compositeOverWhite() *RGBImage {
	out := &RGBImage{W: p.w, H: p.h, Pix: make([]uint8, len(p.rgb))}
	if p.alpha == nil {
		copy(out.Pix, p.rgb)
		return out
	}
	const precisionBits = 7
	for i, a := range p.alpha {
		src := p.rgb[i*3 : i*3+3]
		dst := out.Pix[i*3 : i*3+3]
		if a == 0 {
			dst[0], dst[1], dst[2] = 255, 255, 255
			continue
		}
		sa := uint32(a)
		blend := 255 * (255 - sa) // dst alpha is 255
		outa255 := sa*255 + blend
		coef1 := sa * 255 * 255 * (1 << precisionBits) / outa255
		coef2 := 255*(1<<precisionBits) - coef1
		for c := range 3 {
			t := uint32(src[c])*coef1 + 255*coef2 + (0x80 << precisionBits)
			dst[c] = uint8((((t >> 8) + t) >> 8) >> precisionBits)
		}
	}
	return out
}

// toPIL converts a decoded Go image into what Pillow 9.4 would hold for the same file. Go's
// decoders choose image types that are close to Pillow's modes but not identical: where the file
// header decides the difference (PNG colour type and bit depth, BMP compression, GIF palette
// and canvas), the raw bytes are consulted.
func toPIL(img image.Image, format string, data []byte, cfg image.Config) (*pilImage, error) {
	switch format {
	case "png":
		return pngToPIL(img, data)
	case "gif":
		return gifToPIL(img, data, cfg)
	case "bmp":
		return bmpToPIL(img, data)
	case "jpeg":
		return jpegToPIL(img)
	case "webp":
		return webpToPIL(img)
	case "tiff":
		return tiffToPIL(img), nil
	}
	return nil, fmt.Errorf("unsupported format %q", format)
}

// genericToPIL handles image types through their straight (non-premultiplied) 8-bit colours:
// RGB is the colour with alpha dropped, alpha is kept.
func genericToPIL(img image.Image, mode string) *pilImage {
	b := img.Bounds()
	p := newPILImage(b.Dx(), b.Dy(), mode)
	switch m := img.(type) {
	case *image.Gray:
		for y := range p.h {
			row := m.Pix[y*m.Stride : y*m.Stride+p.w]
			for x, v := range row {
				i := (y*p.w + x) * 3
				p.rgb[i], p.rgb[i+1], p.rgb[i+2] = v, v, v
			}
		}
		return p
	case *image.RGBA:
		// Every Go decoder used here returns *image.RGBA only for opaque images, so the
		// premultiplied values are the straight ones.
		opaque := true
		for y := range p.h {
			row := m.Pix[y*m.Stride : y*m.Stride+p.w*4]
			for x := range p.w {
				i := (y*p.w + x) * 3
				p.rgb[i], p.rgb[i+1], p.rgb[i+2] = row[x*4], row[x*4+1], row[x*4+2]
				if row[x*4+3] != 255 {
					opaque = false
				}
			}
		}
		if !opaque {
			return fromColors(img, mode)
		}
		return p
	case *image.NRGBA:
		hasAlpha := false
		for y := range p.h {
			row := m.Pix[y*m.Stride : y*m.Stride+p.w*4]
			for x := range p.w {
				i := (y*p.w + x) * 3
				p.rgb[i], p.rgb[i+1], p.rgb[i+2] = row[x*4], row[x*4+1], row[x*4+2]
				if row[x*4+3] != 255 {
					hasAlpha = true
				}
			}
		}
		if hasAlpha {
			p.ensureAlpha()
			for y := range p.h {
				row := m.Pix[y*m.Stride : y*m.Stride+p.w*4]
				for x := range p.w {
					p.alpha[y*p.w+x] = row[x*4+3]
				}
			}
		}
		return p
	case *image.NRGBA64:
		// Pillow unpacks 16-bit samples ("RGB;16B", "RGBA;16B", "LA;16B") by keeping the high byte.
		hasAlpha := false
		for y := range p.h {
			row := m.Pix[y*m.Stride : y*m.Stride+p.w*8]
			for x := range p.w {
				i := (y*p.w + x) * 3
				p.rgb[i], p.rgb[i+1], p.rgb[i+2] = row[x*8], row[x*8+2], row[x*8+4]
				if row[x*8+6] != 255 || row[x*8+7] != 255 {
					hasAlpha = true
				}
			}
		}
		if hasAlpha {
			p.ensureAlpha()
			for y := range p.h {
				row := m.Pix[y*m.Stride : y*m.Stride+p.w*8]
				for x := range p.w {
					p.alpha[y*p.w+x] = row[x*8+6]
				}
			}
		}
		return p
	case *image.RGBA64:
		opaque := true
		for y := range p.h {
			row := m.Pix[y*m.Stride : y*m.Stride+p.w*8]
			for x := range p.w {
				i := (y*p.w + x) * 3
				p.rgb[i], p.rgb[i+1], p.rgb[i+2] = row[x*8], row[x*8+2], row[x*8+4]
				if row[x*8+6] != 255 || row[x*8+7] != 255 {
					opaque = false
				}
			}
		}
		if !opaque {
			return fromColors(img, mode)
		}
		return p
	case *image.Paletted:
		return palettedToPIL(m, paletteRGBA(m.Palette), mode)
	}
	return fromColors(img, mode)
}

// fromColors is the slow fallback: each pixel through color.NRGBAModel, high bytes kept.
func fromColors(img image.Image, mode string) *pilImage {
	b := img.Bounds()
	p := newPILImage(b.Dx(), b.Dy(), mode)
	hasAlpha := false
	alpha := make([]uint8, p.w*p.h)
	for y := range p.h {
		for x := range p.w {
			c := color.NRGBA64Model.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA64)
			i := y*p.w + x
			p.rgb[i*3], p.rgb[i*3+1], p.rgb[i*3+2] = uint8(c.R>>8), uint8(c.G>>8), uint8(c.B>>8)
			alpha[i] = uint8(c.A >> 8)
			if alpha[i] != 255 {
				hasAlpha = true
			}
		}
	}
	if hasAlpha {
		p.alpha = alpha
	}
	return p
}

// paletteRGBA returns each palette entry as straight R, G, B, A bytes.
func paletteRGBA(pal color.Palette) [][4]uint8 {
	out := make([][4]uint8, len(pal))
	for i, c := range pal {
		switch c := c.(type) {
		case color.NRGBA:
			out[i] = [4]uint8{c.R, c.G, c.B, c.A}
		case color.RGBA:
			if c.A == 255 || c.A == 0 {
				// Opaque, or Go's transparent black: the stored values are the colour.
				out[i] = [4]uint8{c.R, c.G, c.B, c.A}
				continue
			}
			n := color.NRGBAModel.Convert(c).(color.NRGBA)
			out[i] = [4]uint8{n.R, n.G, n.B, n.A}
		default:
			n := color.NRGBAModel.Convert(c).(color.NRGBA)
			out[i] = [4]uint8{n.R, n.G, n.B, n.A}
		}
	}
	return out
}

// palettedToPIL looks up every index. An index past the palette gives Pillow's default entry:
// ImagingPaletteNew starts every palette as the grey ramp (i, i, i) and putpalette overwrites
// only the entries the file provides.
func palettedToPIL(m *image.Paletted, pal [][4]uint8, mode string) *pilImage {
	b := m.Bounds()
	p := newPILImage(b.Dx(), b.Dy(), mode)
	hasAlpha := false
	for _, e := range pal {
		if e[3] != 255 {
			hasAlpha = true
		}
	}
	if hasAlpha {
		p.ensureAlpha()
	}
	for y := range p.h {
		row := m.Pix[y*m.Stride : y*m.Stride+p.w]
		for x, idx := range row {
			e := [4]uint8{idx, idx, idx, 255}
			if int(idx) < len(pal) {
				e = pal[idx]
			}
			i := y*p.w + x
			p.rgb[i*3], p.rgb[i*3+1], p.rgb[i*3+2] = e[0], e[1], e[2]
			if hasAlpha {
				p.alpha[i] = e[3]
			}
		}
	}
	return p
}

// transpose applies EXIF orientation o (2–8) as PIL.ImageOps.exif_transpose does:
// 2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM, 5 TRANSPOSE, 6 ROTATE_270, 7 TRANSVERSE,
// 8 ROTATE_90 (Pillow's rotations are counter-clockwise).
func (p *pilImage) transpose(o int) *pilImage {
	w, h := p.w, p.h
	ow, oh := w, h
	if o >= 5 {
		ow, oh = h, w
	}
	// src maps an output pixel (x, y) to the source pixel it copies.
	var src func(x, y int) (int, int)
	switch o {
	case 2:
		src = func(x, y int) (int, int) { return w - 1 - x, y }
	case 3:
		src = func(x, y int) (int, int) { return w - 1 - x, h - 1 - y }
	case 4:
		src = func(x, y int) (int, int) { return x, h - 1 - y }
	case 5: // transpose: out(x, y) = in(y, x)
		src = func(x, y int) (int, int) { return y, x }
	case 6: // rotate 270° counter-clockwise = 90° clockwise
		src = func(x, y int) (int, int) { return y, h - 1 - x }
	case 7: // transverse: out(x, y) = in(w-1-y, h-1-x)
		src = func(x, y int) (int, int) { return w - 1 - y, h - 1 - x }
	case 8: // rotate 90° counter-clockwise
		src = func(x, y int) (int, int) { return w - 1 - y, x }
	default:
		return p
	}
	out := &pilImage{w: ow, h: oh, rgb: make([]uint8, len(p.rgb)), rgbMode: p.rgbMode, mode: p.mode}
	if p.alpha != nil {
		out.alpha = make([]uint8, len(p.alpha))
	}
	for y := range oh {
		for x := range ow {
			sx, sy := src(x, y)
			si, di := sy*w+sx, y*ow+x
			copy(out.rgb[di*3:di*3+3], p.rgb[si*3:si*3+3])
			if p.alpha != nil {
				out.alpha[di] = p.alpha[si]
			}
		}
	}
	return out
}
