package graph

import (
	"github.com/idefics2-go/idefics2/ggml"
)

// PerceiverLayer is one Idefics2PerceiverLayer: the latents attend to [context; latents], then a SwiGLU MLP.
type PerceiverLayer struct {
	LatentsNorm RMSNorm   // ln_latents
	ContextNorm RMSNorm   // ln_context
	Attn        Attention // attn_q, attn_k, attn_v, attn_out
	PostNorm    RMSNorm   // ln_post
	MLP         SwiGLU    // ffn_gate, ffn_up, ffn_down
	eps         float32
	names       layerNames
}

// Forward maps the latents [hidden, latents] given the image's context [hidden, n] (Idefics2PerceiverLayer.forward).
func (l *PerceiverLayer) Forward(ctx *ggml.Context, latents, context ggml.Tensor, nm *namer) ggml.Tensor {
	ln := nm.set(ctx, l.LatentsNorm.Forward(ctx, latents, l.eps), l.names[nameAttnNorm])
	cn := l.ContextNorm.Forward(ctx, context, l.eps)
	kv := cn.Concat(ctx, ln, 1) // [hidden, n + latents]: the context first, then the normalized latents
	h := nm.set(ctx, l.Attn.Forward(ctx, ln, kv), l.names[nameAttnOut])
	x := nm.set(ctx, latents.Add(ctx, h), l.names[nameFFNInp])
	h = nm.set(ctx, l.MLP.Forward(ctx, l.PostNorm.Forward(ctx, x, l.eps)), l.names[nameFFNOut])
	return nm.set(ctx, x.Add(ctx, h), l.names[nameLayerOut])
}

// Connector is Idefics2Connector: the modality projection (SwiGLU into the text width) and the perceiver
// resampler (Idefics2PerceiverResampler: latents, layers, final norm). GGUF prefix "mm".
type Connector struct {
	Projection SwiGLU // mm.gate, mm.up, mm.down
	Latents    ggml.Tensor
	Layers     []PerceiverLayer
	Norm       RMSNorm
	opts       ConnectorOptions
}

// bindConnector binds the connector's weights, with their shapes from o and the vision width visHidden.
func bindConnector(b binder, o ConnectorOptions, visHidden int, kern attnKernel) *Connector {
	c := &Connector{opts: o, Layers: make([]PerceiverLayer, o.Depth)}
	c.Projection = bindSwiGLU(b, "", visHidden, o.FFN, o.TextHidden)
	pb := b.at("perceiver")
	c.Latents = pb.tensor("latents", o.TextHidden, o.Latents)
	for i := range c.Layers {
		lb := pb.at("blk", i)
		l := &c.Layers[i]
		l.LatentsNorm = lb.rmsNorm("ln_latents", o.TextHidden)
		l.ContextNorm = lb.rmsNorm("ln_context", o.TextHidden)
		l.Attn = bindAttention(lb, o.TextHidden, o.Heads, o.KVHeads, o.HeadDim, false, "attn_out")
		l.Attn.kernel = kern
		l.PostNorm = lb.rmsNorm("ln_post", o.TextHidden)
		l.MLP = bindSwiGLU(lb, "ffn_", o.TextHidden, o.PerceiverFFN, o.TextHidden)
		l.eps, l.names = o.PerceiverEps, newLayerNames("perceiver", i)
	}
	c.Norm = pb.rmsNorm("norm", o.TextHidden)
	return c
}

// Project is the modality projection (Idefics2MLP): vision states [visHidden, n] → [textHidden, n].
func (c *Connector) Project(ctx *ggml.Context, h ggml.Tensor, nm *namer) ggml.Tensor {
	return nm.set(ctx, c.Projection.Forward(ctx, h), "conn.modality_projection")
}

// Resample runs the perceiver (Idefics2PerceiverResampler.forward) on one image's context [textHidden, n] (all
// patches real) and returns the image's features [textHidden, latents].
func (c *Connector) Resample(ctx *ggml.Context, context ggml.Tensor, nm *namer) ggml.Tensor {
	lat := c.Latents
	for i := range c.Layers {
		lat = c.Layers[i].Forward(ctx, lat, context, nm)
	}
	return nm.set(ctx, c.Norm.Forward(ctx, lat, c.opts.PerceiverEps), "conn.output")
}
