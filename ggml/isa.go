package ggml

// #include "isacap.h"
import "C"

import (
	"fmt"
	"os"
	"strings"
)

// ISALevel is an instruction-set level of x86-64 CPUs, as far as the kernels' paths and ggml's CPU variants differ.
type ISALevel int

// ISA levels, in order.
const (
	ISAPortable ISALevel = C.IDEFICS2_ISA_PORTABLE  // baseline x86-64: ggml's portable backend, scalar kernels
	ISAAVX2     ISALevel = C.IDEFICS2_ISA_AVX2      // AVX2, FMA, F16C (ggml's haswell variant)
	ISAAVX2VNNI ISALevel = C.IDEFICS2_ISA_AVX2_VNNI // AVX2 with AVX-VNNI (ggml's alderlake variant)
	ISAAVX512   ISALevel = C.IDEFICS2_ISA_AVX512    // AVX-512 (ggml's skylakex, icelake and zen4 variants)
)

var isaNames = [...]string{"portable", "avx2", "avx2-vnni", "avx512"}

func (l ISALevel) String() string {
	if l >= 0 && int(l) < len(isaNames) {
		return isaNames[l]
	}
	return fmt.Sprintf("isa(%d)", int(l))
}

// MaxISAEnv is the environment variable that caps the instruction-set level: ggml's CPU variants above it are not
// loaded and this project's kernels take no path above it, so that one machine runs as a smaller CPU would.
const MaxISAEnv = "IDEFICS2_MAX_ISA"

// ParseISALevel reads a level by name.
func ParseISALevel(s string) (ISALevel, error) {
	for i, n := range isaNames {
		if strings.EqualFold(strings.TrimSpace(s), n) {
			return ISALevel(i), nil
		}
	}
	return 0, fmt.Errorf("ggml: %s=%q: want one of %s", MaxISAEnv, s, strings.Join(isaNames[:], ", "))
}

// maxISA and maxISAErr are read from the environment once, before any kernel detects its path.
var maxISA, maxISAErr = func() (ISALevel, error) {
	v, ok := os.LookupEnv(MaxISAEnv)
	if !ok || v == "" {
		return ISAAVX512, nil
	}
	l, err := ParseISALevel(v)
	if err != nil {
		return ISAPortable, err
	}
	C.idefics2_set_isa_cap(C.int(l))
	return l, nil
}()

// MaxISA is the instruction-set cap in force (ISAAVX512, the highest, when IDEFICS2_MAX_ISA is unset) and whether
// the variable set it; an unreadable value is an error, and SelectDevice refuses to run under it.
func MaxISA() (level ISALevel, set bool, err error) {
	_, set = os.LookupEnv(MaxISAEnv)
	return maxISA, set, maxISAErr
}

// variantISA is the level of each of ggml's x86-64 CPU variants (ollama's CMake names). A variant not listed is
// loaded only without a cap.
var variantISA = map[string]ISALevel{
	"x64": ISAPortable, "sse42": ISAPortable, "sandybridge": ISAAVX2, "haswell": ISAAVX2,
	"alderlake": ISAAVX2VNNI, "skylakex": ISAAVX512, "icelake": ISAAVX512, "zen4": ISAAVX512,
}

// variantAllowed reports whether a CPU variant may be loaded under the cap.
func variantAllowed(variant string) bool {
	if _, set, _ := MaxISA(); !set {
		return true
	}
	l, ok := variantISA[variant]
	return ok && l <= maxISA
}
