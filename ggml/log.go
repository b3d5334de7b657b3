package ggml

// #include "ggml.h"
// extern void idefics2GGMLLog(int level, char *text, void *user);
// static void idefics2_install_log(void) { ggml_log_set((ggml_log_callback) idefics2GGMLLog, NULL); }
import "C"

import (
	"context"
	"log/slog"
	"strings"
	"sync"
)

var logMu sync.Mutex
var logLine strings.Builder

func init() { C.idefics2_install_log() }

// idefics2GGMLLog receives ggml's log output (which arrives in fragments) and forwards whole lines to slog:
// ggml's info and debug chatter at Debug level, warnings and errors at their own levels.
//
//export idefics2GGMLLog
func idefics2GGMLLog(level C.int, text *C.char, _ *C.void) {
	s := C.GoString(text)
	logMu.Lock()
	logLine.WriteString(s)
	if !strings.HasSuffix(s, "\n") {
		logMu.Unlock()
		return
	}
	line := strings.TrimRight(logLine.String(), "\n")
	logLine.Reset()
	logMu.Unlock()
	lvl := slog.LevelDebug
	switch level {
	case C.GGML_LOG_LEVEL_WARN:
		lvl = slog.LevelWarn
	case C.GGML_LOG_LEVEL_ERROR:
		lvl = slog.LevelError
	}
	slog.Default().Log(context.Background(), lvl, "ggml: "+line)
}
