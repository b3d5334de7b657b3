package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// stopSignals are the signals that stop a conversion cleanly: the temporary files are removed
// and nothing is left under the final names. SIGHUP is included so that closing the terminal
// does not leave temporary files behind either.
var stopSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// interrupted is the cancellation cause of a run stopped by a signal.
type interrupted struct {
	sig os.Signal
}

// Error names the signal the way shells do ("SIGINT").
func (e *interrupted) Error() string { return "interrupted by " + signalName(e.sig) }

// exitCode is the shell convention for a process ended by a signal: 128 + the signal number
// (130 for SIGINT, 143 for SIGTERM).
func (e *interrupted) exitCode() int {
	if s, ok := e.sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return exitFailure
}

func signalName(s os.Signal) string {
	switch s {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGHUP:
		return "SIGHUP"
	}
	return s.String()
}

// signalContext returns a context cancelled, with an *interrupted cause, by the first of
// stopSignals. Further signals are swallowed until stop is called, so that a second Ctrl-C
// cannot kill the process in the middle of removing its temporary files (cleanup takes at most
// one chunk of work; SIGKILL still works).
func signalContext(parent context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, stopSignals...)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			cancel(&interrupted{sig: s})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(nil)
	}
}

// interruption returns the signal that cancelled ctx, or nil when ctx was not cancelled by one.
func interruption(ctx context.Context) *interrupted {
	if ctx.Err() == nil {
		return nil
	}
	var in *interrupted
	if errors.As(context.Cause(ctx), &in) {
		return in
	}
	return nil
}

// reportInterrupted prints the one-line message for a run stopped by a signal and returns its
// exit status.
func reportInterrupted(stderr io.Writer, in *interrupted) int {
	fmt.Fprintf(stderr, "convert: %v; no output written\n", in)
	return in.exitCode()
}
