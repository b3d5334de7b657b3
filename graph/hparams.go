package graph

import (
	"github.com/idefics2-go/idefics2/gguf"
)

// TextOptions are the decoder's hyper-parameters, from the `llama.*` keys of the text GGUF.
type TextOptions struct {
	VocabSize     int
	ContextLength int
	Hidden        int
	Layers        int
	FFN           int
	Heads         int
	KVHeads       int
	HeadDim       int
	RoPEDims      int
	Eps           float32
	RoPEBase      float32
	SlidingWindow int // 0: none
}

// VisionOptions are the vision tower's hyper-parameters (`clip.vision.*`).
type VisionOptions struct {
	Hidden    int
	FFN       int
	Layers    int
	Heads     int
	Patch     int
	ImageSize int
	Eps       float32
	// PosSide is the number of position-table entries per side (image_size / patch_size).
	PosSide int
}

// ConnectorOptions are the modality projection and perceiver hyper-parameters (`idefics2.*`).
type ConnectorOptions struct {
	FFN            int // modality projection inner width
	TextHidden     int
	Latents        int
	Depth          int
	Heads          int
	KVHeads        int
	HeadDim        int
	PerceiverFFN   int
	PerceiverEps   float32
	ImageSeqLen    int
	ImageTokenID   int
	ProjectionSize int
}

type mdReader struct {
	md   gguf.Metadata
	path string
	err  error
}

func (r *mdReader) int(key string) int {
	if r.err != nil {
		return 0
	}
	v, err := r.md.Int(key)
	if err != nil {
		r.err = &fileError{Path: r.path, Msg: "metadata", err: err}
		return 0
	}
	if v <= 0 {
		r.err = fileErrorf(r.path, nil, "key %q is %d, want a positive value", key, v)
	}
	return v
}

func (r *mdReader) optInt(key string, def int) int {
	if r.err != nil || !r.md.Has(key) {
		return def
	}
	v, err := r.md.Int(key)
	if err != nil {
		r.err = &fileError{Path: r.path, Msg: "metadata", err: err}
	}
	return v
}

func (r *mdReader) f32(key string) float32 {
	if r.err != nil {
		return 0
	}
	v, err := r.md.Float32(key)
	if err != nil {
		r.err = &fileError{Path: r.path, Msg: "metadata", err: err}
	}
	return v
}

func (r *mdReader) str(key string) string {
	if r.err != nil {
		return ""
	}
	v, err := r.md.String(key)
	if err != nil {
		r.err = &fileError{Path: r.path, Msg: "metadata", err: err}
	}
	return v
}

// newTextOptions reads the decoder hyper-parameters of a `llama` text GGUF.
func newTextOptions(f *gguf.File) (TextOptions, error) {
	r := &mdReader{md: f.Metadata, path: f.Path}
	if a := r.str("general.architecture"); r.err == nil && a != "llama" {
		if a == "clip" {
			return TextOptions{}, fileErrorf(f.Path, ErrFileKind, "is an mmproj (vision) file, not a text model: pass it with --mmproj and the text model with -m")
		}
		return TextOptions{}, fileErrorf(f.Path, ErrFileKind, "has architecture %q, which is not supported (want llama)", a)
	}
	o := TextOptions{
		ContextLength: r.int("llama.context_length"),
		Hidden:        r.int("llama.embedding_length"),
		Layers:        r.int("llama.block_count"),
		FFN:           r.int("llama.feed_forward_length"),
		Heads:         r.int("llama.attention.head_count"),
		Eps:           r.f32("llama.attention.layer_norm_rms_epsilon"),
	}
	// llama.cpp's defaults: head_count_kv = head_count, rope dims = head size, freq_base 10000.
	o.KVHeads = r.optInt("llama.attention.head_count_kv", o.Heads)
	o.SlidingWindow = r.optInt("llama.attention.sliding_window", 0)
	o.RoPEBase = 10000
	if f.Metadata.Has("llama.rope.freq_base") {
		o.RoPEBase = r.f32("llama.rope.freq_base")
	}
	if r.err != nil {
		return o, r.err
	}
	if o.Hidden%o.Heads != 0 || o.KVHeads <= 0 || o.Heads%o.KVHeads != 0 {
		return o, fileErrorf(f.Path, nil, "%d heads, %d kv heads do not divide hidden size %d", o.Heads, o.KVHeads, o.Hidden)
	}
	o.HeadDim = o.Hidden / o.Heads
	o.RoPEDims = r.optInt("llama.rope.dimension_count", o.HeadDim)
	if toks, err := f.Metadata.Array("tokenizer.ggml.tokens"); err == nil {
		o.VocabSize = toks.Len()
	}
	if f.Metadata.Has("llama.vocab_size") {
		o.VocabSize = r.int("llama.vocab_size")
	}
	if r.err != nil {
		return o, r.err
	}
	if o.RoPEDims > o.HeadDim || o.RoPEDims%2 != 0 {
		return o, fileErrorf(f.Path, nil, "rope dimension_count %d for head size %d", o.RoPEDims, o.HeadDim)
	}
	return o, nil
}

