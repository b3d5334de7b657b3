package graph

import (
	"fmt"
	"runtime"

	"github.com/idefics2-go/idefics2/ggml"
)

// GELU is the vision tower's GELU (tanh approximation, as SigLIP's gelu_pytorch_tanh).
type GELU uint8

const (
	// GELUAuto is the exact form for an F32 mmproj (general.file_type 0) and ggml's fp16 table otherwise: with
	// reduced-precision weights the table's ~1e-3 relative error is well inside theirs.
	GELUAuto  GELU = iota
	GELUExact      // the tanh form computed in float32
	GELUTable      // ggml's fp16 lookup table
)

var geluNames = [...]string{"auto", "exact", "table"}

func (g GELU) String() string { return enumName(geluNames[:], int(g), "gelu") }

// AttnKernel is how a part of the model computes attention.
type AttnKernel uint8

const (
	// AttnAuto: this project's fused CPU kernels where the CPU runs their vector path (vision and perceiver
	// attention; the decoder's generation steps), ggml's separate products elsewhere.
	AttnAuto  AttnKernel = iota
	AttnFlash            // ggml's flash attention (F16 keys and values)
	AttnGGML             // ggml's separate products and softmax, never this project's fused kernels
)

var attnNames = [...]string{"auto", "flash", "ggml"}

func (a AttnKernel) String() string { return enumName(attnNames[:], int(a), "attn") }

// DefaultBatchSize is the number of prompt tokens per decoder graph when none is asked for.
const DefaultBatchSize = 512

// MaxBatchSize bounds Options.BatchSize.
const MaxBatchSize = 1 << 16

// MaxThreads bounds Options.Threads: ggml starts one OS thread per compute thread, and an absurd count would
// exhaust the machine rather than speed anything up.
const MaxThreads = 512

// Options control how a model pair is placed and computed. The zero value is the default for every field.
type Options struct {
	Device     string // auto, cpu, cuda[:N], metal, vulkan[:N] or a device name (ggml.SelectDevice)
	Threads    int    // CPU threads; 0: the physical cores
	BatchSize  int    // prompt tokens per decoder graph; 0: DefaultBatchSize
	KVType     ggml.Type
	Layouts    LayoutPolicy // which weight layouts the placement plan may choose
	GELU       GELU         // the vision tower's GELU
	TextAttn   AttnKernel   // the decoder's attention (AttnFlash makes the cache F16)
	VisionAttn AttnKernel   // the vision tower's and perceiver's attention
	Adapters   []Adapter    // run-time LoRA adapters, applied in order

	scoreBytes int // bound on one attention score matrix of the plain path; 0: defaultScoreBytes (tests lower it)
}

// withDefaults checks o and fills in its defaults.
func (o Options) withDefaults() (Options, error) {
	if o.Threads < 0 || o.Threads > MaxThreads {
		return o, fmt.Errorf("%w: %d threads: want 0 (the physical cores) to %d (this machine has %d logical CPUs)",
			ErrBadOptions, o.Threads, MaxThreads, runtime.NumCPU())
	}
	if o.Threads == 0 {
		o.Threads = ggml.DefaultThreads()
	}
	if o.BatchSize < 0 || o.BatchSize > MaxBatchSize {
		return o, fmt.Errorf("%w: batch size %d: want 0 (default %d) to %d", ErrBadOptions, o.BatchSize, DefaultBatchSize, MaxBatchSize)
	}
	if o.BatchSize == 0 {
		o.BatchSize = DefaultBatchSize
	}
	if int(o.Layouts) >= len(policyNames) || int(o.GELU) >= len(geluNames) ||
		int(o.TextAttn) >= len(attnNames) || int(o.VisionAttn) >= len(attnNames) {
		return o, fmt.Errorf("%w: options %+v hold an unknown choice", ErrBadOptions, o)
	}
	if o.scoreBytes == 0 {
		o.scoreBytes = defaultScoreBytes
	}
	return o, nil
}
