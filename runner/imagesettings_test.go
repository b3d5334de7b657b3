package runner

import (
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/processor"
)

// TestApplyImageSettings checks the run-time image settings against a tower of patch 14 and image size 980 (the
// idefics2-8b mmproj's), good and bad.
func TestApplyImageSettings(t *testing.T) {
	on, off := true, false
	base := processor.DefaultImageConfig()
	base.DoImageSplitting = true
	fixed := base
	fixed.ShortestEdge, fixed.LongestEdge, fixed.Height, fixed.Width = 0, 0, 224, 224
	noResize := base
	noResize.DoResize = false
	for _, tc := range []struct {
		name              string
		base              processor.ImageConfig
		s                 ImageSettings
		split             bool
		shortest, longest int
		wantErr           string
	}{
		{"nothing", base, ImageSettings{}, true, 378, 980, ""},
		{"splitting off", base, ImageSettings{Splitting: &off}, false, 378, 980, ""},
		{"splitting on", noResize, ImageSettings{Splitting: &on}, true, 378, 980, ""},
		{"smaller edges", base, ImageSettings{LongestEdge: 490, ShortestEdge: 224}, true, 224, 490, ""},
		{"one patch", base, ImageSettings{LongestEdge: 14, ShortestEdge: 14}, true, 14, 14, ""},
		{"the tower's size", base, ImageSettings{LongestEdge: 980}, true, 378, 980, ""},
		{"below one patch", base, ImageSettings{LongestEdge: 13, ShortestEdge: 13}, false, 0, 0, "longest edge 13: smaller than one 14-pixel patch"},
		{"above the tower's size", base, ImageSettings{LongestEdge: 1960}, false, 0, 0, "longest edge 1960: larger than the vision tower's image size 980"},
		{"shortest above longest", base, ImageSettings{ShortestEdge: 981}, false, 0, 0, "shortest edge 981 is larger than the longest edge 980"},
		{"negative longest", base, ImageSettings{LongestEdge: -1}, false, 0, 0, "longest edge -1"},
		{"negative shortest", base, ImageSettings{ShortestEdge: -5}, false, 0, 0, "shortest edge -5"},
		{"fixed size", fixed, ImageSettings{LongestEdge: 490}, false, 0, 0, "resize to a fixed 224×224"},
		{"no resize", noResize, ImageSettings{ShortestEdge: 100}, false, 0, 0, "do_resize false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ApplyImageSettings(tc.base, tc.s, 14, 980)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !IsInputError(err) {
					t.Fatalf("got %v, want an input error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.DoImageSplitting != tc.split || c.ShortestEdge != tc.shortest || c.LongestEdge != tc.longest {
				t.Errorf("got splitting %v, edges %d/%d; want %v, %d/%d", c.DoImageSplitting, c.ShortestEdge, c.LongestEdge,
					tc.split, tc.shortest, tc.longest)
			}
		})
	}
}

// TestImageSettingsIsZero checks IsZero.
func TestImageSettingsIsZero(t *testing.T) {
	off := false
	for _, s := range []ImageSettings{{Splitting: &off}, {LongestEdge: 1}, {ShortestEdge: 1}} {
		if s.IsZero() {
			t.Errorf("%+v: IsZero true", s)
		}
	}
	if !(ImageSettings{}).IsZero() {
		t.Error("the zero value: IsZero false")
	}
}
