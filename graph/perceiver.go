package graph

import (
	"fmt"

	"github.com/idefics2-go/idefics2/ggml"
)

// PerceiverLayer is one Idefics2PerceiverLayer: latents attend to [context; latents], then a SwiGLU MLP.
type PerceiverLayer struct {
	LatentsNorm RMSNorm `gguf:"ln_latents"`
	ContextNorm RMSNorm `gguf:"ln_context"`
	Query       Linear  `gguf:"attn_q"`
	Key         Linear  `gguf:"attn_k"`
	Value       Linear  `gguf:"attn_v"`
	Output      Linear  `gguf:"attn_out"`
	PostNorm    RMSNorm `gguf:"ln_post"`
	MLP         FFN     `gguf:""`
}

// Perceiver is Idefics2PerceiverResampler. GGUF prefix "mm.perceiver".
type Perceiver struct {
	Latents ggml.Tensor      `gguf:"latents"` // [hidden, latents]
	Layers  []PerceiverLayer `gguf:"blk"`
	Norm    RMSNorm          `gguf:"norm"`
}

// Connector is Idefics2Connector: the modality projection (SwiGLU into the text width) and the perceiver
// resampler. GGUF prefix "mm".
type Connector struct {
	Projection SwiGLU    `gguf:""` // mm.gate, mm.up, mm.down
	Perceiver  Perceiver `gguf:"perceiver"`
	opts       ConnectorOptions
	visHidden  int
	flashAttn  bool
	padGEMM    bool // pad attention operands for the CPU's tiled GEMM (see attend)
	fusedAttn  bool // attention through ggml.FusedAttention (see attendUnmasked)
}

func (c *Connector) check(sc *shapeCheck) {
	o := c.opts
	sc.want("mm.gate.weight", c.Projection.Gate.Weight, c.visHidden, o.FFN)
	sc.want("mm.up.weight", c.Projection.Up.Weight, c.visHidden, o.FFN)
	sc.want("mm.down.weight", c.Projection.Down.Weight, o.FFN, o.TextHidden)
	sc.want("mm.perceiver.latents", c.Perceiver.Latents, o.TextHidden, o.Latents)
	for i, l := range c.Perceiver.Layers {
		p := fmt.Sprintf("mm.perceiver.blk.%d.", i)
		sc.want(p+"ln_latents.weight", l.LatentsNorm.Weight, o.TextHidden)
		sc.want(p+"ln_context.weight", l.ContextNorm.Weight, o.TextHidden)
		sc.want(p+"attn_q.weight", l.Query.Weight, o.TextHidden, o.Heads*o.HeadDim)
		sc.want(p+"attn_k.weight", l.Key.Weight, o.TextHidden, o.KVHeads*o.HeadDim)
		sc.want(p+"attn_v.weight", l.Value.Weight, o.TextHidden, o.KVHeads*o.HeadDim)
		sc.want(p+"attn_out.weight", l.Output.Weight, o.Heads*o.HeadDim, o.TextHidden)
		sc.want(p+"ln_post.weight", l.PostNorm.Weight, o.TextHidden)
		sc.want(p+"ffn_gate.weight", l.MLP.Gate.Weight, o.TextHidden, o.PerceiverFFN)
		sc.want(p+"ffn_up.weight", l.MLP.Up.Weight, o.TextHidden, o.PerceiverFFN)
		sc.want(p+"ffn_down.weight", l.MLP.Down.Weight, o.PerceiverFFN, o.TextHidden)
	}
	sc.want("mm.perceiver.norm.weight", c.Perceiver.Norm.Weight, o.TextHidden)
}

// Project is the modality projection (Idefics2MLP): vision states [visHidden, n] → [textHidden, n].
func (c *Connector) Project(ctx *ggml.Context, h ggml.Tensor) ggml.Tensor {
	return c.Projection.Forward(ctx, h).SetName("conn.modality_projection")
}

// Resample runs the perceiver (Idefics2PerceiverResampler.forward) on one image's context [textHidden, n]
// (all patches real) and returns the image's features [textHidden, latents].
func (c *Connector) Resample(ctx *ggml.Context, context ggml.Tensor) ggml.Tensor {
	o := c.opts
	n := context.Ne(1)
	lat := c.Perceiver.Latents
	scale := float32(1 / sqrt(float64(o.HeadDim)))
	for i, l := range c.Perceiver.Layers {
		res := lat
		ln := l.LatentsNorm.Forward(ctx, lat, o.PerceiverEps)
		cn := l.ContextNorm.Forward(ctx, context, o.PerceiverEps)
		q := l.Query.Forward(ctx, ln).Reshape(ctx, o.HeadDim, o.Heads, o.Latents)
		x := cn.Concat(ctx, ln, 1) // [hidden, n + latents]: context first, then the normalized latents
		k := l.Key.Forward(ctx, x).Reshape(ctx, o.HeadDim, o.KVHeads, n+o.Latents)
		v := l.Value.Forward(ctx, x).Reshape(ctx, o.HeadDim, o.KVHeads, n+o.Latents)
		z := attendUnmasked(ctx, q, k, v, scale, c.flashAttn, c.padGEMM, c.fusedAttn)
		lat = res.Add(ctx, l.Output.Forward(ctx, z))
		res = lat
		lat = res.Add(ctx, l.MLP.Forward(ctx, l.PostNorm.Forward(ctx, lat, o.PerceiverEps))).SetName(fmt.Sprintf("perceiver.blk.%d", i))
	}
	return c.Perceiver.Norm.Forward(ctx, lat, o.PerceiverEps).SetName("conn.output")
}
