package processor

import (
	"bytes"
	"image"
	"image/jpeg"
	"testing"
)

// synthetic1080p is a 1920×1080 RGB image with smooth structure and noise.
func synthetic1080p() *RGBImage {
	const w, h = 1920, 1080
	m := &RGBImage{W: w, H: h, Pix: make([]uint8, w*h*3)}
	seed := uint32(1)
	for y := range h {
		for x := range w {
			seed = seed*1664525 + 1013904223
			i := (y*w + x) * 3
			m.Pix[i] = uint8(x*255/w) ^ uint8(seed>>28)
			m.Pix[i+1] = uint8(y*255/h) ^ uint8(seed>>24)
			m.Pix[i+2] = uint8((x+y)/8) ^ uint8(seed>>20)
		}
	}
	return m
}

// BenchmarkPreprocess1080p measures Idefics2 preprocessing of one 1920×1080 image with the
// idefics2-8b settings (378/980), with and without image splitting.
func BenchmarkPreprocess1080p(b *testing.B) {
	im := synthetic1080p()
	for _, split := range []bool{false, true} {
		name := "nosplit"
		if split {
			name = "split"
		}
		b.Run(name, func(b *testing.B) {
			cfg := DefaultImageConfig()
			cfg.DoImageSplitting = split
			b.ReportAllocs()
			for b.Loop() {
				if _, err := cfg.Preprocess([]*RGBImage{im}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeJPEG1080p measures decoding a 1920×1080 JPEG (4:2:0, quality 90) with the
// libjpeg-compatible upsampling and colour conversion.
func BenchmarkDecodeJPEG1080p(b *testing.B) {
	src := synthetic1080p()
	m := image.NewRGBA(image.Rect(0, 0, src.W, src.H))
	for i := range src.W * src.H {
		copy(m.Pix[i*4:i*4+3], src.Pix[i*3:i*3+3])
		m.Pix[i*4+3] = 255
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, m, &jpeg.Options{Quality: 90}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeImage(buf.Bytes(), DecodeOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
