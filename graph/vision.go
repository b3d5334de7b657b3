package graph

import (
	"fmt"

	"github.com/idefics2-go/idefics2/ggml"
)

// VisionLayer is one pre-norm encoder layer of Idefics2VisionTransformer (Idefics2EncoderLayer).
type VisionLayer struct {
	Norm1  LayerNorm `gguf:"ln1"`
	Query  Linear    `gguf:"attn_q"`
	Key    Linear    `gguf:"attn_k"`
	Value  Linear    `gguf:"attn_v"`
	Output Linear    `gguf:"attn_out"`
	Norm2  LayerNorm `gguf:"ln2"`
	Up     Linear    `gguf:"ffn_up"`   // HF mlp.fc1
	Down   Linear    `gguf:"ffn_down"` // HF mlp.fc2
}

// VisionModel is the SigLIP-style vision tower (Idefics2VisionTransformer): patch and position embeddings,
// encoder layers and the post layer norm. GGUF prefix "v".
type VisionModel struct {
	PatchEmbd  Linear        `gguf:"patch_embd"` // weight [p, p, 3, hidden], bias [hidden]
	PosEmbd    ggml.Tensor   `gguf:"position_embd.weight"`
	Layers     []VisionLayer `gguf:"blk"`
	PostNorm   LayerNorm     `gguf:"post_ln"`
	opts       VisionOptions
	exactGELU  bool
	flashAttn  bool
	padGEMM    bool // pad attention operands for the CPU's tiled GEMM (see attend)
	fusedAttn  bool // attention through ggml.FusedAttention (see attendUnmasked)
	namePrefix string
}

func (m *VisionModel) check(c *shapeCheck) {
	o := m.opts
	c.want("v.patch_embd.weight", m.PatchEmbd.Weight, o.Patch, o.Patch, 3, o.Hidden)
	c.want("v.patch_embd.bias", m.PatchEmbd.Bias, o.Hidden)
	c.want("v.position_embd.weight", m.PosEmbd, o.Hidden, o.PosSide*o.PosSide)
	for i, l := range m.Layers {
		p := fmt.Sprintf("v.blk.%d.", i)
		for _, n := range []struct {
			name string
			ln   LayerNorm
		}{{"ln1", l.Norm1}, {"ln2", l.Norm2}} {
			c.want(p+n.name+".weight", n.ln.Weight, o.Hidden)
			c.want(p+n.name+".bias", n.ln.Bias, o.Hidden)
		}
		for _, n := range []struct {
			name string
			lin  Linear
		}{{"attn_q", l.Query}, {"attn_k", l.Key}, {"attn_v", l.Value}, {"attn_out", l.Output}} {
			c.want(p+n.name+".weight", n.lin.Weight, o.Hidden, o.Hidden)
			c.want(p+n.name+".bias", n.lin.Bias, o.Hidden)
		}
		c.want(p+"ffn_up.weight", l.Up.Weight, o.Hidden, o.FFN)
		c.want(p+"ffn_up.bias", l.Up.Bias, o.FFN)
		c.want(p+"ffn_down.weight", l.Down.Weight, o.FFN, o.Hidden)
		c.want(p+"ffn_down.bias", l.Down.Bias, o.Hidden)
	}
	c.want("v.post_ln.weight", m.PostNorm.Weight, o.Hidden)
	c.want("v.post_ln.bias", m.PostNorm.Bias, o.Hidden)
}

// Forward encodes one image. pixels is [W, H, 3, 1] (channels-first planes, W = cols·patch, H = rows·patch: the
// image's real region cropped to whole patches) and posIDs I32 [rows·cols]. Running each image alone at its own
// size gives HF's padded-batch result, because padded patches are masked out of every attention (IDEFICS2.md
// §5.9). Returns the post-layernorm hidden states [hidden, rows·cols] (Idefics2VisionTransformer.forward).
func (m *VisionModel) Forward(ctx *ggml.Context, pixels, posIDs ggml.Tensor) ggml.Tensor {
	o := m.opts
	// Patch embedding: conv p×p stride p as im2col + matmul, in F32 (ggml_conv_2d's im2col is F16).
	cols := m.PatchEmbd.Weight.Im2Col(ctx, pixels, o.Patch, o.Patch, ggml.TypeF32) // [3·p·p, cols, rows, 1]
	nPatches := cols.Ne(1) * cols.Ne(2)
	cols = cols.Reshape(ctx, cols.Ne(0), nPatches)
	kernel := m.PatchEmbd.Weight.Reshape(ctx, o.Patch*o.Patch*3, o.Hidden)
	h := kernel.MulMat(ctx, cols).Add(ctx, m.PatchEmbd.Bias) // [hidden, n], row-major patch order
	h = h.Add(ctx, m.PosEmbd.GetRows(ctx, posIDs)).SetName("vis.embeddings")

	hd := o.Hidden / o.Heads
	scale := float32(1 / sqrt(float64(hd)))
	for i, l := range m.Layers {
		res := h
		a := l.Norm1.Forward(ctx, h, o.Eps)
		q := l.Query.Forward(ctx, a).Reshape(ctx, hd, o.Heads, nPatches)
		k := l.Key.Forward(ctx, a).Reshape(ctx, hd, o.Heads, nPatches)
		v := l.Value.Forward(ctx, a).Reshape(ctx, hd, o.Heads, nPatches)
		z := attendUnmasked(ctx, q, k, v, scale, m.flashAttn, m.padGEMM, m.fusedAttn)
		h = res.Add(ctx, l.Output.Forward(ctx, z))
		res = h
		f := l.Up.Forward(ctx, l.Norm2.Forward(ctx, h, o.Eps))
		if m.exactGELU {
			f = f.GELUTanhExact(ctx)
		} else {
			f = f.GELU(ctx)
		}
		h = res.Add(ctx, l.Down.ForwardGEMM(ctx, f, m.padGEMM)).SetName(fmt.Sprintf("vis.blk.%d", i))
	}
	return m.PostNorm.Forward(ctx, h, o.Eps).SetName("vis.last_hidden_state")
}
