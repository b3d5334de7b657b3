package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/idefics2-go/idefics2/bench"
	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/graph"
	"github.com/idefics2-go/idefics2/runner"
)

// cmdBench measures a model pair in the spirit of llama-bench (pp, tg, image encodes, perceiver, time to first
// token) and prints a markdown table, or a JSON array with llama-bench's field names (--json / -o json).
func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	model := fs.String("m", "", "text model GGUF (required)")
	fs.StringVar(model, "model", "", "text model GGUF (required)")
	mmproj := fs.String("mmproj", "", "mmproj GGUF (default: mmproj-<model> next to the model)")
	prompts := fs.String("p", "512", "prompt-processing sizes, comma separated (0 or empty: none)")
	gens := fs.String("n", "128", "generation lengths, comma separated (0 or empty: none)")
	reps := fs.Int("r", 5, "repetitions of each test")
	threads := fs.String("t", strconv.Itoa(ggml.DefaultThreads()), "thread counts, comma separated")
	images := fs.String("images", "", "image encode sizes (square side in pixels), comma separated, e.g. 378,980")
	split := fs.Bool("split", false, "also encode one split image (4 crops + the full image, 980×980 each)")
	perceiver := fs.Bool("perceiver", false, "the perceiver alone on a 980×980 image's patches")
	ttft := fs.Bool("ttft", false, "time to first token: one 378×378 image + a 16-token question")
	device := fs.String("device", "auto", "auto, cpu, cuda, metal, vulkan")
	flash := fs.Bool("flash-attn", false, "fused attention in the decoder")
	noRepack := fs.Bool("no-repack", false, "keep quantized weights in the file layout (no CPU repacking)")
	ggmlRepack := fs.Bool("ggml-repack", false, "Q4_0 and Q4_K matrices in ggml's repacked layouts instead of this project's q4x16 and q4kx16 (AVX-512 VNNI)")
	unfused := fs.Bool("unfused-attn", false, "vision and perceiver attention through ggml's separate products instead of the fused CPU kernel")
	warmup := fs.Bool("warmup", true, "run each test once before measuring")
	readLimit := fs.Bool("read-limit", true, "around each generation repetition, time one read of the weights a token needs (the memory's bound on tg; CPU only)")
	asJSON := fs.Bool("json", false, "print a JSON array of results")
	output := fs.String("o", "md", "output format: md or json")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *model == "" {
		fmt.Fprintln(stderr, "idefics2-run bench: -m/--model is required")
		return exitUsage
	}
	if *output != "md" && *output != "json" {
		fmt.Fprintf(stderr, "idefics2-run bench: -o %q: want md or json\n", *output)
		return exitUsage
	}
	if *ggmlRepack {
		graph.UseQ4X16(false)
	}
	if *output == "json" {
		*asJSON = true
	}
	if *reps < 1 || *reps > 1000 {
		fmt.Fprintf(stderr, "idefics2-run bench: -r %d: want 1…1000\n", *reps)
		return exitUsage
	}
	pp, err := intList("-p", *prompts, 0, 1<<20)
	if err == nil {
		var tg, ts, sizes []int
		if tg, err = intList("-n", *gens, 0, 1<<20); err == nil {
			if ts, err = intList("-t", *threads, 1, 1024); err == nil {
				sizes, err = intList("--images", *images, 14, 8192)
				if err == nil {
					return runBench(ctx, benchArgs{model: *model, mmproj: *mmproj, pp: pp, tg: tg, threads: ts,
						sizes: sizes, split: *split, perceiver: *perceiver, ttft: *ttft, reps: *reps, device: *device,
						flash: *flash, noRepack: *noRepack, unfused: *unfused, json: *asJSON, warmup: *warmup, readLimit: *readLimit}, stdout, stderr)
				}
			}
		}
	}
	fmt.Fprintf(stderr, "idefics2-run bench: %v\n", err)
	return exitUsage
}

type benchArgs struct {
	model, mmproj, device         string
	pp, tg, threads, sizes        []int
	split, perceiver, ttft, flash bool
	noRepack, json, warmup        bool
	unfused, readLimit            bool
	reps                          int
}

func runBench(ctx context.Context, a benchArgs, stdout, stderr io.Writer) int {
	mm := a.mmproj
	if mm == "" {
		mm = runner.FindMMProj(a.model)
	}
	needVision := len(a.sizes) > 0 || a.split || a.perceiver || a.ttft
	if !needVision {
		mm = ""
	} else if mm == "" {
		fmt.Fprintf(stderr, "idefics2-run bench: image tests need --mmproj (none found next to %s)\n", a.model)
		return exitUsage
	}
	var all []bench.Result
	if !a.json {
		bench.WriteMarkdownHeader(stdout)
	}
	for _, t := range a.threads {
		m, err := graph.Load(a.model, mm, graph.Options{Device: a.device, Threads: t, FlashAttn: a.flash, NoRepack: a.noRepack, UnfusedAttn: a.unfused})
		if err != nil {
			fmt.Fprintf(stderr, "idefics2-run bench: %v\n", err)
			return exitUsage
		}
		var sizes [][2]int
		for _, s := range a.sizes {
			sizes = append(sizes, [2]int{s, s})
		}
		cfg := bench.Config{Prompt: nonZero(a.pp), Gen: nonZero(a.tg), ImageSizes: sizes, Split: a.split,
			Perceiver: a.perceiver, TTFT: a.ttft, Repetitions: a.reps, Warmup: a.warmup, Threads: t, FlashAttn: a.flash}
		if a.readLimit {
			_, cfg.ReadLimit = m.StepWeights()
		}
		err = bench.Run(ctx, m, cfg, func(r bench.Result) {
			all = append(all, r)
			if !a.json {
				bench.WriteMarkdownRow(stdout, r)
			}
		})
		m.Close()
		if err != nil {
			fmt.Fprintf(stderr, "idefics2-run bench: %v\n", err)
			if ctx.Err() != nil {
				return exitRuntime
			}
			return exitRuntime
		}
	}
	if a.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(all); err != nil {
			fmt.Fprintf(stderr, "idefics2-run bench: %v\n", err)
			return exitRuntime
		}
	}
	return exitOK
}

func nonZero(v []int) []int {
	var out []int
	for _, x := range v {
		if x > 0 {
			out = append(out, x)
		}
	}
	return out
}

// intList parses "a,b,c" (empty: none) with each value in [lo, hi]; 0 means "none" where lo is 0.
func intList(flagName, s string, lo, hi int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil || v < 0 || v > hi || (v < lo && v != 0) || (v == 0 && lo > 0 && flagName == "-t") {
			return nil, fmt.Errorf("%s %q: want comma-separated integers in %d…%d", flagName, s, lo, hi)
		}
		out = append(out, v)
	}
	return out, nil
}
