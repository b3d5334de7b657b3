package main

import (
	"bytes"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"

	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/processor"
)

// previewPNGs draws every (sub-)image as the vision tower receives it (processor.DrawSubImage) and encodes it as
// PNG: the drawing of the page's "what the model sees" (POST /v1/images/preview) and of preprocess --preview.
func previewPNGs(subs []*processor.RGBImage, views []processor.SubImageView, patch int) ([][]byte, error) {
	if len(subs) != len(views) {
		return nil, fmt.Errorf("preview: %d sub-images, %d descriptions", len(subs), len(views))
	}
	out := make([][]byte, len(subs))
	for k := range subs {
		img, err := processor.DrawSubImage(subs[k], views[k], patch)
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, img); err != nil {
			return nil, fmt.Errorf("preview: encoding PNG: %w", err)
		}
		out[k] = buf.Bytes()
	}
	return out, nil
}

// previewFileName names the PNG of sub-image j of input image i (both from 0) among n sub-images of that image:
// image1.png, or image1-crop1.png … image1-crop4.png and image1-whole.png when split.
func previewFileName(i, j, n int) string {
	switch {
	case n == 1:
		return fmt.Sprintf("image%d.png", i+1)
	case j == n-1:
		return fmt.Sprintf("image%d-whole.png", i+1)
	}
	return fmt.Sprintf("image%d-crop%d.png", i+1, j+1)
}

// writePreview writes preprocess --preview's PNGs into dir (created when missing) and returns their paths. Each
// file is written to a temporary name and renamed; on failure the files this call wrote are removed, and dir when
// this call created it.
func writePreview(dir string, cfg processor.ImageConfig, decoded []*processor.RGBImage, patch int) ([]string, error) {
	subs, per, err := cfg.SubImages(decoded)
	if err != nil {
		return nil, err
	}
	views, err := processor.ViewSubImages(subs, per, patch, cfg.DoPad)
	if err != nil {
		return nil, err
	}
	pngs, err := previewPNGs(subs, views, patch)
	if err != nil {
		return nil, err
	}
	_, statErr := os.Stat(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("--preview: %w", err)
	}
	var written []string
	undo := func() {
		for _, p := range written {
			os.Remove(p)
		}
		if os.IsNotExist(statErr) {
			os.Remove(dir)
		}
	}
	k := 0
	for i, n := range per {
		for j := range n {
			path := filepath.Join(dir, previewFileName(i, j, n))
			if err := writeFileAtomic(path, pngs[k]); err != nil {
				undo()
				return nil, fmt.Errorf("--preview: %w", err)
			}
			written = append(written, path)
			k++
		}
	}
	return written, nil
}

// writeFileAtomic writes data to a temporary file beside path and renames it to path.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+strings.TrimSuffix(filepath.Base(path), ".png")+"-*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// defaultPatchSize is Idefics2VisionConfig's default patch_size, used by preprocess --preview when the settings come
// from a preprocessor_config.json, which holds no patch size.
const defaultPatchSize = 14

// visionSizes reads the patch and image size of an mmproj (clip.vision.patch_size, clip.vision.image_size).
func visionSizes(md gguf.Metadata, path string) (patch, imageSize int, err error) {
	if patch, err = md.Int("clip.vision.patch_size"); err != nil {
		return 0, 0, fmt.Errorf("%s: %w", path, err)
	}
	if imageSize, err = md.Int("clip.vision.image_size"); err != nil {
		return 0, 0, fmt.Errorf("%s: %w", path, err)
	}
	if patch <= 0 || imageSize <= 0 || patch > 1<<16 || imageSize > 1<<20 {
		return 0, 0, fmt.Errorf("%s: patch size %d, image size %d: want positive sizes", path, patch, imageSize)
	}
	return patch, imageSize, nil
}
