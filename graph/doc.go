// Package graph builds Idefics2 on ggml: the SigLIP-style vision encoder, the connector (modality projection and
// perceiver resampler) and the Mistral decoder with its KV cache, from the weights of a GGUF pair.
//
// Loading has three steps, each in one place:
//   - PlanWeights (plan.go) decides for every weight of a file how it is held (the file's blocks, ggml's repacked
//     layout, this project's 16-row layouts, NF4 streams or nf4x16, NF4 expanded to F16), which kernel multiplies it,
//     whether its last rows stay in a plain tail and which matrices are stacked. It is a pure function of the file's
//     tensors, the device's capabilities (Target) and the options.
//   - LoadWeights (weights.go, layouts.go) follows the plan.
//   - The bind functions of each block (bindVision, bindConnector, bindDecoder) take the weights by name, stating
//     each shape from the hyper-parameters where the weight is bound; every Linear carries its kernel.
//
// Each layer has one Forward (VisionLayer, PerceiverLayer, DecoderLayer) over a shared Attention and MLP, and names
// its intermediates ("dec.blk.3.ffn_out", names.go) so that a Dump can ask for any of them.
//
// Several sequences decode together through a Batch (batch.go): one graph per step over every sequence's new
// tokens, each sequence attending its own KV cache. An ImageJob (imagejob.go) encodes an image in pieces, so that
// decoder steps can run between them.
//
// Shapes in comments use ggml order, innermost first: [ne0, ne1, …] with ne0 the contiguous dimension. A PyTorch
// activation (tokens, hidden) is [hidden, tokens] here.
package graph
