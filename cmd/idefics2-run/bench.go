package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/idefics2-go/idefics2/bench"
	"github.com/idefics2-go/idefics2/constrain"
	"github.com/idefics2-go/idefics2/internal/cli"
	"github.com/idefics2-go/idefics2/runner"
)

// benchFlags are the options of `bench`.
type benchFlags struct {
	model, mmproj, device          string
	prompts, gens, threads, images string
	output                         string
	reps                           int
	split, perceiver, ttft         bool
	load                           bench.LoadOptions
	warmup, readLimit, json        bool
	verbose                        bool
	constrained                    bool
	jsonSchema                     string
	loras                          []string
	loraAB                         bool
	parallel                       string
	mixed                          int
}

// benchSchema is the JSON Schema of the constrained generation test (--constrained): a receipt, nested, with
// arrays, enums, bounded strings and numbers.
const benchSchema = `{"type":"object","properties":{
 "store":{"type":"string","maxLength":24},
 "items":{"type":"array","minItems":1,"maxItems":4,"items":{"type":"object","properties":{
   "name":{"type":"string","maxLength":16},
   "category":{"enum":["food","drink","household","other"]},
   "quantity":{"type":"integer","minimum":1,"maximum":99},
   "price":{"type":"number","minimum":0}},
  "required":["name","category","quantity","price"],"additionalProperties":false}},
 "payment":{"enum":["cash","card","mobile"]}},
 "required":["store","items","payment"],"additionalProperties":false}`

// cmdBench measures a model pair in the spirit of llama-bench (pp, tg, image encodes, perceiver, time to first
// token) and prints a markdown table, or a JSON array with llama-bench's field names (--json / -o json).
func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := cli.New("bench", "idefics2-run bench -m model.gguf [-p 512] [-n 128] [-r 5] [-t N,...] [--images 378,980] [options]")
	fs.Describe("Prints a llama-bench-style table: prompt processing (pp), generation (tg), image encodes, the perceiver\n" +
		"alone and time to first token, each with the mean and standard deviation over the repetitions. Each -t thread\n" +
		"count loads the model again.")
	f := benchFlags{prompts: "512", gens: "128", reps: 5, threads: strconv.Itoa(runner.DefaultThreads()), device: "auto",
		warmup: true, readLimit: true, output: "md"}
	fs.String(&f.model, "model,m", "text model GGUF `FILE` (required)")
	fs.String(&f.mmproj, "mmproj", "mmproj GGUF `FILE` (default: mmproj-<model> next to the model; needed by image tests)")
	fs.String(&f.prompts, "p", "`LIST` of prompt-processing sizes in tokens, comma separated (0 or empty: none)")
	fs.String(&f.gens, "n", "`LIST` of generation lengths in tokens, comma separated (0 or empty: none)")
	fs.Int(&f.reps, "r", "repetitions of each test")
	fs.String(&f.threads, "t", "`LIST` of thread counts, comma separated")
	fs.String(&f.images, "images", "`LIST` of image encode sizes (square side in pixels), comma separated, e.g. 378,980")
	fs.Bool(&f.split, "split", "also encode one split image (4 crops + the full image, 980×980 each)")
	fs.Bool(&f.perceiver, "perceiver", "the perceiver alone on a 980×980 image's patches")
	fs.Bool(&f.ttft, "ttft", "time to first token: one 378×378 image + a 16-token question")
	fs.String(&f.device, "device", "compute `DEVICE`: auto, cpu, cuda[:N], metal, vulkan[:N] or a device name")
	fs.Bool(&f.load.FlashAttn, "flash-attn", "fused attention in the decoder")
	fs.Bool(&f.load.NoRepack, "no-repack", "keep quantized weights in the file layout (no CPU repacking)")
	fs.Bool(&f.load.GGMLRepack, "ggml-repack", "Q4_0 and Q4_K matrices in ggml's repacked layouts (and Q6_K in the file's) instead of this project's q4x16, q4kx16 and q6kx16")
	fs.Bool(&f.load.X16, "x16", "Q4_0, Q4_K, Q6_K and NF4 matrices in this project's 16-row layouts (q4x16, q4kx16, q6kx16, nf4x16) wherever their kernels have a vector path, also where the default does not take them (AArch64 NEON with dot products: not yet measured there)")
	fs.Bool(&f.load.UnfusedAttn, "unfused-attn", "vision and perceiver attention through ggml's separate products instead of the fused CPU kernel")
	fs.List(&f.loras, "lora", "run-time LoRA adapter GGUF `FILE[:SCALE]` (repeatable; its mmproj part is found next to it)")
	fs.Bool(&f.loraAB, "lora-ab", "with --lora: run each tg test with the adapters off and on, alternating within each repetition, and report both (no read limit is timed)")
	fs.Bool(&f.warmup, "warmup", "run each test once before measuring")
	fs.Bool(&f.readLimit, "read-limit", "around each generation repetition, time one read of the weights a token needs (the memory's bound on tg; CPU only)")
	fs.Bool(&f.json, "json", "print a JSON array of results")
	fs.String(&f.output, "o", "output `FORMAT`: md or json")
	fs.Bool(&f.constrained, "constrained", "after each tg test, the same generation constrained by a JSON Schema (a nested receipt with arrays and enums, or --json-schema), with the mask time per token")
	fs.String(&f.jsonSchema, "json-schema", "the JSON Schema of --constrained: a `FILE` or the schema itself")
	fs.String(&f.parallel, "parallel", "`LIST` of parallel sequence counts, e.g. 1,2,4,8: the batched test instead of the others (llama-batched-bench's table: one -p prompt per sequence, -n generated tokens each)")
	fs.Int(&f.mixed, "mixed", "with --parallel: also the mixed test, 2 streams generating while an image of this `SIDE` in pixels (e.g. 980) is encoded")
	fs.Bool(&f.verbose, "verbose,v", "print where every weight was placed (layout, kernel, split, stacking) to stderr")
	if code, done := parseFlags(fs, args, stdout, stderr); done {
		return code
	}
	a, err := f.check(fs)
	if err != nil {
		return fail(stderr, err)
	}
	if len(a.parallel) > 0 {
		return runBatchedBench(ctx, a, stdout, stderr)
	}
	return runBench(ctx, a, stdout, stderr)
}

