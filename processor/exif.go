package processor

import (
	"bytes"
	"encoding/binary"
)

// EXIF orientation, as PIL.ImageOps.exif_transpose reads it (Pillow 9.4): tag 0x0112 of IFD0 of
// the file's EXIF block — JPEG: the first APP1 segment starting "Exif\0"; PNG: the eXIf chunk
// (anywhere in the file, Pillow loads the whole image before reading it); WebP: the RIFF "EXIF"
// chunk. Values 2–8 select a transpose; anything else (absent, 1, out of range, malformed EXIF)
// leaves the image as is. XMP orientation and PNG "Raw profile type exif" text chunks are not
// read (rare; Pillow 9.4 reads them only in some cases).

// exifOrientation returns the EXIF orientation (1–8) of an encoded image, or 0 if there is none.
func exifOrientation(format string, data []byte) int {
	var tiff []byte
	switch format {
	case "jpeg":
		tiff = jpegEXIF(data)
	case "png":
		for _, c := range pngChunks(data) {
			if c.typ == "eXIf" {
				tiff = c.data
				break
			}
		}
	case "webp":
		tiff = webpChunk(data, "EXIF")
	}
	if tiff == nil {
		return 0
	}
	// Pillow's Exif.load strips an "Exif\0\0" prefix where present (WebP and PNG writers differ).
	tiff = bytes.TrimPrefix(tiff, []byte("Exif\x00\x00"))
	return tiffOrientation(tiff)
}

// jpegEXIF returns the payload after "Exif\0\0" of the first APP1 EXIF segment, scanning marker
// segments up to the start of scan.
func jpegEXIF(data []byte) []byte {
	if len(data) < 4 || data[0] != 0xFF || data[1] != 0xD8 {
		return nil
	}
	for off := 2; off+4 <= len(data); {
		if data[off] != 0xFF {
			return nil
		}
		marker := data[off+1]
		if marker == 0xFF { // fill byte
			off++
			continue
		}
		if marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7) || marker == 0x01 {
			off += 2
			continue
		}
		if marker == 0xDA || marker == 0xD9 { // start of scan, end of image
			return nil
		}
		n := int(binary.BigEndian.Uint16(data[off+2:]))
		if n < 2 || off+2+n > len(data) {
			return nil
		}
		seg := data[off+4 : off+2+n]
		// Pillow's JpegImagePlugin keeps the first APP1 whose payload starts with "Exif\0".
		if marker == 0xE1 && bytes.HasPrefix(seg, []byte("Exif\x00")) {
			return seg
		}
		off += 2 + n
	}
	return nil
}

// webpChunk returns the payload of the first RIFF chunk named id in a WebP file.
func webpChunk(data []byte, id string) []byte {
	if len(data) < 12 || string(data[:4]) != "RIFF" || string(data[8:12]) != "WEBP" {
		return nil
	}
	for off := 12; off+8 <= len(data); {
		n := int(binary.LittleEndian.Uint32(data[off+4:]))
		if n < 0 || n > len(data)-off-8 {
			return nil
		}
		if string(data[off:off+4]) == id {
			return data[off+8 : off+8+n]
		}
		off += 8 + n + n&1 // chunks are padded to even sizes
	}
	return nil
}

// tiffOrientation reads tag 0x0112 from IFD0 of a TIFF-structured EXIF block. It accepts the
// value as SHORT (the standard type), LONG or BYTE, as Pillow's TIFF reader does.
func tiffOrientation(t []byte) int {
	if len(t) < 8 {
		return 0
	}
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 0
	}
	if bo.Uint16(t[2:]) != 42 {
		return 0
	}
	ifd := int64(bo.Uint32(t[4:]))
	if ifd < 8 || ifd+2 > int64(len(t)) {
		return 0
	}
	n := int(bo.Uint16(t[ifd:]))
	for i := range n {
		e := ifd + 2 + int64(i)*12
		if e+12 > int64(len(t)) {
			return 0
		}
		if bo.Uint16(t[e:]) != 0x0112 {
			continue
		}
		typ, count := bo.Uint16(t[e+2:]), bo.Uint32(t[e+4:])
		if count < 1 {
			return 0
		}
		var v int
		switch typ {
		case 3: // SHORT
			v = int(bo.Uint16(t[e+8:]))
		case 4: // LONG
			v = int(bo.Uint32(t[e+8:]))
		case 1: // BYTE
			v = int(t[e+8])
		default:
			return 0
		}
		if v < 1 || v > 8 {
			return 0
		}
		return v
	}
	return 0
}