// newVisionOptions reads the vision and connector hyper-parameters of an idefics2 mmproj GGUF.
func newVisionOptions(f *gguf.File) (VisionOptions, ConnectorOptions, error) {
	r := &mdReader{md: f.Metadata, path: f.Path}
	if a := r.str("general.architecture"); r.err == nil && a != "clip" {
		if a == "llama" {
			return VisionOptions{}, ConnectorOptions{}, fileErrorf(f.Path, ErrFileKind, "is a text model, not an mmproj (vision) file: pass it with -m")
		}
		return VisionOptions{}, ConnectorOptions{}, fileErrorf(f.Path, ErrFileKind, "has architecture %q: not an mmproj (want clip)", a)
	}
	if p := r.str("clip.projector_type"); r.err == nil && p != "idefics2" {
		return VisionOptions{}, ConnectorOptions{}, fileErrorf(f.Path, ErrFileKind, "has projector type %q, which is not supported (want idefics2)", p)
	}
	v := VisionOptions{
		Hidden:    r.int("clip.vision.embedding_length"),
		FFN:       r.int("clip.vision.feed_forward_length"),
		Layers:    r.int("clip.vision.block_count"),
		Heads:     r.int("clip.vision.attention.head_count"),
		Patch:     r.int("clip.vision.patch_size"),
		ImageSize: r.int("clip.vision.image_size"),
		Eps:       r.f32("clip.vision.attention.layer_norm_epsilon"),
	}
	c := ConnectorOptions{
		FFN:            r.int("idefics2.connector.feed_forward_length"),
		TextHidden:     r.int("idefics2.text_embedding_length"),
		Latents:        r.int("idefics2.perceiver.latent_count"),
		Depth:          r.int("idefics2.perceiver.block_count"),
		Heads:          r.int("idefics2.perceiver.head_count"),
		KVHeads:        r.int("idefics2.perceiver.head_count_kv"),
		HeadDim:        r.int("idefics2.perceiver.key_length"),
		PerceiverFFN:   r.int("idefics2.perceiver.feed_forward_length"),
		PerceiverEps:   r.f32("idefics2.perceiver.layer_norm_rms_epsilon"),
		ImageSeqLen:    r.int("idefics2.image_seq_len"),
		ImageTokenID:   r.int("idefics2.image_token_id"),
		ProjectionSize: r.int("clip.vision.projection_dim"),
	}
	if r.err != nil {
		return v, c, r.err
	}
	if v.Hidden%v.Heads != 0 {
		return v, c, fileErrorf(f.Path, nil, "vision hidden size %d is not a multiple of %d heads", v.Hidden, v.Heads)
	}
	if v.ImageSize%v.Patch != 0 {
		return v, c, fileErrorf(f.Path, nil, "image size %d is not a multiple of patch size %d", v.ImageSize, v.Patch)
	}
	v.PosSide = v.ImageSize / v.Patch
	if c.Heads%c.KVHeads != 0 {
		return v, c, fileErrorf(f.Path, nil, "perceiver heads %d not a multiple of kv heads %d", c.Heads, c.KVHeads)
	}
	if c.ImageSeqLen != c.Latents {
		return v, c, fileErrorf(f.Path, nil, "image_seq_len %d differs from perceiver latents %d", c.ImageSeqLen, c.Latents)
	}
	return v, c, nil
}
