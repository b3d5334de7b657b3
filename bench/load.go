package bench

import "github.com/idefics2-go/idefics2/graph"

// LoadOptions are the load settings a benchmark can vary.
type LoadOptions struct {
	Device  string // auto, cpu, cuda, metal, vulkan or a device name
	Threads int    // CPU threads; 0: physical cores
	// FlashAttn uses ggml's fused attention in the decoder.
	FlashAttn bool
	// NoRepack keeps quantized weights in the file's layout instead of the CPU's row-interleaved ones (it wins over
	// GGMLRepack and X16; the bench command refuses more than one of them).
	NoRepack bool
	// GGMLRepack puts Q4_0 and Q4_K matrices in ggml's repacked layouts instead of this project's q4x16 and
	// q4kx16 (and Q6_K matrices in their plain blocks), to compare the two.
	GGMLRepack bool
	// X16 puts Q4_0, Q4_K, Q6_K and NF4 matrices in this project's 16-row layouts wherever a vector path of their
	// kernels runs, also where the default does not take them because they were not measured there (AArch64 with NEON
	// dot products).
	X16 bool
	// UnfusedAttn computes attention with ggml's separate products and softmax instead of this project's fused
	// CPU kernels, to compare the two (FlashAttn wins over it for the decoder).
	UnfusedAttn bool
	// Adapters are run-time LoRA adapters applied to every linear layer they cover.
	Adapters []graph.Adapter
}

// Load loads a model pair for Run (mmprojPath "": text only). It is the one place benchmarks turn LoadOptions into
// graph options.
func Load(modelPath, mmprojPath string, o LoadOptions) (*graph.Model, error) {
	return graph.Load(modelPath, mmprojPath, o.graphOptions())
}

// graphOptions are the graph options o asks for.
func (o LoadOptions) graphOptions() graph.Options {
	g := graph.Options{Device: o.Device, Threads: o.Threads, Adapters: o.Adapters}
	switch {
	case o.NoRepack:
		g.Layouts = graph.LayoutsFile
	case o.GGMLRepack:
		g.Layouts = graph.LayoutsGGML
	case o.X16:
		g.Layouts = graph.LayoutsX16
	}
	if o.UnfusedAttn {
		g.TextAttn, g.VisionAttn = graph.AttnGGML, graph.AttnGGML
	}
	if o.FlashAttn {
		g.TextAttn = graph.AttnFlash
	}
	return g
}

// Placement describes where a loaded model's weights went (graph.Model.PlacementReport), for `bench -v`.
func Placement(m *graph.Model) []string { return m.PlacementReport() }
