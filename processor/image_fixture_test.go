package processor

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/idefics2-go/idefics2/internal/npy"
)

// pixelTolerance bounds |Go − HF| for pixel values of lossless (PNG) sources. Decoding, resizing,
// rescaling and normalization are reproduced operation for operation, so the expected difference
// is exactly 0; the bound leaves room only for a float32 last-bit difference (values lie in
// [−1, 1], where an ulp is ≤ 1.2e-7).
const pixelTolerance = 1e-5

// hfCase describes one Hugging Face fixture whose pixel_values this package must reproduce.
type hfCase struct {
	name     string
	config   func(t *testing.T) ImageConfig
	pipeline ImagePipeline
	images   []string // paths relative to testdata/
	pixels   string   // pixel_values .npy, relative to testdata/
	mask     string   // pixel_attention_mask .npy, "" if none
}

const testdataDir = "../testdata"

func configFromFile(path string) func(t *testing.T) ImageConfig {
	return func(t *testing.T) ImageConfig {
		t.Helper()
		c, err := LoadImageConfig(filepath.Join(testdataDir, path))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}

// configFromManifest builds the config from a case manifest's "settings" (the kwargs the fixture
// generator passed to Idefics2ImageProcessor).
func configFromManifest(path string) func(t *testing.T) ImageConfig {
	return func(t *testing.T) ImageConfig {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(testdataDir, path))
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			Settings json.RawMessage `json:"settings"`
		}
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		c, err := ParseImageConfig(m.Settings)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}

func hfCases(t *testing.T) []hfCase {
	cases := []hfCase{
		{
			name:     "improc_direct_rgba_small",
			config:   configFromManifest("hf/cases/improc_direct_rgba_small/manifest.json"),
			pipeline: ImageProcessorPipeline,
			images:   []string{"hf/images/chelsea_alpha.png", "hf/images/coins.png"},
			pixels:   "hf/cases/improc_direct_rgba_small/pixel_values.npy",
			mask:     "hf/cases/improc_direct_rgba_small/pixel_attention_mask.npy",
		},
		{
			name:     "proc8b_coins_split",
			config:   configFromManifest("hf/cases/proc8b_coins_split/manifest.json"),
			pipeline: ProcessorPipeline,
			images:   []string{"hf/images/coins.png"},
			pixels:   "hf/cases/proc8b_coins_split/pixel_values.npy",
			mask:     "hf/cases/proc8b_coins_split/pixel_attention_mask.npy",
		},
		{
			name:     "p1_chelsea_split",
			config:   configFromFile("hf/checkpoints/p1/preprocessor_config.json"),
			pipeline: ProcessorPipeline,
			images:   []string{"hf/images/chelsea.png"},
			pixels:   "hf/cases/p1_chelsea_split/pixel_values.npy",
			mask:     "hf/cases/p1_chelsea_split/pixel_attention_mask.npy",
		},
		{
			name:     "p2_two_images",
			config:   configFromFile("hf/checkpoints/p2/preprocessor_config.json"),
			pipeline: ProcessorPipeline,
			images:   []string{"hf/images/coffee.png", "hf/images/horse.png"},
			pixels:   "hf/cases/p2_two_images/pixel_values.npy",
			mask:     "hf/cases/p2_two_images/pixel_attention_mask.npy",
		},
	}
	// Every demo case with images (the demo processor does not split).
	data, err := os.ReadFile(filepath.Join(testdataDir, "demo/manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var demo struct {
		Cases []struct {
			ID     string `json:"id"`
			Images []struct {
				File string `json:"file"`
			} `json:"images"`
			PixelValuesFile string `json:"pixel_values_file"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(data, &demo); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, dc := range demo.Cases {
		if len(dc.Images) == 0 {
			continue
		}
		c := hfCase{
			name:     "demo_" + dc.ID,
			config:   configFromFile("demo/checkpoint-bf16/preprocessor_config.json"),
			pipeline: ProcessorPipeline,
			pixels:   "demo/" + dc.PixelValuesFile,
		}
		for _, im := range dc.Images {
			c.images = append(c.images, "demo/"+im.File)
		}
		cases = append(cases, c)
		n++
	}
	if n < 17 {
		t.Fatalf("demo manifest: %d cases with images, want at least 17", n)
	}
	return cases
}

// compareFloats reports the max-abs error, the max-rel error and the worst index.
func compareFloats(got, want []float32) (maxAbs, maxRel float64, worst int) {
	worst = -1
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if d > maxAbs || worst < 0 {
			if d > maxAbs {
				maxAbs, worst = d, i
			} else if worst < 0 {
				worst = i
			}
		}
		if r := d / math.Max(math.Abs(float64(want[i])), 1e-6); r > maxRel {
			maxRel = r
		}
	}
	return maxAbs, maxRel, worst
}

func TestImagePreprocessMatchesHF(t *testing.T) {
	for _, tc := range hfCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.config(t)
			var imgs []*RGBImage
			for _, p := range tc.images {
				im, err := LoadImageFile(filepath.Join(testdataDir, p), DecodeOptions{Pipeline: tc.pipeline})
				if err != nil {
					t.Fatal(err)
				}
				imgs = append(imgs, im)
			}
			b, err := cfg.Preprocess(imgs)
			if err != nil {
				t.Fatal(err)
			}
			want, err := npy.Read(filepath.Join(testdataDir, tc.pixels))
			if err != nil {
				t.Fatal(err)
			}
			// Fixtures are (1, N, 3, H, W).
			wantShape := []int{1, b.N, 3, b.H, b.W}
			if fmt.Sprint(want.Shape) != fmt.Sprint(wantShape) {
				t.Fatalf("pixel_values shape: got %v, want %v", wantShape, want.Shape)
			}
			wv, err := want.Float32s()
			if err != nil {
				t.Fatal(err)
			}
			maxAbs, maxRel, worst := compareFloats(b.PixelValues, wv)
			t.Logf("pixel_values %v: max abs %.3g, max rel %.3g, worst index %d", want.Shape, maxAbs, maxRel, worst)
			if maxAbs > pixelTolerance {
				t.Errorf("pixel_values: max abs %.6g at index %d (%s): got %v, want %v (tolerance %g)",
					maxAbs, worst, nchwIndex(worst, b), b.PixelValues[worst], wv[worst], pixelTolerance)
			}
			if tc.mask == "" {
				return
			}
			m, err := npy.Read(filepath.Join(testdataDir, tc.mask))
			if err != nil {
				t.Fatal(err)
			}
			mv, err := m.Bools()
			if err != nil {
				t.Fatal(err)
			}
			if len(mv) != len(b.Mask) {
				t.Fatalf("mask: %d values, want %d", len(b.Mask), len(mv))
			}
			for i := range mv {
				if mv[i] != b.Mask[i] {
					t.Fatalf("mask[%d]: got %v, want %v", i, b.Mask[i], mv[i])
				}
			}
		})
	}
}

// nchwIndex names a flat index of an (N, 3, H, W) tensor.
func nchwIndex(i int, b *ImageBatch) string {
	if i < 0 {
		return "-"
	}
	x := i % b.W
	y := (i / b.W) % b.H
	c := (i / (b.W * b.H)) % 3
	n := i / (b.W * b.H * 3)
	return fmt.Sprintf("image %d, channel %d, y %d, x %d", n, c, y, x)
}
