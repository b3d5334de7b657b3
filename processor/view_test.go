package processor

import (
	"image/color"
	"testing"
)

// TestViewSubImages checks the description of split and unsplit images: labels, padded size, kept and whole
// patches.
func TestViewSubImages(t *testing.T) {
	img := func(w, h int) *RGBImage { return &RGBImage{W: w, H: h, Pix: make([]uint8, 3*w*h)} }
	c := DefaultImageConfig()
	c.ShortestEdge, c.LongestEdge = 14, 50
	for _, tc := range []struct {
		name      string
		split     bool
		pad       bool
		in        []*RGBImage
		wantN     int
		wantFirst SubImageView
		wantLast  SubImageView
	}{
		{"one image", false, true, []*RGBImage{img(40, 30)}, 1,
			SubImageView{Label: "image", W: 40, H: 30, PadW: 40, PadH: 30, Cols: 2, Rows: 2, GridCols: 2, GridRows: 2},
			SubImageView{Label: "image", W: 40, H: 30, PadW: 40, PadH: 30, Cols: 2, Rows: 2, GridCols: 2, GridRows: 2}},
		{"split: crops padded to the whole image", true, true, []*RGBImage{img(96, 96)}, 5,
			// crops are 48×48 (no resize), the whole image 50×50: padded to 50×50, 3×3 whole patches.
			SubImageView{Label: "crop 1 (top-left)", W: 48, H: 48, PadW: 50, PadH: 50, Cols: 3, Rows: 3, GridCols: 3, GridRows: 3},
			SubImageView{Label: "whole image", W: 50, H: 50, PadW: 50, PadH: 50, Cols: 3, Rows: 3, GridCols: 3, GridRows: 3}},
		{"two images: the smaller padded, masked patches", false, true, []*RGBImage{img(50, 50), img(20, 14)}, 2,
			SubImageView{Label: "image", W: 50, H: 50, PadW: 50, PadH: 50, Cols: 3, Rows: 3, GridCols: 3, GridRows: 3},
			// 20×14 kept as is: 2×1 patches hold real pixels, the rest of the 3×3 grid is padding.
			SubImageView{Label: "image", W: 20, H: 14, PadW: 50, PadH: 50, Cols: 2, Rows: 1, GridCols: 3, GridRows: 3}},
		{"no padding mask: every patch kept", false, false, []*RGBImage{img(50, 50), img(20, 14)}, 2,
			SubImageView{Label: "image", W: 50, H: 50, PadW: 50, PadH: 50, Cols: 3, Rows: 3, GridCols: 3, GridRows: 3},
			SubImageView{Label: "image", W: 20, H: 14, PadW: 50, PadH: 50, Cols: 3, Rows: 3, GridCols: 3, GridRows: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := c
			cfg.DoImageSplitting = tc.split
			subs, per, err := cfg.SubImages(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			v, err := ViewSubImages(subs, per, 14, tc.pad)
			if err != nil {
				t.Fatal(err)
			}
			if len(v) != tc.wantN {
				t.Fatalf("%d views, want %d", len(v), tc.wantN)
			}
			if v[0] != tc.wantFirst {
				t.Errorf("first view %+v, want %+v", v[0], tc.wantFirst)
			}
			if v[len(v)-1] != tc.wantLast {
				t.Errorf("last view %+v, want %+v", v[len(v)-1], tc.wantLast)
			}
			for k := range v {
				d, err := DrawSubImage(subs[k], v[k], 14)
				if err != nil {
					t.Fatal(err)
				}
				if b := d.Bounds(); b.Dx() != v[k].PadW || b.Dy() != v[k].PadH {
					t.Errorf("drawing %d is %dx%d, want %dx%d", k, b.Dx(), b.Dy(), v[k].PadW, v[k].PadH)
				}
			}
		})
	}
}

// TestDrawSubImage checks the regions of a drawing: real pixels kept (off the grid lines), padding inside kept
// patches grey, masked patches dark, the strip beyond the last whole patch red.
func TestDrawSubImage(t *testing.T) {
	big := &RGBImage{W: 31, H: 31, Pix: make([]uint8, 3*31*31)}
	small := &RGBImage{W: 17, H: 10, Pix: make([]uint8, 3*17*10)}
	for i := range small.Pix {
		small.Pix[i] = 200
	}
	views, err := ViewSubImages([]*RGBImage{big, small}, []int{1, 1}, 7, true)
	if err != nil {
		t.Fatal(err)
	}
	v := views[1]
	if v.Cols != 3 || v.Rows != 2 || v.GridCols != 4 || v.GridRows != 4 {
		t.Fatalf("view %+v: want 3×2 kept patches in a 4×4 grid", v)
	}
	d, err := DrawSubImage(small, v, 7)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		x, y int
		want color.NRGBA
	}{
		{"real pixel", 3, 3, color.NRGBA{200, 200, 200, 255}},
		{"padding inside a kept patch", 19, 3, viewPadding},
		{"padding below the real rows, kept patch", 3, 12, viewPadding},
		{"masked patch", 26, 26, viewMasked},
		{"beyond the last whole patch", 29, 3, viewCut},
		{"grid line over a real pixel", 7, 3, blend(color.NRGBA{200, 200, 200, 255}, viewGrid, 85)},
	} {
		if got := d.NRGBAAt(tc.x, tc.y); got != tc.want {
			t.Errorf("%s (%d, %d): %v, want %v", tc.name, tc.x, tc.y, got, tc.want)
		}
	}
	if _, err := DrawSubImage(big, v, 7); err == nil {
		t.Error("DrawSubImage with a mismatched view: no error")
	}
	if _, err := ViewSubImages([]*RGBImage{big}, []int{1}, 0, true); err == nil {
		t.Error("ViewSubImages with patch size 0: no error")
	}
	if _, err := ViewSubImages([]*RGBImage{big}, []int{5}, 7, true); err == nil {
		t.Error("ViewSubImages with counts beyond the sub-images: no error")
	}
}
