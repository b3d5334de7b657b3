package graph

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/idefics2-go/idefics2/ggml"
)

// The placement plan decides, once per file and device, how every weight is held and which kernel multiplies it.
// It is a pure function of the file's tensors, the target's capabilities and the options (PlanWeights): it reads
// no package state and calls nothing in ggml's C library, so it is tested as a table. The loader follows the plan;
// each Linear carries its placement's kernel, so the forward code never looks a weight up. A new CPU path or
// backend is a new Caps bit, new rows in matmulRules and a kernel in kernels.

// Layout is how a weight is held in memory.
type Layout uint8

const (
	LayoutFile       Layout = iota // the file's own blocks: used in place from the mapping (CPU) or copied once
	LayoutGGMLRepack               // ggml's row-interleaved CPU layout (its repack buffer type)
	LayoutQ4X16                    // Q4_0 in 16-row groups (ggml/q4x16.h)
	LayoutQ4KX16                   // Q4_K in 16-row groups (ggml/q4kx16.h)
	LayoutQ6KX16                   // Q6_K in 16-row groups (ggml/q6kx16.h)
	LayoutNF4Stream                // NF4 block stream as stored (docs/formats.md), multiplied by the NF4 kernel
	LayoutNF4X16                   // NF4 in 16-row groups with int8 codebook (ggml/nf4x16.h)
	LayoutF16                      // NF4 expanded to F16 once at load (backends and uses without an NF4 kernel)
)

var layoutNames = [...]string{"file", "ggml-repack", "q4x16", "q4kx16", "q6kx16", "nf4-stream", "nf4x16", "f16"}

func (l Layout) String() string { return enumName(layoutNames[:], int(l), "layout") }

// enumName is names[v], or kind(v) for a value without a name.
func enumName(names []string, v int, kind string) string {
	if v >= 0 && v < len(names) {
		return names[v]
	}
	return kind + "(" + strconv.Itoa(v) + ")"
}

// Kernel is what multiplies a weight by activations.
type Kernel uint8

const (
	KernelMulMat Kernel = iota // ggml_mul_mat, for the file's layout, ggml's repacked layout and F16
	KernelQ4X16
	KernelQ4KX16
	KernelQ6KX16
	KernelNF4
	KernelNF4X16
	KernelNone // not a matrix-product operand (embeddings read by row, norms, biases, latents)
)

var kernelNames = [...]string{"mul_mat", "q4x16", "q4kx16", "q6kx16", "nf4", "nf4x16", "none"}

func (k Kernel) String() string { return enumName(kernelNames[:], int(k), "kernel") }

// Caps are the capabilities of a target that placements depend on.
type Caps uint32

const (
	CapGGMLRepack Caps = 1 << iota // ggml's CPU repack buffer type is offered (CPU variants built with it: AVX2, or AArch64 dot products)
	CapX16VNNI                     // the q4x16, q4kx16 and q6kx16 kernels' AVX-512 VNNI path
	CapNF4X16                      // the nf4x16 kernel's vector path (AVX-512 VNNI or AVX2)
	CapFusedAttn                   // the attention kernels' vector path (ggml.FusedAttention, DecodeAttention: AVX-512F or AVX2)
	CapX16AVX2                     // the q4x16, q4kx16 and q6kx16 kernels' AVX2 path
	CapX16NEON                     // the q4x16, q4kx16 and q6kx16 kernels' NEON dot-product path (taken under LayoutsX16)
	CapNF4X16NEON                  // the nf4x16 kernel's NEON dot-product path (taken under LayoutsX16)
)

var capNames = []struct {
	c    Caps
	name string
}{{CapGGMLRepack, "ggml-repack"}, {CapX16VNNI, "x16-vnni"}, {CapNF4X16, "nf4x16"}, {CapFusedAttn, "fused-attn"}, {CapX16AVX2, "x16-avx2"},
	{CapX16NEON, "x16-neon"}, {CapNF4X16NEON, "nf4x16-neon"}}

