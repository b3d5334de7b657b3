// Package graph builds Idefics2 on ggml: the SigLIP-style vision encoder, the connector (modality projection and
// perceiver resampler) and the Mistral decoder with its KV cache, from the weights of a GGUF pair.
//
// Shapes in comments use ggml order, innermost first: [ne0, ne1, …] with ne0 the contiguous dimension. A PyTorch
// activation (tokens, hidden) is [hidden, tokens] here.
package graph
