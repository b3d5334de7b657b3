// Command idefics2-run runs Idefics2 GGUF models: one-shot prompts, chat, JSONL batches and an OpenAI-compatible
// server, plus inspection tools (info, inspect, tokenize, detokenize, preprocess).
//
// Exit codes: 0 ok, 1 runtime failure (a model or context that does not fit the device's memory included), 2 bad
// usage or input, 128 + the signal number when stopped by SIGINT (130) or SIGTERM (143) — after flushing what was
// generated: the streamed text, or with --json one object whose stop_reason is "cancelled" (serve, once its model
// is loaded, drains instead: the requests in progress finish within --drain-timeout, then it exits 0). Errors are
// one line on stderr naming the culprit; generated text goes to stdout, logs and progress to stderr.
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
		fs, _ := newRunFlags()
		fs.Usage(stderr)
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
	case "help":
		return cmdRun(ctx, []string{"--help"}, stdin, stdout, stderr)
	case "run":
		return cmdRun(ctx, args[1:], stdin, stdout, stderr)
	}
	if len(args[0]) > 0 && args[0][0] != '-' {
		fmt.Fprintf(stderr, "idefics2-run: unknown command %q (see idefics2-run --help)\n", args[0])
		return exitUsage
	}
	return cmdRun(ctx, args, stdin, stdout, stderr)
}
