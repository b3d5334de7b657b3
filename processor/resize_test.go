package processor

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestResizeMatchesPillow compares pillowResize with Image.resize of Pillow 9.4 on a noisy 23×17
// image (resize_goldens.json, from make_goldens.py): downscaling (support widened), upscaling,
// one-axis changes (one pass skipped), 1×1 and the unchanged size, for every convolution filter.
// Bilinear, box and bicubic involve no transcendental functions and must match exactly; Lanczos
// and Hamming use sin/cos, where Go's math and the C library could differ in the last bit of a
// weight, but the 22-bit fixed-point rounding absorbs that here as well.
func TestResizeMatchesPillow(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testdataDir, "processor/resize_goldens.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Source string `json:"source"`
		Cases  []struct {
			Filter int    `json:"filter"`
			Width  int    `json:"width"`
			Height int    `json:"height"`
			RGB    string `json:"rgb"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	src, err := LoadImageFile(filepath.Join(testdataDir, "processor", g.Source), DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Cases) < 20 {
		t.Fatalf("%d resize cases, want at least 20", len(g.Cases))
	}
	for _, c := range g.Cases {
		f, err := resampleFilterFor(c.Filter)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(fmt.Sprintf("%s/%dx%d", f.name, c.Width, c.Height), func(t *testing.T) {
			want, err := hex.DecodeString(c.RGB)
			if err != nil {
				t.Fatal(err)
			}
			before := string(src.Pix)
			got := pillowResize(src, c.Width, c.Height, f)
			if string(src.Pix) != before {
				t.Fatal("pillowResize modified its source")
			}
			if got.W != c.Width || got.H != c.Height {
				t.Fatalf("size %dx%d, want %dx%d", got.W, got.H, c.Width, c.Height)
			}
			if maxDiff, mean, worst := byteDiff(got.Pix, want); maxDiff != 0 {
				px := worst / 3
				t.Fatalf("pixel (%d, %d) channel %d: got %d, want %d (max diff %d, mean %.3f)",
					px%got.W, px/got.W, worst%3, got.Pix[worst], want[worst], maxDiff, mean)
			}
		})
	}
}

func TestResizeOutputSize(t *testing.T) {
	idefics2 := DefaultImageConfig() // 378 / 980
	// Worked sizes from the facts sheet (IDEFICS2.md §6) plus edge cases of the rule.
	tests := []struct {
		name         string
		cfg          ImageConfig
		h, w         int
		wantH, wantW int
	}{
		{"square at the cap", idefics2, 980, 980, 980, 980},
		{"4:3 large", idefics2, 1200, 1600, 735, 980},
		{"1080p", idefics2, 1080, 1920, 551, 980},
		{"1080p crop", idefics2, 540, 960, 540, 960},
		{"portrait", idefics2, 2000, 1000, 980, 490},
		{"small stretched", idefics2, 200, 300, 378, 378},
		{"one side stretched", idefics2, 375, 500, 378, 500},
		{"640x480", idefics2, 480, 640, 480, 640},
		{"extreme panorama", idefics2, 1, 5000, 378, 980},
		{"extreme tower", idefics2, 5000, 1, 980, 378},
		{"fixed size", ImageConfig{Height: 30, Width: 40}, 500, 100, 30, 40},
		{"tiny config", ImageConfig{ShortestEdge: 28, LongestEdge: 56}, 300, 451, 37, 56},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, w := tt.cfg.ResizeOutputSize(tt.h, tt.w)
			if h != tt.wantH || w != tt.wantW {
				t.Errorf("ResizeOutputSize(%d, %d) = %d, %d; want %d, %d", tt.h, tt.w, h, w, tt.wantH, tt.wantW)
			}
		})
	}
}
