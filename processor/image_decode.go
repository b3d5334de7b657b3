package processor

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // registers GIF with image.Decode
	_ "image/jpeg"
	_ "image/png"
	"os"

	_ "golang.org/x/image/bmp" // registers BMP
	_ "golang.org/x/image/webp"
)

// DefaultMaxImagePixels is the pixel-count limit DecodeImage applies when DecodeOptions.MaxPixels
// is 0: 64 Mi pixels (8192×8192). It is checked from the file header before any pixel is decoded,
// so a decompression bomb costs only the header read. Pillow warns at 89,478,485 pixels and
// refuses twice that; this limit is lower because decoding holds several copies of the image.
const DefaultMaxImagePixels = 64 << 20

// ImagePipeline selects which Hugging Face code path decoding reproduces; it decides EXIF
// orientation and alpha handling.
type ImagePipeline int

const (
	// ProcessorPipeline reproduces Idefics2Processor, which passes each image through
	// transformers.image_utils.load_image: EXIF orientation applied (PIL.ImageOps.exif_transpose),
	// then PIL convert("RGB"), which drops alpha without compositing. It is the zero value and
	// what the runner uses.
	ProcessorPipeline ImagePipeline = iota
	// ImageProcessorPipeline reproduces Idefics2ImageProcessor called directly on the PIL image as
	// opened: no EXIF orientation; an image whose PIL mode is not RGB is converted to RGBA and
	// alpha-composited over opaque white (transformers' convert_to_rgb).
	ImageProcessorPipeline
)

// String names the pipeline.
func (p ImagePipeline) String() string {
	switch p {
	case ProcessorPipeline:
		return "processor"
	case ImageProcessorPipeline:
		return "image-processor"
	}
	return fmt.Sprintf("ImagePipeline(%d)", int(p))
}

// DecodeOptions controls DecodeImage and LoadImageFile.
type DecodeOptions struct {
	// Pipeline selects the Hugging Face path to reproduce (default ProcessorPipeline).
	Pipeline ImagePipeline
	// MaxPixels limits width×height, checked before decoding: 0 means DefaultMaxImagePixels,
	// a negative value means no limit.
	MaxPixels int
	// Name identifies the image in error messages (LoadImageFile uses the path); empty means
	// "<bytes>".
	Name string
}

// Errors DecodeImage and LoadImageFile wrap (inside an *ImageError) so that callers can tell
// kinds of bad input apart with errors.Is.
var (
	// ErrImageFormat: the bytes are not a JPEG, PNG, GIF, WebP, BMP or TIFF file.
	ErrImageFormat = errors.New("unknown image format (want JPEG, PNG, GIF, WebP, BMP or TIFF)")
	// ErrImageTooLarge: the header declares more pixels than DecodeOptions.MaxPixels allows.
	ErrImageTooLarge = errors.New("image too large")
	// ErrImageEmpty: no data, or a header that declares zero width or height.
	ErrImageEmpty = errors.New("image is empty")
)

// ImageError is the error DecodeImage and LoadImageFile return: the image's name and the cause,
// printed as `processor: image "name": cause`.
type ImageError struct {
	Name string
	Err  error
}

// Error implements error.
func (e *ImageError) Error() string { return fmt.Sprintf("processor: image %q: %v", e.Name, e.Err) }

// Unwrap returns the cause.
func (e *ImageError) Unwrap() error { return e.Err }

// RGBImage is an 8-bit RGB image, packed row-major: pixel (x, y) is Pix[3*(y*W+x) : 3*(y*W+x)+3].
// It corresponds to the uint8 (H, W, 3) array transformers works on after convert("RGB").
type RGBImage struct {
	W, H int
	Pix  []uint8
}

// NewRGBImage wraps packed RGB bytes, checking that len(pix) is 3×w×h.
func NewRGBImage(w, h int, pix []uint8) (*RGBImage, error) {
	if w <= 0 || h <= 0 {
		return nil, fmt.Errorf("processor: image size %dx%d: want positive width and height", w, h)
	}
	if w > len(pix) || h > len(pix) || len(pix) != 3*w*h {
		return nil, fmt.Errorf("processor: image size %dx%d: got %d bytes, want %d", w, h, len(pix), 3*w*h)
	}
	return &RGBImage{W: w, H: h, Pix: pix}, nil
}

func (m *RGBImage) clone() *RGBImage {
	return &RGBImage{W: m.W, H: m.H, Pix: bytes.Clone(m.Pix)}
}

// crop returns the pixels of [x0, x1)×[y0, y1) as a new image.
func (m *RGBImage) crop(x0, y0, x1, y1 int) *RGBImage {
	w, h := x1-x0, y1-y0
	out := &RGBImage{W: w, H: h, Pix: make([]uint8, w*h*3)}
	for y := range h {
		copy(out.Pix[y*w*3:(y+1)*w*3], m.Pix[((y0+y)*m.W+x0)*3:((y0+y)*m.W+x1)*3])
	}
	return out
}

