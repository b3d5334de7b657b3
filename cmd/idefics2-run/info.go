package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/idefics2-go/idefics2/internal/cli"
	"github.com/idefics2-go/idefics2/runner"
)

// infoReport is what `idefics2-run info` prints (and `--json` emits).
type infoReport struct {
	CPU       cpuReport      `json:"cpu"`
	LibDir    string         `json:"lib_dir"`
	Variant   string         `json:"cpu_variant"`
	Scores    map[string]int `json:"cpu_variant_scores"`
	Problems  []string       `json:"problems,omitempty"`
	Notes     []string       `json:"notes,omitempty"`
	MaxISA    string         `json:"max_isa,omitempty"`
	Capped    []string       `json:"capped_variants,omitempty"`
	Kernels   []string       `json:"kernels"`
	Devices   []deviceInfo   `json:"devices"`
	Chosen    string         `json:"chosen_device"`
	Threads   int            `json:"default_threads"`
	ChosenErr string         `json:"chosen_error,omitempty"`
}

type deviceInfo struct {
	Name        string            `json:"name"`
	Backend     string            `json:"backend"`
	Kind        string            `json:"kind"`
	Index       int               `json:"index"`
	Description string            `json:"description"`
	Variant     string            `json:"variant,omitempty"`
	FreeMiB     uint64            `json:"free_mib"`
	TotalMiB    uint64            `json:"total_mib"`
	Features    map[string]string `json:"features,omitempty"`
}

// cmdInfo reports the CPU, the ggml backend libraries, the devices and the device --device would choose. A choice
// that names no present device exits with 2 after the report.
func cmdInfo(args []string, stdout, stderr io.Writer) int {
	fs := cli.New("info", "idefics2-run info [--json] [--device auto|cpu|cuda[:N]|metal|vulkan[:N]|NAME]")
	var asJSON bool
	device := "auto"
	fs.Bool(&asJSON, "json", "print one JSON object")
	fs.String(&device, "device", "`DEVICE` to report as chosen: auto, cpu, cuda[:N], metal, vulkan[:N] or a device name")
	if code, done := parseOnlyFlags(fs, "info", "", args, stdout, stderr); done {
		return code
	}
	sys := runner.HostSystem()
	info := infoReport{CPU: newCPUReport(sys.CPU), LibDir: sys.LibDir, Variant: sys.CPUVariant, Scores: sys.CPUScores,
		Problems: sys.Problems, Notes: sys.Notes, Threads: sys.DefaultThreads, MaxISA: sys.MaxISA, Capped: sys.Capped,
		Kernels: sys.Kernels}
	for _, d := range sys.Devices {
		info.Devices = append(info.Devices, deviceInfo{Name: d.Name, Backend: d.Backend, Kind: d.Kind, Index: d.Index,
			Description: d.Description, Variant: d.Variant, FreeMiB: d.FreeMemory >> 20, TotalMiB: d.TotalMemory >> 20,
			Features: d.Features})
	}
	if d, err := runner.SelectDevice(device); err != nil {
		info.ChosenErr = err.Error()
	} else {
		info.Chosen = d.Name
		if d.Variant != "" {
			info.Chosen += " (" + d.Variant + ")"
		}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(info); err != nil {
			return fail(stderr, fmt.Errorf("info: writing the report: %w", err))
		}
	} else {
		writeInfo(stdout, info, device)
	}
	if info.ChosenErr != "" {
		fmt.Fprintln(stderr, "idefics2-run: info: "+strings.TrimPrefix(info.ChosenErr, "idefics2-run: "))
		return exitUsage
	}
	return exitOK
}

// writeInfo prints the report as text.
func writeInfo(w io.Writer, info infoReport, device string) {
	fmt.Fprintf(w, "CPU:        %s (%s, %d physical / %d logical cores)\n", info.CPU.Brand, info.CPU.Arch, info.CPU.PhysicalCores, info.CPU.LogicalCores)
	fmt.Fprintf(w, "features:   %s\n", strings.Join(info.CPU.Features, " "))
	fmt.Fprintf(w, "libraries:  %s\n", orNone(info.LibDir))
	var sc []string
	for v, s := range info.Scores {
		sc = append(sc, fmt.Sprintf("%s=%d", v, s))
	}
	sort.Strings(sc)
	fmt.Fprintf(w, "variants:   %s (score 0 = not runnable on this CPU)\n", orNone(strings.Join(sc, " ")))
	fmt.Fprintf(w, "CPU backend in use: %s\n", info.Variant)
	if info.MaxISA != "" {
		fmt.Fprintf(w, "ISA cap:    %s (IDEFICS2_MAX_ISA; variants left out: %s)\n", info.MaxISA, orNone(strings.Join(info.Capped, " ")))
	}
	fmt.Fprintf(w, "kernels:    %s (this project's CPU kernels: 16-row layouts, NF4, fused attention)\n", strings.Join(info.Kernels, ", "))
	for _, p := range info.Problems {
		fmt.Fprintf(w, "problem:    %s\n", p)
	}
	for _, n := range info.Notes {
		fmt.Fprintf(w, "note:       %s\n", n)
	}
	fmt.Fprintln(w, "devices (kind: gpu, igpu = integrated GPU, cpu, cpu-type = a GPU API computing on the CPU, never chosen by auto):")
	for _, d := range info.Devices {
		v := ""
		if d.Variant != "" {
			v = " [" + d.Variant + "]"
		}
		fmt.Fprintf(w, "  %-8s %-8s %s%s, %d/%d MiB free\n", d.Name, d.Kind, d.Description, v, d.FreeMiB, d.TotalMiB)
	}
	if info.ChosenErr != "" {
		fmt.Fprintf(w, "chosen:     none: %s\n", info.ChosenErr)
	} else {
		fmt.Fprintf(w, "chosen (--device %s): %s, %d threads by default\n", device, info.Chosen, info.Threads)
	}
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
