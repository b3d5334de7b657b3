package ggml

import (
	"runtime"
	"sort"

	"github.com/klauspost/cpuid/v2"
)

// CPUInfo describes the host CPU as cpuid reports it.
type CPUInfo struct {
	Brand         string
	Vendor        string
	Arch          string
	PhysicalCores int
	LogicalCores  int
	// Features are the SIMD features relevant to ggml's kernels that this CPU has, e.g. AVX2, AVX512F, AVX512VNNI.
	Features []string
}

// HostCPU reads the CPU's identity and SIMD features.
func HostCPU() CPUInfo {
	c := cpuid.CPU
	info := CPUInfo{
		Brand:         c.BrandName,
		Vendor:        c.VendorString,
		Arch:          runtime.GOARCH,
		PhysicalCores: c.PhysicalCores,
		LogicalCores:  c.LogicalCores,
	}
	want := []cpuid.FeatureID{
		cpuid.SSE3, cpuid.SSSE3, cpuid.SSE4, cpuid.SSE42, cpuid.AVX, cpuid.F16C, cpuid.FMA3, cpuid.AVX2, cpuid.BMI2,
		cpuid.AVXVNNI, cpuid.AVX512F, cpuid.AVX512BW, cpuid.AVX512DQ, cpuid.AVX512VL, cpuid.AVX512VBMI,
		cpuid.AVX512VNNI, cpuid.AVX512BF16, cpuid.AMXINT8, cpuid.AMXBF16,
		cpuid.ASIMD, cpuid.ASIMDDP, cpuid.ASIMDHP, cpuid.SVE, cpuid.I8MM,
	}
	for _, f := range want {
		if c.Supports(f) {
			info.Features = append(info.Features, f.String())
		}
	}
	sort.Strings(info.Features)
	return info
}

// DefaultThreads is the number of physical cores (ggml's compute threads scale with cores, not SMT siblings).
func DefaultThreads() int {
	n := cpuid.CPU.PhysicalCores
	if n <= 0 {
		n = runtime.NumCPU()
	}
	if n > runtime.NumCPU() {
		n = runtime.NumCPU()
	}
	if n < 1 {
		n = 1
	}
	return n
}