// LoadImageFile reads and decodes the image file at path; see DecodeImage. Errors name the path.
func LoadImageFile(path string, opts DecodeOptions) (*RGBImage, error) {
	if opts.Name == "" {
		opts.Name = path
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, &ImageError{Name: opts.Name, Err: err}
	}
	defer f.Close()
	// Check the header before reading a possibly huge file whole.
	if err := checkHeader(f, opts); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &ImageError{Name: opts.Name, Err: err}
	}
	return DecodeImage(data, opts)
}

// checkHeader runs the format and size checks of DecodeImage on the start of a file.
func checkHeader(f *os.File, opts DecodeOptions) error {
	_, _, err := decodeHeader(f, opts)
	return err
}

// DecodeImage decodes a JPEG, PNG, GIF (first frame), WebP, BMP or TIFF (first image) image into 8-bit RGB the way
// the Hugging Face pipeline chosen in opts sees it with Pillow 9.4: grayscale replicated, 16-bit
// grayscale clipped to 255 (Pillow's mode "I"), 16-bit colour reduced to its high byte, palettes
// looked up, CMYK converted with Pillow's formula, and alpha dropped (ProcessorPipeline) or
// composited over white (ImageProcessorPipeline). The size limit is checked from the header
// before decoding. Errors are *ImageError values wrapping ErrImageFormat, ErrImageTooLarge,
// ErrImageEmpty or the decoder's error.
func DecodeImage(data []byte, opts DecodeOptions) (*RGBImage, error) {
	if opts.Name == "" {
		opts.Name = "<bytes>"
	}
	fail := func(err error) (*RGBImage, error) { return nil, &ImageError{Name: opts.Name, Err: err} }
	if opts.Pipeline != ProcessorPipeline && opts.Pipeline != ImageProcessorPipeline {
		return fail(fmt.Errorf("unknown pipeline %d", int(opts.Pipeline)))
	}
	if len(data) == 0 {
		return fail(fmt.Errorf("no data: %w", ErrImageEmpty))
	}
	cfg, format, err := decodeHeader(bytes.NewReader(data), opts)
	if err != nil {
		return nil, err
	}
	img, err := safeDecode(data)
	if err != nil {
		return fail(fmt.Errorf("decode %s: %w", format, err))
	}
	b := img.Bounds()
	if b.Dx() <= 0 || b.Dy() <= 0 {
		return fail(fmt.Errorf("decoded %s has size %dx%d: %w", format, b.Dx(), b.Dy(), ErrImageEmpty))
	}
	pm, err := toPIL(img, format, data, cfg)
	if err != nil {
		return fail(fmt.Errorf("%s: %w", format, err))
	}
	switch opts.Pipeline {
	case ProcessorPipeline:
		if o := exifOrientation(format, data); o > 1 {
			pm = pm.transpose(o)
		}
		return &RGBImage{W: pm.w, H: pm.h, Pix: pm.rgb}, nil
	default:
		if pm.rgbMode {
			return &RGBImage{W: pm.w, H: pm.h, Pix: pm.rgb}, nil
		}
		return pm.compositeOverWhite(), nil
	}
}

// decodeHeader identifies the format and checks the declared size against the limit.
func decodeHeader(r interface {
	Read([]byte) (int, error)
}, opts DecodeOptions) (image.Config, string, error) {
	fail := func(err error) (image.Config, string, error) {
		return image.Config{}, "", &ImageError{Name: opts.Name, Err: err}
	}
	cfg, format, err := safeDecodeConfig(r)
	if err != nil {
		if errors.Is(err, image.ErrFormat) {
			return fail(ErrImageFormat)
		}
		return fail(fmt.Errorf("read %s header: %w", formatOrImage(format), err))
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return fail(fmt.Errorf("%s header declares %dx%d pixels: %w", format, cfg.Width, cfg.Height, ErrImageEmpty))
	}
	limit := opts.MaxPixels
	if limit == 0 {
		limit = DefaultMaxImagePixels
	}
	if limit > 0 && (cfg.Width > limit || cfg.Height > limit || cfg.Width*cfg.Height > limit) {
		return fail(fmt.Errorf("%s header declares %dx%d = %d pixels, limit %d: %w",
			format, cfg.Width, cfg.Height, int64(cfg.Width)*int64(cfg.Height), limit, ErrImageTooLarge))
	}
	return cfg, format, nil
}

func formatOrImage(format string) string {
	if format == "" {
		return "image"
	}
	return format
}

// safeDecodeConfig and safeDecode turn a decoder panic (a bug in a decoder, triggered by a
// malformed file) into an error: bad input must never crash the caller.
func safeDecodeConfig(r interface{ Read([]byte) (int, error) }) (cfg image.Config, format string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("decoder panic: %v", p)
		}
	}()
	return image.DecodeConfig(r)
}

func safeDecode(data []byte) (img image.Image, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("decoder panic: %v", p)
		}
	}()
	img, _, err = image.Decode(bytes.NewReader(data))
	return img, err
}
