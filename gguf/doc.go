// Package gguf reads and writes GGUF files, the container format of ggml and llama.cpp.
//
// The reader ([Open], [Read]) validates every header field before trusting it: counts and string
// lengths are bounded by the bytes that remain in the file, tensor types must be known, shapes must
// have one to four positive dimensions whose product does not overflow, and tensor data must be
// aligned, inside the file and non-overlapping. Tensor data is served from one read-only memory map
// without copying. The writer ([Create]) streams tensor data to a temporary file in the target
// directory and renames it over the final path on [Writer.Close], so a failed run leaves no partial
// file behind. Its output is byte-identical to ggml's gguf_write_to_file for the same metadata and
// tensors.
//
// Format (GGUF v3, little-endian; v2 differs only in not allowing big-endian files):
//
//	magic "GGUF" | version u32 | n_tensors i64 | n_kv i64
//	n_kv × { key string | value type u32 | value }
//	n_tensors × { name string | n_dims u32 | ne[n_dims] i64 | type u32 | offset u64 }
//	padding to the alignment | tensor data, each tensor aligned
//
// Strings are a u64 byte length followed by the bytes (no terminator); booleans are one byte;
// arrays are an element type u32, a u64 count and the elements. The alignment is the u32 value of
// "general.alignment" or 32 when it is absent. Source of truth: ggml's gguf.h/gguf.cpp in the
// pinned ollama module and the GGUF specification in the ggml repository (docs/gguf.md).
//
// Shapes use ggml order: [ne0, ne1, …] with ne0 the contiguous (innermost) dimension, so a PyTorch
// weight of shape (out, in) is stored with Shape [in, out].
package gguf
