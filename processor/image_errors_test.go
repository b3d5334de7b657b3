package processor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// pngHeaderOnly returns a PNG signature and a valid IHDR chunk declaring w×h RGB pixels, with no
// image data: enough for DecodeConfig.
func pngHeaderOnly(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2
	binary.Write(&b, binary.BigEndian, uint32(len(ihdr)))
	b.WriteString("IHDR")
	b.Write(ihdr)
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(append([]byte("IHDR"), ihdr...)))
	return b.Bytes()
}

func smallPNG(t testing.TB, w, h int) []byte {
	t.Helper()
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := range m.Pix {
		m.Pix[i] = uint8(i * 7)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestDecodeImageBadInput(t *testing.T) {
	good := smallPNG(t, 7, 5)
	jpeg, err := os.ReadFile(filepath.Join(testdataDir, "processor/images/photo420.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	hugeGIF := []byte("GIF89a\xff\xff\xff\xff\x00\x00\x00")
	tests := []struct {
		name    string
		data    []byte
		opts    DecodeOptions
		wantErr error  // errors.Is target, nil to skip
		substr  string // part of the message
	}{
		{"empty", nil, DecodeOptions{Name: "e.png"}, ErrImageEmpty, `processor: image "e.png"`},
		{"unknown format", []byte("hello, this is not an image at all"), DecodeOptions{Name: "x.txt"}, ErrImageFormat, `image "x.txt": unknown image format`},
		{"default name", []byte("zz"), DecodeOptions{}, ErrImageFormat, `image "<bytes>"`},
		{"truncated png", good[:len(good)/2], DecodeOptions{Name: "t.png"}, nil, `image "t.png": decode png`},
		{"png header only", pngHeaderOnly(4, 4), DecodeOptions{Name: "h.png"}, nil, "decode png"},
		{"png bomb", pngHeaderOnly(100000, 100000), DecodeOptions{Name: "bomb.png"}, ErrImageTooLarge, "100000x100000"},
		{"png zero width", pngHeaderOnly(0, 4), DecodeOptions{}, nil, "png"},
		{"gif bomb", hugeGIF, DecodeOptions{Name: "bomb.gif"}, ErrImageTooLarge, "65535x65535"},
		{"custom limit", good, DecodeOptions{MaxPixels: 34}, ErrImageTooLarge, "limit 34"},
		{"truncated jpeg", jpeg[:len(jpeg)*2/3], DecodeOptions{Name: "t.jpg"}, nil, "decode jpeg"},
		{"jpeg header only", jpeg[:200], DecodeOptions{Name: "h.jpg"}, nil, "jpeg"},
		{"bad pipeline", good, DecodeOptions{Pipeline: 7}, nil, "unknown pipeline 7"},
		{"riff not webp", []byte("RIFF\x10\x00\x00\x00WAVEfmt \x00\x00\x00\x00"), DecodeOptions{}, ErrImageFormat, "unknown image format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			im, err := DecodeImage(tt.data, tt.opts)
			if err == nil {
				t.Fatalf("got a %dx%d image, want an error", im.W, im.H)
			}
			var ie *ImageError
			if !errors.As(err, &ie) {
				t.Errorf("error %T is not an *ImageError: %v", err, err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %q does not wrap %q", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.substr) || !strings.HasPrefix(err.Error(), "processor: ") {
				t.Errorf("error %q: want the prefix %q and %q", err, "processor: ", tt.substr)
			}
		})
	}
}

func TestDecodeImageLimits(t *testing.T) {
	data := smallPNG(t, 7, 5)
	for _, tt := range []struct {
		name  string
		limit int
		ok    bool
	}{{"default", 0, true}, {"exact", 35, true}, {"one less", 34, false}, {"unlimited", -1, true}} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeImage(data, DecodeOptions{MaxPixels: tt.limit})
			if (err == nil) != tt.ok {
				t.Errorf("MaxPixels %d: err %v, want ok=%v", tt.limit, err, tt.ok)
			}
		})
	}
}

func TestLoadImageFileErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.png")
	_, err := LoadImageFile(missing, DecodeOptions{})
	if err == nil || !strings.Contains(err.Error(), missing) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	bomb := filepath.Join(dir, "bomb.png")
	if err := os.WriteFile(bomb, pngHeaderOnly(1<<20, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadImageFile(bomb, DecodeOptions{})
	if !errors.Is(err, ErrImageTooLarge) || !strings.Contains(err.Error(), bomb) {
		t.Errorf("bomb: %v", err)
	}
}

// TestDecodePipelinesDiffer pins the difference between the two Hugging Face paths on an RGBA
// pixel: load_image drops alpha, convert_to_rgb composites over white.
func TestDecodePipelinesDiffer(t *testing.T) {
	m := image.NewNRGBA(image.Rect(0, 0, 2, 1))
	m.SetNRGBA(0, 0, color.NRGBA{200, 100, 0, 0})
	m.SetNRGBA(1, 0, color.NRGBA{200, 100, 0, 128})
	var b bytes.Buffer
	if err := png.Encode(&b, m); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		pipeline ImagePipeline
		want     []uint8
	}{
		{ProcessorPipeline, []uint8{200, 100, 0, 200, 100, 0}},
		// Pillow: alpha 0 keeps the white background; alpha 128 mixes 200 with 255 → 227.
		{ImageProcessorPipeline, []uint8{255, 255, 255, 227, 177, 127}},
	}
	for _, tt := range tests {
		t.Run(tt.pipeline.String(), func(t *testing.T) {
			im, err := DecodeImage(b.Bytes(), DecodeOptions{Pipeline: tt.pipeline})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(im.Pix, tt.want) {
				t.Errorf("got %v, want %v", im.Pix, tt.want)
			}
		})
	}
}

func TestNewRGBImage(t *testing.T) {
	tests := []struct {
		name string
		w, h int
		n    int
		ok   bool
	}{
		{"ok", 2, 3, 18, true},
		{"short", 2, 3, 17, false},
		{"zero", 0, 3, 0, false},
		{"negative", -2, -3, 18, false},
		{"overflowing", 1 << 40, 1 << 40, 3, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewRGBImage(tt.w, tt.h, make([]uint8, tt.n))
			if (err == nil) != tt.ok {
				t.Errorf("NewRGBImage(%d, %d, %d bytes): err %v, want ok=%v", tt.w, tt.h, tt.n, err, tt.ok)
			}
		})
	}
}

