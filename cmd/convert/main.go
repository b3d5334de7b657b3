// Command convert turns a Hugging Face Idefics2 checkpoint into a GGUF pair: model.gguf (the
// Mistral decoder as llama.cpp's "llama" architecture) and mmproj.gguf (vision tower, connector
// and image processor settings).
//
// Usage:
//
//	convert --in DIR --out model.gguf [--mmproj-out mmproj.gguf] [--type T] [--vision-type T]
//	        [--override 'REGEX=TYPE']... [--dry-run] [--force] [--threads N]
//	convert --synthetic PRESET [--synthetic-dir DIR] [--synthetic-seed N] --out model.gguf [...]
//
// --synthetic converts a synthetic checkpoint (package synth; presets idefics2-8b, tiny) instead
// of --in: it is written to a temporary folder next to --out and removed afterwards, or kept in
// --synthetic-dir (a new folder) for later runs with --in. With --dry-run the checkpoint is still
// written (the plan reads its headers), then removed unless --synthetic-dir keeps it.
//
// Without --mmproj-out the mmproj file is written next to --out as "mmproj-<name of --out>".
// --dry-run prints the plan (every tensor: source name and dtype → GGUF name, type, shape, size)
// and the totals, and writes nothing.
//
// Exit status: 0 on success, 1 on a run-time failure (I/O, a full disk, an unwritable output
// folder), 2 on bad usage or bad input (flags, checkpoint files, an existing output without
// --force), 128 + the signal number when stopped by SIGINT (130), SIGTERM (143) or SIGHUP (129).
// Errors are one line naming the culprit. Whatever the failure or signal, nothing is left under
// the output names and the temporary files (".<name>.tmp-*" next to the outputs) are removed;
// only SIGKILL or a crash of the machine can leave a temporary file behind.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/idefics2-go/idefics2/convert"
	"github.com/idefics2-go/idefics2/internal/cli"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signalContext(context.Background())
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// maxThreads bounds --threads: every thread is a GOMAXPROCS slot, and the Go runtime allocates
// per-slot state for any value it is given, so an absurd value would exhaust memory.
const maxThreads = 1024

// afterChunk, when not nil, is called after each chunk is written. Tests set it to slow a
// conversion down so that a signal lands in the middle of it.
var afterChunk func()

