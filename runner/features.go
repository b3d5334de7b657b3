package runner

import (
	"context"
	"fmt"
	"math"
	"sync"

	"github.com/idefics2-go/idefics2/graph"
)

// featureCache keeps the connector outputs of recently encoded sub-images, so that a conversation that shows the
// same image again (every chat turn re-renders the whole conversation) does not run the vision tower again.
type featureCache struct {
	mu    sync.Mutex
	max   int
	order []uint64
	rows  map[uint64][]float32
}

// mixKey combines a cache key with one more 64-bit value (a splitmix64-style finalizer over their sum, so that the
// order of the values matters).
func mixKey(k, v uint64) uint64 {
	x := k ^ (v + 0x9e3779b97f4a7c15 + k<<6 + k>>2)
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func newFeatureCache(max int) *featureCache {
	return &featureCache{max: max, rows: make(map[uint64][]float32)}
}

func (c *featureCache) get(k uint64) ([]float32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.rows[k]
	return v, ok
}

func (c *featureCache) put(k uint64, v []float32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.rows[k]; ok {
		return
	}
	if len(c.order) >= c.max {
		delete(c.rows, c.order[0])
		c.order = c.order[1:]
	}
	c.order = append(c.order, k)
	c.rows[k] = v
}

// subImageInput returns sub-image i of the prompt's batch as the graph takes it: the padded batch H×W and the
// image's own size.
func (p *Prompt) subImageInput(i int) graph.ImageInput {
	b := p.Images
	n := 3 * b.H * b.W
	return graph.ImageInput{Pixels: b.PixelValues[i*n : (i+1)*n], H: b.H, W: b.W, RealH: b.Sizes[i][0], RealW: b.Sizes[i][1]}
}

// encode returns the connector rows of sub-image i ([imageSeqLen][textHidden] flattened), from the cache when
// possible. With keep, the vision and projection outputs are kept too (never cached); dump, when set, receives the
// named intermediates it asks for.
func (m *Model) encode(ctx context.Context, p *Prompt, i int, keep bool, dump *graph.Dump, scales []float32, onLayer func(done, total int)) (*graph.ImageFeatures, error) {
	key := p.subKeys[i]
	if m.g != nil && m.g.HasVisionAdapters() {
		// The features depend on the vision adapters' scales.
		for _, s := range scales {
			key = mixKey(key, uint64(math.Float32bits(s)))
		}
	}
	if !keep && dump == nil {
		if rows, ok := m.features.get(key); ok {
			return &graph.ImageFeatures{Embeddings: rows}, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.g == nil {
		m.mu.Unlock()
		return nil, fmt.Errorf("runner: the model is closed")
	}
	if err := m.g.SetAdapterScales(scales); err != nil {
		m.mu.Unlock()
		return nil, fmt.Errorf("runner: %w", err)
	}
	f, err := m.g.EncodeImageProgress(p.subImageInput(i), keep, dump, onLayer)
	m.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("runner: encoding image %d: %w", i, err)
	}
	m.features.put(key, f.Embeddings)
	return f, nil
}
