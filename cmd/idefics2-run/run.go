package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/idefics2-go/idefics2/internal/cli"
	"github.com/idefics2-go/idefics2/runner"
)

// runOutput is what --json prints.
type runOutput struct {
	Text       string         `json:"text"`
	Tokens     []int32        `json:"tokens"`
	StopReason string         `json:"stop_reason"`
	Usage      tokenUsage     `json:"usage"`
	Timings    runner.Timings `json:"timings"`
	// ImageSettings are the image processor settings the prompt's images were preprocessed with (absent without
	// images).
	ImageSettings *imageSettingsJSON `json:"image_settings,omitempty"`
	// Logprobs (with --logprobs) and, with --n-choices above 1, every answer.
	Logprobs []runner.TokenLogprob `json:"logprobs,omitempty"`
	Choices  []batchChoice         `json:"choices,omitempty"`
}

type tokenUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
	CachedTokens     int `json:"cached_tokens,omitempty"`
}

func newUsage(r *runner.Result) tokenUsage {
	n := len(r.Tokens)
	if r.Choices != nil {
		n = 0
		for _, c := range r.Choices {
			n += len(c.Tokens)
		}
	}
	return tokenUsage{PromptTokens: r.PromptTokens, CompletionTokens: n, TotalTokens: r.PromptTokens + n, CachedTokens: r.CachedTokens}
}

// runFlags are the options of the one-shot front end.
type runFlags struct {
	model                            modelFlags
	sampling                         samplingFlags
	prompt, promptFile, system, dump string
	dumpTensors                      string
	images                           []string
	raw, json                        bool
	remote                           remoteFlags
	choices, topLogprobs             int
	logprobs                         bool
}

// commandList is the overview of every command, in the one-shot front end's help.
const commandList = `commands:
  idefics2-run -m model.gguf [--mmproj mmproj.gguf] [--image FILE]... -p PROMPT [options]
                                        one-shot answer, streamed to stdout (--json: one JSON object)
  idefics2-run chat -m model.gguf [options]
                                        interactive chat (/image PATH, /reset, /quit); works under a pipe
  idefics2-run batch -m model.gguf [options] < requests.jsonl
                                        JSONL requests on stdin, JSONL results on stdout, in order
  idefics2-run serve -m model.gguf [--host 127.0.0.1] [--port 8080] [options]
                                        OpenAI-compatible server: POST /v1/chat/completions, GET /v1/models, /health
  idefics2-run tokenize -m model.gguf [--no-bos] TEXT      token ids as a JSON array
  idefics2-run detokenize -m model.gguf ID... | JSON-ARRAY text of token ids
  idefics2-run preprocess (--mmproj FILE | --processor-config FILE) --image FILE... [--no-split] --out DIR
                                        pixel_values.npy and pixel_attention_mask.npy as Hugging Face makes them
  idefics2-run bench -m model.gguf [-p 512] [-n 128] [-r 5] [-t 2] [--images 378,980] [--split] [--perceiver]
                    [--ttft] [--json]   llama-bench-style speed table (markdown, or JSON with its field names)
  idefics2-run inspect FILE.gguf        GGUF metadata and tensors
  idefics2-run info [--json] [--device auto|cpu|cuda|metal|vulkan[:N]]   devices, CPU features, chosen backend

Run a command with --help for its options and exit codes.`

// newRunFlags registers the one-shot front end's options; its help also lists every command.
func newRunFlags() (*cli.FlagSet, *runFlags) {
	fs := cli.New("idefics2-run", "idefics2-run -m model.gguf [--mmproj mmproj.gguf] [--image FILE]... -p PROMPT [options]",
		"idefics2-run COMMAND [options]")
	fs.Describe(commandList)
	f := &runFlags{}
	f.model.register(fs)
	f.sampling.register(fs)
	fs.String(&f.prompt, "prompt,p", "the prompt (one user turn through the chat template; see --raw)")
	fs.String(&f.promptFile, "file,f", "read the prompt from this `FILE`")
	fs.List(&f.images, "image", "image `FILE`, - for stdin (repeatable, in order)")
	fs.String(&f.system, "system", "system message")
	fs.Bool(&f.raw, "raw", "the prompt is the exact model input: no chat template (<image> markers are still expanded)")
	fs.Bool(&f.json, "json", "print one JSON object (text, tokens, stop_reason, usage, timings) instead of streaming")
	fs.String(&f.dump, "dump", "write the prompt's input ids, pixel values, vision and connector outputs and logits as .npy into this `DIR`")
	f.remote.register(fs)
	f.choices = 1
	fs.Int(&f.choices, "n-choices", "answers to sample for the prompt, evaluated once and decoded together (OpenAI's n; -n is --max-tokens); answer i uses --seed + i")
	fs.Bool(&f.logprobs, "logprobs", "with --json: each generated token's log-probability (after penalties, before temperature)")
	fs.Int(&f.topLogprobs, "top-logprobs", "with --logprobs: that many most likely alternatives at each position (0…20)")
	fs.String(&f.dumpTensors, "dump-tensors", "with --dump, also write every named intermediate matching this `PATTERN` (e.g. 'dec.blk.3.*', 'vis.last_hidden_state') as <name>.npy")
	return fs, f
}

