//go:build !linux

package convert

// releasePages is a no-op where MADV_DONTNEED is not used; see release_linux.go.
func releasePages([]byte) {}
