package graph

import (
	"slices"
	"testing"

	"github.com/idefics2-go/idefics2/ggml"
)

// TestPlanWeights places a small file's tensors on every kind of target under every policy and checks each
// weight's layout, kernel, stored type, tail and group against the plan's rules.
func TestPlanWeights(t *testing.T) {
	nf4 := func(shape ...int) *NF4Layout { return &NF4Layout{Shape: shape, BlockSize: 64} }
	file := []TensorSpec{
		{Name: "token_embd.weight", Type: ggml.TypeQ4_0, Shape: []int{256, 32003}},
		{Name: "blk.0.attn_norm.weight", Type: ggml.TypeF32, Shape: []int{256}},
		{Name: "blk.0.attn_q.weight", Type: ggml.TypeQ4_0, Shape: []int{256, 256}},
		{Name: "blk.0.attn_k.weight", Type: ggml.TypeQ4_0, Shape: []int{256, 64}},
		{Name: "blk.0.attn_v.weight", Type: ggml.TypeQ6_K, Shape: []int{256, 64}},
		{Name: "blk.0.ffn_gate.weight", Type: ggml.TypeQ4_K, Shape: []int{256, 512}},
		{Name: "blk.0.ffn_up.weight", Type: ggml.TypeQ4_K, Shape: []int{256, 512}},
		{Name: "blk.0.ffn_down.weight", Type: ggml.TypeQ8_0, Shape: []int{512, 256}},
		{Name: "output.weight", Type: ggml.TypeQ4_0, Shape: []int{256, 32003}},
		{Name: "blk.1.attn_q.weight", Type: ggml.TypeI8, Shape: []int{256 * 256 / 64 * 36}, NF4: nf4(256, 256)},
		{Name: "blk.1.attn_k.weight", Type: ggml.TypeI8, Shape: []int{256 * 40 / 64 * 36}, NF4: nf4(256, 40)},
		{Name: "mm.perceiver.latents", Type: ggml.TypeI8, Shape: []int{256 * 64 / 64 * 36}, NF4: nf4(256, 64)},
	}
	type want struct {
		layout Layout
		kernel Kernel
		tail   int
		group  string
	}
	file0 := want{LayoutFile, KernelMulMat, 0, ""}
	operand := want{LayoutFile, KernelNone, 0, ""}
	ggmlQ4 := want{LayoutGGMLRepack, KernelMulMat, 0, ""}
	stream := want{LayoutNF4Stream, KernelNF4, 0, ""}
	expanded := want{LayoutF16, KernelMulMat, 0, ""}
	expandedOperand := want{LayoutF16, KernelNone, 0, ""}
	names := []string{"token_embd.weight", "blk.0.attn_norm.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight",
		"blk.0.attn_v.weight", "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight", "blk.0.ffn_down.weight", "output.weight",
		"blk.1.attn_q.weight", "blk.1.attn_k.weight", "mm.perceiver.latents"}
	gpu := []want{operand, operand, file0, file0, file0, file0, file0, file0, file0, expanded, expanded, expandedOperand}
	portable := []want{operand, operand, file0, file0, file0, file0, file0, file0, file0, stream, stream, expandedOperand}
	avx2 := []want{operand, operand, ggmlQ4, ggmlQ4, file0, {LayoutGGMLRepack, KernelMulMat, 0, ""},
		{LayoutGGMLRepack, KernelMulMat, 0, ""}, file0, {LayoutGGMLRepack, KernelMulMat, 3, ""}, stream, stream, expandedOperand}
	vnni := []want{operand, operand, {LayoutQ4X16, KernelQ4X16, 0, ""}, {LayoutQ4X16, KernelQ4X16, 0, ""},
		{LayoutQ6KX16, KernelQ6KX16, 0, ""}, {LayoutQ4KX16, KernelQ4KX16, 0, "blk.0.ffn_gate_up"},
		{LayoutQ4KX16, KernelQ4KX16, 0, "blk.0.ffn_gate_up"}, file0, {LayoutQ4X16, KernelQ4X16, 3, ""},
		{LayoutNF4X16, KernelNF4X16, 0, ""}, stream, expandedOperand}
	// The x16 AVX2 paths take Q4_0, Q4_K and Q6_K as the AVX-512 ones do; NF4 keeps its stream (nf4x16 needs VNNI).
	avx2x16 := slices.Clone(vnni)
	avx2x16[9] = stream
	// With q, k in q4x16 and v in q6kx16 the attention projections do not share a layout: no attn_qkv group.
	allVNNI := CapGGMLRepack | CapX16VNNI | CapNF4X16 | CapFusedAttn | CapX16AVX2
	neon := CapX16NEON | CapNF4X16NEON | CapFusedAttn
	cases := []struct {
		name   string
		target Target
		policy LayoutPolicy
		want   []want
	}{
		{"gpu", Target{}, LayoutsBest, gpu},
		{"gpu file", Target{}, LayoutsFile, gpu},
		{"portable cpu", Target{CPU: true}, LayoutsBest, portable},
		{"avx2 cpu", Target{CPU: true, Caps: CapGGMLRepack}, LayoutsBest, avx2},
		{"avx2 cpu ggml", Target{CPU: true, Caps: CapGGMLRepack}, LayoutsGGML, avx2},
		{"avx2 cpu file", Target{CPU: true, Caps: CapGGMLRepack}, LayoutsFile, portable},
		{"avx2 cpu with x16", Target{CPU: true, Caps: CapGGMLRepack | CapX16AVX2}, LayoutsBest, avx2x16},
		{"avx2 cpu with x16, ggml", Target{CPU: true, Caps: CapGGMLRepack | CapX16AVX2}, LayoutsGGML, avx2},
		{"avx2 cpu with x16, x16", Target{CPU: true, Caps: CapGGMLRepack | CapX16AVX2}, LayoutsX16, avx2x16},
		// The NEON paths are taken only when asked for (not measured against ggml's kernels on an ARM CPU).
		{"neon cpu", Target{CPU: true, Caps: neon}, LayoutsBest, portable},
		{"neon cpu x16", Target{CPU: true, Caps: neon}, LayoutsX16, vnni},
		{"neon cpu ggml", Target{CPU: true, Caps: neon}, LayoutsGGML, portable},
		{"neon cpu file", Target{CPU: true, Caps: neon}, LayoutsFile, portable},
		{"avx512 vnni cpu", Target{CPU: true, Caps: allVNNI}, LayoutsBest, vnni},
		{"avx512 vnni cpu ggml", Target{CPU: true, Caps: allVNNI}, LayoutsGGML,
			append(slices.Clone(avx2[:9]), want{LayoutNF4X16, KernelNF4X16, 0, ""}, stream, expandedOperand)},
		{"avx512 vnni cpu file", Target{CPU: true, Caps: allVNNI}, LayoutsFile, portable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			plan := PlanWeights(file, c.target, c.policy)
			for i, name := range names {
				pl := plan.Weights[name]
				got := want{pl.Layout, pl.Kernel, pl.TailRows, pl.Group}
				if got != c.want[i] {
					t.Errorf("%s: got %+v, want %+v", name, got, c.want[i])
				}
				wantType := file[i].Type
				switch pl.Layout {
				case LayoutQ4X16, LayoutQ4KX16, LayoutQ6KX16, LayoutNF4X16, LayoutNF4Stream:
					wantType = ggml.TypeI8
				case LayoutF16:
					wantType = ggml.TypeF16
				}
				if pl.Type != wantType {
					t.Errorf("%s: stored as %s, want %s", name, pl.Type, wantType)
				}
			}
		})
	}
}

