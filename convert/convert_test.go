package convert

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/quant"
	"github.com/idefics2-go/idefics2/safetensors"
)

// Relative RMS error bounds of the dequantized weights (RMS of the error over RMS of the weights,
// per tensor). For Gaussian-like weights a b-bit block format with a block absmax scale has a
// step of about absmax/2^(b−1) ≈ 2.5σ/2^(b−1) and an RMS error of step/√12: 4 bits ≈ 0.09,
// 5 bits ≈ 0.045, 6 bits ≈ 0.023, 8 bits ≈ 0.006. The bounds add headroom for small blocks
// whose absmax is an outlier; F16/BF16 are checked exactly instead.
var relRMSEBound = map[quant.Type]float64{
	quant.Q8_0: 0.012,
	quant.Q6_K: 0.04,
	quant.Q5_0: 0.08, quant.Q5_1: 0.08, quant.Q5_K: 0.08,
	quant.Q4_0: 0.16, quant.Q4_1: 0.16, quant.Q4_K: 0.16,
	quant.NF4: 0.16,
}

// expectedValues returns the float32 values a GGUF tensor must hold before encoding: the
// source tensor, with llama.cpp's Q/K permutation applied by an independent reference
// (IDEFICS2.md §10.2: the row at h·hd + j·(hd/2) + i moves to h·hd + 2i + j).
func expectedValues(t *testing.T, ck *safetensors.Checkpoint, tp *TensorPlan) []float32 {
	t.Helper()
	src, err := ck.Tensor(tp.Source)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := safetensors.ToFloat32(src)
	if err != nil {
		t.Fatal(err)
	}
	if tp.PermuteHeads == 0 {
		return vals
	}
	ne0 := int(tp.Shape[0])
	rows := len(vals) / ne0
	hd := rows / tp.PermuteHeads
	out := make([]float32, len(vals))
	for h := 0; h < tp.PermuteHeads; h++ {
		for j := 0; j < 2; j++ {
			for i := 0; i < hd/2; i++ {
				from := h*hd + j*(hd/2) + i
				to := h*hd + 2*i + j
				copy(out[to*ne0:(to+1)*ne0], vals[from*ne0:(from+1)*ne0])
			}
		}
	}
	return out
}

