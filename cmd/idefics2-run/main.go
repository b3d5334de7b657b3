// Command idefics2-run runs Idefics2 GGUF models: one-shot prompts, chat, JSONL batches and an OpenAI-compatible
// server, plus inspection tools (info, inspect, tokenize, detokenize, preprocess).
//
// Exit codes: 0 ok, 1 runtime failure (a model or context that does not fit the device's memory included), 2 bad
// usage or input, 128 + the signal number when stopped by SIGINT (130) or SIGTERM (143) — after flushing what was
// generated: the streamed text, or with --json one object whose stop_reason is "cancelled" (serve instead shuts down
// cleanly and exits 0). Errors are one line on stderr naming the culprit; generated text goes to stdout, logs and
// progress to stderr.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
)

func main() {
	ctx, stop := signalContext(context.Background())
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches on the first argument: a subcommand, or options of the one-shot front end.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "info":
		return cmdInfo(args[1:], stdout, stderr)
	case "inspect":
		return cmdInspect(args[1:], stdout, stderr)
	case "tokenize":
		return cmdTokenize(args[1:], stdout, stderr)
	case "detokenize":
		return cmdDetokenize(args[1:], stdout, stderr)
	case "preprocess":
		return cmdPreprocess(args[1:], stdout, stderr)
	case "chat":
		return cmdChat(ctx, args[1:], stdin, stdout, stderr)
	case "batch":
		return cmdBatch(ctx, args[1:], stdin, stdout, stderr)
	case "serve":
		return cmdServe(ctx, args[1:], stdout, stderr)
	case "bench":
		return cmdBench(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		usage(stdout)
		return exitOK
	case "run":
		return cmdRun(ctx, args[1:], stdin, stdout, stderr)
	}
	if len(args[0]) > 0 && args[0][0] != '-' {
		fmt.Fprintf(stderr, "idefics2-run: unknown command %q (see idefics2-run help)\n", args[0])
		return exitUsage
	}
	return cmdRun(ctx, args, stdin, stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
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
  idefics2-run info [--json] [--device auto|cpu|cuda|metal|vulkan]   devices, CPU features, chosen backend

Run a command with --help for its options. Exit codes: 0 ok, 1 runtime failure, 2 bad usage or input,
130 / 143 stopped by SIGINT / SIGTERM (after flushing what was generated).
`)
}
