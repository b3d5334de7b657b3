// Package ggml binds the ggml C library vendored by the github.com/ollama/ollama module.
//
// Shapes use ggml order throughout: [ne0, ne1, ne2, ne3] with ne0 the contiguous dimension.
package ggml

// #cgo CFLAGS: -O3
// #cgo linux LDFLAGS: -ldl -lm
// #include <stdlib.h>
// #include "ggml.h"
// #include "ggml-backend.h"
// #include "ggml-cpu.h"
// #include "ggml-alloc.h"
import "C"

import (
	// The ggml sources (ggml-base and the portable CPU backend) are compiled by cgo
	// from this package of the pinned ollama module.
	_ "github.com/ollama/ollama/ml/backend/ggml/ggml/src"
)
