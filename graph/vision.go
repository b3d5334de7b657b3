package graph

import (
	"github.com/idefics2-go/idefics2/ggml"
)

// VisionLayer is one pre-norm encoder layer of Idefics2VisionTransformer (Idefics2EncoderLayer).
type VisionLayer struct {
	Norm1 LayerNorm // ln1
	Attn  Attention // attn_q, attn_k, attn_v, attn_out (with biases)
	Norm2 LayerNorm // ln2
	MLP   GELUMLP   // ffn_up (HF fc1), ffn_down (HF fc2)
	eps   float32
	names layerNames
}

// Forward maps the hidden states x [hidden, n] through the layer (Idefics2EncoderLayer.forward).
func (l *VisionLayer) Forward(ctx *ggml.Context, x ggml.Tensor, nm *namer) ggml.Tensor {
	h := nm.set(ctx, l.Norm1.Forward(ctx, x, l.eps), l.names[nameAttnNorm])
	h = nm.set(ctx, l.Attn.Forward(ctx, h, h), l.names[nameAttnOut])
	x = nm.set(ctx, x.Add(ctx, h), l.names[nameFFNInp])
	h = nm.set(ctx, l.MLP.Forward(ctx, l.Norm2.Forward(ctx, x, l.eps)), l.names[nameFFNOut])
	return nm.set(ctx, x.Add(ctx, h), l.names[nameLayerOut])
}

// VisionModel is the SigLIP-style vision tower (Idefics2VisionTransformer): patch and position embeddings,
// encoder layers and the post layer norm. GGUF prefix "v".
type VisionModel struct {
	PatchEmbd Linear // weight [p, p, 3, hidden] (a convolution kernel), bias [hidden]
	PosEmbd   ggml.Tensor
	Layers    []VisionLayer
	PostNorm  LayerNorm
	opts      VisionOptions
}

// bindVision binds the vision tower's weights, with their shapes from o.
func bindVision(b binder, o VisionOptions, gelu GELU, kern attnKernel) *VisionModel {
	m := &VisionModel{opts: o, Layers: make([]VisionLayer, o.Layers)}
	m.PatchEmbd.Weight = b.tensor("patch_embd.weight", o.Patch, o.Patch, 3, o.Hidden)
	m.PatchEmbd.Bias = b.tensor("patch_embd.bias", o.Hidden)
	m.PosEmbd = b.tensor("position_embd.weight", o.Hidden, o.PosSide*o.PosSide)
	for i := range m.Layers {
		lb := b.at("blk", i)
		l := &m.Layers[i]
		l.Norm1 = lb.layerNorm("ln1", o.Hidden)
		l.Attn = bindAttention(lb, o.Hidden, o.Heads, o.Heads, o.Hidden/o.Heads, true, "attn_out")
		l.Attn.kernel = kern
		l.Norm2 = lb.layerNorm("ln2", o.Hidden)
		l.MLP = GELUMLP{Up: lb.linear("ffn_up", o.Hidden, o.FFN, true), Down: lb.linear("ffn_down", o.FFN, o.Hidden, true),
			gelu: gelu, padGEMM: kern.padGEMM}
		l.eps, l.names = o.Eps, newLayerNames("vis", i)
	}
	m.PostNorm = b.layerNorm("post_ln", o.Hidden)
	return m
}

// Forward encodes one image. pixels is [W, H, 3, 1] (channels-first planes, W = cols·patch, H = rows·patch: the
// image's real region cropped to whole patches) and posIDs I32 [rows·cols]. Running each image alone at its own
// size gives HF's padded-batch result, because padded patches are masked out of every attention (IDEFICS2.md
// §5.9). Returns the post-layernorm hidden states [hidden, rows·cols] (Idefics2VisionTransformer.forward).
func (m *VisionModel) Forward(ctx *ggml.Context, pixels, posIDs ggml.Tensor, nm *namer) ggml.Tensor {
	h := m.embed(ctx, pixels, posIDs, nm)
	for i := range m.Layers {
		h = m.Layers[i].Forward(ctx, h, nm)
	}
	return nm.set(ctx, m.PostNorm.Forward(ctx, h, m.opts.Eps), "vis.last_hidden_state")
}

// embed is the patch and position embedding of Forward: [hidden, rows·cols].
func (m *VisionModel) embed(ctx *ggml.Context, pixels, posIDs ggml.Tensor, nm *namer) ggml.Tensor {
	o := m.opts
	// Patch embedding: conv p×p stride p as im2col + matmul, in F32 (ggml_conv_2d's im2col is F16).
	cols := m.PatchEmbd.Weight.Im2Col(ctx, pixels, o.Patch, o.Patch, ggml.TypeF32) // [3·p·p, cols, rows, 1]
	nPatches := cols.Ne(1) * cols.Ne(2)
	cols = cols.Reshape(ctx, cols.Ne(0), nPatches)
	kernel := m.PatchEmbd.Weight.Reshape(ctx, o.Patch*o.Patch*3, o.Hidden)
	h := kernel.MulMat(ctx, cols).Add(ctx, m.PatchEmbd.Bias) // [hidden, n], row-major patch order
	return nm.set(ctx, h.Add(ctx, m.PosEmbd.GetRows(ctx, posIDs)), "vis.embeddings")
}
