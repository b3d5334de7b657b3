// Command idefics2-run runs Idefics2 GGUF models: one-shot prompts, chat, JSONL batches and an OpenAI-compatible
// server, plus inspection tools (info, inspect, tokenize, preprocess).
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "info":
			return cmdInfo(args[1:], stdout, stderr)
		case "help", "-h", "--help":
			usage(stdout)
			return 0
		}
	}
	fmt.Fprintln(stderr, "idefics2-run: model inference is not built yet in this version; only `idefics2-run info` works")
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, `usage:
  idefics2-run info [--json] [--device auto|cpu|cuda|metal|vulkan]   devices, CPU features, chosen backend`)
}
