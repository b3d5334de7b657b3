package convert

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/quant"
)

// mix names a llama.cpp quantization mix: rules that give some tensors more bits.
type mix int

const (
	mixNone mix = iota
	mixQ4KS
	mixQ4KM
	mixQ5KS
	mixQ5KM
)

// Scheme is a --type choice: the base storage type of the text matrices, the llama file type it
// is recorded as, and the llama.cpp mix rules it applies.
type Scheme struct {
	Name     string        // as given to --type, e.g. "q4_k_m"
	Base     quant.Type    // type of the text matrices before mix rules and fallbacks
	FileType gguf.FileType // general.file_type of model.gguf
	mix      mix
}

// schemes lists every --type. The plain K-quant names use one type for every matrix (like
// llama-quantize --pure) and record the file type of the closest llama.cpp mix; the _s/_m names
// apply llama.cpp's rules (llama-quant.cpp, llama_tensor_get_type) for a llama model without
// experts:
//
//   - q4_k_m, q5_k_m: output.weight Q6_K; attn_v.weight and ffn_down.weight Q6_K on the
//     "use_more_bits" layers (the first and last eighth of the layers and every third layer in
//     between: i < n/8 || i >= 7n/8 || (i − n/8) % 3 == 2); everything else Q4_K / Q5_K.
//   - q4_k_s: output.weight Q6_K; attn_v.weight Q5_K on layers 0–3; ffn_down.weight Q5_K on the
//     first eighth of the layers; everything else Q4_K.
//   - q5_k_s: output.weight Q6_K; everything else Q5_K.
//
// In every mix, output.weight falls back to Q8_0 when its rows are not a multiple of 256, and
// with tied embeddings token_embd.weight takes output.weight's rule (llama.cpp quantizes the
// shared tensor like the output).
var schemes = []Scheme{
	{Name: "f32", Base: quant.F32, FileType: gguf.FileTypeF32},
	{Name: "f16", Base: quant.F16, FileType: gguf.FileTypeF16},
	{Name: "bf16", Base: quant.BF16, FileType: gguf.FileTypeBF16},
	{Name: "q8_0", Base: quant.Q8_0, FileType: gguf.FileTypeQ8_0},
	{Name: "q4_0", Base: quant.Q4_0, FileType: gguf.FileTypeQ4_0},
	{Name: "q4_1", Base: quant.Q4_1, FileType: gguf.FileTypeQ4_1},
	{Name: "q5_0", Base: quant.Q5_0, FileType: gguf.FileTypeQ5_0},
	{Name: "q5_1", Base: quant.Q5_1, FileType: gguf.FileTypeQ5_1},
	{Name: "q4_k", Base: quant.Q4_K, FileType: gguf.FileTypeQ4_K_S},
	{Name: "q5_k", Base: quant.Q5_K, FileType: gguf.FileTypeQ5_K_S},
	{Name: "q6_k", Base: quant.Q6_K, FileType: gguf.FileTypeQ6_K},
	{Name: "nf4", Base: quant.NF4, FileType: gguf.FileTypeNF4},
	{Name: "q4_k_s", Base: quant.Q4_K, FileType: gguf.FileTypeQ4_K_S, mix: mixQ4KS},
	{Name: "q4_k_m", Base: quant.Q4_K, FileType: gguf.FileTypeQ4_K_M, mix: mixQ4KM},
	{Name: "q5_k_s", Base: quant.Q5_K, FileType: gguf.FileTypeQ5_K_S, mix: mixQ5KS},
	{Name: "q5_k_m", Base: quant.Q5_K, FileType: gguf.FileTypeQ5_K_M, mix: mixQ5KM},
}

// SchemeNames returns the accepted --type names in a stable order.
func SchemeNames() []string {
	names := make([]string, len(schemes))
	for i, s := range schemes {
		names[i] = s.Name
	}
	return names
}

