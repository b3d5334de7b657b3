package processor

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// fuzzMaxPixels keeps fuzzed images small so that each input decodes in milliseconds.
const fuzzMaxPixels = 1 << 16

// TestBrokenImages runs the deliberately broken seed files: each must give an *ImageError, except
// bad_exif.jpg, a valid JPEG whose EXIF block is garbage (ignored, as Pillow ignores it).
func TestBrokenImages(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(testdataDir, "processor/broken/*"))
	if err != nil || len(files) < 8 {
		t.Fatalf("broken seeds: %d files, err %v", len(files), err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			for _, p := range []ImagePipeline{ProcessorPipeline, ImageProcessorPipeline} {
				im, err := LoadImageFile(f, DecodeOptions{Pipeline: p})
				if filepath.Base(f) == "bad_exif.jpg" {
					if err != nil {
						t.Fatalf("%v: %v", p, err)
					}
					if im.W != 47 || im.H != 31 {
						t.Fatalf("%v: size %dx%d, want 47x31", p, im.W, im.H)
					}
					continue
				}
				var ie *ImageError
				if !errors.As(err, &ie) {
					t.Fatalf("%v: got %v, want an *ImageError", p, err)
				}
				t.Logf("%v: %v", p, err)
			}
		})
	}
}

// FuzzDecodeImage decodes arbitrary bytes through both pipelines and preprocesses what decodes,
// with splitting on: the property is "an error or a consistent batch, never a panic".
func FuzzDecodeImage(f *testing.F) {
	for _, pattern := range []string{"processor/images/*", "processor/broken/*"} {
		files, _ := filepath.Glob(filepath.Join(testdataDir, pattern))
		for _, p := range files {
			data, err := os.ReadFile(p)
			if err == nil && len(data) <= 8<<10 {
				f.Add(data, false)
			}
		}
	}
	f.Add([]byte{}, true)
	f.Add([]byte("GIF89a"), true)
	cfg := DefaultImageConfig()
	cfg.ShortestEdge, cfg.LongestEdge, cfg.DoImageSplitting = 8, 24, true
	f.Fuzz(func(t *testing.T, data []byte, direct bool) {
		opts := DecodeOptions{MaxPixels: fuzzMaxPixels}
		if direct {
			opts.Pipeline = ImageProcessorPipeline
		}
		im, err := DecodeImage(data, opts)
		if err != nil {
			var ie *ImageError
			if !errors.As(err, &ie) {
				t.Fatalf("error %T is not an *ImageError: %v", err, err)
			}
			return
		}
		if im.W <= 0 || im.H <= 0 || len(im.Pix) != 3*im.W*im.H || im.W*im.H > fuzzMaxPixels {
			t.Fatalf("invalid image %dx%d with %d bytes", im.W, im.H, len(im.Pix))
		}
		b, err := cfg.Preprocess([]*RGBImage{im})
		if err != nil {
			if im.W >= 2 && im.H >= 2 {
				t.Fatalf("preprocess %dx%d: %v", im.W, im.H, err)
			}
			return
		}
		if b.N != 5 || len(b.PixelValues) != b.N*3*b.H*b.W || len(b.Mask) != b.N*b.H*b.W {
			t.Fatalf("inconsistent batch: N %d, H %d, W %d, %d values, %d mask", b.N, b.H, b.W, len(b.PixelValues), len(b.Mask))
		}
		for _, v := range b.PixelValues {
			if v < -1 || v > 1 {
				t.Fatalf("pixel value %v outside [-1, 1]", v)
			}
		}
	})
}
