package runner

import (
	"slices"
	"strings"

	"github.com/idefics2-go/idefics2/ggml"
)

// CPUInfo describes the host CPU as cpuid reports it.
type CPUInfo struct {
	Brand         string
	Vendor        string
	Arch          string // GOARCH
	PhysicalCores int
	LogicalCores  int
	// Features are the SIMD features relevant to ggml's kernels that this CPU has, e.g. AVX2, AVX512F, AVX512VNNI.
	Features []string
}

// Device is one compute device a model can be loaded on.
type Device struct {
	Name        string // ggml's device name ("CPU", "CUDA0", "Metal"): what --device takes besides the kinds
	Description string
	Backend     string // ggml's backend ("CPU", "CUDA", "Metal", "Vulkan")
	Kind        string // cpu, gpu, igpu, accel or cpu-type (a GPU API's device computing on the host CPU)
	// Index is the device's place among its backend's devices: the N of --device vulkan:N.
	Index int
	// Variant names the CPU backend library in use ("haswell", "icelake", … or "portable" for the CPU backend
	// compiled into the binary); empty for other devices.
	Variant     string
	FreeMemory  uint64 // bytes
	TotalMemory uint64 // bytes
	// Features are the backend's build features (e.g. AVX512=1), for CPU backends.
	Features map[string]string
}

// System is what this process can compute with: the CPU, the ggml backend libraries it found and chose, and the
// devices they offer.
type System struct {
	CPU    CPUInfo
	LibDir string // folder searched for ggml backend libraries
	// CPUVariant is the CPU backend library in use, "portable" when none could be loaded.
	CPUVariant string
	// CPUScores is the score of every CPU backend library found (0: this CPU cannot run it).
	CPUScores map[string]int
	// Problems are libraries that could not be scored or loaded.
	Problems []string
	// Notes are decisions the loading made that a user may want to know (which devices of a backend are offered).
	Notes []string
	// MaxISA is the instruction-set cap set by IDEFICS2_MAX_ISA ("" when unset): CPU variants and this project's
	// kernel paths above it are not used. Capped lists the variants it left out.
	MaxISA string
	Capped []string
	// Kernels are the paths this project's CPU kernels take here (under the cap): the 16-row layouts (q4x16,
	// q4kx16, q6kx16), NF4, and the fused attention, e.g. "x16 avx2-vnni".
	Kernels []string
	// Devices are best first: GPUs, then the chosen CPU variant, then the portable CPU backend.
	Devices []Device
	// DefaultThreads is the thread count used when none is given: the physical cores.
	DefaultThreads int
}

// HostSystem loads the ggml backend libraries (once per process) and describes the host.
func HostSystem() System {
	rep := ggml.LoadBackends()
	c := ggml.HostCPU()
	s := System{
		CPU: CPUInfo{Brand: c.Brand, Vendor: c.Vendor, Arch: c.Arch, PhysicalCores: c.PhysicalCores,
			LogicalCores: c.LogicalCores, Features: c.Features},
		LibDir: rep.Dir, CPUVariant: rep.CPUVariant, CPUScores: rep.CPUScores, Problems: rep.Problems, Notes: rep.Notes, Capped: rep.Capped,
		DefaultThreads: DefaultThreads(),
		Kernels: []string{"x16 " + ggml.Q4X16BestISA().String(), "nf4 " + ggml.NF4BestISA().String(),
			"attention " + ggml.AttnBestISA().String()},
	}
	if s.CPUVariant == "" {
		s.CPUVariant = "portable"
	}
	if level, set, err := ggml.MaxISA(); set {
		s.MaxISA = level.String()
		if err != nil {
			s.Problems = append(s.Problems, err.Error())
		}
	}
	for _, d := range ggml.Devices() {
		s.Devices = append(s.Devices, device(d))
	}
	return s
}

func device(d ggml.Device) Device {
	return Device{Name: d.Name, Description: d.Description, Backend: d.Backend, Kind: d.Kind.String(), Index: d.Index,
		Variant: d.Variant, FreeMemory: d.FreeMemory, TotalMemory: d.TotalMemory, Features: d.Features}
}

// DefaultThreads is the CPU thread count a model uses when Options.Threads is 0: the physical cores (ggml's compute
// threads scale with cores, not with SMT siblings).
func DefaultThreads() int { return ggml.DefaultThreads() }

// deviceKinds are the --device values that name a kind of device rather than one device.
var deviceKinds = []string{"auto", "cpu", "cuda", "metal", "vulkan"}

// CheckDevice refuses a device choice that is neither a kind (auto, cpu, cuda, metal, vulkan; "" means auto), nor
// a GPU kind with a device index (vulkan:1), nor the name of a device of this host, with an *InputError naming the
// choice and the devices there are. Whether a device of the kind is present is checked when a model is loaded
// (SelectDevice).
func CheckDevice(choice string) error {
	c := strings.ToLower(strings.TrimSpace(choice))
	if c == "" || slices.Contains(deviceKinds, c) {
		return nil
	}
	if kind, _, indexed, err := ggml.ParseDeviceChoice(c); err != nil {
		return asInput(err)
	} else if indexed && kind != "auto" && kind != "cpu" && slices.Contains(deviceKinds, kind) {
		return nil
	}
	var names []string
	for _, d := range ggml.Devices() {
		if strings.ToLower(d.Name) == c {
			return nil
		}
		if !slices.Contains(names, d.Name) {
			names = append(names, d.Name)
		}
	}
	return inputErrorf("runner: --device %q: want %s, a GPU kind with an index (vulkan:0) or a device name (%s)", choice, strings.Join(deviceKinds, ", "),
		strings.Join(names, ", "))
}

// SelectDevice returns the device a model loaded with this device choice would use. A choice naming no present
// device is an *InputError listing the devices there are.
func SelectDevice(choice string) (Device, error) {
	d, err := ggml.SelectDevice(choice)
	if err != nil {
		return Device{}, asInput(err)
	}
	return device(d), nil
}
