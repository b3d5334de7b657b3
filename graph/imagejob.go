package graph

import (
	"errors"
	"fmt"

	"github.com/idefics2-go/idefics2/ggml"
)

// ImagePhase is the kind of work an ImageJob's next piece does; the pieces of one kind cost about the same per row.
type ImagePhase int

// Image job phases, in order.
const (
	PhaseEmbed    ImagePhase = iota // patch and position embeddings, all rows at once
	PhaseKV                         // a vision layer's keys and values, over a range of rows
	PhaseLayer                      // a vision layer for a range of rows (queries, attention over all keys, MLP)
	PhaseProject                    // post layer norm and modality projection over a range of rows
	PhaseResample                   // the perceiver over every row
	PhaseDone
)

// NumImagePhases is the number of phases (PhaseDone excluded).
const NumImagePhases = int(PhaseDone)

// ImageJob encodes one (sub-)image in pieces, so that a caller can run other graphs between them (decoder steps
// of running sequences). Every op of the vision tower but attention works row by row (norms, projections, GELU
// MLP, residual adds), and attention's queries are independent given every row's keys and values; so a layer runs
// as a pass that computes the keys and values of all rows (in row ranges), then passes over ranges of rows that
// compute their queries, attend all keys, and finish the layer for those rows. The modality projection is split by
// rows too; the perceiver reads every row and runs last, whole. Hidden states stay in Go memory between pieces
// (F32, so nothing is rounded). A range never has a single row, so that each product takes the same kernel and
// float order for any range size (see Batch): the features equal those of EncodeImage for any sequence of ranges.
type ImageJob struct {
	m          *Model
	in         ImageInput
	rows, cols int
	n          int // patches
	phase      ImagePhase
	layer      int
	next       int // first row of the next range
	h, hNext   []float32
	k, v       []float32
	proj       []float32
	out        []float32
	ctx        *ggml.Context
	runner     *ggml.Runner // computes the pieces; nil: the model's
}

// NewImageJob checks in (as EncodeImage does) and returns a job ready for its first piece.
func (m *Model) NewImageJob(in ImageInput) (*ImageJob, error) {
	rows, cols, err := m.checkImage(in)
	if err != nil {
		return nil, err
	}
	return &ImageJob{m: m, in: in, rows: rows, cols: cols, n: rows * cols, ctx: ggml.NewContext(graphSize, graphSize)}, nil
}

// Close frees the job's graph scratch. Idempotent.
func (j *ImageJob) Close() {
	if j != nil && j.ctx != nil {
		j.ctx.Close()
		j.ctx = nil
	}
}

// SetRunner makes the job compute its next pieces on r (a runner from Model.NewImageRunner, which may compute while
// the model's own runner computes a decoder step in another goroutine); nil returns to the model's runner. A job is
// used by one goroutine at a time.
func (j *ImageJob) SetRunner(r *ggml.Runner) { j.runner = r }

// Phase is the kind of the next piece (PhaseDone when the features are ready).
func (j *ImageJob) Phase() ImagePhase { return j.phase }

// Patches is the number of rows (real patches) of the image.
func (j *ImageJob) Patches() int { return j.n }

// Features returns the encoded image once Phase is PhaseDone (nil before).
func (j *ImageJob) Features() *ImageFeatures {
	if j.phase != PhaseDone {
		return nil
	}
	return &ImageFeatures{Rows: j.rows, Cols: j.cols, Embeddings: j.out}
}

// Step runs the next piece over at most maxRows rows (at least 2; the embedding and the perceiver take every row)
// and returns the number of rows it covered.
func (j *ImageJob) Step(maxRows int) (int, error) {
	if j.ctx == nil {
		return 0, errors.New("graph: the image job is closed")
	}
	if j.phase == PhaseDone {
		return 0, nil
	}
	// A range of at least 2 rows, and never leaving a single row for the last range.
	a := j.next
	b := min(j.n, a+max(maxRows, 2))
	if j.n-b == 1 {
		b = j.n
	}
	switch j.phase {
	case PhaseEmbed:
		if err := j.embed(); err != nil {
			return 0, err
		}
		j.phase = PhaseKV
		return j.n, nil
	case PhaseKV:
		if err := j.kv(a, b); err != nil {
			return 0, err
		}
		j.advance(b, PhaseLayer)
	case PhaseLayer:
		if err := j.layerRows(a, b); err != nil {
			return 0, err
		}
		if b == j.n {
			j.h, j.hNext = j.hNext, j.h
			j.layer++
			j.next = 0
			if j.layer == len(j.m.vision.Layers) {
				j.phase = PhaseProject
			} else {
				j.phase = PhaseKV
			}
			return b - a, nil
		}
		j.next = b
	case PhaseProject:
		if err := j.project(a, b); err != nil {
			return 0, err
		}
		j.advance(b, PhaseResample)
	case PhaseResample:
		if err := j.resample(); err != nil {
			return 0, err
		}
		j.phase = PhaseDone
		j.h, j.hNext, j.k, j.v, j.proj = nil, nil, nil, nil, nil
		return j.n, nil
	}
	return b - a, nil
}

// advance moves to row b, or to phase next when b is the last row.
func (j *ImageJob) advance(b int, next ImagePhase) {
	if b == j.n {
		j.next, j.phase = 0, next
		return
	}
	j.next = b
}