// benchArgs are the checked options of `bench`.
type benchArgs struct {
	model, mmproj          string
	pp, tg, threads, sizes []int
	schema                 *constrain.Grammar // the constrained test's grammar, nil without --constrained
	cfg                    bench.Config       // without Threads, set per thread count
	load                   bench.LoadOptions
	json, verbose          bool
	parallel               []int // the batched test's levels (--parallel)
	mixed                  int   // the mixed test's image side (0: none)
}

// check validates the options and turns them into benchArgs.
func (f *benchFlags) check(fs *cli.FlagSet) (benchArgs, error) {
	if len(fs.Args()) > 0 {
		return benchArgs{}, cli.Usagef("bench: unexpected argument %q", fs.Args()[0])
	}
	if f.model == "" {
		return benchArgs{}, cli.Usagef("bench: -m/--model is required")
	}
	if f.output != "md" && f.output != "json" {
		return benchArgs{}, cli.Usagef("bench: -o %q: want md or json", f.output)
	}
	if f.reps < 1 || f.reps > 1000 {
		return benchArgs{}, cli.Usagef("bench: -r %d: want 1…1000", f.reps)
	}
	if err := runner.CheckDevice(f.device); err != nil {
		return benchArgs{}, err
	}
	a := benchArgs{model: f.model, mmproj: f.mmproj, load: f.load, json: f.json || f.output == "json", verbose: f.verbose}
	a.load.Device = f.device
	for _, s := range f.loras {
		ad, err := runner.ParseAdapter(s)
		if err != nil {
			return benchArgs{}, cli.Usagef("bench: %v", err)
		}
		a.load.Adapters = append(a.load.Adapters, ad)
	}
	if f.loraAB && len(f.loras) == 0 {
		return benchArgs{}, cli.Usagef("bench: --lora-ab needs --lora")
	}
	var err error
	for _, l := range []struct {
		flag, val string
		lo, hi    int
		zeroNone  bool
		dst       *[]int
	}{
		{"-p", f.prompts, 1, 1 << 20, true, &a.pp},
		{"-n", f.gens, 1, 1 << 20, true, &a.tg},
		{"-t", f.threads, 1, runner.MaxThreads, false, &a.threads},
		{"--images", f.images, 14, 8192, true, &a.sizes},
	} {
		if *l.dst, err = intList(l.flag, l.val, l.lo, l.hi, l.zeroNone); err != nil {
			return benchArgs{}, err
		}
	}
	if len(a.threads) == 0 {
		return benchArgs{}, cli.Usagef("bench: -t %q: want at least one thread count", f.threads)
	}
	var layouts []string
	for _, o := range []struct {
		name string
		set  bool
	}{{"--no-repack", f.load.NoRepack}, {"--ggml-repack", f.load.GGMLRepack}, {"--x16", f.load.X16}} {
		if o.set {
			layouts = append(layouts, o.name)
		}
	}
	if len(layouts) > 1 {
		return benchArgs{}, cli.Usagef("bench: %s choose different layouts: give one", strings.Join(layouts, " and "))
	}
	if f.jsonSchema != "" && !f.constrained {
		return benchArgs{}, cli.Usagef("bench: --json-schema needs --constrained")
	}
	if f.constrained {
		if len(a.tg) == 0 {
			return benchArgs{}, cli.Usagef("bench: --constrained needs a generation test (-n)")
		}
		sf := samplingFlags{jsonSchema: f.jsonSchema}
		if sf.jsonSchema == "" {
			sf.jsonSchema = benchSchema
		}
		if a.schema, err = sf.constraint("bench"); err != nil {
			return benchArgs{}, err
		}
	}
	if a.parallel, err = intList("--parallel", f.parallel, 1, maxParallel, false); err != nil {
		return benchArgs{}, err
	}
	if f.mixed != 0 && (f.mixed < 14 || f.mixed > 8192) {
		return benchArgs{}, cli.Usagef("bench: --mixed %d: want an image side of 14…8192 pixels", f.mixed)
	}
	a.mixed = f.mixed
	if a.mixed > 0 && len(a.parallel) == 0 {
		return benchArgs{}, cli.Usagef("bench: --mixed is part of the batched test: add --parallel")
	}
	if len(a.parallel) > 0 {
		if len(a.pp) != 1 || len(a.tg) != 1 {
			return benchArgs{}, cli.Usagef("bench: --parallel needs one prompt size (-p) and one generation length (-n)")
		}
		for _, o := range []struct {
			name string
			set  bool
		}{{"--images", len(a.sizes) > 0}, {"--split", f.split}, {"--perceiver", f.perceiver}, {"--ttft", f.ttft},
			{"--constrained", f.constrained}, {"--lora", len(f.loras) > 0}, {"--no-repack", f.load.NoRepack},
			{"--ggml-repack", f.load.GGMLRepack}, {"--x16", f.load.X16}, {"--unfused-attn", f.load.UnfusedAttn}, {"-r", fs.Set("r")}} {
			if o.set {
				return benchArgs{}, cli.Usagef("bench: %s is not part of the batched test (--parallel)", o.name)
			}
		}
	}
	var sizes [][2]int
	for _, s := range a.sizes {
		sizes = append(sizes, [2]int{s, s})
	}
	a.cfg = bench.Config{Prompt: a.pp, Gen: a.tg, ImageSizes: sizes, Split: f.split, Perceiver: f.perceiver, TTFT: f.ttft,
		Repetitions: f.reps, Warmup: f.warmup, FlashAttn: f.load.FlashAttn, ReadLimit: f.readLimit && !f.loraAB, AdapterAB: f.loraAB}
	return a, nil
}

