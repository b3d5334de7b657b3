package main

import (
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestImageFlagsJSON checks --image-splitting, --longest-edge and --shortest-edge end to end: the --json output
// records the settings used, and splitting adds the crops' tokens.
func TestImageFlagsJSON(t *testing.T) {
	args := append(modelArgs(t, "demo"), "--image", demoPNG("demo_00.png"), "-p", question, "-n", "1", "--json")
	var plain runOutput
	for _, tc := range []struct {
		name                 string
		flags                []string
		split                bool
		longest, shortest    int
		extraTokensOverPlain int
	}{
		{"model settings", nil, false, 112, 42, 0},
		{"splitting on", []string{"--image-splitting", "on"}, true, 112, 42, 4 * 17},
		{"edges", []string{"--longest-edge", "56", "--shortest-edge", "28"}, false, 56, 28, 0},
		{"splitting off", []string{"--image-splitting", "off"}, false, 112, 42, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCmd(t, "", append(slices.Clone(args), tc.flags...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			var o runOutput
			if err := json.Unmarshal([]byte(out), &o); err != nil {
				t.Fatal(err)
			}
			s := o.ImageSettings
			if s == nil || s.ImageSplitting != tc.split || s.LongestEdge != tc.longest || s.ShortestEdge != tc.shortest {
				t.Fatalf("image_settings %+v, want %v %d/%d", s, tc.split, tc.longest, tc.shortest)
			}
			if tc.flags == nil {
				plain = o
			} else if got := o.Usage.PromptTokens - plain.Usage.PromptTokens; got != tc.extraTokensOverPlain {
				t.Errorf("%d more prompt tokens than without the flags, want %d", got, tc.extraTokensOverPlain)
			}
		})
	}
	code, out, errs := runCmd(t, "", append(modelArgs(t, "demo"), "-p", "Hello", "-n", "1", "--json")...)
	if code != 0 || strings.Contains(out, "image_settings") {
		t.Errorf("without images: exit %d, %s %s; want no image_settings", code, out, errs)
	}
}

// TestImageFlagsBad checks that bad image settings exit 2 with a line naming the option.
func TestImageFlagsBad(t *testing.T) {
	base := append(modelArgs(t, "demo"), "--image", demoPNG("demo_00.png"), "-p", question, "-n", "1")
	for _, tc := range []struct {
		name  string
		flags []string
		want  string
	}{
		{"not on or off", []string{"--image-splitting", "maybe"}, `--image-splitting "maybe": want on or off`},
		{"negative edge", []string{"--longest-edge", "-4"}, "--longest-edge -4"},
		{"on and --no-split", []string{"--image-splitting", "on", "--no-split"}, "--image-splitting on and --no-split"},
		{"above the tower", []string{"--longest-edge", "500"}, "longest edge 500: larger than the vision tower's image size 112"},
		{"below a patch", []string{"--longest-edge", "10", "--shortest-edge", "5"}, "smaller than one 14-pixel patch"},
		{"shortest above longest", []string{"--shortest-edge", "113"}, "shortest edge 113 is larger than the longest edge 112"},
		{"text only", []string{"--text-only", "--image-splitting", "on"}, "no mmproj"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := runCmd(t, "", append(slices.Clone(base), tc.flags...)...)
			noPanic(t, errs)
			if code != 2 || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d, stderr %q; want 2 with %q", code, errs, tc.want)
			}
		})
	}
}

// TestBatchImageSettings checks the image settings fields of batch lines: recorded in the result, and a bad size
// is an error object naming it.
func TestBatchImageSettings(t *testing.T) {
	img := demoPNG("demo_00.png")
	lines := strings.Join([]string{
		`{"id":1,"prompt":"` + question + `","images":["` + img + `"],"max_tokens":1}`,
		`{"id":2,"prompt":"` + question + `","images":["` + img + `"],"max_tokens":1,"image_splitting":true,"longest_edge":84}`,
		`{"id":3,"prompt":"` + question + `","images":["` + img + `"],"max_tokens":1,"longest_edge":999}`,
		`{"id":4,"prompt":"` + question + `","images":["` + img + `"],"max_tokens":1,"shortest_edge":0}`,
	}, "\n")
	_, out, errs := runCmd(t, lines, append([]string{"batch"}, modelArgs(t, "demo")...)...)
	noPanic(t, errs)
	var res []batchResult
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var r batchResult
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		res = append(res, r)
	}
	if len(res) != 4 {
		t.Fatalf("%d results: %s", len(res), out)
	}
	if s := res[0].ImageSettings; s == nil || s.ImageSplitting || s.LongestEdge != 112 {
		t.Errorf("line 1: image_settings %+v", s)
	}
	if s := res[1].ImageSettings; s == nil || !s.ImageSplitting || s.LongestEdge != 84 || s.ShortestEdge != 42 {
		t.Errorf("line 2: image_settings %+v", s)
	}
	for i, want := range map[int]string{2: "longest edge 999", 3: "shortest_edge 0"} {
		if e := res[i].Error; e == nil || !strings.Contains(e.Message, want) || e.Type != "invalid_request_error" {
			t.Errorf("line %d: error %+v, want one naming %q", i+1, e, want)
		}
	}
}

