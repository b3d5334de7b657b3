package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/idefics2-go/idefics2/ggml"
)

// infoReport is what `idefics2-run info` prints (and `--json` emits).
type infoReport struct {
	CPU       ggml.CPUInfo   `json:"cpu"`
	LibDir    string         `json:"lib_dir"`
	Variant   string         `json:"cpu_variant"`
	Scores    map[string]int `json:"cpu_variant_scores"`
	Problems  []string       `json:"problems,omitempty"`
	Devices   []deviceInfo   `json:"devices"`
	Chosen    string         `json:"chosen_device"`
	Threads   int            `json:"default_threads"`
	ChosenErr string         `json:"chosen_error,omitempty"`
}

type deviceInfo struct {
	Name        string            `json:"name"`
	Backend     string            `json:"backend"`
	Kind        string            `json:"kind"`
	Description string            `json:"description"`
	Variant     string            `json:"variant,omitempty"`
	FreeMiB     uint64            `json:"free_mib"`
	TotalMiB    uint64            `json:"total_mib"`
	Features    map[string]string `json:"features,omitempty"`
}

func cmdInfo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("info", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print one JSON object")
	device := fs.String("device", "auto", "device to report as chosen: auto, cpu, cuda, metal, vulkan")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rep := ggml.LoadBackends()
	info := infoReport{CPU: ggml.HostCPU(), LibDir: rep.Dir, Variant: rep.CPUVariant, Scores: rep.CPUScores,
		Problems: rep.Problems, Threads: ggml.DefaultThreads()}
	if info.Variant == "" {
		info.Variant = "portable"
	}
	for _, d := range ggml.Devices() {
		info.Devices = append(info.Devices, deviceInfo{Name: d.Name, Backend: d.Backend, Kind: d.Kind.String(),
			Description: d.Description, Variant: d.Variant, FreeMiB: d.FreeMemory >> 20, TotalMiB: d.TotalMemory >> 20,
			Features: d.Features})
	}
	if d, err := ggml.SelectDevice(*device); err != nil {
		info.ChosenErr = err.Error()
	} else {
		info.Chosen = d.Name
		if d.Variant != "" {
			info.Chosen += " (" + d.Variant + ")"
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(info)
	} else {
		fmt.Fprintf(stdout, "CPU:        %s (%s, %d physical / %d logical cores)\n", info.CPU.Brand, info.CPU.Arch, info.CPU.PhysicalCores, info.CPU.LogicalCores)
		fmt.Fprintf(stdout, "features:   %s\n", strings.Join(info.CPU.Features, " "))
		fmt.Fprintf(stdout, "libraries:  %s\n", orNone(info.LibDir))
		var sc []string
		for v, s := range info.Scores {
			sc = append(sc, fmt.Sprintf("%s=%d", v, s))
		}
		sort.Strings(sc)
		fmt.Fprintf(stdout, "variants:   %s (score 0 = not runnable on this CPU)\n", orNone(strings.Join(sc, " ")))
		fmt.Fprintf(stdout, "CPU backend in use: %s\n", info.Variant)
		for _, p := range info.Problems {
			fmt.Fprintf(stdout, "problem:    %s\n", p)
		}
		fmt.Fprintln(stdout, "devices:")
		for _, d := range info.Devices {
			v := ""
			if d.Variant != "" {
				v = " [" + d.Variant + "]"
			}
			fmt.Fprintf(stdout, "  %-8s %-6s %s%s, %d/%d MiB free\n", d.Name, d.Kind, d.Description, v, d.FreeMiB, d.TotalMiB)
		}
		if info.ChosenErr != "" {
			fmt.Fprintf(stdout, "chosen:     none: %s\n", info.ChosenErr)
		} else {
			fmt.Fprintf(stdout, "chosen (--device %s): %s, %d threads by default\n", *device, info.Chosen, info.Threads)
		}
	}
	if info.ChosenErr != "" {
		return 2
	}
	return 0
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