func runBench(ctx context.Context, a benchArgs, stdout, stderr io.Writer) int {
	mm := a.mmproj
	if mm == "" {
		mm = runner.FindMMProj(a.model)
	}
	c := a.cfg
	if len(c.ImageSizes) == 0 && !c.Split && !c.Perceiver && !c.TTFT {
		mm = ""
	} else if mm == "" {
		return fail(stderr, cli.Usagef("bench: image tests need --mmproj (none found next to %s)", a.model))
	}
	var all []bench.Result
	for i := range a.load.Adapters {
		if ad := &a.load.Adapters[i]; ad.MMProjPath == "" && mm != "" {
			ad.MMProjPath = runner.FindMMProj(ad.Path)
		}
	}
	for i, t := range a.threads {
		o := a.load
		o.Threads = t
		m, err := bench.Load(a.model, mm, o)
		if err != nil {
			// As a file the user named that cannot be loaded: bad input.
			return fail(stderr, cli.Usagef("bench: %v", err))
		}
		if a.verbose {
			for _, l := range bench.Placement(m) {
				fmt.Fprintln(stderr, l)
			}
		}
		if i == 0 && !a.json {
			bench.WriteMarkdownHeader(stdout)
		}
		c.Threads = t
		if a.schema != nil {
			v, err := runner.ConstraintVocabularyFromGGUF(m.TextFile, m.Text.VocabSize)
			if err != nil {
				m.Close()
				return fail(stderr, cli.Usagef("bench: %v", err))
			}
			c.Constraint = &bench.Constraint{Name: "json-schema", Grammar: a.schema, Vocab: v}
		}
		err = bench.Run(ctx, m, c, func(r bench.Result) {
			all = append(all, r)
			if !a.json {
				bench.WriteMarkdownRow(stdout, r)
			}
		})
		m.Close()
		if err != nil {
			return failCtx(ctx, stderr, err)
		}
	}
	if a.json {
		return writeBenchJSON(stdout, stderr, all)
	}
	return exitOK
}

// intList parses "a,b,c" (empty: none) with each value in [lo, hi]; with zeroNone a 0 stands for "none" and is
// dropped.
func intList(flag, s string, lo, hi int, zeroNone bool) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err == nil && v == 0 && zeroNone {
			continue
		}
		if err != nil || v < lo || v > hi {
			none := ""
			if zeroNone {
				none = " (0: none)"
			}
			return nil, cli.Usagef("bench: %s %q: want comma-separated integers in %d…%d%s", flag, s, lo, hi, none)
		}
		out = append(out, v)
	}
	return out, nil
}

// writeBenchJSON writes a benchmark's results as one indented JSON array (bench --json).
func writeBenchJSON(stdout, stderr io.Writer, all any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(all); err != nil {
		return fail(stderr, fmt.Errorf("bench: writing the results: %w", err))
	}
	return exitOK
}
