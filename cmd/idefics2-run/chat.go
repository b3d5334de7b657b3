package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/idefics2-go/idefics2/internal/cli"
	"github.com/idefics2-go/idefics2/runner"
)

const chatHelp = `commands:
  /image PATH   attach an image to your next message (repeatable)
  /system TEXT  set the system message (starts a new conversation)
  /reset        start a new conversation
  /set NAME VALUE  change the image settings of the next turns: image-splitting on|off, longest-edge N,
                shortest-edge N (/set alone shows them)
  /help         show this list
  /quit         leave (also /exit, Ctrl-D); the exit code is then 0
  a line ending in \ continues on the next line`

// cmdChat is the interactive multi-turn front end. Every turn re-renders the whole conversation through the chat
// template; the session's cache keeps the shared prefix, so only the new turn is evaluated. On a terminal it
// prompts on stderr; under a pipe it reads one message per line and prints one answer per turn.
func cmdChat(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := cli.New("chat", "idefics2-run chat -m model.gguf [options]")
	fs.Describe(chatHelp)
	var mf modelFlags
	var sf samplingFlags
	var rf remoteFlags
	mf.register(fs)
	sf.register(fs)
	rf.register(fs)
	var system string
	var images []string
	fs.String(&system, "system", "system message")
	fs.List(&images, "image", "image `FILE` attached to the first message (repeatable)")
	if code, done := parseOnlyFlags(fs, "chat", "", args, stdout, stderr); done {
		return code
	}
	if err := mf.check("chat"); err != nil {
		return fail(stderr, err)
	}
	gen, err := sf.options("chat")
	if err != nil {
		return fail(stderr, err)
	}
	for _, p := range images {
		if p == "-" {
			return fail(stderr, cli.Usagef("chat: --image -: standard input carries the conversation"))
		}
	}
	fetcher, err := rf.fetcher("chat", fs, maxImageBytes)
	if err != nil {
		return fail(stderr, err)
	}
	pending, err := readImagesFrom(ctx, images, nil, fetcher)
	if err != nil {
		return fail(stderr, err)
	}
	m, err := mf.load(ctx, stderr)
	if err != nil {
		return failCtx(ctx, stderr, err)
	}
	defer m.Close()
	s, err := m.NewSession(mf.ctxSize)
	if err != nil {
		return fail(stderr, err)
	}
	defer s.Close()

	interactive := isTerminal(stdin)
	if interactive {
		fmt.Fprintf(stderr, "%s: chat (/help for commands)\n", m.Name())
	}
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	in := bufio.NewReader(stdin)
	read := func() (string, error) { return readMessage(in) }
	edited := false // line editing on the terminal, which draws its own prompt
	if f, ok := stdin.(*os.File); ok && interactive {
		if tr, err := newTermReader(f, stderr, nil); err == nil {
			defer tr.close()
			read, edited = tr.readMessage, true
		}
	}
	var history []runner.Message
	var imageSet runner.ImageSettings // /set changes over the command-line options
	worst := exitOK
	prompt := func() {
		if interactive && !edited {
			fmt.Fprint(stderr, "> ")
		}
	}
	// Input is read by its own goroutine so that a signal also ends a chat that waits for the next line.
	type message struct {
		line string
		err  error
	}
	lines := make(chan message, 1)
	next := make(chan struct{}, 1)
	go func() {
		for range next {
			line, err := read() // at the end of the input: "", io.EOF again
			lines <- message{line, err}
		}
	}()
	defer close(next)
	for {
		prompt()
		next <- struct{}{}
		var line string
		var rerr error
		select {
		case msg := <-lines:
			line, rerr = msg.line, msg.err
		case <-ctx.Done():
			out.Flush()
			if interactive {
				fmt.Fprintln(stderr)
			}
			if sig := interruption(ctx); sig != nil {
				fmt.Fprintf(stderr, "idefics2-run: %v\n", sig)
				return sig.exitCode()
			}
			return exitRuntime
		}
		if errors.Is(rerr, errPromptInterrupt) {
			out.Flush()
			in := &interrupted{sig: syscall.SIGINT}
			fmt.Fprintf(stderr, "idefics2-run: %v\n", in)
			return in.exitCode()
		}
		if rerr != nil && line == "" {
			if interactive {
				fmt.Fprintln(stderr)
			}
			break
		}
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
			continue
		case trimmed == "/quit" || trimmed == "/exit":
			return exitOK
		case trimmed == "/help":
			fmt.Fprintln(stderr, chatHelp)
			continue
		case trimmed == "/reset":
			history, pending = nil, nil
			s.Reset()
			fmt.Fprintln(stderr, "(new conversation)")
			continue
		case strings.HasPrefix(trimmed, "/system"):
			system = strings.TrimSpace(strings.TrimPrefix(trimmed, "/system"))
			history = nil
			fmt.Fprintln(stderr, "(new conversation with the new system message)")
			continue
		case trimmed == "/set" || strings.HasPrefix(trimmed, "/set "):
			next, err := chatSet(m, imageSet, strings.TrimPrefix(trimmed, "/set"), stderr)
			if err != nil {
				worst = max(worst, fail(stderr, err))
				continue
			}
			imageSet = next
			continue
		case strings.HasPrefix(trimmed, "/image"):
			path := strings.TrimSpace(strings.TrimPrefix(trimmed, "/image"))
			if path == "" {
				fmt.Fprintln(stderr, "idefics2-run: chat: /image needs a file path")
				worst = max(worst, exitUsage)
				continue
			}
			if !m.HasVision() {
				fmt.Fprintln(stderr, "idefics2-run: chat: the model has no mmproj (vision) file; images cannot be used")
				worst = max(worst, exitUsage)
				continue
			}
			load := func() (runner.Image, error) { return runner.LoadImage(path) }
			if isImageURL(path) {
				load = func() (runner.Image, error) { return loadImageURL(ctx, path, fetcher) }
			}
			img, err := load()
			if err != nil {
				worst = max(worst, fail(stderr, err))
				continue
			}
			pending = append(pending, img)
			if interactive {
				fmt.Fprintf(stderr, "(image %s attached to your next message)\n", path)
			}
			continue
		case strings.HasPrefix(trimmed, "/"):
			fmt.Fprintf(stderr, "idefics2-run: chat: unknown command %s (/help lists them)\n", strings.Fields(trimmed)[0])
			worst = max(worst, exitUsage)
			continue
		}
		reply := chatReply{out: out, stderr: stderr, interactive: interactive}
		u, err := runner.UserMessage(line, pending)
		if err != nil {
			worst = max(worst, reply.failed(err))
			continue
		}
		p, kept, err := chatPrompt(m, s.Size(), gen.MaxTokens, gen.Truncate, system, history, u, imageSet, stderr)
		if err != nil {
			worst = max(worst, reply.failed(err))
			continue
		}
		history = kept
		g := gen
		g.Truncate = false // whole turns were dropped above; the runner would cut inside one
		streamed := false
		g.OnText = func(t string) error {
			if !interactive {
				return nil // under a pipe the answer is written whole, or replaced by an error line
			}
			streamed = streamed || t != ""
			if _, err := out.WriteString(t); err != nil {
				return err
			}
			return out.Flush()
		}
		progress := newReporter(stderr, mf.progress)
		g.OnProgress = progress.generateHook()
		res, err := s.Generate(ctx, p, g)
		progress.done()
		if err != nil {
			if sig := interruption(ctx); sig != nil {
				if !interactive && res != nil {
					out.WriteString(res.Text)
				}
				out.WriteString("\n")
				out.Flush()
				fmt.Fprintf(stderr, "idefics2-run: %v\n", sig)
				return sig.exitCode()
			}
			if streamed {
				out.WriteString("\n")
				out.Flush()
			}
			if errors.Is(err, context.Canceled) {
				return exitRuntime
			}
			worst = max(worst, reply.failed(err))
			continue
		}
		if !interactive {
			out.WriteString(res.Text)
		}
		out.WriteString("\n")
		if err := out.Flush(); err != nil {
			return fail(stderr, fmt.Errorf("chat: writing the answer to standard output: %w", err))
		}
		if mf.verbose {
			printTimings(stderr, res)
		}
		pending = nil
		history = append(history, u, runner.Message{Role: "assistant", Content: []runner.Part{runner.TextPart(strings.TrimSpace(res.Text))}})
	}
	return worst
}

// readMessage reads one line; a line ending in a backslash continues on the next. It returns the text without the
// final newline, and io.EOF (with the text read so far) at the end of the input.
func readMessage(r *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		line = strings.TrimRight(line, "\r\n")
		if strings.HasSuffix(line, `\`) && err == nil {
			b.WriteString(strings.TrimSuffix(line, `\`))
			b.WriteByte('\n')
			continue
		}
		b.WriteString(line)
		if err != nil {
			return b.String(), err
		}
		return b.String(), nil
	}
}