// TestChatSet checks chat's /set: a bad value is refused naming it, a good one is shown and applies to the next
// turns.
func TestChatSet(t *testing.T) {
	in := "/set longest-edge 999\n/set image-splitting perhaps\n/set colour blue\n/set image-splitting on\n/set longest-edge 84\n/set\n/quit\n"
	_, _, errs := runCmd(t, in, append([]string{"chat"}, modelArgs(t, "demo")...)...)
	noPanic(t, errs)
	for _, want := range []string{
		"longest edge 999: larger than the vision tower's image size 112",
		`/set image-splitting "perhaps": want on or off`,
		"/set colour: unknown setting",
		"(image-splitting on, longest-edge 112, shortest-edge 42)",
		"(image-splitting on, longest-edge 84, shortest-edge 42)",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
	// A turn after /set uses the settings: the same answer as the one-shot command with the same options.
	_, out, errs := runCmd(t, "/image "+demoPNG("demo_00.png")+"\n/set image-splitting on\n"+question+"\n/quit\n",
		append([]string{"chat", "-n", "8"}, modelArgs(t, "demo")...)...)
	noPanic(t, errs)
	code, want, errs2 := runCmd(t, "", append(modelArgs(t, "demo"), "--image", demoPNG("demo_00.png"), "-p", question, "-n", "8", "--image-splitting", "on")...)
	if code != 0 || strings.TrimSpace(out) != strings.TrimSpace(want) {
		t.Errorf("chat after /set: %q, one-shot with --image-splitting on: %q (%s %s)", out, want, errs, errs2)
	}
}

// TestPreprocessPreviewAndEdges checks preprocess --preview (one PNG per sub-image, padded size) and that
// preprocess with --longest-edge, --shortest-edge and --image-splitting gives Idefics2ImageProcessor's output for
// those settings (the processor's edge goldens).
func TestPreprocessPreviewAndEdges(t *testing.T) {
	_, mm := pair(t, "demo")
	dir := filepath.Join(t.TempDir(), "preview")
	code, out, errs := runCmd(t, "", "preprocess", "--mmproj", mm, "--image", demoPNG("demo_00.png"), "--image-splitting", "on", "--preview", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "5 preview PNGs") {
		t.Errorf("stdout %q", out)
	}
	for _, name := range []string{"image1-crop1.png", "image1-crop2.png", "image1-crop3.png", "image1-crop4.png", "image1-whole.png"} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		im, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		// The crops (48×48) and the whole image (96×96) lie within the demo's edges (42 and 112) and keep their
		// size, so every drawing is the padded 96×96.
		if b := im.Bounds(); b.Dx() != 96 || b.Dy() != 96 {
			t.Errorf("%s: %dx%d, want 96x96", name, b.Dx(), b.Dy())
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 5 {
		t.Errorf("%d files in the preview folder, want 5", len(entries))
	}

	// The edge goldens of the processor package, through the command's options.
	cfg := filepath.Join(t.TempDir(), "preprocessor_config.json")
	os.WriteFile(cfg, []byte(`{"image_processor_type":"Idefics2ImageProcessor","do_image_splitting":false,"size":{"shortest_edge":378,"longest_edge":980}}`), 0o644)
	for _, tc := range []struct {
		golden, image string
		flags         []string
	}{
		{"src_split_16_10", "resize_src.png", []string{"--image-splitting", "on", "--longest-edge", "16", "--shortest-edge", "10"}},
		{"noise_nosplit_upscale", "edges/noise_41x26.png", []string{"--longest-edge", "56", "--shortest-edge", "33"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			outDir := t.TempDir()
			args := append([]string{"preprocess", "--processor-config", cfg, "--image", testdata("processor", tc.image), "--out", outDir}, tc.flags...)
			if code, _, errs := runCmd(t, "", args...); code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			got := npyF32(t, filepath.Join(outDir, "pixel_values.npy"))
			want := npyF32(t, testdata("processor", "edges", tc.golden+"_pixel_values.npy"))
			if !slices.Equal(got, want) {
				t.Errorf("pixel values differ from the golden (%d values, want %d)", len(got), len(want))
			}
		})
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no output", []string{"--image", demoPNG("demo_00.png")}, "no --out or --preview"},
		{"patch size with mmproj", []string{"--image", demoPNG("demo_00.png"), "--preview", t.TempDir(), "--patch-size", "16"}, "--patch-size 16"},
		{"edge above the tower", []string{"--image", demoPNG("demo_00.png"), "--preview", t.TempDir(), "--longest-edge", "200"}, "larger than the vision tower's image size 112"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := runCmd(t, "", append([]string{"preprocess", "--mmproj", mm}, tc.args...)...)
			if code != 2 || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d, %q; want 2 with %q", code, errs, tc.want)
			}
		})
	}
}
