package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"

	"github.com/idefics2-go/idefics2/constrain"
	"github.com/idefics2-go/idefics2/internal/cli"
	"github.com/idefics2-go/idefics2/runner"
)

// Exit codes.
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

// fail prints err as one line on stderr and returns its exit code: 2 for bad usage or input, 1 otherwise.
func fail(stderr io.Writer, err error) int {
	msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", " ")
	fmt.Fprintln(stderr, "idefics2-run: "+strings.TrimPrefix(msg, "idefics2-run: "))
	return exitCode(err)
}

// failCtx is fail for an error of work done under ctx: when a signal cancelled ctx, the line says so and the exit
// code is 128 + the signal number, whatever error the cancellation surfaced as.
func failCtx(ctx context.Context, stderr io.Writer, err error) int {
	if in := interruption(ctx); in != nil {
		fmt.Fprintf(stderr, "idefics2-run: %v\n", in)
		return in.exitCode()
	}
	return fail(stderr, err)
}

func exitCode(err error) int {
	if cli.IsUsageError(err) || runner.IsInputError(err) {
		return exitUsage
	}
	return exitRuntime
}

// parseFlags parses args into fs. With done true the command ends at once with code: after the help on stdout
// (-h, --help; exit 0) or a bad option reported on stderr (exit 2).
func parseFlags(fs *cli.FlagSet, args []string, stdout, stderr io.Writer) (code int, done bool) {
	fs.Exits(exitCodes[fs.Name()]...)
	err := fs.Parse(args)
	switch {
	case err == nil:
		return exitOK, false
	case errors.Is(err, cli.ErrHelp):
		fs.Usage(stdout)
		return exitOK, true
	}
	return fail(stderr, err), true
}

// parseOnlyFlags is parseFlags for a command that takes no positional arguments: one is a usage error naming it
// (and hint, when set, says where such input goes).
func parseOnlyFlags(fs *cli.FlagSet, name, hint string, args []string, stdout, stderr io.Writer) (code int, done bool) {
	if code, done := parseFlags(fs, args, stdout, stderr); done {
		return code, true
	}
	if len(fs.Args()) > 0 {
		if hint != "" {
			hint = " (" + hint + ")"
		}
		return fail(stderr, cli.Usagef("%s: unexpected argument %q%s", name, fs.Args()[0], hint)), true
	}
	return exitOK, false
}

// modelFlags are the options every command that loads a model takes.
type modelFlags struct {
	model, mmproj, device string
	threads, ctxSize      int
	batchSize             int
	flashAttn, noSplit    bool
	tableGELU, textOnly   bool
	verbose               bool
	progress              string // --progress: auto, bar, lines or off
	loras, loraMMProj     []string
	adapters              []runner.Adapter
	image                 imageFlags
	imageSettings         runner.ImageSettings
}

func (f *modelFlags) register(fs *cli.FlagSet) {
	f.device = "auto"
	fs.String(&f.model, "model,m", "text model GGUF `FILE`")
	fs.String(&f.mmproj, "mmproj", "vision GGUF `FILE` (default: mmproj-<model file name> next to the model, if present)")
	fs.String(&f.device, "device", "compute `DEVICE`: auto, cpu, cuda[:N], metal, vulkan[:N] or a device name")
	fs.Int(&f.threads, "threads,t", "CPU threads (0: physical cores)")
	fs.Int(&f.ctxSize, "ctx-size,c", fmt.Sprintf("context size in tokens (0: %d or the model's, whichever is smaller)", runner.DefaultContextSize))
	fs.Int(&f.batchSize, "batch-size,b", "prompt tokens per evaluation batch (0: "+strconv.Itoa(runner.DefaultBatchSize)+")")
	fs.Bool(&f.flashAttn, "flash-attn,fa", "use fused (flash) attention in the decoder")
	fs.Bool(&f.noSplit, "no-split", "turn image splitting off (fewer image tokens)")
	f.image.register(fs)
	fs.Bool(&f.tableGELU, "fast-gelu", "use ggml's fp16-table GELU in the vision tower (~1e-3 relative error) even for an f32 mmproj")
	fs.Bool(&f.textOnly, "text-only", "load no mmproj even if one lies next to the model")
	fs.Bool(&f.verbose, "verbose,v", "log progress and timings on stderr")
	f.progress = progressAuto
	fs.String(&f.progress, "progress", "progress of long steps on stderr (loading, image encoding, prefill, batch lines): auto (a bar on a terminal, lines for long steps otherwise), bar, lines or off")
	fs.List(&f.loras, "lora", "run-time LoRA adapter GGUF `FILE[:SCALE]` from convert --lora-only (repeatable; applied in order)")
	fs.List(&f.loraMMProj, "lora-mmproj", "the mmproj part `FILE` of the --lora at the same position (default: mmproj-<adapter file name> next to it, if present)")
}

