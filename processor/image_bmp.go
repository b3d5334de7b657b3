package processor

import (
	"encoding/binary"
	"image"
)

// bmpToPIL maps a decoded BMP onto Pillow's modes (BmpImagePlugin): palette images are "P",
// 24-bit and uncompressed 32-bit images are "RGB" (the fourth byte is padding, "BGRX", even in
// V4/V5 headers where Go's decoder reads it as alpha), and 32-bit BI_BITFIELDS images with an
// alpha mask are "RGBA".
func bmpToPIL(img image.Image, data []byte) (*pilImage, error) {
	if _, ok := img.(*image.Paletted); ok {
		return genericToPIL(img, "P"), nil
	}
	const bitfields = 3
	if len(data) >= 70 && binary.LittleEndian.Uint16(data[28:30]) == 32 &&
		binary.LittleEndian.Uint32(data[30:34]) == bitfields &&
		binary.LittleEndian.Uint32(data[14:18]) > 40 && binary.LittleEndian.Uint32(data[66:70]) != 0 {
		return genericToPIL(img, "RGBA"), nil
	}
	p := genericToPIL(img, "RGB")
	p.alpha = nil
	p.rgbMode = true
	return p, nil
}
