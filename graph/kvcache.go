package graph

import (
	"fmt"
	"math"

	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/quant"
)

// KVCache holds every layer's keys and values for up to Size positions, owns the views a step reads and writes
// and builds the step's causal mask. K[l] is [headDim·kvHeads, Size] (one row per position; keys after RoPE); V[l]
// has the same layout, or with vTrans its transpose [Size, headDim·kvHeads] (one row per value channel), which the
// plain attention path multiplies by in place, so a decode step copies no part of the cache.
type KVCache struct {
	k, v             []ggml.Tensor
	size             int
	typ              ggml.Type
	vTrans           bool
	headDim, kvHeads int
	window           int // sliding window (0: none), MistralAttention's
	pos              int // positions filled
	ctx              *ggml.Context
	buf              *ggml.Buffer
	mask             []float32 // scratch of the last mask, reused so that a decode step allocates no Go memory
	mask16           []byte
}

// newKVCache allocates a cache for o's layers and size positions of type typ on backend b.
func newKVCache(b *ggml.Backend, o TextOptions, size int, typ ggml.Type, vTrans bool) (*KVCache, error) {
	c := &KVCache{size: size, typ: typ, vTrans: vTrans, headDim: o.HeadDim, kvHeads: o.KVHeads, window: o.SlidingWindow,
		ctx: ggml.NewContext(2*o.Layers+1, 0)}
	width := o.HeadDim * o.KVHeads
	err := ggml.Catch(func() {
		for i := 0; i < o.Layers; i++ {
			c.k = append(c.k, c.ctx.NewTensor(typ, width, size).SetName(fmt.Sprintf("cache_k.%d", i)))
			if vTrans {
				c.v = append(c.v, c.ctx.NewTensor(typ, size, width).SetName(fmt.Sprintf("cache_v.%d", i)))
			} else {
				c.v = append(c.v, c.ctx.NewTensor(typ, width, size).SetName(fmt.Sprintf("cache_v.%d", i)))
			}
		}
	})
	if err != nil {
		c.ctx.Close()
		return nil, err
	}
	buf, err := ggml.AllocTensors(c.ctx, b.DefaultBufferType())
	if err != nil {
		c.ctx.Close()
		return nil, fmt.Errorf("graph: KV cache of %d positions (%d MiB): %w", size,
			2*o.Layers*width*size*typ.TypeSize()>>20, err)
	}
	buf.Clear(0)
	c.buf = buf
	return c, nil
}

// store writes a step's keys k [headDim, kvHeads, n] and values v [headDim·kvHeads, n] of layer il at the next n
// positions (the copies are expanded into g before anything reads the cache) and returns the views the step's
// attention reads: every key so far [headDim, kvHeads, nKV] and every value, [headDim, kvHeads, nKV] or, transposed,
// [nKV, headDim, kvHeads].
func (c *KVCache) store(ctx *ggml.Context, g *ggml.Graph, il int, k, v ggml.Tensor) (keys, values ggml.Tensor) {
	n := k.Ne(2)
	nKV := c.pos + n
	width := c.headDim * c.kvHeads
	kc, vc := c.k[il], c.v[il]
	row, esz := kc.Nb(1), c.typ.TypeSize()
	g.Build(k.Reshape(ctx, width, n).Copy(ctx, kc.View(ctx, c.pos*row, []int{width, n}, []int{row})))
	keys = kc.View(ctx, 0, []int{c.headDim, c.kvHeads, nKV}, []int{c.headDim * esz, row})
	if c.vTrans {
		// V^T [size, width]: the new positions are columns pos…pos+n-1.
		vrow := vc.Nb(1)
		g.Build(v.Transpose(ctx).Copy(ctx, vc.View(ctx, c.pos*esz, []int{n, width}, []int{vrow})))
		return keys, vc.View(ctx, 0, []int{nKV, c.headDim, c.kvHeads}, []int{vrow, c.headDim * vrow})
	}
	g.Build(v.Copy(ctx, vc.View(ctx, c.pos*row, []int{width, n}, []int{row})))
	return keys, vc.View(ctx, 0, []int{c.headDim, c.kvHeads, nKV}, []int{c.headDim * esz, row})
}

// causalMask is the additive mask [n queries][pos+n keys] of the next n positions: query i (at position pos+i)
// sees key j iff j ≤ pos+i and, with a sliding window W > 0, j > pos+i−W (MistralAttention's sliding-window causal
// mask). The slice is the cache's scratch, valid until the next call.
func (c *KVCache) causalMask(n int) []float32 {
	nKV := c.pos + n
	c.mask = grow(c.mask, n*nKV)
	ninf := float32(math.Inf(-1))
	for i := 0; i < n; i++ {
		p := c.pos + i
		for j := 0; j < nKV; j++ {
			if j > p || (c.window > 0 && j <= p-c.window) {
				c.mask[i*nKV+j] = ninf
			} else {
				c.mask[i*nKV+j] = 0
			}
		}
	}
	return c.mask
}

// setMask fills the mask input t (F32, or F16 for flash attention) for the next n positions.
func (c *KVCache) setMask(t ggml.Tensor, n int) error {
	m := c.causalMask(n)
	if t.Type() != ggml.TypeF16 {
		return t.SetFloat32(m)
	}
	c.mask16 = grow(c.mask16, 2*len(m))
	if err := quant.F32ToF16Slice(c.mask16, m); err != nil {
		return err
	}
	return t.SetBytes(c.mask16)
}

// grow returns b resized to n, reallocating (with room to spare) only when its capacity is too small.
func grow[T any](b []T, n int) []T {
	if cap(b) < n {
		return make([]T, n, max(n, 2*cap(b)))
	}
	return b[:n]
}

// Pos is the number of positions filled.
func (c *KVCache) Pos() int { return c.pos }

// Size is the capacity in positions.
func (c *KVCache) Size() int { return c.size }

// Truncate drops the positions from n on.
func (c *KVCache) Truncate(n int) {
	if n >= 0 && n < c.pos {
		c.pos = n
	}
}

// Bytes is the cache's memory size.
func (c *KVCache) Bytes() int { return c.buf.Size() }

// Close frees the cache. Idempotent.
func (c *KVCache) Close() {
	if c == nil {
		return
	}
	c.buf.Close()
	c.ctx.Close()
	c.buf, c.ctx = nil, nil
}
