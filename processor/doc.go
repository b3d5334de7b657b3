// Package processor turns user inputs into model inputs exactly as Hugging Face's Idefics2Processor
// does: images into pixel values and pixel attention masks (Idefics2ImageProcessor), and text and
// chat messages into token ids with the image tokens expanded.
//
// # Images
//
// Decoding (DecodeImage, LoadImageFile) accepts JPEG, PNG, GIF (first frame), WebP and BMP and
// reproduces the RGB bytes Pillow 9.4 gives for the same file, for both ways Hugging Face code
// reaches the image processor:
//
//   - ProcessorPipeline (the default, what the runner uses): Idefics2Processor first passes every
//     image through transformers' load_image, which applies the EXIF orientation
//     (PIL.ImageOps.exif_transpose) and then PIL convert("RGB"): grayscale is replicated, palettes
//     are looked up and alpha is dropped without compositing.
//   - ImageProcessorPipeline: Idefics2ImageProcessor called directly on a PIL image as opened: no
//     EXIF orientation, and every image whose PIL mode is not "RGB" is converted to RGBA and
//     alpha-composited over opaque white (Pillow's integer alpha_composite) before dropping alpha.
//
// ImageConfig.Preprocess then mirrors Idefics2ImageProcessor.preprocess: optional split into four
// crops plus the whole image, resize with the shortest/longest-edge rule using Pillow's
// convolution resampler (bit-exact fixed-point arithmetic of libImaging/Resample.c), rescale,
// normalize, zero padding to the largest height and width, and the pixel attention mask.
//
// Tensors are stored row-major with the outermost dimension first, as NumPy and PyTorch print
// them: pixel values are (N, 3, H, W), masks (N, H, W). In ggml order ([ne0, ne1, …], innermost
// first) the same bytes are [W, H, 3, N] and [W, H, N].
//
// Exactness: on lossless sources the pixel values equal the Hugging Face fixtures bit for bit
// (image_fixture_test.go), and decoding matches Pillow 9.4 byte for byte for PNG (all colour
// types and depths, tRNS, palettes), GIF (first frame, offsets, transparency), BMP and WebP
// (lossless, and lossy through libwebp's upsampling and YUV→RGB arithmetic; image_decode_test.go).
// JPEG is the exception: Go's image/jpeg inverse DCT differs from libjpeg-turbo's, so decoded
// bytes differ by at most a few levels (measured: ≤ 3, mean ≈ 0.03; see jpegMaxLevelDiff) even
// though chroma upsampling and colour conversion follow libjpeg-turbo.
package processor