func TestPreprocessBadInput(t *testing.T) {
	ok := &RGBImage{W: 4, H: 4, Pix: make([]uint8, 48)}
	split := DefaultImageConfig()
	split.DoImageSplitting = true
	badResample := DefaultImageConfig()
	badResample.Resample = 0
	tests := []struct {
		name   string
		cfg    ImageConfig
		images []*RGBImage
		substr string
	}{
		{"no images", DefaultImageConfig(), nil, "no images"},
		{"nil image", DefaultImageConfig(), []*RGBImage{ok, nil}, "image 1: invalid"},
		{"short pixels", DefaultImageConfig(), []*RGBImage{{W: 4, H: 4, Pix: make([]uint8, 47)}}, "image 0: invalid"},
		{"too small to split", split, []*RGBImage{{W: 1, H: 5, Pix: make([]uint8, 15)}}, "too small to split"},
		{"nearest", badResample, []*RGBImage{ok}, "resample 0 (nearest)"},
		{"zero config", ImageConfig{DoResize: true, Resample: ResampleBilinear}, []*RGBImage{ok}, "size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.cfg.Preprocess(tt.images)
			if err == nil || !strings.Contains(err.Error(), tt.substr) || !strings.HasPrefix(err.Error(), "processor: ") {
				t.Errorf("err %v, want one containing %q", err, tt.substr)
			}
		})
	}
}

func TestPreprocessLayout(t *testing.T) {
	// Two images of different sizes, no resizing: checks channel-first layout, padding, mask,
	// sizes and SubImage.
	a := &RGBImage{W: 2, H: 1, Pix: []uint8{0, 255, 51, 102, 153, 204}}
	b := &RGBImage{W: 1, H: 2, Pix: []uint8{255, 0, 0, 0, 0, 255}}
	cfg := DefaultImageConfig()
	cfg.DoResize = false
	batch, err := cfg.Preprocess([]*RGBImage{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if batch.N != 2 || batch.H != 2 || batch.W != 2 {
		t.Fatalf("N, H, W = %d, %d, %d; want 2, 2, 2", batch.N, batch.H, batch.W)
	}
	v := func(u uint8) float32 { return (float32(float64(u)*(1.0/255)) - 0.5) / 0.5 }
	want := []float32{
		// image 0, channels R, G, B, each 2×2 with the second row padded
		v(0), v(102), 0, 0,
		v(255), v(153), 0, 0,
		v(51), v(204), 0, 0,
		// image 1
		v(255), 0, v(0), 0,
		v(0), 0, v(0), 0,
		v(0), 0, v(255), 0,
	}
	for i := range want {
		if batch.PixelValues[i] != want[i] {
			t.Fatalf("PixelValues[%d] = %v, want %v (all: %v)", i, batch.PixelValues[i], want[i], batch.PixelValues)
		}
	}
	wantMask := []bool{true, true, false, false, true, false, true, false}
	for i := range wantMask {
		if batch.Mask[i] != wantMask[i] {
			t.Fatalf("Mask = %v, want %v", batch.Mask, wantMask)
		}
	}
	if batch.Sizes[0] != [2]int{1, 2} || batch.Sizes[1] != [2]int{2, 1} {
		t.Errorf("Sizes = %v", batch.Sizes)
	}
	sub, err := batch.SubImage(1)
	if err != nil {
		t.Fatal(err)
	}
	if len(sub) != 6 || sub[0] != v(255) || sub[1] != v(0) || sub[5] != v(255) {
		t.Errorf("SubImage(1) = %v", sub)
	}
	if _, err := batch.SubImage(2); err == nil {
		t.Error("SubImage(2) of 2: want an error")
	}
	cfg.DoPad = false
	batch, err = cfg.Preprocess([]*RGBImage{a})
	if err != nil {
		t.Fatal(err)
	}
	if batch.Mask != nil {
		t.Error("DoPad false: want no mask")
	}
	cfg.DoImageSplitting = true
	batch, err = cfg.Preprocess([]*RGBImage{{W: 3, H: 3, Pix: make([]uint8, 27)}, a})
	if err == nil {
		t.Fatal("splitting a 2x1 image: want an error")
	}
	batch, err = cfg.Preprocess([]*RGBImage{{W: 3, H: 3, Pix: make([]uint8, 27)}})
	if err != nil {
		t.Fatal(err)
	}
	wantSizes := [][2]int{{1, 1}, {1, 2}, {2, 1}, {2, 2}, {3, 3}}
	if batch.N != 5 || len(batch.PerImage) != 1 || batch.PerImage[0] != 5 {
		t.Fatalf("split: N %d, PerImage %v", batch.N, batch.PerImage)
	}
	for i, s := range wantSizes {
		if batch.Sizes[i] != s {
			t.Errorf("split sizes %v, want %v", batch.Sizes, wantSizes)
			break
		}
	}
}
