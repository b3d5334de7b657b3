package ggml

import "runtime"

var (
	isDarwin  = runtime.GOOS == "darwin"
	isWindows = runtime.GOOS == "windows"
)
