package graph

import (
	"errors"
	"fmt"

	"github.com/idefics2-go/idefics2/ggml"
)

// ImageFeatures are the outputs of encoding one (sub-)image.
type ImageFeatures struct {
	Rows, Cols int       // real patch grid
	Vision     []float32 // post-layernorm vision states, [rows·cols][visionHidden] (only with keepIntermediate)
	Projection []float32 // modality projection output, [rows·cols][textHidden] (only with keepIntermediate)
	Embeddings []float32 // perceiver output: [imageSeqLen][textHidden], the rows that replace <image> tokens
}

// ImageInput is one preprocessed (sub-)image as the image processor returns it: normalized values, channels
// first ([3][H][W]), zero-padded at the bottom and right to the batch's H×W; RealH×RealW is its own region.
type ImageInput struct {
	Pixels       []float32
	H, W         int
	RealH, RealW int
}

// PatchGrid is the patch grid the model uses for an image: HF marks a patch real when any of its pixels is real
// (Idefics2VisionTransformer: patches_subgrid.sum() > 0) and the valid convolution only sees whole patches of the
// padded image, so rows = min(⌈RealH/p⌉, ⌊H/p⌋) and likewise for columns. Padded pixels inside the last
// row/column of patches are zeros, as in HF.
func (in ImageInput) PatchGrid(p int) (rows, cols int) {
	return min((in.RealH+p-1)/p, in.H/p), min((in.RealW+p-1)/p, in.W/p)
}

// crop returns the image's real patch grid as [3][rows·p][cols·p] planes.
func (in ImageInput) crop(rows, cols, p int) []float32 {
	H, W := rows*p, cols*p
	out := make([]float32, 3*H*W)
	for c := 0; c < 3; c++ {
		for y := 0; y < min(H, in.RealH); y++ {
			n := min(W, in.RealW)
			copy(out[(c*H+y)*W:][:n], in.Pixels[(c*in.H+y)*in.W:][:n])
		}
	}
	return out
}

// EncodeImage runs the vision tower and the connector on one preprocessed (sub-)image. Running each image alone on
// its patch grid gives HF's padded-batch result, because padded patches are masked out of every attention
// (IDEFICS2.md §5.9). With dump, the named intermediates it matches are passed to it.
func (m *Model) EncodeImage(in ImageInput, keepIntermediate bool, dump *Dump) (*ImageFeatures, error) {
	return m.EncodeImageProgress(in, keepIntermediate, dump, nil)
}

// EncodeImageProgress is EncodeImage calling onLayer, when set, after each layer of the vision tower and of the
// perceiver with the layers done and their total (see SetNodeCallback for what watching costs).
func (m *Model) EncodeImageProgress(in ImageInput, keepIntermediate bool, dump *Dump, onLayer func(done, total int)) (*ImageFeatures, error) {
	rows, cols, err := m.checkImage(in)
	if err != nil {
		return nil, err
	}
	p := m.Vision.Patch
	ctx := ggml.NewContext(graphSize, graphSize)
	defer ctx.Close()
	nm := &namer{dump: dump}
	var pix, pos, vis, proj, out ggml.Tensor
	var g *ggml.Graph
	err = ggml.Catch(func() {
		pix = ctx.NewTensor(ggml.TypeF32, cols*p, rows*p, 3, 1).SetName("inp.pixels").SetInput()
		pos = ctx.NewTensor(ggml.TypeI32, rows*cols).SetName("inp.positions").SetInput()
		vis = m.vision.Forward(ctx, pix, pos, nm)
		proj = m.conn.Project(ctx, vis, nm)
		out = m.conn.Resample(ctx, proj, nm).SetOutput()
		g = ctx.NewGraph(graphSize)
		if keepIntermediate {
			g.Build(vis.SetOutput())
			g.Build(proj.SetOutput())
		}
		g.Build(out)
		nm.build(g)
	})
	if err != nil {
		return nil, fmt.Errorf("graph: building the vision graph: %w", err)
	}
	f := &ImageFeatures{Rows: rows, Cols: cols}
	if onLayer != nil {
		total, done := m.Vision.Layers+m.Connector.Depth, 0
		m.runner.Sched.SetNodeCallback("."+layerNameSuffixes[nameLayerOut], func(string) {
			done++
			onLayer(min(done, total), total)
		})
		defer m.runner.Sched.SetNodeCallback("", nil)
	}
	err = m.runner.Run(g, func() error {
		if err := pix.SetFloat32(in.crop(rows, cols, p)); err != nil {
			return err
		}
		return pos.SetInt32(PositionIDs(rows, cols, m.Vision.PosSide))
	}, func() error {
		var err error
		if f.Embeddings, err = out.Float32s(); err != nil {
			return err
		}
		if keepIntermediate {
			if f.Vision, err = vis.Float32s(); err != nil {
				return err
			}
			if f.Projection, err = proj.Float32s(); err != nil {
				return err
			}
		}
		return nm.emit()
	})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// RunPerceiver runs the perceiver resampler alone on a context of n patch rows ([n][textHidden], e.g. a modality
// projection output) and returns the [latents][textHidden] features. Used by benchmarks and checks.
func (m *Model) RunPerceiver(context []float32, n int) ([]float32, error) {
	if !m.HasVision {
		return nil, errors.New("graph: the model has no mmproj (vision) file")
	}
	th := m.Connector.TextHidden
	if n <= 0 || len(context) != n*th {
		return nil, fmt.Errorf("graph: perceiver context of %d values, want %d×%d", len(context), n, th)
	}
	ctx := ggml.NewContext(graphSize, graphSize)
	defer ctx.Close()
	var in, out ggml.Tensor
	var g *ggml.Graph
	if err := ggml.Catch(func() {
		in = ctx.NewTensor(ggml.TypeF32, th, n).SetName("inp.context").SetInput()
		out = m.conn.Resample(ctx, in, nil).SetOutput()
		g = ctx.NewGraph(graphSize)
		g.Build(out)
	}); err != nil {
		return nil, fmt.Errorf("graph: building the perceiver graph: %w", err)
	}
	var res []float32
	err := m.runner.Run(g, func() error { return in.SetFloat32(context) }, func() error {
		var err error
		res, err = out.Float32s()
		return err
	})
	return res, err
}

// checkImage checks an image input against the model (a vision tower, pixel count, real size, at least one patch,
// the scratch memory of its encode) and returns its patch grid.
func (m *Model) checkImage(in ImageInput) (rows, cols int, err error) {
	if !m.HasVision {
		return 0, 0, errors.New("graph: the model has no mmproj (vision) file")
	}
	p := m.Vision.Patch
	h, w := in.H, in.W
	if h <= 0 || w <= 0 || len(in.Pixels) != 3*h*w || in.RealH <= 0 || in.RealW <= 0 || in.RealH > h || in.RealW > w {
		return 0, 0, fmt.Errorf("graph: image of %d×%d (real %d×%d) with %d values, want %d", w, h, in.RealW, in.RealH, len(in.Pixels), 3*h*w)
	}
	rows, cols = in.PatchGrid(p)
	if rows == 0 || cols == 0 {
		return 0, 0, fmt.Errorf("graph: image of %d×%d is smaller than one %d×%d patch", w, h, p, p)
	}
	if err := checkMemory(m.Device, fmt.Sprintf("encoding a %d×%d-patch image", cols, rows),
		imageScratchBytes(m.Vision, m.Connector, rows*cols)); err != nil {
		return 0, 0, err
	}
	return rows, cols, nil
}