func (c Caps) String() string {
	var out []string
	for _, n := range capNames {
		if c&n.c != 0 {
			out = append(out, n.name)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, "+")
}

// Target is the device weights are placed on, as the plan sees it.
type Target struct {
	CPU  bool // a CPU backend: weights in host memory, this project's kernels available
	Caps Caps // meaningful on CPU targets only
}

// LayoutPolicy says which layouts other than the file's the plan may choose.
type LayoutPolicy uint8

const (
	LayoutsBest LayoutPolicy = iota // the fastest layout the target runs
	LayoutsGGML                     // ggml's repacked layouts where ggml has one, never this project's 16-row ones (NF4 keeps its own)
	LayoutsFile                     // every weight in the file's layout (NF4 still expands where no kernel takes it)
	// LayoutsX16 takes this project's 16-row layouts (q4x16, q4kx16, q6kx16, nf4x16) wherever one of their vector
	// paths runs, also where LayoutsBest does not take them because they were not measured against ggml's kernels and
	// the NF4 stream kernel on such a CPU (the NEON paths).
	LayoutsX16
)

var policyNames = [...]string{"best", "ggml", "file", "x16"}

func (p LayoutPolicy) String() string { return enumName(policyNames[:], int(p), "policy") }

// TensorSpec is a tensor of the file as the plan needs it: its name, stored type and shape (ggml order), and for
// NF4 tensors (stored as I8 block streams) their logical shape and block size.
type TensorSpec struct {
	Name  string
	Type  ggml.Type
	Shape []int
	NF4   *NF4Layout
}

// NF4Layout is the logical shape (ggml order) and block size of an NF4 tensor (docs/formats.md).
type NF4Layout struct {
	Shape     []int
	BlockSize int
}

// Placement is one weight's placement.
type Placement struct {
	Layout Layout
	Kernel Kernel
	// Type is the ggml type of the placed tensor: the file's type, F16 for expanded NF4, I8 for this project's
	// byte layouts.
	Type ggml.Type
	// Shape is the weight's logical shape (ggml order): for a matrix [cols, rows].
	Shape []int
	// TailRows is the number of trailing rows kept in the file's layout when the rest (the head) takes a layout
	// whose row groups they do not fill: the head is multiplied by Kernel and the tail by ggml_mul_mat. 0: none.
	TailRows int
	// Group is the stacked group the weight belongs to ("blk.3.attn_qkv"), "" for none; Member is its index there.
	Group  string
	Member int
	// BlockSize is the NF4 block size (NF4 kernels).
	BlockSize int
}

// Rows is the number of output rows of a matrix (Shape[1]), its head's rows when split.
func (p Placement) Rows() int { return p.Shape[1] - p.TailRows }

// Group is matrices that read the same input, stacked into one tensor so that one product serves them all.
type Group struct {
	Name    string
	Layout  Layout
	Members []string // in product order
}

// Plan is the placement of every weight of one file.
type Plan struct {
	Weights map[string]Placement
	Groups  []Group
}

// notMatMul are the tensors that are never the weight of a matrix product: read by get_rows (the embeddings and
// position table), reshaped into a convolution kernel (the patch embedding) or used as activations (the perceiver
// latents). They keep a layout ggml's other ops read. A tied output projection multiplies token_embd with
// ggml_mul_mat, which reads the file's layout.
var notMatMul = map[string]bool{
	"token_embd.weight":      true,
	"v.patch_embd.weight":    true,
	"v.position_embd.weight": true,
	"mm.perceiver.latents":   true,
}

// matmulRule is one way to place a matrix of a given file type: the capability it needs, its layout and kernel, the
// row-group size it packs (rows past the last whole group stay in a plain tail), and the shapes it takes.
type matmulRule struct {
	typ      ggml.Type
	needs    Caps
	own      bool // one of this project's layouts (off with LayoutsGGML)
	optIn    bool // taken only under LayoutsX16: not measured against ggml's kernels on such CPUs
	layout   Layout
	kernel   Kernel
	rowGroup int
	eligible func(rows, cols int) bool
	stack    bool // members of a fusedSets group in this layout are stacked
}

// matmulRules are tried in order; the first whose capability the target has and whose shape fits wins. ggml
// repacks Q4_0, Q4_K and IQ4_NL for AVX2 in groups of 8 rows, and for AArch64's dot products in groups of 4 (Q4_0,
// IQ4_NL) or 8 (Q4_K) (ggml_repack_get_optimal_repack_type); groups of 8 fit both.
var matmulRules = []matmulRule{
	{ggml.TypeQ4_0, CapX16VNNI, true, false, LayoutQ4X16, KernelQ4X16, 16, ggml.Q4X16Eligible, true},
	{ggml.TypeQ4_K, CapX16VNNI, true, false, LayoutQ4KX16, KernelQ4KX16, 16, ggml.Q4KX16Eligible, true},
	{ggml.TypeQ6_K, CapX16VNNI, true, false, LayoutQ6KX16, KernelQ6KX16, 16, ggml.Q6KX16Eligible, true},
	{ggml.TypeQ4_0, CapX16AVX2, true, false, LayoutQ4X16, KernelQ4X16, 16, ggml.Q4X16Eligible, true},
	{ggml.TypeQ4_K, CapX16AVX2, true, false, LayoutQ4KX16, KernelQ4KX16, 16, ggml.Q4KX16Eligible, true},
	{ggml.TypeQ6_K, CapX16AVX2, true, false, LayoutQ6KX16, KernelQ6KX16, 16, ggml.Q6KX16Eligible, true},
	{ggml.TypeQ4_0, CapX16NEON, true, true, LayoutQ4X16, KernelQ4X16, 16, ggml.Q4X16Eligible, true},
	{ggml.TypeQ4_K, CapX16NEON, true, true, LayoutQ4KX16, KernelQ4KX16, 16, ggml.Q4KX16Eligible, true},
	{ggml.TypeQ6_K, CapX16NEON, true, true, LayoutQ6KX16, KernelQ6KX16, 16, ggml.Q6KX16Eligible, true},
	{ggml.TypeQ4_0, CapGGMLRepack, false, false, LayoutGGMLRepack, KernelMulMat, 8, anyShape, false},
	{ggml.TypeQ4_K, CapGGMLRepack, false, false, LayoutGGMLRepack, KernelMulMat, 8, anyShape, false},
	{ggml.TypeIQ4_NL, CapGGMLRepack, false, false, LayoutGGMLRepack, KernelMulMat, 8, anyShape, false},
}

func anyShape(rows, cols int) bool { return true }

// fusedSets are the member names of a stacked group, as suffixes of "blk.N.", and the group's name suffix.
var fusedSets = []struct {
	name    string
	members []string
}{
	{"attn_qkv", []string{"attn_q.weight", "attn_k.weight", "attn_v.weight"}},
	{"ffn_gate_up", []string{"ffn_gate.weight", "ffn_up.weight"}},
}

// maxFused is the most members a stacked group has (fusedSets).
const maxFused = 3

// PlanWeights places every tensor of a file on target t under policy p.
func PlanWeights(tensors []TensorSpec, t Target, p LayoutPolicy) *Plan {
	plan := &Plan{Weights: make(map[string]Placement, len(tensors))}
	stackable := map[string]bool{}
	for _, ts := range tensors {
		pl, stack := place(ts, t, p)
		plan.Weights[ts.Name] = pl
		if stack {
			stackable[ts.Name] = true
		}
	}
	plan.Groups = stackGroups(tensors, plan.Weights, stackable)
	for _, g := range plan.Groups {
		for i, m := range g.Members {
			pl := plan.Weights[m]
			pl.Group, pl.Member = g.Name, i
			plan.Weights[m] = pl
		}
	}
	return plan
}

// place is one tensor's placement, and whether it may be stacked.
func place(ts TensorSpec, t Target, p LayoutPolicy) (Placement, bool) {
	if ts.NF4 != nil {
		return placeNF4(ts, t, p), false
	}
	pl := Placement{Layout: LayoutFile, Kernel: KernelMulMat, Type: ts.Type, Shape: ts.Shape}
	if notMatMul[ts.Name] || len(ts.Shape) != 2 {
		pl.Kernel = KernelNone
		return pl, false
	}
	if !t.CPU || p == LayoutsFile {
		return pl, false
	}
	cols, rows := ts.Shape[0], ts.Shape[1]
	for _, r := range matmulRules {
		if r.typ != ts.Type || t.Caps&r.needs != r.needs || (r.own && p == LayoutsGGML) || (r.optIn && p != LayoutsX16) {
			continue
		}
		tail := rows % r.rowGroup
		if rows-tail <= 0 || !r.eligible(rows-tail, cols) {
			continue
		}
		pl.Layout, pl.Kernel, pl.TailRows = r.layout, r.kernel, tail
		if r.own {
			pl.Type = ggml.TypeI8
		}
		return pl, r.stack && tail == 0
	}
	return pl, false
}

// placeNF4 places an NF4 tensor: matrices on a CPU take the NF4 kernels (nf4x16 where a measured vector path of it
// runs, or its NEON path under LayoutsX16, and the shape fits, unless the policy keeps the file's layout; else the
// stream kernel in place); everything else is expanded to F16 for ggml's own ops.
func placeNF4(ts TensorSpec, t Target, p LayoutPolicy) Placement {
	pl := Placement{Layout: LayoutF16, Kernel: KernelMulMat, Type: ggml.TypeF16, Shape: ts.NF4.Shape, BlockSize: ts.NF4.BlockSize}
	matrix := len(ts.NF4.Shape) == 2 && !notMatMul[ts.Name]
	switch {
	case !matrix:
		pl.Kernel = KernelNone
	case !t.CPU:
	case p != LayoutsFile && (t.Caps&CapNF4X16 != 0 || (p == LayoutsX16 && t.Caps&CapNF4X16NEON != 0)) && ggml.NF4x16Check(ts.NF4.Shape[1], ts.NF4.Shape[0], ts.NF4.BlockSize) == nil:
		pl.Layout, pl.Kernel, pl.Type = LayoutNF4X16, KernelNF4X16, ggml.TypeI8
	default:
		pl.Layout, pl.Kernel, pl.Type = LayoutNF4Stream, KernelNF4, ggml.TypeI8
	}
	return pl
}

// stackGroups finds the groups among stackable matrices: every member present and stackable, in one layout, with
// the same number of columns.
func stackGroups(tensors []TensorSpec, placed map[string]Placement, stackable map[string]bool) []Group {
	var out []Group
	for _, ts := range tensors {
		prefix, ok := blockPrefix(ts.Name)
		if !ok {
			continue
		}
		for _, set := range fusedSets {
			if ts.Name != prefix+set.members[0] || !stackable[ts.Name] {
				continue
			}
			first := placed[ts.Name]
			g := Group{Name: prefix + set.name, Layout: first.Layout}
			for _, m := range set.members {
				pm, ok := placed[prefix+m]
				if !ok || !stackable[prefix+m] || pm.Layout != first.Layout || pm.Shape[0] != first.Shape[0] {
					g.Members = nil
					break
				}
				g.Members = append(g.Members, prefix+m)
			}
			if g.Members != nil {
				out = append(out, g)
			}
		}
	}
	return out
}

// blockPrefix returns "blk.N." for a tensor of decoder layer N.
func blockPrefix(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "blk.")
	if !ok {
		return "", false
	}
	i := strings.IndexByte(rest, '.')
	if i <= 0 {
		return "", false
	}
	if _, err := strconv.Atoi(rest[:i]); err != nil {
		return "", false
	}
	return name[:4+i+1], true
}

