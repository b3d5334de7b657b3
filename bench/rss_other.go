//go:build !unix

package bench

// PeakRSS is not available on this platform.
func PeakRSS() int64 { return 0 }
