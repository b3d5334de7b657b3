package ggml

// #include <stdint.h>
// #include "nf4.h"
import "C"

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"unsafe"
)

// NF4 matrix multiplication on the CPU (nf4.c). The weights are the GGUF NF4 block stream of
// docs/formats.md (quant.NF4Tensor.EncodeStream), held in an I8 tensor.

// NF4ISA names a SIMD path of the NF4 kernel.
type NF4ISA int

// NF4 kernel paths (enum idefics2_nf4_isa in nf4.h).
const (
	NF4Scalar NF4ISA = C.IDEFICS2_NF4_SCALAR
	NF4AVX2   NF4ISA = C.IDEFICS2_NF4_AVX2 // AVX2 + FMA
	NF4AVX512 NF4ISA = C.IDEFICS2_NF4_AVX512
	NF4NEON   NF4ISA = C.IDEFICS2_NF4_NEON
	// NF4AVX512VNNI is AVX-512F + BW + VNNI: the stream kernel runs its AVX-512F path, the nf4x16
	// kernel (MulMatNF4x16) its int8 dot-product path.
	NF4AVX512VNNI NF4ISA = C.IDEFICS2_NF4_AVX512VNNI
	// NF4AVX2VNNI is AVX2 + FMA + AVX-VNNI: the stream kernel runs its AVX2 path, the nf4x16 kernel its AVX2 path
	// with vpdpbusd.
	NF4AVX2VNNI NF4ISA = C.IDEFICS2_NF4_AVX2VNNI
	// NF4AVX2VNNIEmulated is NF4AVX2VNNI with vpdpbusd computed from AVX2 instructions: never chosen, forced by
	// tests so that a CPU without AVX-VNNI checks that path's kernels.
	NF4AVX2VNNIEmulated NF4ISA = C.IDEFICS2_NF4_AVX2VNNI_EMULATED
	// NF4NEONDotProd is AArch64 NEON with the dot-product extension: the stream kernel runs its NEON path, the nf4x16
	// kernel its sdot path.
	NF4NEONDotProd NF4ISA = C.IDEFICS2_NF4_NEON_DOTPROD
	// NF4NEONI8MM is AArch64 NEON with dot products and the int8 matrix multiply: the stream kernel runs its NEON
	// path, the nf4x16 kernel its smmla path (two tokens at a time, a lone token by sdot).
	NF4NEONI8MM NF4ISA = C.IDEFICS2_NF4_NEON_I8MM
)

func (i NF4ISA) String() string {
	switch i {
	case NF4Scalar:
		return "scalar"
	case NF4AVX2:
		return "avx2"
	case NF4AVX512:
		return "avx512"
	case NF4NEON:
		return "neon"
	case NF4AVX512VNNI:
		return "avx512vnni"
	case NF4AVX2VNNI:
		return "avx2-vnni"
	case NF4AVX2VNNIEmulated:
		return "avx2-vnni-emulated"
	case NF4NEONDotProd:
		return "neon-dotprod"
	case NF4NEONI8MM:
		return "neon-i8mm"
	}
	return fmt.Sprintf("nf4isa(%d)", int(i))
}

// NF4BestISA is the fastest NF4 path this CPU can run (detected with __builtin_cpu_supports on
// x86, which also checks OS support for the vector registers).
func NF4BestISA() NF4ISA { return NF4ISA(C.idefics2_nf4_best_isa()) }

// NF4CurrentISA is the path the kernel uses now.
func NF4CurrentISA() NF4ISA { return NF4ISA(C.idefics2_nf4_isa()) }

// NF4SupportedISAs lists the paths this CPU can run (under the ISA cap), scalar first; the emulated AVX-VNNI
// path is among them wherever the AVX2 path is.
func NF4SupportedISAs() []NF4ISA {
	out := []NF4ISA{NF4Scalar}
	cur := NF4CurrentISA()
	for _, isa := range []NF4ISA{NF4AVX2, NF4AVX2VNNI, NF4AVX2VNNIEmulated, NF4AVX512, NF4AVX512VNNI, NF4NEON, NF4NEONDotProd, NF4NEONI8MM} {
		if SetNF4ISA(isa) == nil {
			out = append(out, isa)
		}
	}
	SetNF4ISA(cur)
	return out
}

// SetNF4ISA forces a kernel path for the whole process (tests and benchmarks compare paths with
// it); it refuses a path this CPU cannot run. Use NF4BestISA() to restore the default.
func SetNF4ISA(isa NF4ISA) error {
	if C.idefics2_nf4_set_isa(C.int(isa)) != 0 {
		return fmt.Errorf("ggml: nf4: path %s is not available on this CPU (best: %s)", isa, NF4BestISA())
	}
	return nil
}

var nf4BlockSizes = []int{64, 128, 256, 512, 1024, 2048, 4096}

