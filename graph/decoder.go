package graph

import (
	"github.com/idefics2-go/idefics2/ggml"
)

// DecoderLayer is one MistralDecoderLayer. GGUF names follow llama.cpp (blk.N.*); q/k rows are permuted by the
// converter so that ggml's normal (adjacent-pair) RoPE equals HF's rotate-half RoPE.
type DecoderLayer struct {
	AttnNorm RMSNorm   // attn_norm
	Attn     Attention // attn_q, attn_k, attn_v, attn_output
	FFNNorm  RMSNorm   // ffn_norm
	MLP      SwiGLU    // ffn_gate, ffn_up, ffn_down
	index    int
	eps      float32
	names    layerNames
}

// Decoder is MistralForCausalLM in llama.cpp's `llama` layout.
type Decoder struct {
	TokEmbd ggml.Tensor
	Layers  []DecoderLayer
	OutNorm RMSNorm
	Output  Linear // absent when tied to token_embd
	opts    TextOptions
	attn    decodeAttn
}

// decodeAttn is how the decoder's attention computes: ggml's flash attention, or the plain path (products on the
// cache as stored) with, where fused is set, this project's fused CPU kernel for generation steps.
type decodeAttn struct {
	flash, fused bool
	scoreBytes   int
}

// decodeAttnTokens is the most tokens per step that take the fused decode attention: its work items are (token,
// key head), each reading the head's keys once, so it is made for generation; prompts keep ggml's products (tiled
// GEMM).
const decodeAttnTokens = 8

// bindDecoder binds the text model's weights, with their shapes from o.
func bindDecoder(b binder, o TextOptions, attn decodeAttn) *Decoder {
	d := &Decoder{opts: o, attn: attn, Layers: make([]DecoderLayer, o.Layers)}
	d.TokEmbd = b.tensor("token_embd.weight", o.Hidden, o.VocabSize)
	for i := range d.Layers {
		lb := b.at("blk", i)
		l := &d.Layers[i]
		l.AttnNorm = lb.rmsNorm("attn_norm", o.Hidden)
		l.Attn = bindAttention(lb, o.Hidden, o.Heads, o.KVHeads, o.HeadDim, false, "attn_output")
		l.FFNNorm = lb.rmsNorm("ffn_norm", o.Hidden)
		l.MLP = bindSwiGLU(lb, "ffn_", o.Hidden, o.FFN, o.Hidden)
		l.index, l.eps, l.names = i, o.Eps, newLayerNames("dec", i)
	}
	d.OutNorm = b.rmsNorm("output_norm", o.Hidden)
	d.Output = b.linearOpt("output", o.Hidden, o.VocabSize, false, true)
	return d
}

// decodeInputs are the inputs of one decoder step: a chunk of tokens appended to the cache.
type decodeInputs struct {
	ids      ggml.Tensor // I32 [n]
	images   ggml.Tensor // F32 [hidden, nImg] or nil
	selector ggml.Tensor // I32 [n]: row of [tokens; images] for each position (nil without images)
	pos      ggml.Tensor // I32 [n]
	mask     ggml.Tensor // [nKV, n] F32 (F16 for flash attention)
	cache    *KVCache
	graph    *ggml.Graph
	rope     ggml.RoPEOptions
}

// Forward maps the hidden states x [hidden, n] through the layer (MistralDecoderLayer.forward).
func (l *DecoderLayer) Forward(ctx *ggml.Context, x ggml.Tensor, in *decodeInputs, attn decodeAttn, nm *namer) ggml.Tensor {
	h := nm.set(ctx, l.AttnNorm.Forward(ctx, x, l.eps), l.names[nameAttnNorm])
	h = nm.set(ctx, l.selfAttention(ctx, h, in, attn), l.names[nameAttnOut])
	x = nm.set(ctx, x.Add(ctx, h), l.names[nameFFNInp])
	h = nm.set(ctx, l.MLP.Forward(ctx, l.FFNNorm.Forward(ctx, x, l.eps)), l.names[nameFFNOut])
	return nm.set(ctx, x.Add(ctx, h), l.names[nameLayerOut])
}

