package graph

import (
	"fmt"

	"github.com/idefics2-go/idefics2/ggml"
)

// DecoderLayer is one MistralDecoderLayer. GGUF names follow llama.cpp (blk.N.*); q/k rows are permuted by the
// converter so that ggml's normal (adjacent-pair) RoPE equals HF's rotate-half RoPE.
type DecoderLayer struct {
	AttnNorm RMSNorm `gguf:"attn_norm"`
	Query    Linear  `gguf:"attn_q"`
	Key      Linear  `gguf:"attn_k"`
	Value    Linear  `gguf:"attn_v"`
	Output   Linear  `gguf:"attn_output"`
	FFNNorm  RMSNorm `gguf:"ffn_norm"`
	MLP      FFN     `gguf:""`
}

// Decoder is MistralForCausalLM in llama.cpp's `llama` layout.
type Decoder struct {
	TokEmbd ggml.Tensor    `gguf:"token_embd.weight"`
	Layers  []DecoderLayer `gguf:"blk"`
	OutNorm RMSNorm        `gguf:"output_norm"`
	Output  Linear         `gguf:"output,optional"` // absent when tied to token_embd
	opts    TextOptions
	flash   bool
	decAttn bool     // generation steps (up to decodeAttnTokens tokens) take ggml.DecodeAttention on the CPU
	names   []string // "dec.blk.N", made once so graph building allocates nothing per token
}

func (d *Decoder) layerName(i int) string {
	if d.names == nil {
		d.names = make([]string, len(d.Layers))
		for j := range d.names {
			d.names[j] = fmt.Sprintf("dec.blk.%d", j)
		}
	}
	return d.names[i]
}

func (d *Decoder) check(c *shapeCheck) {
	o := d.opts
	c.want("token_embd.weight", d.TokEmbd, o.Hidden, o.VocabSize)
	for i, l := range d.Layers {
		p := fmt.Sprintf("blk.%d.", i)
		c.want(p+"attn_norm.weight", l.AttnNorm.Weight, o.Hidden)
		c.want(p+"attn_q.weight", l.Query.Weight, o.Hidden, o.Heads*o.HeadDim)
		c.want(p+"attn_k.weight", l.Key.Weight, o.Hidden, o.KVHeads*o.HeadDim)
		c.want(p+"attn_v.weight", l.Value.Weight, o.Hidden, o.KVHeads*o.HeadDim)
		c.want(p+"attn_output.weight", l.Output.Weight, o.Heads*o.HeadDim, o.Hidden)
		c.want(p+"ffn_norm.weight", l.FFNNorm.Weight, o.Hidden)
		c.want(p+"ffn_gate.weight", l.MLP.Gate.Weight, o.Hidden, o.FFN)
		c.want(p+"ffn_up.weight", l.MLP.Up.Weight, o.Hidden, o.FFN)
		c.want(p+"ffn_down.weight", l.MLP.Down.Weight, o.FFN, o.Hidden)
	}
	c.want("output_norm.weight", d.OutNorm.Weight, o.Hidden)
	if tail := d.Output.Tail; !tail.IsNil() {
		// Split for repacking (Weights.Tail): the head and the tail rows together make the vocabulary.
		c.want("output.weight", d.Output.Weight, o.Hidden, o.VocabSize-tail.Ne(1))
		c.want("output.weight", tail, o.Hidden, tail.Ne(1))
	} else {
		c.want("output.weight", d.Output.Weight, o.Hidden, o.VocabSize)
	}
}

// decodeAttnTokens is the most tokens per step that take the fused decode attention: its work items are (token, key
// head), each reading the head's keys once, so it is made for generation; prompts keep ggml's products (tiled GEMM).
const decodeAttnTokens = 8

// decodeInputs are the input tensors of one decoder step (a chunk of tokens appended at position nPast).
type decodeInputs struct {
	ids      ggml.Tensor // I32 [n]
	images   ggml.Tensor // F32 [hidden, nImg] or nil
	selector ggml.Tensor // I32 [n]: row of [tokens; images] for each position (nil without images)
	pos      ggml.Tensor // I32 [n]
	mask     ggml.Tensor // [nKV, n] F32 (F16 for flash attention)
}

