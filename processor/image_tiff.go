package processor

import (
	"image"

	_ "golang.org/x/image/tiff" // registers TIFF with image.Decode
)

// tiffToPIL maps a decoded TIFF (golang.org/x/image/tiff: baseline strips and tiles, uncompressed, LZW, Deflate or
// PackBits; first image of the file) onto Pillow's modes (TiffImagePlugin): palette images are "P", grey ones "L"
// (16-bit grey keeps its high byte), RGB without extra samples "RGB", and images with an alpha sample "RGBA". Go
// returns *image.RGBA for associated (premultiplied) alpha and *image.NRGBA for unassociated alpha; both come out as
// straight colours with their alpha, which Pillow also gives for the unassociated case.
func tiffToPIL(img image.Image) *pilImage {
	switch m := img.(type) {
	case *image.Paletted:
		return genericToPIL(img, "P")
	case *image.Gray:
		return genericToPIL(img, "L")
	case *image.Gray16:
		p := newPILImage(m.Bounds().Dx(), m.Bounds().Dy(), "L")
		for y := range p.h {
			for x := range p.w {
				v := m.Pix[y*m.Stride+x*2]
				i := (y*p.w + x) * 3
				p.rgb[i], p.rgb[i+1], p.rgb[i+2] = v, v, v
			}
		}
		return p
	}
	p := genericToPIL(img, "RGBA")
	if p.alpha == nil {
		p.mode, p.rgbMode = "RGB", true
	}
	return p
}
