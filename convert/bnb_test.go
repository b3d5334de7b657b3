package convert

import (
	"bytes"
	"encoding/json"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/quant"
	"github.com/idefics2-go/idefics2/safetensors"
)

// isLinearWeight reports whether an HF name is a Linear weight that transformers' bitsandbytes
// integration quantizes (every nn.Linear except lm_head).
func isLinearWeight(name string) bool {
	for _, s := range []string{"q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "out_proj.weight",
		"fc1.weight", "fc2.weight", "gate_proj.weight", "up_proj.weight", "down_proj.weight"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// makeBNBCheckpoint writes a copy of p1 whose Linear weights are bitsandbytes NF4 tensors, the
// way transformers saves a load_in_4bit model (every other weight double-quantized). It returns
// the folder and, per weight, the NF4 tensor bitsandbytes would dequantize.
func makeBNBCheckpoint(t *testing.T, stateDType string) (string, map[string]*quant.NF4Tensor) {
	t.Helper()
	dir := copyCheckpoint(t, p1Dir)
	path := filepath.Join(dir, "model.safetensors")
	tensors := readSafetensors(t, path)
	want := map[string]*quant.NF4Tensor{}
	names := make([]string, 0, len(tensors))
	for n := range tensors {
		names = append(names, n)
	}
	slices.Sort(names)
	u8 := func(b []byte) stTensor { return stTensor{dtype: "U8", shape: []int64{int64(len(b))}, data: b} }
	for i, name := range names {
		if !isLinearWeight(name) {
			continue
		}
		src := tensors[name]
		vals, err := safetensors.ToFloat32(safetensors.Tensor{DType: safetensors.DType(src.dtype), Shape: src.shape, Data: src.data})
		if err != nil {
			t.Fatal(err)
		}
		state := map[string]any{"quant_type": "nf4", "blocksize": 64, "dtype": stateDType, "shape": src.shape}
		var nf *quant.NF4Tensor
		if i%2 == 0 {
			if nf, err = quant.QuantizeNF4(vals, 64); err != nil {
				t.Fatal(err)
			}
			tensors[name+quant.BNBSuffixAbsmax] = stTensor{dtype: "F32", shape: []int64{int64(len(nf.Absmax))}, data: f32Bytes(nf.Absmax...)}
		} else {
			var nested *quant.NF4Nested
			if nf, nested, err = quant.QuantizeNF4Double(vals, 64); err != nil {
				t.Fatal(err)
			}
			tensors[name+quant.BNBSuffixAbsmax] = u8(nested.QAbsmax)
			tensors[name+quant.BNBSuffixNestedAbsmax] = stTensor{dtype: "F32", shape: []int64{int64(len(nested.Absmax))}, data: f32Bytes(nested.Absmax...)}
			tensors[name+quant.BNBSuffixNestedQuantMap] = stTensor{dtype: "F32", shape: []int64{256}, data: f32Bytes(nested.Code...)}
			state["nested_blocksize"] = nested.BlockSize
			state["nested_offset"] = float64(nested.Offset)
		}
		tensors[name] = stTensor{dtype: "U8", shape: []int64{int64(len(nf.Codes)), 1}, data: nf.Codes}
		tensors[name+quant.BNBSuffixQuantMap] = stTensor{dtype: "F32", shape: []int64{16}, data: f32Bytes(quant.NF4Codebook[:]...)}
		js, err := json.Marshal(state)
		if err != nil {
			t.Fatal(err)
		}
		tensors[name+quant.BNBSuffixQuantStateNF4] = u8(js)
		want[name] = nf
	}
	writeSafetensors(t, path, tensors)
	editJSON(t, dir, "config.json", func(m map[string]any) {
		m["quantization_config"] = map[string]any{"quant_method": "bitsandbytes", "load_in_4bit": true, "load_in_8bit": false,
			"bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": true}
	})
	return dir, want
}

// TestBNBImport converts a bitsandbytes NF4 checkpoint: to NF4 the weights are repacked without
// loss (or, for Q/K rows that NF4 blocks straddle, re-quantized after the permutation); to other
// types they are dequantized to the quant_state dtype first.
func TestBNBImport(t *testing.T) {
	for _, stateDType := range []string{"float32", "bfloat16"} {
		dir, nf4 := makeBNBCheckpoint(t, stateDType)
		for _, typ := range []string{"nf4", "f16", "q8_0"} {
			t.Run(stateDType+"/"+typ, func(t *testing.T) {
				model, mmproj, plan := convertTo(t, dir, Options{Type: typ, VisionType: typ})
				files := map[string]*OutputPlan{}
				for _, o := range []*OutputPlan{&plan.Model, &plan.MMProj} {
					files[o.Path] = o
				}
				repacked := 0
				for _, f := range []struct {
					file *OutputPlan
					data func(string) ([]byte, error)
				}{{&plan.Model, model.TensorData}, {&plan.MMProj, mmproj.TensorData}} {
					for i := range f.file.Tensors {
						tp := &f.file.Tensors[i]
						src, ok := nf4[tp.Source]
						if !ok {
							continue
						}
						got, err := f.data(tp.Name)
						if err != nil {
							t.Fatal(err)
						}
						want := expectedBNB(t, src, tp, stateDType)
						if !bytes.Equal(got, want) {
							t.Errorf("%s (%s, repacked %v): data differs", tp.Name, tp.Type, tp.Repacked())
						}
						if tp.Repacked() {
							repacked++
						}
					}
				}
				if typ == "nf4" && repacked == 0 {
					t.Error("no tensor was repacked")
				}
				if typ != "nf4" && repacked != 0 {
					t.Errorf("%d tensors repacked for type %s", repacked, typ)
				}
				if typ == "nf4" {
					md := model.Metadata
					shape, err := md.Array(quant.NF4ShapeKey("blk.0.ffn_up.weight"))
					if err != nil || !slices.Equal(shape.Data.([]uint64), []uint64{32, 64}) {
						t.Errorf("NF4 shape key: %v %v", shape, err)
					}
					if bs, err := md.Uint32(quant.NF4BlockSizeKey("blk.0.ffn_up.weight")); err != nil || bs != 64 {
						t.Errorf("NF4 block size key: %v %v", bs, err)
					}
				}
			})
		}
	}
}

// expectedBNB computes the bytes a converted bitsandbytes weight must have.
func expectedBNB(t *testing.T, src *quant.NF4Tensor, tp *TensorPlan, stateDType string) []byte {
	t.Helper()
	if tp.Repacked() {
		if tp.PermuteHeads > 0 {
			t.Fatalf("%s: p1's rows are narrower than a block, a permuted tensor cannot be repacked", tp.Name)
		}
		s, err := src.EncodeStream()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	vals, err := src.Dequantize()
	if err != nil {
		t.Fatal(err)
	}
	if stateDType == "bfloat16" {
		for i, v := range vals {
			vals[i] = quant.BF16ToF32(quant.F32ToBF16(v))
		}
	}
	ne0 := int(tp.Shape[0])
	if tp.PermuteHeads > 0 {
		vals = permuteRows(vals, ne0, len(vals)/ne0/tp.PermuteHeads)
	}
	if tp.Type == quant.NF4 {
		nf, err := quant.QuantizeNF4(vals, quant.NF4BlockSize)
		if err != nil {
			t.Fatal(err)
		}
		s, err := nf.EncodeStream()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	enc, err := quant.Quantize(tp.Type, vals, ne0)
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

// TestPermuteNF4Records checks that permuting whole-row NF4 records equals re-encoding the
// permuted values when rows are whole blocks (4096-wide q_proj rows in idefics2-8b).
func TestPermuteNF4Records(t *testing.T) {
	const ne0, headDim, heads = 128, 4, 2
	vals := make([]float32, ne0*headDim*heads)
	for i := range vals {
		vals[i] = float32(math.Sin(float64(i) * 0.37))
	}
	nf, err := quant.QuantizeNF4(vals, 64)
	if err != nil {
		t.Fatal(err)
	}
	stream, _ := nf.EncodeStream()
	got := permuteNF4Records(stream, ne0, 64, headDim)
	perm, _ := quant.QuantizeNF4(permuteRows(vals, ne0, headDim), 64)
	want, _ := perm.EncodeStream()
	if !bytes.Equal(got, want) {
		t.Error("permuted records differ from the encoding of the permuted values")
	}
}

// TestBNBBad checks the refusals for quantized checkpoints this converter does not import.
func TestBNBBad(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(t *testing.T, dir string)
		wantMsg []string
	}{
		{
			name: "gptq",
			mutate: func(t *testing.T, dir string) {
				editJSON(t, dir, "config.json", func(m map[string]any) { m["quantization_config"] = map[string]any{"quant_method": "gptq"} })
			},
			wantMsg: []string{"config.json", "quantization_config.quant_method", "gptq"},
		},
		{
			name: "8-bit",
			mutate: func(t *testing.T, dir string) {
				editJSON(t, dir, "config.json", func(m map[string]any) {
					m["quantization_config"] = map[string]any{"quant_method": "bitsandbytes", "load_in_8bit": true}
				})
			},
			wantMsg: []string{"load_in_8bit"},
		},
		{
			name: "quant state shape",
			mutate: func(t *testing.T, dir string) {
				path := filepath.Join(dir, "model.safetensors")
				m := readSafetensors(t, path)
				name := "model.text_model.layers.0.mlp.up_proj.weight" + quant.BNBSuffixQuantStateNF4
				js := strings.Replace(string(m[name].data), "[64,32]", "[64,33]", 1)
				m[name] = stTensor{dtype: "U8", shape: []int64{int64(len(js))}, data: []byte(js)}
				writeSafetensors(t, path, m)
			},
			wantMsg: []string{"model.text_model.layers.0.mlp.up_proj.weight", "quant state shape [64 33], want [64 32]"},
		},
		{
			name: "fp4",
			mutate: func(t *testing.T, dir string) {
				path := filepath.Join(dir, "model.safetensors")
				m := readSafetensors(t, path)
				name := "model.text_model.layers.0.mlp.up_proj.weight"
				m[name+quant.BNBSuffixQuantStateFP4] = m[name+quant.BNBSuffixQuantStateNF4]
				delete(m, name+quant.BNBSuffixQuantStateNF4)
				writeSafetensors(t, path, m)
			},
			wantMsg: []string{"model.text_model.layers.0.mlp.up_proj.weight", "FP4"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := makeBNBCheckpoint(t, "float32")
			tc.mutate(t, dir)
			_, err := NewPlan(Options{InDir: dir, Out: filepath.Join(t.TempDir(), "m.gguf"), Type: "nf4", Logger: quietLog})
			if err == nil || !IsInputError(err) {
				t.Fatalf("error %v, want an InputError", err)
			}
			for _, s := range tc.wantMsg {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("message %q does not mention %q", err, s)
				}
			}
		})
	}
}