// run is the whole command, separated from main for tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := cli.New("convert",
		"convert --in DIR --out model.gguf [--mmproj-out mmproj.gguf] [--type T] [--vision-type T] [--override 'REGEX=TYPE']... [--lora ADAPTER[:SCALE]]... [--dry-run] [--force] [--threads N]",
		"convert --synthetic PRESET [--synthetic-dir DIR] [--synthetic-seed N] --out model.gguf [...]",
		"convert --in DIR --lora-only ADAPTER[:SCALE] --out adapter.gguf [--mmproj-out mmproj-adapter.gguf] [--dry-run] [--force]")
	fs.Describe("Converts a Hugging Face Idefics2 checkpoint into model.gguf (the text model, as llama.cpp's \"llama\") and\n" +
		"mmproj.gguf (vision tower, connector and image processor settings).")
	var (
		opts      convert.Options
		overrides []string
		loras     []string
		loraOnly  string
		dryRun    bool
	)
	opts.Type = "f16"
	fs.String(&opts.InDir, "in", "Hugging Face checkpoint `DIR` (config.json, safetensors, tokenizer)")
	fs.String(&opts.Out, "out", "output `PATH` of model.gguf")
	fs.String(&opts.MMProjOut, "mmproj-out", "output `PATH` of mmproj.gguf (default: mmproj-<name of --out> next to --out)")
	fs.String(&opts.Type, "type", "`TYPE` of the text matrices: "+strings.Join(convert.SchemeNames(), ", "))
	fs.String(&opts.VisionType, "vision-type", "`TYPE` of the vision and connector matrices (default: f32 with --type f32, else f16)")
	fs.List(&overrides, "override", "per-tensor type `REGEX=TYPE` matched against GGUF names (repeatable; first match wins)")
	fs.List(&loras, "lora", "merge the PEFT LoRA adapter folder `DIR[:SCALE]` into the weights (repeatable; applied in order)")
	fs.String(&loraOnly, "lora-only", "write the PEFT LoRA adapter folder `DIR[:SCALE]` as a run-time adapter GGUF (--out; the vision part to --mmproj-out, default mmproj-<name of --out>) instead of converting the model; --in names its base")
	fs.Bool(&dryRun, "dry-run", "print the plan and write nothing")
	fs.Bool(&opts.Force, "force", "replace existing output files")
	fs.Int(&opts.Threads, "threads", "quantization threads (0: all cores)")
	syn := addSyntheticFlags(fs)
	fs.Exits("0        success", "1        run-time failure (I/O, a full disk, an unwritable output folder)",
		"2        bad usage or bad input (flags, checkpoint files, an existing output without --force)",
		"129/130/143  stopped by SIGHUP / SIGINT / SIGTERM; nothing is left under the output names")
	err := fs.Parse(args)
	if errors.Is(err, cli.ErrHelp) {
		fs.Usage(stdout)
		return exitOK
	}
	switch {
	case err != nil:
	case len(fs.Args()) > 0:
		err = cli.Usagef("convert: unexpected argument %q", fs.Args()[0])
	case opts.InDir == "" && !syn.enabled():
		err = cli.Usagef("convert: --in is required")
	case opts.Out == "":
		err = cli.Usagef("convert: --out is required")
	case opts.Threads < 0:
		err = cli.Usagef("convert: --threads %d is negative", opts.Threads)
	case opts.Threads > maxThreads:
		err = cli.Usagef("convert: --threads %d is more than %d", opts.Threads, maxThreads)
	}
	if err == nil && fs.Set("lora-only") {
		for _, f := range []string{"lora", "type", "vision-type", "override", "threads"} {
			if fs.Set(f) {
				err = cli.Usagef("convert: --%s does not apply to --lora-only (the adapter is written in f32)", f)
				break
			}
		}
		if err == nil && syn.enabled() {
			err = cli.Usagef("convert: --lora-only needs the adapter's base checkpoint as --in, not --synthetic")
		}
	}
	if err == nil && fs.Set("synthetic-adapter") && fs.Set("lora-only") {
		err = cli.Usagef("convert: --synthetic-adapter writes its own adapter; drop --lora-only")
	}
	if err != nil {
		return report(ctx, stderr, err)
	}
	if fs.Set("synthetic-adapter") {
		dir, cleanup, err := syn.prepareAdapter(&opts)
		defer cleanup()
		if err != nil {
			return report(ctx, stderr, err)
		}
		return exportAdapter(ctx, opts, dir, dryRun, stdout, stderr)
	}
	if fs.Set("lora-only") {
		return exportAdapter(ctx, opts, loraOnly, dryRun, stdout, stderr)
	}
	opts.Overrides = overrides
	for _, s := range loras {
		spec, err := convert.ParseLoRASpec(s)
		if err != nil {
			return report(ctx, stderr, err)
		}
		opts.LoRA = append(opts.LoRA, spec)
	}
	if opts.Threads > 0 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(opts.Threads))
	}

	if syn.enabled() {
		cleanup, err := syn.prepare(ctx, &opts, stderr)
		defer cleanup()
		if err != nil {
			return report(ctx, stderr, err)
		}
	}

	plan, err := convert.NewPlan(opts)
	if err != nil {
		return report(ctx, stderr, err)
	}
	defer plan.Close()
	if dryRun {
		if err := plan.Print(stdout); err != nil {
			return report(ctx, stderr, err)
		}
		return exitOK
	}

	total := plan.InputBytes()
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(stderr),
		progressbar.OptionSetVisibility(isTerminal(stderr)),
		progressbar.OptionSetDescription("converting"),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionFullWidth(),
		progressbar.OptionSetRenderBlankState(true),
	)
	start := time.Now()
	err = plan.Run(ctx, func(n int64) {
		_ = bar.Add64(n)
		if afterChunk != nil {
			afterChunk()
		}
	})
	if err != nil {
		_ = bar.Exit()
		if isTerminal(stderr) {
			fmt.Fprintln(stderr)
		}
		return report(ctx, stderr, err)
	}
	_ = bar.Finish()
	if isTerminal(stderr) {
		fmt.Fprintln(stderr)
	}
	fmt.Fprintf(stderr, "convert: wrote %s and %s (%d MiB read in %.1fs)\n",
		plan.Model.Path, plan.MMProj.Path, total>>20, time.Since(start).Seconds())
	return exitOK
}

// exportAdapter is convert --lora-only: the adapter folder spec as run-time adapter GGUF files.
func exportAdapter(ctx context.Context, opts convert.Options, spec string, dryRun bool, stdout, stderr io.Writer) int {
	ls, err := convert.ParseLoRASpec(spec)
	if err != nil {
		return report(ctx, stderr, err)
	}
	plan, err := convert.NewAdapterPlan(convert.AdapterOptions{InDir: opts.InDir, Adapter: ls, Out: opts.Out,
		MMProjOut: opts.MMProjOut, Force: opts.Force, Logger: opts.Logger})
	if err != nil {
		return report(ctx, stderr, err)
	}
	defer plan.Close()
	if dryRun {
		if err := plan.Print(stdout); err != nil {
			return report(ctx, stderr, err)
		}
		return exitOK
	}
	if err := plan.Run(ctx); err != nil {
		return report(ctx, stderr, err)
	}
	if plan.HasMMProj() {
		fmt.Fprintf(stderr, "convert: wrote %s and %s\n", plan.Text.Path, plan.MMProj.Path)
	} else {
		fmt.Fprintf(stderr, "convert: wrote %s (the adapter leaves the vision tower, connector and perceiver alone: no %s)\n", plan.Text.Path, plan.MMProj.Path)
	}
	return exitOK
}

// report prints err on one line and returns its exit status. A run cancelled by a signal is
// reported as the interruption, whatever error the cancellation surfaced as.
func report(ctx context.Context, stderr io.Writer, err error) int {
	if in := interruption(ctx); in != nil {
		return reportInterrupted(stderr, in)
	}
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	if !strings.HasPrefix(msg, "convert:") {
		msg = "convert: " + msg
	}
	fmt.Fprintln(stderr, msg)
	if convert.IsInputError(err) || cli.IsUsageError(err) {
		return exitUsage
	}
	return exitFailure
}

// isTerminal reports whether w is a character device (a terminal), where a progress bar makes
// sense.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