// checkTensors compares every tensor of f with the checkpoint: storage exactly as quant encodes
// the expected values (so F32 is bit-exact, F16/BF16 are the correctly rounded values) and the
// dequantized values within relRMSEBound.
func checkTensors(t *testing.T, ck *safetensors.Checkpoint, f *gguf.File, o *OutputPlan) {
	t.Helper()
	if len(f.Tensors) != len(o.Tensors) {
		t.Fatalf("%s: %d tensors, want %d", o.Path, len(f.Tensors), len(o.Tensors))
	}
	for i := range o.Tensors {
		tp := &o.Tensors[i]
		info := f.Tensors[i]
		if info.Name != tp.Name || info.Type != gguf.Type(tp.Type.StorageType()) || !slices.Equal(info.Shape, tp.StorageShape()) {
			t.Fatalf("tensor %d: %s %s %v, want %s %s %v", i, info.Name, info.Type, info.Shape, tp.Name, tp.Type, tp.StorageShape())
		}
		data, err := f.TensorData(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		want := expectedValues(t, ck, tp)
		ne0 := int(tp.Shape[0])
		var enc []byte
		if tp.Type == quant.NF4 {
			nf, err := quant.QuantizeNF4(want, quant.NF4BlockSize)
			if err != nil {
				t.Fatal(err)
			}
			enc, err = nf.EncodeStream()
			if err != nil {
				t.Fatal(err)
			}
		} else if enc, err = quant.Quantize(tp.Type, want, ne0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, enc) {
			t.Errorf("%s (%s): data differs from quant's encoding of the source", tp.Name, tp.Type)
			continue
		}
		var got []float32
		if tp.Type == quant.NF4 {
			got, err = quant.DequantizeNF4Stream(data, len(want), quant.NF4BlockSize)
		} else {
			got, err = quant.Dequantize(tp.Type, data, len(want))
		}
		if err != nil {
			t.Fatal(err)
		}
		switch tp.Type {
		case quant.F32:
			for k := range want {
				if math.Float32bits(got[k]) != math.Float32bits(want[k]) {
					t.Fatalf("%s: value %d is %v, want %v", tp.Name, k, got[k], want[k])
				}
			}
		case quant.F16, quant.BF16:
			// Exact: the encoding equals quant's correctly rounded conversion (checked above).
		default:
			var se, sw float64
			worst, worstIdx := 0.0, 0
			for k := range want {
				d := float64(got[k] - want[k])
				se += d * d
				sw += float64(want[k]) * float64(want[k])
				if math.Abs(d) > worst {
					worst, worstIdx = math.Abs(d), k
				}
			}
			rel := math.Sqrt(se / math.Max(sw, 1e-30))
			if rel > relRMSEBound[tp.Type] {
				t.Errorf("%s (%s): relative RMS error %.4f > %.4f (max abs %.3g at %d)", tp.Name, tp.Type, rel, relRMSEBound[tp.Type], worst, worstIdx)
			}
		}
	}
}

// requiredKeys lists the metadata every output must carry, with its GGUF value type.
var requiredModelKeys = map[string]string{
	"general.architecture": "str", "general.name": "str", "general.file_type": "u32",
	"general.quantization_version": "u32", "llama.vocab_size": "u32", "llama.context_length": "u32",
	"llama.embedding_length": "u32", "llama.block_count": "u32", "llama.feed_forward_length": "u32",
	"llama.attention.head_count": "u32", "llama.attention.head_count_kv": "u32",
	"llama.attention.layer_norm_rms_epsilon": "f32", "llama.rope.freq_base": "f32",
	"llama.rope.dimension_count": "u32", "llama.attention.sliding_window": "u32",
	"tokenizer.ggml.model": "str", "tokenizer.ggml.tokens": "arr[str]", "tokenizer.ggml.scores": "arr[f32]",
	"tokenizer.ggml.token_type": "arr[i32]", "tokenizer.ggml.bos_token_id": "u32",
	"tokenizer.ggml.eos_token_id": "u32", "tokenizer.ggml.unknown_token_id": "u32",
	"tokenizer.ggml.padding_token_id": "u32", "tokenizer.ggml.add_bos_token": "bool",
	"tokenizer.ggml.add_eos_token": "bool", "tokenizer.ggml.add_space_prefix": "bool",
	"tokenizer.ggml.eot_token_id": "u32", "tokenizer.chat_template": "str",
}

var requiredMMProjKeys = map[string]string{
	"general.architecture": "str", "general.type": "str", "general.name": "str", "general.file_type": "u32",
	"clip.projector_type": "str", "clip.has_vision_encoder": "bool", "clip.has_audio_encoder": "bool",
	"clip.use_gelu": "bool", "clip.vision.image_size": "u32", "clip.vision.patch_size": "u32",
	"clip.vision.embedding_length": "u32", "clip.vision.feed_forward_length": "u32",
	"clip.vision.block_count": "u32", "clip.vision.attention.head_count": "u32",
	"clip.vision.attention.layer_norm_epsilon": "f32", "clip.vision.projection_dim": "u32",
	"clip.vision.image_mean": "arr[f32]", "clip.vision.image_std": "arr[f32]",
	"clip.vision.preproc_image_size": "u32", "idefics2.image_token_id": "u32", "idefics2.image_seq_len": "u32",
	"idefics2.text_embedding_length": "u32", "idefics2.vision.hidden_act": "str",
	"idefics2.connector.feed_forward_length": "u32", "idefics2.perceiver.embedding_length": "u32",
	"idefics2.perceiver.latent_count": "u32", "idefics2.perceiver.block_count": "u32",
	"idefics2.perceiver.head_count": "u32", "idefics2.perceiver.head_count_kv": "u32",
	"idefics2.perceiver.key_length": "u32", "idefics2.perceiver.feed_forward_length": "u32",
	"idefics2.perceiver.layer_norm_rms_epsilon": "f32", "idefics2.perceiver.hidden_act": "str",
	"idefics2.preproc.shortest_edge": "u32", "idefics2.preproc.longest_edge": "u32",
	"idefics2.preproc.do_image_splitting": "bool", "idefics2.preproc.do_resize": "bool",
	"idefics2.preproc.do_rescale": "bool", "idefics2.preproc.do_normalize": "bool",
	"idefics2.preproc.do_pad": "bool", "idefics2.preproc.do_convert_rgb": "bool",
	"idefics2.preproc.rescale_factor": "f64", "idefics2.preproc.resample": "u32",
}

func checkKeys(t *testing.T, label string, md gguf.Metadata, want map[string]string) {
	t.Helper()
	for k, typ := range want {
		v, ok := md.Get(k)
		if !ok {
			t.Errorf("%s: key %q missing", label, k)
			continue
		}
		if v.TypeName() != typ {
			t.Errorf("%s: key %q is %s, want %s", label, k, v.TypeName(), typ)
		}
	}
}

// configValues reads config.json and preprocessor/processor configs as generic JSON for
// independent checks of the metadata values.
func configValues(t *testing.T, dir string) (cfg, pre, proc map[string]any) {
	t.Helper()
	read := func(name string) map[string]any {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	return read("config.json"), read("preprocessor_config.json"), read("processor_config.json")
}

// checkMetadataValues compares numeric metadata with the JSON files.
func checkMetadataValues(t *testing.T, dir string, model, mmproj gguf.Metadata) {
	t.Helper()
	cfg, pre, proc := configValues(t, dir)
	text, vis, perc := sub(cfg, "text_config"), sub(cfg, "vision_config"), sub(cfg, "perceiver_config")
	num := func(m map[string]any, k string) uint32 { return uint32(m[k].(float64)) }
	u32 := []struct {
		md   gguf.Metadata
		key  string
		want uint32
	}{
		{model, "llama.vocab_size", num(text, "vocab_size")},
		{model, "llama.context_length", num(text, "max_position_embeddings")},
		{model, "llama.embedding_length", num(text, "hidden_size")},
		{model, "llama.block_count", num(text, "num_hidden_layers")},
		{model, "llama.feed_forward_length", num(text, "intermediate_size")},
		{model, "llama.attention.head_count", num(text, "num_attention_heads")},
		{model, "llama.attention.head_count_kv", num(text, "num_key_value_heads")},
		{model, "llama.rope.dimension_count", num(text, "head_dim")},
		{model, "llama.attention.sliding_window", num(text, "sliding_window")},
		{model, "tokenizer.ggml.bos_token_id", 1},
		{model, "tokenizer.ggml.eos_token_id", 2},
		{model, "tokenizer.ggml.unknown_token_id", 0},
		{model, "tokenizer.ggml.padding_token_id", 0},
		{model, "tokenizer.ggml.eot_token_id", 32002},
		{mmproj, "clip.vision.image_size", num(vis, "image_size")},
		{mmproj, "clip.vision.patch_size", num(vis, "patch_size")},
		{mmproj, "clip.vision.embedding_length", num(vis, "hidden_size")},
		{mmproj, "clip.vision.feed_forward_length", num(vis, "intermediate_size")},
		{mmproj, "clip.vision.block_count", num(vis, "num_hidden_layers")},
		{mmproj, "clip.vision.attention.head_count", num(vis, "num_attention_heads")},
		{mmproj, "clip.vision.projection_dim", num(text, "hidden_size")},
		{mmproj, "clip.vision.preproc_image_size", num(sub(pre, "size"), "longest_edge")},
		{mmproj, "idefics2.image_token_id", num(cfg, "image_token_id")},
		{mmproj, "idefics2.image_seq_len", num(proc, "image_seq_len")},
		{mmproj, "idefics2.text_embedding_length", num(text, "hidden_size")},
		{mmproj, "idefics2.connector.feed_forward_length", num(text, "intermediate_size")},
		{mmproj, "idefics2.perceiver.embedding_length", num(text, "hidden_size")},
		{mmproj, "idefics2.perceiver.latent_count", num(perc, "resampler_n_latents")},
		{mmproj, "idefics2.perceiver.block_count", num(perc, "resampler_depth")},
		{mmproj, "idefics2.perceiver.head_count", num(perc, "resampler_n_heads")},
		{mmproj, "idefics2.perceiver.head_count_kv", num(perc, "num_key_value_heads")},
		{mmproj, "idefics2.perceiver.key_length", num(perc, "resampler_head_dim")},
		{mmproj, "idefics2.perceiver.feed_forward_length", 4 * num(text, "hidden_size")},
		{mmproj, "idefics2.preproc.shortest_edge", num(sub(pre, "size"), "shortest_edge")},
		{mmproj, "idefics2.preproc.longest_edge", num(sub(pre, "size"), "longest_edge")},
		{mmproj, "idefics2.preproc.resample", num(pre, "resample")},
	}
	for _, c := range u32 {
		got, err := c.md.Uint32(c.key)
		if err != nil {
			t.Errorf("%s: %v", c.key, err)
		} else if got != c.want {
			t.Errorf("%s = %d, want %d", c.key, got, c.want)
		}
	}
	f32 := []struct {
		md   gguf.Metadata
		key  string
		want float64
	}{
		{model, "llama.attention.layer_norm_rms_epsilon", text["rms_norm_eps"].(float64)},
		{model, "llama.rope.freq_base", text["rope_theta"].(float64)},
		{mmproj, "clip.vision.attention.layer_norm_epsilon", vis["layer_norm_eps"].(float64)},
		// The fixtures' perceiver_config has no rms_norm_eps: the text value applies (IDEFICS2.md §2.3).
		{mmproj, "idefics2.perceiver.layer_norm_rms_epsilon", text["rms_norm_eps"].(float64)},
	}
	for _, c := range f32 {
		got, err := c.md.Float32(c.key)
		if err != nil {
			t.Errorf("%s: %v", c.key, err)
		} else if got != float32(c.want) {
			t.Errorf("%s = %v, want %v", c.key, got, float32(c.want))
		}
	}
	if got, err := mmproj.Float64("idefics2.preproc.rescale_factor"); err != nil || got != pre["rescale_factor"].(float64) {
		t.Errorf("idefics2.preproc.rescale_factor = %v (%v), want %v", got, err, pre["rescale_factor"])
	}
	if got, err := mmproj.Bool("idefics2.preproc.do_image_splitting"); err != nil || got != pre["do_image_splitting"].(bool) {
		t.Errorf("idefics2.preproc.do_image_splitting = %v (%v), want %v", got, err, pre["do_image_splitting"])
	}
	tmpl, _ := model.String("tokenizer.chat_template")
	if tmpl != proc["chat_template"].(string) {
		t.Errorf("tokenizer.chat_template differs from processor_config.json")
	}
}

// checkTensorNames checks the full set of names against the llama.cpp / clip conventions,
// computed here independently of tensorTable.
func checkTensorNames(t *testing.T, dir string, model, mmproj *gguf.File) {
	t.Helper()
	cfg, _, _ := configValues(t, dir)
	nText := int(sub(cfg, "text_config")["num_hidden_layers"].(float64))
	nVis := int(sub(cfg, "vision_config")["num_hidden_layers"].(float64))
	nPerc := int(sub(cfg, "perceiver_config")["resampler_depth"].(float64))
	want := []string{"token_embd.weight"}
	for l := 0; l < nText; l++ {
		for _, s := range []string{"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"} {
			want = append(want, fmt.Sprintf("blk.%d.%s.weight", l, s))
		}
	}
	want = append(want, "output_norm.weight", "output.weight")
	var got []string
	for _, ti := range model.Tensors {
		got = append(got, ti.Name)
	}
	if !slices.Equal(got, want) {
		t.Errorf("model tensors:\n got %v\nwant %v", got, want)
	}
	want = []string{"v.patch_embd.weight", "v.patch_embd.bias", "v.position_embd.weight"}
	for l := 0; l < nVis; l++ {
		for _, s := range []string{"ln1.weight", "ln1.bias", "attn_q.weight", "attn_q.bias", "attn_k.weight", "attn_k.bias",
			"attn_v.weight", "attn_v.bias", "attn_out.weight", "attn_out.bias", "ln2.weight", "ln2.bias",
			"ffn_up.weight", "ffn_up.bias", "ffn_down.weight", "ffn_down.bias"} {
			want = append(want, fmt.Sprintf("v.blk.%d.%s", l, s))
		}
	}
	want = append(want, "v.post_ln.weight", "v.post_ln.bias", "mm.gate.weight", "mm.up.weight", "mm.down.weight", "mm.perceiver.latents")
	for l := 0; l < nPerc; l++ {
		for _, s := range []string{"ln_latents", "ln_context", "attn_q", "attn_k", "attn_v", "attn_out", "ln_post", "ffn_gate", "ffn_up", "ffn_down"} {
			want = append(want, fmt.Sprintf("mm.perceiver.blk.%d.%s.weight", l, s))
		}
	}
	want = append(want, "mm.perceiver.norm.weight")
	got = got[:0]
	for _, ti := range mmproj.Tensors {
		got = append(got, ti.Name)
	}
	if !slices.Equal(got, want) {
		t.Errorf("mmproj tensors:\n got %v\nwant %v", got, want)
	}
}

// TestConvertFixtures converts every fixture checkpoint at several types and checks every
// tensor against the source, the tensor names and the metadata.
func TestConvertFixtures(t *testing.T) {
	dirs := []string{p1Dir, p2Dir, p2BF16, demoDir}
	types := []string{"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q4_k_m", "nf4"}
	for _, dir := range dirs {
		for _, typ := range types {
			t.Run(filepath.Base(dir)+"/"+typ, func(t *testing.T) {
				model, mmproj, plan := convertTo(t, dir, Options{Type: typ})
				ck, err := safetensors.OpenCheckpoint(dir)
				if err != nil {
					t.Fatal(err)
				}
				defer ck.Close()
				checkTensors(t, ck, model, &plan.Model)
				checkTensors(t, ck, mmproj, &plan.MMProj)
				checkTensorNames(t, dir, model, mmproj)
				checkKeys(t, "model", model.Metadata, requiredModelKeys)
				checkKeys(t, "mmproj", mmproj.Metadata, requiredMMProjKeys)
				checkMetadataValues(t, dir, model.Metadata, mmproj.Metadata)
				scheme, _ := ParseScheme(typ)
				if ft, _ := model.Metadata.Uint32("general.file_type"); gguf.FileType(ft) != scheme.FileType {
					t.Errorf("model general.file_type = %d, want %d", ft, scheme.FileType)
				}
				wantVision := quant.F16
				if typ == "f32" {
					wantVision = quant.F32
				}
				if ft, _ := mmproj.Metadata.Uint32("general.file_type"); gguf.FileType(ft) != fileTypeOf(wantVision) {
					t.Errorf("mmproj general.file_type = %d, want %d", ft, fileTypeOf(wantVision))
				}
				checkTypeRules(t, plan, wantVision)
			})
		}
	}
}

// checkTypeRules checks the per-tensor type policy: 1-D tensors, embeddings of the vision tower
// and latents F32; matrices at the scheme's type or a documented fallback.
func checkTypeRules(t *testing.T, p *Plan, visionType quant.Type) {
	t.Helper()
	alwaysF32 := func(name string) bool {
		return strings.HasSuffix(name, ".bias") || strings.Contains(name, "norm") || strings.Contains(name, "ln") ||
			name == "v.patch_embd.weight" || name == "v.position_embd.weight" || name == "mm.perceiver.latents"
	}
	for _, o := range []*OutputPlan{&p.Model, &p.MMProj} {
		for _, tp := range o.Tensors {
			switch {
			case alwaysF32(tp.Name):
				if tp.Type != quant.F32 {
					t.Errorf("%s is %s, want f32", tp.Name, tp.Type)
				}
			case tp.Type != tp.Requested:
				if fallbackType(tp.Requested, int(tp.Shape[0])) != tp.Type || int(tp.Shape[0])%tp.Requested.BlockSize() == 0 {
					t.Errorf("%s: %s instead of %s without a row-length reason (ne0 %d)", tp.Name, tp.Type, tp.Requested, tp.Shape[0])
				}
			case o == &p.MMProj:
				if tp.Type != visionType {
					t.Errorf("%s is %s, want the vision type %s", tp.Name, tp.Type, visionType)
				}
			case p.Scheme.mix == mixNone && tp.Type != p.Scheme.Base:
				t.Errorf("%s is %s, want %s", tp.Name, tp.Type, p.Scheme.Base)
			}
		}
	}
}

// TestBF16ShardedMatchesP2 checks that the bf16, two-shard copy of p2 converts to p2's tensors
// rounded to bf16 (round to nearest even, as torch's .to(bfloat16)).
func TestBF16ShardedMatchesP2(t *testing.T) {
	m32, v32, _ := convertTo(t, p2Dir, Options{Type: "f32"})
	m16, v16, _ := convertTo(t, p2BF16, Options{Type: "f32"})
	for _, pair := range [][2]*gguf.File{{m32, m16}, {v32, v16}} {
		if len(pair[0].Tensors) != len(pair[1].Tensors) {
			t.Fatalf("%d tensors vs %d", len(pair[0].Tensors), len(pair[1].Tensors))
		}
		for i, ti := range pair[0].Tensors {
			tj := pair[1].Tensors[i]
			if ti.Name != tj.Name || ti.Type != tj.Type || !slices.Equal(ti.Shape, tj.Shape) {
				t.Fatalf("tensor %d: %s %s %v vs %s %s %v", i, ti.Name, ti.Type, ti.Shape, tj.Name, tj.Type, tj.Shape)
			}
			a, _ := pair[0].TensorData(ti.Name)
			b, _ := pair[1].TensorData(tj.Name)
			fa, _ := quant.Dequantize(quant.F32, a, int(ti.NumElements()))
			fb, _ := quant.Dequantize(quant.F32, b, int(tj.NumElements()))
			for k := range fa {
				if want := quant.BF16ToF32(quant.F32ToBF16(fa[k])); math.Float32bits(fb[k]) != math.Float32bits(want) {
					t.Fatalf("%s[%d] = %v, want bf16(%v) = %v", ti.Name, k, fb[k], fa[k], want)
				}
			}
		}
	}
}

// TestGoldenDumpP1 compares the dump of p1's f32 pair with testdata/convert/p1-f32.dump.txt
// (regenerate with go test ./convert -run TestGoldenDumpP1 -update).
func TestGoldenDumpP1(t *testing.T) {
	model, mmproj, _ := convertTo(t, p1Dir, Options{Type: "f32"})
	var buf bytes.Buffer
	for _, f := range []struct {
		name string
		file *gguf.File
	}{{"model.gguf", model}, {"mmproj-model.gguf", mmproj}} {
		fmt.Fprintf(&buf, "=== %s\n", f.name)
		if err := gguf.Dump(&buf, f.file, gguf.DumpOptions{}); err != nil {
			t.Fatal(err)
		}
		buf.WriteString("\n")
	}
	path := filepath.Join(goldDir, "p1-f32.dump.txt")
	if *update {
		if err := os.MkdirAll(goldDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		gotLines, wantLines := strings.Split(buf.String(), "\n"), strings.Split(string(want), "\n")
		for i := 0; i < max(len(gotLines), len(wantLines)); i++ {
			var g, w string
			if i < len(gotLines) {
				g = gotLines[i]
			}
			if i < len(wantLines) {
				w = wantLines[i]
			}
			if g != w {
				t.Fatalf("dump differs from %s at line %d:\n got %q\nwant %q", path, i+1, g, w)
			}
		}
	}
}

// TestSmallChunks converts with tiny chunks and several thread counts, so that every tensor is
// split into many chunks (and rows across goroutines): the output must not change.
func TestSmallChunks(t *testing.T) {
	saved := chunkValues
	defer func() { chunkValues = saved }()
	for _, cv := range []int{1, 1000} {
		chunkValues = cv
		for _, tc := range []struct {
			dir, typ, vision string
			threads          int
		}{
			{p1Dir, "f32", "q8_0", 1}, {p1Dir, "q4_k_m", "q4_0", 3}, {p1Dir, "nf4", "nf4", 2},
			{demoDir, "q8_0", "bf16", 0}, {demoDir, "nf4", "nf4", 5},
		} {
			t.Run(fmt.Sprintf("%d/%s/%s/%d", cv, filepath.Base(tc.dir), tc.typ, tc.threads), func(t *testing.T) {
				model, mmproj, plan := convertTo(t, tc.dir, Options{Type: tc.typ, VisionType: tc.vision, Threads: tc.threads})
				ck, err := safetensors.OpenCheckpoint(tc.dir)
				if err != nil {
					t.Fatal(err)
				}
				defer ck.Close()
				checkTensors(t, ck, model, &plan.Model)
				checkTensors(t, ck, mmproj, &plan.MMProj)
			})
		}
	}
}
