package processor

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLoadImageConfig(t *testing.T) {
	def := DefaultImageConfig()
	withSplit := func(c ImageConfig, se, le int, split bool) ImageConfig {
		c.ShortestEdge, c.LongestEdge, c.DoImageSplitting = se, le, split
		return c
	}
	tests := []struct {
		path string
		want ImageConfig
	}{
		{"hf/checkpoints/p1/preprocessor_config.json", withSplit(def, 28, 56, true)},
		{"hf/checkpoints/p2/preprocessor_config.json", withSplit(def, 40, 80, false)},
		{"hf/checkpoints/p2-bf16-sharded/preprocessor_config.json", withSplit(def, 40, 80, false)},
		{"demo/checkpoint-bf16/preprocessor_config.json", withSplit(def, 42, 112, false)},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, err := LoadImageConfig(filepath.Join(testdataDir, tt.path))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseImageConfig(t *testing.T) {
	def := DefaultImageConfig()
	tests := []struct {
		name string
		json string
		edit func(c *ImageConfig)
	}{
		{"empty object keeps class defaults", `{}`, func(c *ImageConfig) {}},
		{"idefics2-8b", `{"do_image_splitting": true, "size": {"shortest_edge": 378, "longest_edge": 980}, "image_processor_type": "Idefics2ImageProcessor", "processor_class": "Idefics2Processor", "image_seq_len": 64}`,
			func(c *ImageConfig) { c.DoImageSplitting = true }},
		{"scalar mean and std", `{"image_mean": 0.25, "image_std": 2}`, func(c *ImageConfig) {
			c.ImageMean = [3]float32{0.25, 0.25, 0.25}
			c.ImageStd = [3]float32{2, 2, 2}
		}},
		{"imagenet mean", `{"image_mean": [0.485, 0.456, 0.406]}`, func(c *ImageConfig) {
			c.ImageMean = [3]float32{0.485, 0.456, 0.406}
		}},
		{"fixed size", `{"size": {"height": 224, "width": 300}}`, func(c *ImageConfig) {
			c.ShortestEdge, c.LongestEdge, c.Height, c.Width = 0, 0, 224, 300
		}},
		{"bicubic", `{"resample": 3}`, func(c *ImageConfig) { c.Resample = ResampleBicubic }},
		{"nulls keep defaults", `{"do_pad": null, "size": null, "image_mean": null}`, func(c *ImageConfig) {}},
		{"flags off", `{"do_resize": false, "do_rescale": false, "do_normalize": false, "do_pad": false, "do_convert_rgb": false, "resample": 0}`,
			func(c *ImageConfig) {
				c.DoResize, c.DoRescale, c.DoNormalize, c.DoPad, c.DoConvertRGB = false, false, false, false, false
				c.Resample = 0 // not used without resizing
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseImageConfig([]byte(tt.json))
			if err != nil {
				t.Fatal(err)
			}
			want := def
			tt.edit(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseImageConfigBad(t *testing.T) {
	tests := []struct {
		name, json, substr string
	}{
		{"not json", `{"size": `, "image config"},
		{"not an object", `[1, 2]`, "image config"},
		{"nearest", `{"resample": 0}`, "resample 0 (nearest) is not supported"},
		{"unknown resample", `{"resample": 7}`, "resample 7: unknown"},
		{"fractional resample", `{"resample": 2.5}`, "resample 2.5"},
		{"string resample", `{"resample": "bilinear"}`, "resample"},
		{"bool as string", `{"do_pad": "yes"}`, `do_pad "yes": want true or false`},
		{"size without edges", `{"size": {"shortest_edge": 378}}`, "size"},
		{"negative edge", `{"size": {"shortest_edge": -1, "longest_edge": 980}}`, "size.shortest_edge -1"},
		{"fractional edge", `{"size": {"shortest_edge": 3.5, "longest_edge": 980}}`, "size.shortest_edge 3.5"},
		{"huge edge", `{"size": {"shortest_edge": 1, "longest_edge": 1e12}}`, "size.longest_edge"},
		{"two means", `{"image_mean": [0.5, 0.5]}`, "image_mean"},
		{"zero std", `{"image_std": [0.5, 0, 0.5]}`, "image_std[1]"},
		{"other processor", `{"image_processor_type": "SiglipImageProcessor"}`, `image_processor_type "SiglipImageProcessor"`},
		{"rescale as string", `{"rescale_factor": "1/255"}`, "rescale_factor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseImageConfig([]byte(tt.json))
			if err == nil {
				t.Fatal("want an error")
			}
			if !strings.Contains(err.Error(), tt.substr) || !strings.HasPrefix(err.Error(), "processor: image config: ") {
				t.Errorf("error %q: want prefix %q and %q", err, "processor: image config: ", tt.substr)
			}
		})
	}
}

func TestLoadImageConfigNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "preprocessor_config.json")
	if err := os.WriteFile(path, []byte(`{"resample": 9}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadImageConfig(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "resample 9") {
		t.Errorf("err %v: want the path and the key", err)
	}
}