// run builds one piece's graph with build (inside ggml.Catch), computes it and reads its outputs.
func (j *ImageJob) run(what string, build func(ctx *ggml.Context, g *ggml.Graph), set, read func() error) error {
	ctx := j.ctx
	ctx.Reset()
	var g *ggml.Graph
	err := ggml.Catch(func() {
		g = ctx.NewGraph(graphSize)
		build(ctx, g)
	})
	if err != nil {
		return fmt.Errorf("graph: building the image %s graph: %w", what, err)
	}
	r := j.runner
	if r == nil {
		r = j.m.runner
	}
	return r.Run(g, set, read)
}

func (j *ImageJob) embed() error {
	m, p := j.m, j.m.Vision.Patch
	var pix, pos, out ggml.Tensor
	return j.run("embedding", func(ctx *ggml.Context, g *ggml.Graph) {
		pix = ctx.NewTensor(ggml.TypeF32, j.cols*p, j.rows*p, 3, 1).SetInput()
		pos = ctx.NewTensor(ggml.TypeI32, j.n).SetInput()
		out = m.vision.embed(ctx, pix, pos, nil).SetOutput()
		g.Build(out)
	}, func() error {
		if err := pix.SetFloat32(j.in.crop(j.rows, j.cols, p)); err != nil {
			return err
		}
		return pos.SetInt32(PositionIDs(j.rows, j.cols, m.Vision.PosSide))
	}, func() error {
		var err error
		j.h, err = out.Float32s()
		j.hNext = make([]float32, len(j.h))
		return err
	})
}

// kv computes the current layer's keys and values of rows [a, b).
func (j *ImageJob) kv(a, b int) error {
	l := &j.m.vision.Layers[j.layer]
	hid := j.m.Vision.Hidden
	if j.k == nil {
		j.k, j.v = make([]float32, j.n*hid), make([]float32, j.n*hid)
	}
	var x, k, v ggml.Tensor
	return j.run("keys", func(ctx *ggml.Context, g *ggml.Graph) {
		x = ctx.NewTensor(ggml.TypeF32, hid, b-a).SetInput()
		h := l.Norm1.Forward(ctx, x, l.eps)
		k = l.Attn.Key.Forward(ctx, h).SetOutput()
		v = l.Attn.Value.Forward(ctx, h).SetOutput()
		g.Build(k)
		g.Build(v)
	}, func() error { return x.SetFloat32(j.h[a*hid : b*hid]) }, func() error {
		if err := k.ReadFloat32(j.k[a*hid : b*hid]); err != nil {
			return err
		}
		return v.ReadFloat32(j.v[a*hid : b*hid])
	})
}

// layerRows finishes the current layer for rows [a, b): their queries attend every row's keys and values, then the
// output projection, residual and MLP (Idefics2EncoderLayer.forward restricted to those rows).
func (j *ImageJob) layerRows(a, b int) error {
	l := &j.m.vision.Layers[j.layer]
	at := &l.Attn
	hid := j.m.Vision.Hidden
	var x, k, v, out ggml.Tensor
	return j.run("layer", func(ctx *ggml.Context, g *ggml.Graph) {
		x = ctx.NewTensor(ggml.TypeF32, hid, b-a).SetInput()
		k = ctx.NewTensor(ggml.TypeF32, at.headDim, at.kvHeads, j.n).SetInput()
		v = ctx.NewTensor(ggml.TypeF32, at.headDim, at.kvHeads, j.n).SetInput()
		h := l.Norm1.Forward(ctx, x, l.eps)
		q := at.Query.Forward(ctx, h).Reshape(ctx, at.headDim, at.heads, b-a)
		h = at.Output.Forward(ctx, attendUnmasked(ctx, q, k, v, at.scale, at.kernel))
		y := x.Add(ctx, h)
		h = l.MLP.Forward(ctx, l.Norm2.Forward(ctx, y, l.eps))
		out = y.Add(ctx, h).SetOutput()
		g.Build(out)
	}, func() error {
		if err := x.SetFloat32(j.h[a*hid : b*hid]); err != nil {
			return err
		}
		if err := k.SetFloat32(j.k); err != nil {
			return err
		}
		return v.SetFloat32(j.v)
	}, func() error { return out.ReadFloat32(j.hNext[a*hid : b*hid]) })
}

// project runs the post layer norm and the modality projection on rows [a, b).
func (j *ImageJob) project(a, b int) error {
	m := j.m
	hid, th := m.Vision.Hidden, m.Connector.TextHidden
	if j.proj == nil {
		j.proj = make([]float32, j.n*th)
	}
	var x, out ggml.Tensor
	return j.run("projection", func(ctx *ggml.Context, g *ggml.Graph) {
		x = ctx.NewTensor(ggml.TypeF32, hid, b-a).SetInput()
		out = m.conn.Project(ctx, m.vision.PostNorm.Forward(ctx, x, m.Vision.Eps), nil).SetOutput()
		g.Build(out)
	}, func() error { return x.SetFloat32(j.h[a*hid : b*hid]) }, func() error { return out.ReadFloat32(j.proj[a*th : b*th]) })
}

// resample runs the perceiver on every projected row.
func (j *ImageJob) resample() error {
	m := j.m
	th := m.Connector.TextHidden
	var x, out ggml.Tensor
	return j.run("perceiver", func(ctx *ggml.Context, g *ggml.Graph) {
		x = ctx.NewTensor(ggml.TypeF32, th, j.n).SetInput()
		out = m.conn.Resample(ctx, x, nil).SetOutput()
		g.Build(out)
	}, func() error { return x.SetFloat32(j.proj) }, func() error {
		var err error
		j.out, err = out.Float32s()
		return err
	})
}