// ParseScheme returns the scheme named s (case-insensitive).
func ParseScheme(s string) (Scheme, error) {
	for _, sc := range schemes {
		if strings.EqualFold(sc.Name, s) {
			return sc, nil
		}
	}
	return Scheme{}, inputErrorf("convert: --type %q: unknown (want one of %s)", s, strings.Join(SchemeNames(), ", "))
}

// storageTypes are the types accepted by --vision-type and overrides: every type the quant
// package encodes except Q8_K (only used as a dot-product intermediate in ggml).
var storageTypes = []quant.Type{quant.F32, quant.F16, quant.BF16, quant.Q8_0, quant.Q4_0, quant.Q4_1,
	quant.Q5_0, quant.Q5_1, quant.Q4_K, quant.Q5_K, quant.Q6_K, quant.NF4}

// ParseStorageType parses a single tensor type for --vision-type and overrides: f32, f16, bf16,
// q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k or nf4 (case-insensitive).
func ParseStorageType(s string) (quant.Type, error) {
	for _, t := range storageTypes {
		if strings.EqualFold(t.String(), s) {
			return t, nil
		}
	}
	return 0, inputErrorf("convert: type %q: %s", s, unknownStorageType())
}

// unknownStorageType lists the accepted storage type names for messages.
func unknownStorageType() string {
	names := make([]string, len(storageTypes))
	for i, t := range storageTypes {
		names[i] = strings.ToLower(t.String())
	}
	return "unknown (want one of " + strings.Join(names, ", ") + ")"
}

// fileTypeOf returns the llama file type recorded for a file whose matrices are mostly t.
func fileTypeOf(t quant.Type) gguf.FileType {
	switch t {
	case quant.F32:
		return gguf.FileTypeF32
	case quant.F16:
		return gguf.FileTypeF16
	case quant.BF16:
		return gguf.FileTypeBF16
	case quant.Q8_0:
		return gguf.FileTypeQ8_0
	case quant.Q4_0:
		return gguf.FileTypeQ4_0
	case quant.Q4_1:
		return gguf.FileTypeQ4_1
	case quant.Q5_0:
		return gguf.FileTypeQ5_0
	case quant.Q5_1:
		return gguf.FileTypeQ5_1
	case quant.Q4_K:
		return gguf.FileTypeQ4_K_S
	case quant.Q5_K:
		return gguf.FileTypeQ5_K_S
	case quant.Q6_K:
		return gguf.FileTypeQ6_K
	case quant.NF4:
		return gguf.FileTypeNF4
	}
	return gguf.FileTypeF32
}

// Override forces the type of the matrices whose GGUF name matches Pattern (regexp.MatchString,
// unanchored, like llama-quantize --tensor-type). Norms, biases and other tensors that always stay
// F32 are not affected.
type Override struct {
	Pattern *regexp.Regexp
	Type    quant.Type
}

// ParseOverride parses "REGEX=TYPE", splitting at the last "=".
func ParseOverride(s string) (Override, error) {
	i := strings.LastIndex(s, "=")
	if i <= 0 || i == len(s)-1 {
		return Override{}, inputErrorf("convert: --override %q: want REGEX=TYPE", s)
	}
	re, err := regexp.Compile(s[:i])
	if err != nil {
		return Override{}, inputErrorf("convert: --override %q: %v", s, err)
	}
	t, err := ParseStorageType(s[i+1:])
	if err != nil {
		return Override{}, inputErrorf("convert: --override %q: type %q: %s", s, s[i+1:], unknownStorageType())
	}
	return Override{Pattern: re, Type: t}, nil
}

// useMoreBits is llama.cpp's use_more_bits(i_layer, n_layers) (llama-quant.cpp).
func useMoreBits(i, n int) bool {
	return i < n/8 || i >= 7*n/8 || (i-n/8)%3 == 2
}