// Forward appends n tokens at position nPast to the cache and returns logits [vocab, n] (or [vocab, 1] for the
// last position when lastOnly). The cache writes are expanded into g before the attention that reads them.
// Mirrors MistralForCausalLM.forward with the Idefics2 merge of image features at `<image>` positions.
func (d *Decoder) Forward(ctx *ggml.Context, g *ggml.Graph, in decodeInputs, cache *KVCache, nPast int, lastOnly bool) ggml.Tensor {
	o := d.opts
	n := in.ids.Ne(0)
	nKV := nPast + n
	h := d.TokEmbd.GetRows(ctx, in.ids) // [hidden, n]
	if !in.images.IsNil() {
		h = h.Concat(ctx, in.images, 1).GetRows(ctx, in.selector)
	}
	h = h.SetName("dec.embeddings")
	scale := float32(1 / sqrt(float64(o.HeadDim)))
	rope := ggml.RoPEOptions{Dims: o.RoPEDims, Mode: ggml.RoPENormal, Base: o.RoPEBase, CtxOrig: o.ContextLength}
	kvWidth := o.HeadDim * o.KVHeads
	for il, l := range d.Layers {
		res := h
		a := l.AttnNorm.Forward(ctx, h, o.Eps)
		var q, k, v ggml.Tensor
		if ys, ok := fusedProduct(ctx, a, l.Query, l.Key, l.Value); ok {
			// One product for q, k and v: strided views of its rows.
			q = ys[0].View(ctx, 0, []int{o.HeadDim, o.Heads, n}, []int{o.HeadDim * 4, ys[0].Nb(1)})
			k = ys[1].View(ctx, 0, []int{o.HeadDim, o.KVHeads, n}, []int{o.HeadDim * 4, ys[1].Nb(1)})
			v = ys[2]
		} else {
			q = l.Query.Forward(ctx, a).Reshape(ctx, o.HeadDim, o.Heads, n)
			k = l.Key.Forward(ctx, a).Reshape(ctx, o.HeadDim, o.KVHeads, n)
			v = l.Value.Forward(ctx, a)
		}
		q = q.RoPE(ctx, in.pos, rope)
		k = k.RoPE(ctx, in.pos, rope)
		kc, vc := cache.K[il], cache.V[il]
		row := kc.Nb(1)
		g.Build(k.Reshape(ctx, kvWidth, n).Copy(ctx, kc.View(ctx, nPast*row, []int{kvWidth, n}, []int{row})))
		esz := kc.Type().TypeSize()
		kAll := kc.View(ctx, 0, []int{o.HeadDim, o.KVHeads, nKV}, []int{o.HeadDim * esz, row})
		var z ggml.Tensor
		if cache.VTrans {
			// V^T [Size, kvWidth]: the new positions are columns nPast…nPast+n-1.
			vrow := vc.Nb(1)
			g.Build(v.Transpose(ctx).Copy(ctx, vc.View(ctx, nPast*esz, []int{n, kvWidth}, []int{vrow})))
			vt := vc.View(ctx, 0, []int{nKV, o.HeadDim, o.KVHeads}, []int{vrow, o.HeadDim * vrow})
			if d.decAttn && n <= decodeAttnTokens && (kc.Type() == ggml.TypeF16 || kc.Type() == ggml.TypeF32) {
				z = q.DecodeAttention(ctx, kAll, vt, in.mask, scale)
			} else {
				z = attendT(ctx, q, kAll, vt, in.mask, scale)
			}
		} else {
			g.Build(v.Copy(ctx, vc.View(ctx, nPast*row, []int{kvWidth, n}, []int{row})))
			vAll := vc.View(ctx, 0, []int{o.HeadDim, o.KVHeads, nKV}, []int{o.HeadDim * esz, row})
			z = attend(ctx, q, kAll, vAll, in.mask, scale, d.flash, false)
		}
		h = res.Add(ctx, l.Output.Forward(ctx, z))
		res = h
		h = res.Add(ctx, l.MLP.Forward(ctx, l.FFNNorm.Forward(ctx, h, o.Eps))).SetName(d.layerName(il))
	}
	if lastOnly && n > 1 {
		h = h.View(ctx, (n-1)*h.Nb(1), []int{o.Hidden, 1}, []int{h.Nb(1)})
	}
	h = d.OutNorm.Forward(ctx, h, o.Eps)
	if d.Output.Weight.IsNil() {
		return d.TokEmbd.MulMat(ctx, h).SetName("dec.logits")
	}
	return d.Output.Forward(ctx, h).SetName("dec.logits")
}

// stepWeights lists the weight tensors one decoding step reads in full: every layer's matrices and norms, the final
// norm and the output projection (token_embd only when it is the output projection; otherwise a step reads one of
// its rows).
func (d *Decoder) stepWeights() []ggml.Tensor {
	var ts []ggml.Tensor
	lin := func(l Linear) { ts = append(ts, l.Weight, l.Bias, l.Tail) }
	for _, l := range d.Layers {
		ts = append(ts, l.AttnNorm.Weight, l.FFNNorm.Weight)
		for _, m := range []Linear{l.Query, l.Key, l.Value, l.Output, l.MLP.Gate, l.MLP.Up, l.MLP.Down} {
			lin(m)
		}
	}
	ts = append(ts, d.OutNorm.Weight)
	if d.Output.Weight.IsNil() {
		ts = append(ts, d.TokEmbd)
	} else {
		lin(d.Output)
	}
	return ts
}