// NF4StreamSize is the byte size of the NF4 block stream of n values in blocks of blockSize (as
// quant.NF4StreamSize; repeated here because ggml does not import quant).
func NF4StreamSize(n, blockSize int) (int, error) {
	if !slices.Contains(nf4BlockSizes, blockSize) {
		return 0, fmt.Errorf("ggml: nf4: block size %d is not one of %v", blockSize, nf4BlockSizes)
	}
	if n < 0 {
		return 0, fmt.Errorf("ggml: nf4: negative element count %d", n)
	}
	rec := 4 + blockSize/2
	blocks := (n + blockSize - 1) / blockSize
	if blocks > int(^uint(0)>>1)/rec {
		return 0, fmt.Errorf("ggml: nf4: element count %d overflows the stream size", n)
	}
	return blocks * rec, nil
}

// NF4MatMul multiplies the rows×cols NF4 matrix w (a block stream) with ntok = len(x)/cols
// vectors x (each cols float32 values, one after another) and returns y with y[t*rows+r] =
// Σ_c W[r][c]·x[t*cols+c], in ggml's mul_mat layout [rows, ntok]. It runs the kernel directly on
// threads goroutines, outside any graph.
func NF4MatMul(w []byte, rows, cols, blockSize int, x []float32, threads int) ([]float32, error) {
	if rows <= 0 || cols <= 0 {
		return nil, fmt.Errorf("ggml: nf4 matmul: bad shape %d rows × %d columns", rows, cols)
	}
	if rows > int(^uint(0)>>1)/cols {
		return nil, fmt.Errorf("ggml: nf4 matmul: shape %d × %d overflows", rows, cols)
	}
	size, err := NF4StreamSize(rows*cols, blockSize)
	if err != nil {
		return nil, err
	}
	if len(w) != size {
		return nil, fmt.Errorf("ggml: nf4 matmul: weight stream is %d bytes, want %d for %d × %d in blocks of %d", len(w), size, rows, cols, blockSize)
	}
	if len(x)%cols != 0 {
		return nil, fmt.Errorf("ggml: nf4 matmul: %d input values are not a whole number of vectors of %d", len(x), cols)
	}
	ntok := len(x) / cols
	y := make([]float32, rows*ntok)
	if ntok == 0 {
		return y, nil
	}
	threads = max(1, min(threads, rows))
	var wg sync.WaitGroup
	for th := 0; th < threads; th++ {
		r0 := rows * th / threads
		r1 := rows * (th + 1) / threads
		wg.Add(1)
		go func() {
			defer wg.Done()
			C.idefics2_nf4_matmul((*C.uint8_t)(unsafe.Pointer(&w[0])), C.int64_t(rows), C.int64_t(cols), C.int(blockSize),
				(*C.float)(unsafe.Pointer(&x[0])), C.int64_t(ntok), C.int64_t(cols),
				(*C.float)(unsafe.Pointer(&y[0])), C.int64_t(rows), C.int64_t(r0), C.int64_t(r1))
		}()
	}
	wg.Wait()
	runtime.KeepAlive(w)
	runtime.KeepAlive(x)
	return y, nil
}

// MulMatNF4 is ggml_mul_mat for an NF4 weight: w is the I8 tensor holding the block stream of a
// rows×cols matrix (cols = x.Ne(0)) in blocks of blockSize, x is F32 [cols, n1, n2, n3] with
// contiguous rows, and the result is F32 [rows, n1, n2, n3]. It is a ggml custom op that only the
// CPU backend runs, multi-threaded over rows with the SIMD path NF4CurrentISA; other backends
// must dequantize NF4 weights at load time.
func (w Tensor) MulMatNF4(ctx *Context, x Tensor, rows, blockSize int) Tensor {
	need("mul_mat_nf4", w, x)
	if w.Type() != TypeI8 || !w.IsContiguous() {
		shapeErr("mul_mat_nf4", "weight %s is %s; want a contiguous i8 block stream", shapeOf(w), w.Type())
	}
	if x.Type() != TypeF32 || x.Nb(0) != 4 {
		shapeErr("mul_mat_nf4", "input %s is %s with element stride %d; want f32 with contiguous rows", shapeOf(x), x.Type(), x.Nb(0))
	}
	cols := x.Ne(0)
	if rows <= 0 || cols <= 0 || rows > int(^uint(0)>>1)/cols {
		shapeErr("mul_mat_nf4", "bad shape %d rows × %d columns", rows, cols)
	}
	size, err := NF4StreamSize(rows*cols, blockSize)
	if err != nil {
		shapeErr("mul_mat_nf4", "%v", err)
	}
	if w.NumElements() != size {
		shapeErr("mul_mat_nf4", "weight stream has %d bytes, want %d for %d × %d in blocks of %d", w.NumElements(), size, rows, cols, blockSize)
	}
	return ctx.node("mul_mat_nf4", C.idefics2_nf4_mul_mat(ctx.ptr, w.ptr, x.ptr, C.int64_t(rows), C.int(blockSize)))
}