// cmdRun is the one-shot front end: one prompt (with images) in, the answer out.
func cmdRun(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs, f := newRunFlags()
	if code, done := parseFlags(fs, args, stdout, stderr); done {
		return code
	}
	mf, sf := &f.model, &f.sampling
	prompt, promptFile, system, dump, images, raw, asJSON := f.prompt, f.promptFile, f.system, f.dump, f.images, f.raw, f.json
	if len(fs.Args()) > 0 {
		return fail(stderr, cli.Usagef("unexpected argument %q (the prompt goes after -p)", fs.Args()[0]))
	}
	if err := mf.check("idefics2-run"); err != nil {
		return fail(stderr, err)
	}
	gen, err := sf.options("idefics2-run")
	if err != nil {
		return fail(stderr, err)
	}
	if promptFile != "" {
		if fs.Set("prompt") {
			return fail(stderr, cli.Usagef("give the prompt with -p or --file, not both"))
		}
		b, err := os.ReadFile(promptFile)
		if err != nil {
			return fail(stderr, cli.Usagef("--file: %v", err))
		}
		prompt = string(b)
	}
	src := "-p"
	if promptFile != "" {
		src = "--file " + promptFile
	}
	for _, c := range []struct{ name, text string }{{src, prompt}, {"--system", system}} {
		if !utf8.ValidString(c.text) {
			return fail(stderr, cli.Usagef("%s: the text is not valid UTF-8 (first bad byte at offset %d)", c.name, badUTF8Offset(c.text)))
		}
	}
	if raw && system != "" {
		return fail(stderr, cli.Usagef("--system has no effect with --raw: put it into the prompt"))
	}
	if prompt == "" && len(images) == 0 {
		return fail(stderr, cli.Usagef("the prompt is empty: pass -p TEXT (and/or --image FILE)"))
	}
	fetcher, err := f.remote.fetcher("idefics2-run", fs, maxImageBytes)
	if err != nil {
		return fail(stderr, err)
	}
	imgs, err := readImagesFrom(ctx, images, stdin, fetcher)
	if err != nil {
		return fail(stderr, err)
	}
	gen.DumpDir, gen.DumpTensors = dump, f.dumpTensors
	switch {
	case f.choices < 1 || f.choices > maxParallel:
		return fail(stderr, cli.Usagef("--n-choices %d: want 1…%d", f.choices, maxParallel))
	case f.choices > 1 && dump != "":
		return fail(stderr, cli.Usagef("--n-choices %d: --dump writes one answer's inputs; use --n-choices 1", f.choices))
	case f.logprobs && !asJSON:
		return fail(stderr, cli.Usagef("--logprobs: the log-probabilities are part of the --json output; add --json"))
	case f.topLogprobs < 0 || f.topLogprobs > runner.MaxTopLogprobs:
		return fail(stderr, cli.Usagef("--top-logprobs %d: want 0…%d", f.topLogprobs, runner.MaxTopLogprobs))
	case f.topLogprobs > 0 && !f.logprobs:
		return fail(stderr, cli.Usagef("--top-logprobs %d: add --logprobs", f.topLogprobs))
	}
	gen.N, gen.Logprobs, gen.TopLogprobs = f.choices, f.logprobs, f.topLogprobs

	m, err := mf.load(ctx, stderr)
	if err != nil {
		return failCtx(ctx, stderr, err)
	}
	defer m.Close()
	var p *runner.Prompt
	if raw {
		p, err = m.RawPrompt(prompt, imgs, runner.PromptOptions{})
	} else {
		var msgs []runner.Message
		if system != "" {
			msgs = append(msgs, runner.Message{Role: "system", Content: []runner.Part{runner.TextPart(system)}})
		}
		u, uerr := runner.UserMessage(prompt, imgs)
		if uerr != nil {
			return fail(stderr, uerr)
		}
		p, err = m.ChatPrompt(append(msgs, u), runner.PromptOptions{})
	}
	if err != nil {
		return fail(stderr, err)
	}
	// One answer runs on a session; several on a scheduler that decodes them together from one prompt evaluation.
	generate := func(ctx context.Context, p *runner.Prompt, o runner.GenerateOptions) (*runner.Result, error) {
		s, err := m.NewSession(mf.ctxSize)
		if err != nil {
			return nil, err
		}
		defer s.Close()
		return s.Generate(ctx, p, o)
	}
	if f.choices > 1 {
		sched, err := m.NewScheduler(runner.SchedulerOptions{Parallel: f.choices, CtxSize: mf.ctxSize, CacheMem: 1})
		if err != nil {
			return fail(stderr, err)
		}
		defer sched.Close()
		generate = sched.Generate
	}
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	if !asJSON && f.choices == 1 {
		gen.OnText = func(t string) error {
			out.WriteString(t)
			if err := out.Flush(); err != nil {
				return fmt.Errorf("writing the answer to standard output: %w", err)
			}
			return nil
		}
	}
	progress := newReporter(stderr, mf.progress)
	gen.OnProgress = progress.generateHook()
	res, err := generate(ctx, p, gen)
	progress.done()
	if res != nil && gen.Truncate {
		if note := truncationNote(m, p, res.PromptTokens); note != "" {
			fmt.Fprintln(stderr, note)
		}
	}
	if res != nil {
		res.Timings.LoadMS = float64(m.LoadTime.Microseconds()) / 1000
	}
	if in := interruption(ctx); in != nil && res != nil && res.StopReason == runner.StopCancelled {
		// Stopped by a signal: what was generated is flushed (the streamed text, or the --json object with
		// stop_reason "cancelled"), then one line on stderr and 128 + the signal number.
		finishOutput(out, res, p, asJSON)
		if err := out.Flush(); err != nil {
			return fail(stderr, fmt.Errorf("writing the answer to standard output: %w", err))
		}
		fmt.Fprintf(stderr, "idefics2-run: %v after %d generated tokens\n", in, len(res.Tokens))
		return in.exitCode()
	}
	if err != nil {
		if !asJSON && res != nil && res.Text != "" {
			fmt.Fprintln(out)
		}
		out.Flush()
		return failCtx(ctx, stderr, err)
	}
	finishOutput(out, res, p, asJSON)
	if err := out.Flush(); err != nil {
		return fail(stderr, fmt.Errorf("writing the answer to standard output: %w", err))
	}
	if mf.verbose {
		printTimings(stderr, res)
	}
	return exitOK
}

