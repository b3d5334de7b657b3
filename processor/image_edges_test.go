package processor

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/idefics2-go/idefics2/internal/npy"
)

// edgesTolerance is the largest absolute difference allowed between Preprocess and the edge goldens: none. The
// goldens follow the same float64-then-float32 rescale and float32 normalize as Preprocess, on bit-exact Pillow
// resizes, so every value is the same float32.
const edgesTolerance = 0

// TestPreprocessOtherEdges checks Preprocess with longest and shortest edges other than the checkpoints' against
// goldens written from Idefics2ImageProcessor's rules by testdata/processor/make_edge_goldens.py (Pillow 9.4.0):
// downscaling by the longest edge, upscaling to the shortest edge (also when that makes a side longer than the
// longest edge), with and without splitting, and the padding mask.
func TestPreprocessOtherEdges(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testdataDir, "processor/edges/cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var manifest struct {
		Cases []struct {
			Name         string `json:"name"`
			Image        string `json:"image"`
			Split        bool   `json:"do_image_splitting"`
			ShortestEdge int    `json:"shortest_edge"`
			LongestEdge  int    `json:"longest_edge"`
			Shape        []int  `json:"shape"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(data, &manifest); err != nil {
		t.Fatal(err)
	}
	if len(manifest.Cases) < 5 {
		t.Fatalf("%d edge cases, want at least 5", len(manifest.Cases))
	}
	for _, tc := range manifest.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			im, err := LoadImageFile(filepath.Join(testdataDir, "processor", tc.Image), DecodeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			c := DefaultImageConfig()
			c.DoImageSplitting, c.ShortestEdge, c.LongestEdge = tc.Split, tc.ShortestEdge, tc.LongestEdge
			b, err := c.Preprocess([]*RGBImage{im})
			if err != nil {
				t.Fatal(err)
			}
			if got := []int{1, b.N, 3, b.H, b.W}; !slices.Equal(got, tc.Shape) {
				t.Fatalf("shape %v, want %v", got, tc.Shape)
			}
			want := readNPYFloat32(t, filepath.Join(testdataDir, "processor/edges", tc.Name+"_pixel_values.npy"))
			if len(want) != len(b.PixelValues) {
				t.Fatalf("%d values, want %d", len(b.PixelValues), len(want))
			}
			worst, at := 0.0, -1
			for i, v := range b.PixelValues {
				if d := math.Abs(float64(v) - float64(want[i])); d > worst || (at < 0 && d > edgesTolerance) {
					worst, at = d, i
				}
			}
			if worst > edgesTolerance {
				t.Errorf("pixel values: max abs error %g at index %d (got %g, want %g), tolerance %g", worst, at, b.PixelValues[at], want[at], float64(edgesTolerance))
			}
			a, err := npy.Read(filepath.Join(testdataDir, "processor/edges", tc.Name+"_pixel_attention_mask.npy"))
			if err != nil {
				t.Fatal(err)
			}
			mask, err := a.Bools()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(mask, b.Mask) {
				t.Errorf("pixel attention mask differs")
			}
		})
	}
}

func readNPYFloat32(t *testing.T, path string) []float32 {
	t.Helper()
	a, err := npy.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := a.Float32s()
	if err != nil {
		t.Fatal(fmt.Errorf("%s: %w", path, err))
	}
	return v
}

// TestResizeOutputSizeRule checks ResizeOutputSize against get_resize_output_image_size (image_processing_idefics2.py)
// worked by hand for sizes around the edges: (height, width) in, (height, width) out.
func TestResizeOutputSizeRule(t *testing.T) {
	for _, tc := range []struct {
		h, w, shortest, longest int
		wantH, wantW            int
	}{
		{480, 640, 378, 980, 480, 640},     // within the edges: unchanged
		{480, 640, 378, 448, 378, 448},     // width 448, height int(448/(640/480)) = 336, raised to 378
		{480, 640, 100, 448, 336, 448},     // the same with a small shortest edge
		{640, 480, 100, 448, 448, 336},     // portrait: height 448, width int(448*0.75) = 336
		{1000, 999, 14, 490, 490, 489},     // portrait by one pixel: width int(490*0.999) = 489
		{999, 1000, 14, 490, 489, 490},     // landscape by one pixel: height int(490/(1000/999)) = 489
		{700, 700, 14, 490, 490, 490},      // square: the width branch
		{10, 3000, 378, 980, 378, 980},     // a strip: height int(980/300) = 3, raised to 378
		{60, 40, 378, 980, 378, 378},       // small: both raised to the shortest edge
		{17, 23, 30, 40, 30, 30},           // shortest edge above a side that is below the longest
		{3024, 4032, 378, 980, 735, 980},   // a phone photo: int(980/(4032/3024)) = 735
		{4032, 3024, 378, 980, 980, 735},   // the same in portrait
		{1080, 1920, 378, 980, 551, 980},   // 16:9: int(980/(1920/1080)) = 551
		{1080, 1920, 378, 1470, 826, 1470}, // a longer edge than the checkpoint's: int(1470/1.777…) = 826
	} {
		t.Run(fmt.Sprintf("%dx%d_%d_%d", tc.w, tc.h, tc.shortest, tc.longest), func(t *testing.T) {
			c := DefaultImageConfig()
			c.ShortestEdge, c.LongestEdge = tc.shortest, tc.longest
			h, w := c.ResizeOutputSize(tc.h, tc.w)
			if h != tc.wantH || w != tc.wantW {
				t.Errorf("ResizeOutputSize(%d, %d) = (%d, %d), want (%d, %d)", tc.h, tc.w, h, w, tc.wantH, tc.wantW)
			}
		})
	}
}
