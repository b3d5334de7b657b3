// Package quant implements tensor storage formats in pure Go: the ggml block formats F16, BF16,
// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K and Q8_K, and NF4 (the 4-bit NormalFloat format of
// bitsandbytes).
//
// Encoding of the ggml formats is byte-identical to ggml's reference quantizer
// (ggml_quantize_chunk with a NULL importance matrix, ggml-quants.c as vendored by
// github.com/ollama/ollama v0.17.4) on x86-64, where ggml is compiled without floating-point
// contraction. Every float32 operation is written in ggml's order with explicit float32
// conversions around products, so the Go compiler never fuses x*y+z into an FMA (Go spec,
// "Floating-point operators": an explicit conversion rounds and prevents fusion). Where ggml
// converts an out-of-range float to a small integer (a C implementation-defined conversion),
// this package reproduces the x86-64 result (cvttss2si: 0x80000000, then truncation).
//
// Decoding reproduces ggml's to_float functions bit for bit.
//
// On amd64 CPUs with AVX2 the K-quant scale searches run in assembly (kquants_amd64.s), each of
// 8 vector lanes performing exactly the scalar reference's IEEE operations (BENCHMARKS.md,
// section "quant", compares them); the build tag purego disables the assembly. Every encoder
// keeps its plain scalar reference beside the fast path, and tests compare them byte for byte.
//
// NF4 follows bitsandbytes' CUDA kernels (kQuantizeBlockwise / kDequantizeBlockwise with the NF4
// data type): codebook, block absmax, nibble order and double quantization of the absmax. See
// docs/formats.md for the GGUF encoding of NF4 tensors.
//
// Shapes: a "row" is ggml's ne[0], the contiguous dimension; Quantize takes rows of rowLen
// values laid out one after another.
package quant