// typeChoice is the outcome of choosing a tensor's type.
type typeChoice struct {
	requested quant.Type // from the scheme, mix rules and overrides
	final     quant.Type // after fallbacks for incompatible row lengths
	note      string     // why final differs from the base type, for the plan
}

// typeChooser applies the scheme, the vision type and the overrides.
type typeChooser struct {
	scheme     Scheme
	visionType quant.Type
	overrides  []Override
	used       []bool // overrides that matched some tensor
	numLayers  int    // text layers, for the mix rules
	tied       bool
}

// choose returns the type of one tensor. ne0 is the ggml row length.
func (c *typeChooser) choose(m mappedTensor, ne0 int) typeChoice {
	var t quant.Type
	var notes []string
	switch m.rule.class {
	case classF32:
		return typeChoice{requested: quant.F32, final: quant.F32}
	case classVision:
		t = c.visionType
	case classText:
		t = c.scheme.Base
		if mt, why := c.mixType(m, ne0); why != "" {
			t = mt
			notes = append(notes, why)
		}
	}
	for i, o := range c.overrides {
		if o.Pattern.MatchString(m.gguf) {
			c.used[i] = true
			t = o.Type
			notes = append(notes, "override "+o.Pattern.String())
			break
		}
	}
	final := fallbackType(t, ne0)
	if final != t {
		notes = append(notes, fmt.Sprintf("%s needs rows of a multiple of %d, ne0 is %d", t, t.BlockSize(), ne0))
	}
	return typeChoice{requested: t, final: final, note: strings.Join(notes, "; ")}
}

// mixType applies the llama.cpp mix rules documented at schemes; why is "" when no rule applies.
func (c *typeChooser) mixType(m mappedTensor, ne0 int) (quant.Type, string) {
	mx := c.scheme.mix
	if mx == mixNone {
		return 0, ""
	}
	name := m.rule.gguf
	if name == "output.weight" || (c.tied && name == "token_embd.weight") {
		if ne0%quant.QK_K != 0 {
			return quant.Q8_0, "output rule: Q8_0"
		}
		return quant.Q6_K, "output rule: Q6_K"
	}
	n, i := c.numLayers, m.layer
	switch name {
	case "blk.{N}.attn_v.weight":
		switch {
		case (mx == mixQ4KM || mx == mixQ5KM) && useMoreBits(i, n):
			return quant.Q6_K, "use_more_bits layer: Q6_K"
		case mx == mixQ4KS && i < 4:
			return quant.Q5_K, "first 4 attn_v: Q5_K"
		}
	case "blk.{N}.ffn_down.weight":
		switch {
		case (mx == mixQ4KM || mx == mixQ5KM) && useMoreBits(i, n):
			return quant.Q6_K, "use_more_bits layer: Q6_K"
		case mx == mixQ4KS && i < n/8:
			return quant.Q5_K, "first eighth of ffn_down: Q5_K"
		}
	}
	return 0, ""
}

// fallbackType returns t, or the type llama.cpp falls back to when the row length ne0 is not a
// multiple of t's block (llama-quant.cpp: Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0), and F16 when
// that does not fit either. NF4 is stored as a block stream over the whole tensor and fits any
// shape.
func fallbackType(t quant.Type, ne0 int) quant.Type {
	fits := func(t quant.Type) bool { return t == quant.NF4 || ne0%t.BlockSize() == 0 }
	if fits(t) {
		return t
	}
	switch t {
	case quant.Q4_K:
		t = quant.Q5_0
	case quant.Q5_K:
		t = quant.Q5_1
	case quant.Q6_K:
		t = quant.Q8_0
	}
	if fits(t) {
		return t
	}
	return quant.F16
}

// unusedOverrides returns the patterns of overrides that matched no tensor.
func (c *typeChooser) unusedOverrides() []string {
	var out []string
	for i, u := range c.used {
		if !u {
			out = append(out, c.overrides[i].Pattern.String())
		}
	}
	sort.Strings(out)
	return out
}
