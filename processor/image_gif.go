package processor

import (
	"encoding/binary"
	"errors"
	"image"
)

// gifFirstFrame is what Pillow uses of a GIF: the logical screen size, and for the first image
// its placement, its colour table (local, else global) with the original colours, and the
// transparent index of the graphic control extension in front of it.
type gifFirstFrame struct {
	screenW, screenH int
	background       int
	left, top        int
	palette          [][4]uint8
	transparent      int // -1 if none
}

// parseGIF reads the structure of a GIF up to the first image descriptor. Go's decoder replaces
// the transparent palette entry with transparent black, losing the colour that Pillow's
// convert("RGB") shows, so the tables are read here from the bytes.
func parseGIF(data []byte) (*gifFirstFrame, error) {
	if len(data) < 13 || (string(data[:6]) != "GIF87a" && string(data[:6]) != "GIF89a") {
		return nil, errors.New("not a GIF")
	}
	g := &gifFirstFrame{
		screenW:     int(binary.LittleEndian.Uint16(data[6:])),
		screenH:     int(binary.LittleEndian.Uint16(data[8:])),
		background:  int(data[11]),
		transparent: -1,
	}
	readTable := func(off int, flags byte) ([][4]uint8, int, error) {
		n := 1 << ((flags & 7) + 1)
		if off+3*n > len(data) {
			return nil, 0, errors.New("truncated colour table")
		}
		t := make([][4]uint8, n)
		for i := range t {
			t[i] = [4]uint8{data[off+3*i], data[off+3*i+1], data[off+3*i+2], 255}
		}
		return t, off + 3*n, nil
	}
	off := 13
	var global [][4]uint8
	if data[10]&0x80 != 0 {
		var err error
		if global, off, err = readTable(off, data[10]); err != nil {
			return nil, err
		}
	}
	for off < len(data) {
		switch data[off] {
		case 0x21: // extension
			if off+2 > len(data) {
				return nil, errors.New("truncated extension")
			}
			label := data[off+1]
			off += 2
			first := true
			for {
				if off >= len(data) {
					return nil, errors.New("truncated extension")
				}
				n := int(data[off])
				if off+1+n > len(data) {
					return nil, errors.New("truncated extension")
				}
				// Graphic control extension: flags, delay (2), transparent index.
				if label == 0xF9 && first && n >= 4 {
					if data[off+1]&1 != 0 {
						g.transparent = int(data[off+4])
					} else {
						g.transparent = -1
					}
				}
				first = false
				off += 1 + n
				if n == 0 {
					break
				}
			}
		case 0x2C: // image descriptor
			if off+10 > len(data) {
				return nil, errors.New("truncated image descriptor")
			}
			g.left = int(binary.LittleEndian.Uint16(data[off+1:]))
			g.top = int(binary.LittleEndian.Uint16(data[off+3:]))
			flags := data[off+9]
			g.palette = global
			if flags&0x80 != 0 {
				local, _, err := readTable(off+10, flags)
				if err != nil {
					return nil, err
				}
				g.palette = local
			}
			if g.palette == nil {
				return nil, errors.New("no colour table")
			}
			return g, nil
		default:
			return nil, errors.New("no image")
		}
	}
	return nil, errors.New("no image")
}

// gifToPIL rebuilds Pillow 9.4's first GIF frame: mode "P" on the logical screen, the area outside
// the first image filled with the transparent index when there is one, else index 0 (Pillow's
// new image is zero-filled), the palette from the file, and the transparent index made
// transparent when converted to RGBA.
func gifToPIL(img image.Image, data []byte, cfg image.Config) (*pilImage, error) {
	m, ok := img.(*image.Paletted)
	if !ok {
		return genericToPIL(img, "P"), nil
	}
	g, err := parseGIF(data)
	if err != nil {
		return nil, err
	}
	w, h := cfg.Width, cfg.Height
	fill := uint8(0)
	if g.transparent >= 0 {
		fill = uint8(g.transparent)
	}
	canvas := image.NewPaletted(image.Rect(0, 0, w, h), nil)
	for i := range canvas.Pix {
		canvas.Pix[i] = fill
	}
	b := m.Bounds().Intersect(canvas.Rect)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		copy(canvas.Pix[y*canvas.Stride+b.Min.X:y*canvas.Stride+b.Max.X], m.Pix[m.PixOffset(b.Min.X, y):m.PixOffset(b.Max.X, y)])
	}
	pal := g.palette
	if g.transparent >= 0 && g.transparent < len(pal) {
		pal = append([][4]uint8(nil), pal...)
		pal[g.transparent][3] = 0
	}
	return palettedToPIL(canvas, pal, "P"), nil
}
