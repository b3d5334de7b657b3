//go:build !unix

package graph

// releasePages is a no-op where madvise is unavailable.
func releasePages(d []byte) {}