// selfAttention is MistralAttention over the cache: RoPE on q and k, the step's keys and values stored, attention
// of the step's queries over every cached position under the causal mask, and the output projection.
func (l *DecoderLayer) selfAttention(ctx *ggml.Context, x ggml.Tensor, in *decodeInputs, attn decodeAttn) ggml.Tensor {
	a := &l.Attn
	q, k, v := a.project(ctx, x, x)
	q = q.RoPE(ctx, in.pos, in.rope)
	k = k.RoPE(ctx, in.pos, in.rope)
	keys, values := in.cache.store(ctx, in.graph, l.index, k, v)
	return a.Output.Forward(ctx, attendCache(ctx, q, keys, values, in.mask, a.scale, in.cache.vTrans, attn))
}

// attendCache is the attention of one sequence's step queries q [headDim, heads, n] over its cached keys and values
// (KVCache.store's views) under mask, with the kernel attn and the cache layout call for; returns [headDim·heads, n].
func attendCache(ctx *ggml.Context, q, keys, values, mask ggml.Tensor, scale float32, vTrans bool, attn decodeAttn) ggml.Tensor {
	switch {
	case vTrans && attn.fused && q.Ne(2) <= decodeAttnTokens && (keys.Type() == ggml.TypeF16 || keys.Type() == ggml.TypeF32):
		return q.DecodeAttention(ctx, keys, values, mask, scale)
	case vTrans:
		return attendT(ctx, q, keys, values, mask, scale, attn.scoreBytes)
	default:
		return attend(ctx, q, keys, values, mask, scale, attnKernel{flash: attn.flash, scoreBytes: attn.scoreBytes})
	}
}

// Forward appends the n tokens of in to the cache and returns logits [vocab, n] (or [vocab, 1] for the last
// position when lastOnly). Mirrors MistralForCausalLM.forward with the Idefics2 merge of image features at
// `<image>` positions.
func (d *Decoder) Forward(ctx *ggml.Context, in *decodeInputs, lastOnly bool, nm *namer) ggml.Tensor {
	n := in.ids.Ne(0)
	h := d.TokEmbd.GetRows(ctx, in.ids) // [hidden, n]
	if !in.images.IsNil() {
		h = h.Concat(ctx, in.images, 1).GetRows(ctx, in.selector)
	}
	h = nm.set(ctx, h, "dec.embeddings")
	for i := range d.Layers {
		h = d.Layers[i].Forward(ctx, h, in, d.attn, nm)
	}
	if lastOnly && n > 1 {
		h = h.View(ctx, (n-1)*h.Nb(1), []int{d.opts.Hidden, 1}, []int{h.Nb(1)})
	}
	h = nm.set(ctx, d.OutNorm.Forward(ctx, h, d.opts.Eps), "dec.output_norm")
	if d.Output.Weight.IsNil() {
		return nm.set(ctx, d.TokEmbd.MulMat(ctx, h), "dec.logits")
	}
	return nm.set(ctx, d.Output.Forward(ctx, h), "dec.logits")
}

// stepWeights lists the weight tensors one decoding step reads in full: every layer's matrices and norms, the final
// norm and the output projection (token_embd only when it is the output projection; otherwise a step reads one of
// its rows), and the pairs of the run-time adapters in force. A stacked group is listed once.
func (d *Decoder) stepWeights() []ggml.Tensor {
	var ts []ggml.Tensor
	seen := map[*stackedGroup]bool{}
	lin := func(l Linear) {
		if l.group != nil {
			if !seen[l.group] {
				seen[l.group] = true
				ts = append(ts, l.group.parent)
			}
		} else {
			ts = append(ts, l.Weight)
		}
		ts = append(ts, l.Bias, l.Tail)
		for _, p := range l.loras {
			if p.src.scale != 0 {
				ts = append(ts, p.a, p.b)
			}
		}
	}
	for _, l := range d.Layers {
		ts = append(ts, l.AttnNorm.Weight, l.FFNNorm.Weight)
		for _, m := range []Linear{l.Attn.Query, l.Attn.Key, l.Attn.Value, l.Attn.Output, l.MLP.Gate, l.MLP.Up, l.MLP.Down} {
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