// TestStackGroups checks which sets of matrices are stacked: all members present, stackable, in one layout and of
// one width.
func TestStackGroups(t *testing.T) {
	vnni := Target{CPU: true, Caps: CapX16VNNI}
	q := func(name string, typ ggml.Type, cols, rows int) TensorSpec {
		return TensorSpec{Name: name, Type: typ, Shape: []int{cols, rows}}
	}
	cases := []struct {
		name  string
		specs []TensorSpec
		want  []string
	}{
		{"qkv and gate_up", []TensorSpec{q("blk.2.attn_q.weight", ggml.TypeQ4_0, 256, 256), q("blk.2.attn_k.weight", ggml.TypeQ4_0, 256, 64),
			q("blk.2.attn_v.weight", ggml.TypeQ4_0, 256, 64), q("blk.2.ffn_gate.weight", ggml.TypeQ4_0, 256, 512),
			q("blk.2.ffn_up.weight", ggml.TypeQ4_0, 256, 512)}, []string{"blk.2.attn_qkv", "blk.2.ffn_gate_up"}},
		{"a member missing", []TensorSpec{q("blk.0.ffn_gate.weight", ggml.TypeQ4_0, 256, 512)}, nil},
		{"layouts differ", []TensorSpec{q("blk.0.ffn_gate.weight", ggml.TypeQ4_0, 256, 512), q("blk.0.ffn_up.weight", ggml.TypeQ4_K, 256, 512)}, nil},
		{"a member split", []TensorSpec{q("blk.0.ffn_gate.weight", ggml.TypeQ4_0, 256, 512), q("blk.0.ffn_up.weight", ggml.TypeQ4_0, 256, 520)}, nil},
		{"ggml's layout", []TensorSpec{q("blk.0.ffn_gate.weight", ggml.TypeQ8_0, 256, 512), q("blk.0.ffn_up.weight", ggml.TypeQ8_0, 256, 512)}, nil},
		{"vision layers", []TensorSpec{q("v.blk.0.ffn_gate.weight", ggml.TypeQ4_0, 256, 512), q("v.blk.0.ffn_up.weight", ggml.TypeQ4_0, 256, 512)}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, g := range PlanWeights(c.specs, vnni, LayoutsBest).Groups {
				got = append(got, g.Name)
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("groups %v, want %v", got, c.want)
			}
		})
	}
}