// check validates the model options before anything is loaded.
func (f *modelFlags) check(cmd string) error {
	if f.model == "" {
		return cli.Usagef("%s: no model: pass -m model.gguf", cmd)
	}
	if f.threads < 0 || f.threads > runner.MaxThreads {
		return cli.Usagef("%s: --threads %d: want 0 (physical cores) to %d", cmd, f.threads, runner.MaxThreads)
	}
	if f.ctxSize < 0 {
		return cli.Usagef("%s: --ctx-size %d: want 0 or more", cmd, f.ctxSize)
	}
	if f.batchSize < 0 {
		return cli.Usagef("%s: --batch-size %d: want 0 or more", cmd, f.batchSize)
	}
	if err := checkProgressMode(cmd, f.progress); err != nil {
		return err
	}
	if len(f.loraMMProj) > len(f.loras) {
		return cli.Usagef("%s: --lora-mmproj %s has no --lora to go with", cmd, f.loraMMProj[len(f.loras)])
	}
	var err error
	if f.imageSettings, err = f.image.settings(cmd, f.noSplit); err != nil {
		return err
	}
	f.adapters = f.adapters[:0]
	for i, s := range f.loras {
		a, err := runner.ParseAdapter(s)
		if err != nil {
			return cli.Usagef("%s: %v", cmd, err)
		}
		if i < len(f.loraMMProj) {
			a.MMProjPath = f.loraMMProj[i]
		}
		f.adapters = append(f.adapters, a)
	}
	return runner.CheckDevice(f.device)
}

// attention is the decoder attention the flags ask for.
func (f *modelFlags) attention() runner.AttnKernel {
	if f.flashAttn {
		return runner.AttnFlash
	}
	return runner.AttnAuto
}

// gelu is the vision GELU the flags ask for.
func (f *modelFlags) gelu() runner.GELU {
	if f.tableGELU {
		return runner.GELUTable
	}
	return runner.GELUAuto
}

// load loads the model pair, with a progress bar on a terminal.
func (f *modelFlags) load(ctx context.Context, stderr io.Writer) (*runner.Model, error) {
	setupLogging(stderr, f.verbose)
	mm := f.mmproj
	if mm == "" && !f.textOnly {
		mm = runner.FindMMProj(f.model)
	}
	warmFiles(stderr, f.progress, f.model, mm)
	m, err := runner.Load(ctx, runner.Options{ModelPath: f.model, MMProjPath: f.mmproj, TextOnly: f.textOnly, Device: f.device,
		Threads: f.threads, Attention: f.attention(), GELU: f.gelu(), BatchSize: f.batchSize, NoSplit: f.noSplit,
		Adapters: f.adapters, Image: f.imageSettings})
	if err != nil {
		return nil, err
	}
	if f.verbose {
		mmNote := m.MMProjPath()
		if mmNote == "" {
			mmNote = "none"
		}
		slog.Info("model loaded", "model", f.model, "mmproj", mmNote, "device", m.DeviceName(),
			"load_ms", m.LoadTime.Milliseconds())
	}
	return m, nil
}

func setupLogging(stderr io.Writer, verbose bool) {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelInfo
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})))
}

// samplingFlags are the generation options of run, chat and batch/serve defaults.
type samplingFlags struct {
	maxTokens                          int
	temp, topP, minP                   float64
	topK, repeatLastN                  int
	repeatPenalty, presence, frequency float64
	seed                               int
	stop                               []string
	truncate                           bool
	jsonSchema, grammar                string
}

