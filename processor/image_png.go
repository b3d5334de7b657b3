package processor

import (
	"encoding/binary"
	"image"
)

// pngChunk is one chunk of a PNG file (CRC not checked: Go's decoder already did).
type pngChunk struct {
	typ  string
	data []byte
}

// pngChunks lists the chunks of a PNG file up to IEND or the first malformed chunk.
func pngChunks(data []byte) []pngChunk {
	const sig = "\x89PNG\r\n\x1a\n"
	if len(data) < len(sig) || string(data[:len(sig)]) != sig {
		return nil
	}
	var out []pngChunk
	for off := len(sig); off+8 <= len(data); {
		n := int(binary.BigEndian.Uint32(data[off:]))
		typ := string(data[off+4 : off+8])
		if n < 0 || n > len(data)-off-12 {
			break
		}
		out = append(out, pngChunk{typ: typ, data: data[off+8 : off+8+n]})
		off += 12 + n
		if typ == "IEND" {
			break
		}
	}
	return out
}

// pngToPIL maps a decoded PNG onto Pillow's modes, which depend on the colour type and bit depth
// in IHDR (PngImagePlugin._MODES):
//
//	type 0 (grey): depth 1 "1", depths 2/4/8 "L", depth 16 "I" (32-bit integers, so convert("RGB")
//	  clips every value above 255 to 255); a tRNS grey value makes pixels transparent when
//	  converted to RGBA;
//	type 2 (RGB): "RGB", a tRNS colour is ignored by convert_to_rgb (mode is already RGB);
//	type 3: "P" with per-entry alpha from tRNS; type 4: "LA"; type 6: "RGBA".
//
// 16-bit samples of the other types keep their high byte.
func pngToPIL(img image.Image, data []byte) (*pilImage, error) {
	var colorType, depth byte
	var trns, plte []byte
	for _, c := range pngChunks(data) {
		switch c.typ {
		case "IHDR":
			if len(c.data) >= 10 {
				depth, colorType = c.data[8], c.data[9]
			}
		case "tRNS":
			trns = c.data
		case "PLTE":
			plte = c.data
		}
	}
	switch colorType {
	case 0:
		return pngGrayToPIL(img, depth, trns), nil
	case 2:
		p := genericToPIL(img, "RGB")
		p.alpha = nil // Pillow keeps mode RGB; transparency is metadata only
		p.rgbMode = true
		return p, nil
	case 3:
		if m, ok := img.(*image.Paletted); ok {
			// Go's decoder pads the palette with opaque black up to the largest index used;
			// Pillow's entries past PLTE stay at its grey-ramp default.
			pal := paletteRGBA(m.Palette)
			if len(plte)/3 < len(pal) {
				pal = pal[:len(plte)/3]
			}
			return palettedToPIL(m, pal, "P"), nil
		}
		return genericToPIL(img, "P"), nil
	case 4:
		return genericToPIL(img, "LA"), nil
	}
	return genericToPIL(img, "RGBA"), nil
}

// pngGrayToPIL handles colour type 0. Pillow compares a tRNS value with the 8-bit grey value
// it converted to (the raw tRNS sample, masked to its low byte by rgbT2rgba in Convert.c); for
// depth 16 the grey value is the clipped one.
func pngGrayToPIL(img image.Image, depth byte, trns []byte) *pilImage {
	b := img.Bounds()
	mode := "L"
	switch depth {
	case 1:
		mode = "1"
	case 16:
		mode = "I"
	}
	p := newPILImage(b.Dx(), b.Dy(), mode)
	grey := make([]uint8, p.w*p.h)
	switch m := img.(type) {
	case *image.Gray16:
		for y := range p.h {
			for x := range p.w {
				o := y*m.Stride + x*2
				v := uint16(m.Pix[o])<<8 | uint16(m.Pix[o+1])
				grey[y*p.w+x] = uint8(min(v, 255))
			}
		}
	case *image.NRGBA64: // depth 16 with tRNS: Go adds alpha, the grey sample is in R
		for y := range p.h {
			for x := range p.w {
				o := y*m.Stride + x*8
				v := uint16(m.Pix[o])<<8 | uint16(m.Pix[o+1])
				grey[y*p.w+x] = uint8(min(v, 255))
			}
		}
	default:
		q := genericToPIL(img, mode)
		for i := range grey {
			grey[i] = q.rgb[i*3]
		}
	}
	for i, v := range grey {
		p.rgb[i*3], p.rgb[i*3+1], p.rgb[i*3+2] = v, v, v
	}
	if len(trns) >= 2 {
		t := trns[1] // low byte of the big-endian sample
		for i, v := range grey {
			if v == t {
				p.ensureAlpha()
				p.alpha[i] = 0
			}
		}
	}
	return p
}
