package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
)

// interrupted is the cancellation cause of a command stopped by SIGINT or SIGTERM.
type interrupted struct {
	sig os.Signal
}

// Error names the signal the way shells do ("SIGINT").
func (e *interrupted) Error() string { return "interrupted by " + signalName(e.sig) }

// exitCode is the shell convention for a process ended by a signal: 128 + the signal number (130 for SIGINT, 143
// for SIGTERM).
func (e *interrupted) exitCode() int {
	if s, ok := e.sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return exitRuntime
}

func signalName(s os.Signal) string {
	switch s {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return s.String()
}

// signalContext returns a context cancelled, with an *interrupted cause, by the first SIGINT or SIGTERM. The
// command then stops at its next check (between prompt batches, before each generated token), flushes what it
// generated and exits with 128 + the signal number. After the first signal the default behaviour is restored, so a
// second Ctrl-C ends a process that is stuck in a long computation at once.
func signalContext(parent context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			signal.Stop(ch)
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