func (f *samplingFlags) register(fs *cli.FlagSet) {
	if f.maxTokens == 0 {
		f.maxTokens = 512 // a command may preset its own default (serve: its --token-limit)
	}
	f.seed = -1
	fs.Int(&f.maxTokens, "max-tokens,n", "most tokens to generate")
	fs.Float(&f.temp, "temp,temperature", "sampling temperature (0: greedy)")
	fs.Int(&f.topK, "top-k", "keep the k most likely tokens (0: off)")
	fs.Float(&f.topP, "top-p", "nucleus sampling probability (0 or 1: off)")
	fs.Float(&f.minP, "min-p", "drop tokens below min-p × the top probability (0: off)")
	fs.Float(&f.repeatPenalty, "repeat-penalty", "repetition penalty (1: off)")
	fs.Int(&f.repeatLastN, "repeat-last-n", "penalty window in tokens (0: 64, -1: whole context)")
	fs.Float(&f.presence, "presence-penalty", "OpenAI presence penalty")
	fs.Float(&f.frequency, "frequency-penalty", "OpenAI frequency penalty")
	fs.Int(&f.seed, "seed,s", "sampling seed (-1: random)")
	fs.List(&f.stop, "stop", "stop string (repeatable)")
	fs.Bool(&f.truncate, "truncate", "drop the oldest part of a prompt that does not fit the context instead of failing (chat drops whole turns; never part of an image; run and chat say on stderr what went)")
	fs.String(&f.jsonSchema, "json-schema", "the answer must validate against this JSON Schema (a file, or the schema itself)")
	fs.String(&f.grammar, "grammar", "the answer must follow this GBNF grammar file")
}

// constraint compiles --json-schema or --grammar; nil when neither is given.
func (f *samplingFlags) constraint(cmd string) (*constrain.Grammar, error) {
	switch {
	case f.jsonSchema != "" && f.grammar != "":
		return nil, cli.Usagef("%s: --json-schema and --grammar: give one of them", cmd)
	case f.jsonSchema != "":
		schema, src := []byte(f.jsonSchema), "--json-schema"
		if t := strings.TrimSpace(f.jsonSchema); !strings.HasPrefix(t, "{") && t != "true" {
			b, err := os.ReadFile(f.jsonSchema)
			if err != nil {
				return nil, cli.Usagef("%s: --json-schema: %v", cmd, err)
			}
			schema, src = b, "--json-schema "+f.jsonSchema
		}
		g, err := constrain.CompileJSONSchema(schema)
		if err != nil {
			return nil, cli.Usagef("%s: %s: %s", cmd, src, strings.TrimPrefix(err.Error(), "constrain: "))
		}
		return g, nil
	case f.grammar != "":
		b, err := os.ReadFile(f.grammar)
		if err != nil {
			return nil, cli.Usagef("%s: --grammar: %v", cmd, err)
		}
		g, err := constrain.ParseGBNF(string(b))
		if err != nil {
			return nil, cli.Usagef("%s: --grammar %s: %s", cmd, f.grammar, strings.TrimPrefix(err.Error(), "constrain: "))
		}
		return g, nil
	}
	return nil, nil
}

func (f *samplingFlags) options(cmd string) (runner.GenerateOptions, error) {
	if f.maxTokens < 0 {
		return runner.GenerateOptions{}, cli.Usagef("%s: --max-tokens %d: want 0 or more", cmd, f.maxTokens)
	}
	if f.seed < -1 {
		return runner.GenerateOptions{}, cli.Usagef("%s: --seed %d: want -1 (random) or a seed ≥ 0", cmd, f.seed)
	}
	so := runner.SamplerOptions{Temperature: f.temp, TopK: f.topK, TopP: f.topP, MinP: f.minP,
		RepeatPenalty: f.repeatPenalty, PresencePenalty: f.presence, FrequencyPenalty: f.frequency,
		RepeatLastN: f.repeatLastN, Seed: seedValue(f.seed)}
	if err := so.Validate(); err != nil {
		return runner.GenerateOptions{}, cli.Usagef("%s: %s", cmd, strings.TrimPrefix(err.Error(), "runner: sampler: "))
	}
	for _, s := range f.stop {
		if s == "" {
			return runner.GenerateOptions{}, cli.Usagef("%s: --stop: empty stop string", cmd)
		}
	}
	g, err := f.constraint(cmd)
	if err != nil {
		return runner.GenerateOptions{}, err
	}
	return runner.GenerateOptions{MaxTokens: f.maxTokens, Sampler: so, Stop: f.stop, Truncate: f.truncate, Constraint: g}, nil
}

// seedValue turns a -1 seed into a random one.
func seedValue(seed int) uint64 {
	if seed < 0 {
		return rand.Uint64()
	}
	return uint64(seed)
}

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	if !ok {
		return false
	}
	st, err := file.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