// finishOutput ends the answer on out: the --json object, or a final newline after streamed text.
// With several answers (not streamed) the text is each answer under an "[answer i]" line.
func finishOutput(out *bufio.Writer, res *runner.Result, p *runner.Prompt, asJSON bool) {
	if asJSON {
		o := runOutput{Text: res.Text, Tokens: res.Tokens, StopReason: string(res.StopReason), Usage: newUsage(res), Timings: res.Timings,
			Logprobs: res.Logprobs}
		if p.ImageConfig != nil {
			o.ImageSettings = newImageSettingsJSON(*p.ImageConfig)
		}
		if o.Tokens == nil {
			o.Tokens = []int32{}
		}
		for i, c := range res.Choices {
			ct := c.Tokens
			if ct == nil {
				ct = []int32{}
			}
			o.Choices = append(o.Choices, batchChoice{Index: i, Text: c.Text, Tokens: ct, StopReason: string(c.StopReason), Logprobs: c.Logprobs})
		}
		b, _ := json.Marshal(o)
		out.Write(b)
		out.WriteByte('\n')
		return
	}
	if len(res.Choices) > 1 {
		for i, c := range res.Choices {
			fmt.Fprintf(out, "[answer %d]\n%s", i+1, c.Text)
			if !strings.HasSuffix(c.Text, "\n") {
				out.WriteByte('\n')
			}
		}
		return
	}
	if res.Text != "" && !strings.HasSuffix(res.Text, "\n") {
		out.WriteByte('\n')
	}
}

func printTimings(w io.Writer, r *runner.Result) {
	t := r.Timings
	fmt.Fprintf(w, "load %.0f ms | image encode %.0f ms | prefill %d tokens (%d cached) in %.0f ms, %.1f tok/s | decode %d tokens in %.0f ms, %.1f tok/s | stop: %s\n",
		t.LoadMS, t.ImageEncodeMS, r.PromptTokens-r.CachedTokens, r.CachedTokens, t.PrefillMS, t.PrefillTPS,
		len(r.Tokens), t.DecodeMS, t.DecodeTPS, r.StopReason)
}

// badUTF8Offset is the offset of the first byte of s that does not start a valid UTF-8 sequence.
func badUTF8Offset(s string) int {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(s)
}

// readImages reads the --image files; "-" reads standard input (once).
func readImages(paths []string, stdin io.Reader) ([]runner.Image, error) {
	var out []runner.Image
	usedStdin := false
	for _, p := range paths {
		if p == "-" {
			if usedStdin {
				return nil, cli.Usagef("--image -: standard input can be read only once")
			}
			usedStdin = true
			b, err := io.ReadAll(io.LimitReader(stdin, maxImageBytes+1))
			if err != nil {
				return nil, fmt.Errorf("reading the image from standard input: %w", err)
			}
			if len(b) > maxImageBytes {
				return nil, cli.Usagef("--image -: more than %d MiB on standard input", maxImageBytes>>20)
			}
			out = append(out, runner.Image{Name: "<stdin>", Data: b})
			continue
		}
		if strings.HasPrefix(p, "http://") || strings.HasPrefix(p, "https://") {
			return nil, cli.Usagef("--image %s: URLs are not supported (no network access): download the file first", p)
		}
		img, err := runner.LoadImage(p)
		if err != nil {
			return nil, err
		}
		out = append(out, img)
	}
	return out, nil
}

// maxImageBytes bounds one image file read from standard input or a request.
const maxImageBytes = 64 << 20
