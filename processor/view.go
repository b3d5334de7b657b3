package processor

import (
	"fmt"
	"image"
	"image/color"
)

// SubImageView describes one (sub-)image as the vision tower receives it: its resized size, the padded size of the
// batch it sits in, and its patch grid.
type SubImageView struct {
	// Label names the sub-image: "crop 1 (top-left)" … "crop 4 (bottom-right)", "whole image", or "image".
	Label string
	// W and H are the resized size in pixels; PadW and PadH the padded size of the batch.
	W, H, PadW, PadH int
	// Cols and Rows are the patches the vision tower keeps: the patches holding at least one real pixel, within
	// the whole patches of the padded size (graph.ImageInput.PatchGrid).
	Cols, Rows int
	// GridCols and GridRows are the whole patches of the padded size; pixels right of or below them are never seen.
	GridCols, GridRows int
}

// subImageLabels are the labels of a split image's five sub-images, in Preprocess's order.
var subImageLabels = [5]string{"crop 1 (top-left)", "crop 2 (top-right)", "crop 3 (bottom-left)", "crop 4 (bottom-right)", "whole image"}

// ViewSubImages describes each of subs (as SubImages returns them, per giving how many each input image became)
// for a vision tower with the given patch size, padded as Preprocess pads them.
func ViewSubImages(subs []*RGBImage, per []int, patch int, pad bool) ([]SubImageView, error) {
	if patch <= 0 {
		return nil, fmt.Errorf("processor: view: patch size %d: want a positive number", patch)
	}
	var padW, padH int
	for _, s := range subs {
		padW, padH = max(padW, s.W), max(padH, s.H)
	}
	var out []SubImageView
	k := 0
	for _, n := range per {
		for j := range n {
			if k >= len(subs) {
				return nil, fmt.Errorf("processor: view: %d sub-images, fewer than the counts say", len(subs))
			}
			s := subs[k]
			v := SubImageView{W: s.W, H: s.H, PadW: padW, PadH: padH}
			if !pad {
				// Without do_pad the batch is still stored padded, but every pixel counts as real.
				v.W, v.H = padW, padH
			}
			switch n {
			case 5:
				v.Label = subImageLabels[j]
			default:
				v.Label = "image"
			}
			v.GridCols, v.GridRows = padW/patch, padH/patch
			v.Cols, v.Rows = min((v.W+patch-1)/patch, v.GridCols), min((v.H+patch-1)/patch, v.GridRows)
			v.W, v.H = s.W, s.H
			out = append(out, v)
			k++
		}
	}
	if k != len(subs) {
		return nil, fmt.Errorf("processor: view: %d sub-images, more than the counts say", len(subs))
	}
	return out, nil
}

// View colours.
var (
	viewPadding = color.NRGBA{R: 128, G: 128, B: 128, A: 255} // zero after normalization, inside kept patches
	viewMasked  = color.NRGBA{R: 70, G: 70, B: 90, A: 255}    // patches without a real pixel: masked out
	viewCut     = color.NRGBA{R: 170, G: 40, B: 40, A: 255}   // beyond the last whole patch: never seen
	viewGrid    = color.NRGBA{R: 255, G: 255, B: 0, A: 255}   // patch borders (blended)
)

// DrawSubImage draws what the vision tower sees of sub (described by v, patch size patch): the resized pixels at
// the top left of a PadW×PadH canvas, the padding (grey inside kept patches, hatched dark blue over masked patches),
// the strip beyond the last whole patch in red, and the patch grid as thin yellow lines blended at a third.
func DrawSubImage(sub *RGBImage, v SubImageView, patch int) (*image.NRGBA, error) {
	if sub == nil || sub.W != v.W || sub.H != v.H || v.PadW < v.W || v.PadH < v.H || patch <= 0 {
		return nil, fmt.Errorf("processor: view: sub-image does not match its description")
	}
	img := image.NewNRGBA(image.Rect(0, 0, v.PadW, v.PadH))
	keptW, keptH := v.Cols*patch, v.Rows*patch
	gridW, gridH := v.GridCols*patch, v.GridRows*patch
	for y := range v.PadH {
		for x := range v.PadW {
			var c color.NRGBA
			switch {
			case x >= gridW || y >= gridH:
				c = viewCut
			case x < v.W && y < v.H:
				p := sub.Pix[(y*v.W+x)*3:]
				c = color.NRGBA{R: p[0], G: p[1], B: p[2], A: 255}
			case x < keptW && y < keptH:
				c = viewPadding
			default:
				c = viewMasked
				if (x+y)%8 < 2 {
					c = color.NRGBA{R: 110, G: 110, B: 140, A: 255}
				}
			}
			if x < gridW && y < gridH && (x%patch == 0 || y%patch == 0) {
				c = blend(c, viewGrid, 85)
			}
			img.SetNRGBA(x, y, c)
		}
	}
	return img, nil
}

// blend mixes b over a with weight w/255.
func blend(a, b color.NRGBA, w int) color.NRGBA {
	mix := func(x, y uint8) uint8 { return uint8((int(x)*(255-w) + int(y)*w + 127) / 255) }
	return color.NRGBA{R: mix(a.R, b.R), G: mix(a.G, b.G), B: mix(a.B, b.B), A: 255}
}
