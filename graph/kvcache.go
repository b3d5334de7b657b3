package graph

import (
	"fmt"

	"github.com/idefics2-go/idefics2/ggml"
)

// KVCache holds every layer's keys and values for up to Size positions: K[l] is [headDim·kvHeads, Size] (one row
// per position; keys after RoPE); V[l] has the same layout, or with VTrans its transpose [Size, headDim·kvHeads]
// (one row per value channel), which the plain attention path multiplies by in place, so a decode step copies no
// part of the cache.
type KVCache struct {
	K, V   []ggml.Tensor
	Size   int
	Type   ggml.Type
	VTrans bool
	ctx    *ggml.Context
	buf    *ggml.Buffer
}

// newKVCache allocates a cache for layers × size positions of width values each, of type typ, on backend b.
func newKVCache(b *ggml.Backend, layers, width, size int, typ ggml.Type, vTrans bool) (*KVCache, error) {
	c := &KVCache{Size: size, Type: typ, VTrans: vTrans, ctx: ggml.NewContext(2*layers+1, 0)}
	err := ggml.Catch(func() {
		for i := 0; i < layers; i++ {
			c.K = append(c.K, c.ctx.NewTensor(typ, width, size).SetName(fmt.Sprintf("cache_k.%d", i)))
			if vTrans {
				c.V = append(c.V, c.ctx.NewTensor(typ, size, width).SetName(fmt.Sprintf("cache_v.%d", i)))
			} else {
				c.V = append(c.V, c.ctx.NewTensor(typ, width, size).SetName(fmt.Sprintf("cache_v.%d", i)))
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
			2*layers*width*size*typ.TypeSize()>>20, err)
	}
	buf.Clear(0)
	c.buf = buf
	return c, nil
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
