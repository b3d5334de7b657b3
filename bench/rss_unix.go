//go:build unix

package bench

import (
	"runtime"
	"syscall"
)

// PeakRSS is the process's peak resident set size in bytes (getrusage ru_maxrss: KiB on Linux, bytes on darwin).
func PeakRSS() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	if runtime.GOOS == "darwin" {
		return int64(ru.Maxrss)
	}
	return int64(ru.Maxrss) * 1024
}
