//go:build linux

package quant

import (
	"syscall"
	"time"
)

// rusageThread is Linux's RUSAGE_THREAD: the resource usage of the calling thread.
const rusageThread = 1

// threadCPU returns the CPU time (user + system) the calling thread has used; callers lock the
// goroutine to its thread. On a shared machine this is far less noisy than wall time, which
// also counts the time the thread waited for a core.
func threadCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
