//go:build llamacpp

package llamacpptest

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/quant"
)

// clipShape is the SigLIP tower of a synthetic mmproj in llama.cpp's layout, with its idefics3 projector (pixel
// shuffle by scale, then one linear map to proj).
type clipShape struct {
	side, patch, embd, ff, heads, layers, scale, proj int
}

// siglip8B is the Idefics2-8B vision tower (SigLIP so400m at patch 14) for images of side × side pixels; the
// projector's scale is the largest of 3 and 2 that divides the patches per side.
func siglip8B(side int) clipShape {
	s := clipShape{side: side, patch: 14, embd: 1152, ff: 4304, heads: 16, layers: 27, proj: 4096, scale: 2}
	if (side/14)%3 == 0 {
		s.scale = 3
	}
	return s
}

// writeSyntheticClip writes an mmproj of shape s that llama.cpp's clip_init loads as an idefics3 projector:
// F16 matrices and patch embedding, F32 norms, biases and position embedding (one row per patch of a side ×
// side image), filled with small pseudo-random values.
func writeSyntheticClip(path string, s clipShape) error {
	w, err := gguf.Create(path)
	if err != nil {
		return err
	}
	defer w.Abort()
	kvs := []struct {
		k string
		v any
	}{
		{"general.architecture", "clip"},
		{"general.name", "synthetic-siglip"},
		{"clip.projector_type", "idefics3"},
		{"clip.has_vision_encoder", true},
		{"clip.has_audio_encoder", false},
		{"clip.use_gelu", true},
		{"clip.vision.image_size", uint32(s.side)},
		{"clip.vision.preproc_image_size", uint32(s.side)},
		{"clip.vision.patch_size", uint32(s.patch)},
		{"clip.vision.embedding_length", uint32(s.embd)},
		{"clip.vision.feed_forward_length", uint32(s.ff)},
		{"clip.vision.block_count", uint32(s.layers)},
		{"clip.vision.attention.head_count", uint32(s.heads)},
		{"clip.vision.attention.layer_norm_epsilon", float32(1e-6)},
		{"clip.vision.projection_dim", uint32(s.proj)},
		{"clip.vision.projector.scale_factor", uint32(s.scale)},
		{"clip.vision.image_mean", []float32{0.5, 0.5, 0.5}},
		{"clip.vision.image_std", []float32{0.5, 0.5, 0.5}},
	}
	for _, kv := range kvs {
		if err := w.SetKV(kv.k, kv.v); err != nil {
			return err
		}
	}
	type tensor struct {
		name  string
		typ   gguf.Type
		shape []uint64
	}
	e, f := uint64(s.embd), uint64(s.ff)
	perSide := uint64(s.side / s.patch)
	ts := []tensor{
		{"v.patch_embd.weight", gguf.TypeF16, []uint64{uint64(s.patch), uint64(s.patch), 3, e}},
		{"v.patch_embd.bias", gguf.TypeF32, []uint64{e}},
		{"v.position_embd.weight", gguf.TypeF32, []uint64{e, perSide * perSide}},
	}
	for l := 0; l < s.layers; l++ {
		p := fmt.Sprintf("v.blk.%d.", l)
		ts = append(ts,
			tensor{p + "ln1.weight", gguf.TypeF32, []uint64{e}}, tensor{p + "ln1.bias", gguf.TypeF32, []uint64{e}},
			tensor{p + "attn_q.weight", gguf.TypeF16, []uint64{e, e}}, tensor{p + "attn_q.bias", gguf.TypeF32, []uint64{e}},
			tensor{p + "attn_k.weight", gguf.TypeF16, []uint64{e, e}}, tensor{p + "attn_k.bias", gguf.TypeF32, []uint64{e}},
			tensor{p + "attn_v.weight", gguf.TypeF16, []uint64{e, e}}, tensor{p + "attn_v.bias", gguf.TypeF32, []uint64{e}},
			tensor{p + "attn_out.weight", gguf.TypeF16, []uint64{e, e}}, tensor{p + "attn_out.bias", gguf.TypeF32, []uint64{e}},
			tensor{p + "ln2.weight", gguf.TypeF32, []uint64{e}}, tensor{p + "ln2.bias", gguf.TypeF32, []uint64{e}},
			tensor{p + "ffn_up.weight", gguf.TypeF16, []uint64{e, f}}, tensor{p + "ffn_up.bias", gguf.TypeF32, []uint64{f}},
			tensor{p + "ffn_down.weight", gguf.TypeF16, []uint64{f, e}}, tensor{p + "ffn_down.bias", gguf.TypeF32, []uint64{e}},
		)
	}
	ts = append(ts,
		tensor{"v.post_ln.weight", gguf.TypeF32, []uint64{e}}, tensor{"v.post_ln.bias", gguf.TypeF32, []uint64{e}},
		tensor{"mm.model.fc.weight", gguf.TypeF16, []uint64{e * uint64(s.scale*s.scale), uint64(s.proj)}},
	)
	for _, t := range ts {
		if err := w.AddTensor(t.name, t.typ, t.shape); err != nil {
			return err
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, t := range ts {
		n := uint64(1)
		for _, d := range t.shape {
			n *= d
		}
		vals := make([]float32, n)
		for i := range vals {
			vals[i] = float32(r.NormFloat64() * 0.02)
		}
		if strings.HasSuffix(t.name, "ln1.weight") || strings.HasSuffix(t.name, "ln2.weight") ||
			strings.HasSuffix(t.name, "post_ln.weight") {
			for i := range vals {
				vals[i] += 1
			}
		}
		var data []byte
		if t.typ == gguf.TypeF16 {
			data = make([]byte, 2*n)
			if err := quant.F32ToF16Slice(data, vals); err != nil {
				return err
			}
		} else {
			data = make([]byte, 4*n)
			for i, v := range vals {
				binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
			}
		}
		if err := w.WriteTensor(t.name, data); err != nil {
			return err
		}
	}
	return w.Close()
}

// randomImage is a side × side image of interleaved RGB floats in [-1, 1] (pixels normalised with mean and std
// 0.5, as the Idefics2 processor does).
func randomImage(side int) []float32 {
	r := rand.New(rand.NewPCG(5, 6))
	img := make([]float32, side*side*3)
	for i := range img {
		img[i] = float32(r.Float64()*2 - 1)
	}
	return img
}

// TestClipPeer checks the binding on a small tower: llama.cpp loads the synthetic mmproj, and one encode gives
// (patches per side / scale)² tokens of the projection width, all finite and not all zero.
func TestClipPeer(t *testing.T) {
	s := clipShape{side: 84, patch: 14, embd: 64, ff: 128, heads: 4, layers: 2, scale: 3, proj: 96}
	path := filepath.Join(t.TempDir(), "mmproj-siglip.gguf")
	if err := writeSyntheticClip(path, s); err != nil {
		t.Fatal(err)
	}
	c, err := LoadClip(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out, err := c.Encode(2, randomImage(s.side), s.side, s.side)
	if err != nil {
		t.Fatal(err)
	}
	tokens := (s.side / s.patch / s.scale) * (s.side / s.patch / s.scale)
	if len(out) != tokens*s.proj {
		t.Fatalf("encode gave %d floats, want %d tokens × %d", len(out), tokens, s.proj)
	}
	var sum float64
	for i, v := range out {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("output %d is %v", i, v)
		}
		sum += math.Abs(float64(v))
	}
	if sum == 0 {
		t.Fatal("every output is zero")
	}
	if _, err := c.Encode(2, randomImage(s.side)[:10], s.side, s.side); err == nil {
		t.Fatal("a short image was accepted")
	}
}

// BenchmarkClipEncode is llama.cpp's SigLIP encode (llama-mtmd-cli's path for an idefics3 projector, flash
// attention off) of one image per side in $IDEFICS2_BENCH_IMAGES (default 378,980), on a synthetic mmproj with
// the Idefics2-8B vision tower whose image size is that side (one tile, no slicing), with
// $IDEFICS2_BENCH_THREADS threads (default 2). It is the peer of `idefics2-run bench --images`. One warm-up
// encode, then b.N timed ones; run it with -benchtime Nx.
func BenchmarkClipEncode(b *testing.B) {
	threads := envInt(b, "IDEFICS2_BENCH_THREADS", 2)
	sides := envInts(b, "IDEFICS2_BENCH_IMAGES", []int{378, 980})
	for _, side := range sides {
		if side%14 != 0 {
			b.Fatalf("IDEFICS2_BENCH_IMAGES: side %d is not a multiple of the patch size 14", side)
		}
	}
	loadBenchVariants(b)
	dir := b.TempDir()
	for _, side := range sides {
		// The file and the loaded encoder outlive the sub-benchmark's calls (the testing package calls it with
		// b.N = 1 before the requested count).
		path := filepath.Join(dir, fmt.Sprintf("mmproj-siglip-%d.gguf", side))
		if err := writeSyntheticClip(path, siglip8B(side)); err != nil {
			b.Fatal(err)
		}
		c, err := LoadClip(path)
		if err != nil {
			b.Fatal(err)
		}
		img := randomImage(side)
		if _, err := c.Encode(threads, img, side, side); err != nil { // warm-up
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("image%d", side), func(b *testing.B) {
			var secs []float64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if _, err := c.Encode(threads, img, side, side); err != nil {
					b.Fatal(err)
				}
				secs = append(secs, time.Since(t0).Seconds())
			}
			mean, sd := meanSD(secs)
			b.ReportMetric(mean, "s/image")
			b.Logf("image %d×%d: %.2f ± %.2f s over %d encodes, %d threads", side, side, mean, sd, len(secs), threads)
		})
		c.Close()
		os.Remove(path)
	}
}