// Summary counts the weights per layout and kernel, for logs and `inspect`.
func (p *Plan) Summary() string {
	count := map[string]int{}
	split := 0
	for _, pl := range p.Weights {
		if pl.Kernel == KernelNone {
			count[pl.Layout.String()+" (not multiplied)"]++
			continue
		}
		count[pl.Layout.String()+"/"+pl.Kernel.String()]++
		if pl.TailRows > 0 {
			split++
		}
	}
	var keys []string
	for k := range count {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %d; ", k, count[k])
	}
	fmt.Fprintf(&b, "split: %d; stacked groups: %d", split, len(p.Groups))
	return b.String()
}

// Lines lists every weight's placement, one line each, sorted by name (`inspect --plan`, `bench -v`).
func (p *Plan) Lines() []string {
	names := make([]string, 0, len(p.Weights))
	for n := range p.Weights {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]string, 0, len(names))
	for _, n := range names {
		pl := p.Weights[n]
		line := fmt.Sprintf("%-40s %-11s %-8s %-6s %v", n, pl.Layout, pl.Kernel, pl.Type, pl.Shape)
		if pl.TailRows > 0 {
			line += fmt.Sprintf(" tail=%d", pl.TailRows)
		}
		if pl.Group != "" {
			line += " group=" + pl.Group
		}
		out = append(out, line)
	}
	return out
}
