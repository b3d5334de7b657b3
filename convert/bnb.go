package convert

import (
	"fmt"
	"strings"

	"github.com/idefics2-go/idefics2/quant"
	"github.com/idefics2-go/idefics2/safetensors"
)

// Checkpoints quantized with bitsandbytes (transformers' BitsAndBytesConfig, load_in_4bit with
// bnb_4bit_quant_type="nf4") store each 4-bit Linear weight "<m>.weight" as packed uint8 codes
// plus companion tensors (docs/formats.md, "From a bitsandbytes checkpoint"). With an NF4 output
// type the weight is repacked without loss (quant.RepackBNB); with any other type it is
// dequantized (to the quant_state dtype, as bitsandbytes' dequantize_4bit returns it) and
// quantized again like a float weight.

// bnbSuffixes are the companion tensor suffixes of a bitsandbytes 4-bit weight.
var bnbSuffixes = []string{
	quant.BNBSuffixQuantStateNF4, quant.BNBSuffixQuantStateFP4,
	quant.BNBSuffixNestedQuantMap, quant.BNBSuffixNestedAbsmax,
	quant.BNBSuffixQuantMap, quant.BNBSuffixAbsmax,
}

// bnbBase returns the weight name a companion tensor belongs to.
func bnbBase(name string) (string, bool) {
	for _, s := range bnbSuffixes {
		if base, ok := strings.CutSuffix(name, s); ok {
			return base, true
		}
	}
	return "", false
}

// checkQuantizationConfig accepts a config.json without quantization_config, or one describing
// bitsandbytes 4-bit NF4; anything else (GPTQ, AWQ, 8-bit, FP4) is refused.
func checkQuantizationConfig(cfg *jsonObject) error {
	qc, ok, err := cfg.object("quantization_config")
	if err != nil || !ok {
		return err
	}
	method, err := required[string](qc, "quant_method")
	if err != nil {
		return err
	}
	if method != "bitsandbytes" {
		return qc.errorf("quant_method", "%q is not supported (only bitsandbytes 4-bit NF4)", method)
	}
	if in8, _, err := optional[bool](qc, "load_in_8bit"); err != nil {
		return err
	} else if in8 {
		return qc.errorf("load_in_8bit", "8-bit bitsandbytes checkpoints are not supported (only 4-bit NF4)")
	}
	// BitsAndBytesConfig default: bnb_4bit_quant_type="fp4".
	qt, err := withDefault(qc, "bnb_4bit_quant_type", "fp4")
	if err != nil {
		return err
	}
	if qt != "nf4" {
		return qc.errorf("bnb_4bit_quant_type", "%q is not supported (only nf4)", qt)
	}
	return nil
}

// bnbTensor reads one safetensors tensor as a quant.BNBTensor.
func bnbTensor(ck *safetensors.Checkpoint, name string) (*quant.BNBTensor, error) {
	t, err := ck.Tensor(name)
	if err != nil {
		return nil, err
	}
	shape := make([]int, len(t.Shape))
	for i, d := range t.Shape {
		shape[i] = int(d)
	}
	return &quant.BNBTensor{DType: string(t.DType), Shape: shape, Data: t.Data}, nil
}

// bnbWeight gathers the tensors of the bitsandbytes weight name.
func bnbWeight(ck *safetensors.Checkpoint, name string) (quant.BNBWeight, error) {
	w := quant.BNBWeight{Name: name}
	req := func(n string) (*quant.BNBTensor, error) {
		if _, _, ok := ck.Info(n); !ok {
			return nil, fmt.Errorf("tensor %q is missing", n)
		}
		return bnbTensor(ck, n)
	}
	opt := func(n string) (*quant.BNBTensor, error) {
		if _, _, ok := ck.Info(n); !ok {
			return nil, nil
		}
		return bnbTensor(ck, n)
	}
	var err error
	var t *quant.BNBTensor
	if t, err = req(name); err != nil {
		return w, err
	}
	w.Weight = *t
	if t, err = req(name + quant.BNBSuffixAbsmax); err != nil {
		return w, err
	}
	w.Absmax = *t
	if t, err = req(name + quant.BNBSuffixQuantStateNF4); err != nil {
		return w, err
	}
	w.QuantState = *t
	if w.QuantMap, err = opt(name + quant.BNBSuffixQuantMap); err != nil {
		return w, err
	}
	if w.NestedAbsmax, err = opt(name + quant.BNBSuffixNestedAbsmax); err != nil {
		return w, err
	}
	if w.NestedQuantMap, err = opt(name + quant.BNBSuffixNestedQuantMap); err != nil {
		return w, err
	}
	return w, nil
}

// bnbPlan reads the quant state of the bitsandbytes weight name and checks it against the
// expected PyTorch shape. It returns the state and the checkpoint bytes of all its tensors.
func bnbPlan(ck *safetensors.Checkpoint, name string, want []int) (*quant.BNBQuantState, int64, error) {
	if _, _, ok := ck.Info(name + quant.BNBSuffixQuantStateFP4); ok {
		return nil, 0, fmt.Errorf("bitsandbytes FP4 is not supported (only NF4)")
	}
	qs, err := bnbTensor(ck, name+quant.BNBSuffixQuantStateNF4)
	if err != nil {
		return nil, 0, err
	}
	st, err := quant.ParseBNBQuantState(qs.Data)
	if err != nil {
		return nil, 0, fmt.Errorf("tensor %q: %w", name+quant.BNBSuffixQuantStateNF4, err)
	}
	if !slicesEqualInt(st.Shape, want) {
		return nil, 0, fmt.Errorf("quant state shape %v, want %v from %s", st.Shape, want, configFile)
	}
	var bytes int64
	for _, n := range append([]string{name}, suffixed(name)...) {
		if dt, shape, ok := ck.Info(n); ok {
			e := int64(dt.Size())
			for _, d := range shape {
				e *= d
			}
			bytes += e
		}
	}
	return st, bytes, nil
}

func suffixed(name string) []string {
	out := make([]string, len(bnbSuffixes))
	for i, s := range bnbSuffixes {
		out[i] = name + s
	}
	return out
}

func slicesEqualInt(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// permuteNF4Records applies the Q/K row permutation to an NF4 block stream whose rows are whole
// blocks (ne0 a multiple of the block size): each row is ne0/blockSize records, moved like the
// row (see permuteRows).
func permuteNF4Records(stream []byte, ne0, blockSize, headDim int) []byte {
	rec := 4 + blockSize/2
	rowBytes := ne0 / blockSize * rec
	out := make([]byte, len(stream))
	half := headDim / 2
	heads := len(stream) / (rowBytes * headDim)
	for h := 0; h < heads; h++ {
		base := h * headDim
		for j := 0; j < 2; j++ {
			for i := 0; i < half; i++ {
				src := (base + j*half + i) * rowBytes
				dst := (base + 2*i + j) * rowBytes
				copy(out[dst:dst+rowBytes], stream[src:src+rowBytes])
			}
		}
	}
	return out
}
