// Package convert turns a Hugging Face Idefics2 checkpoint (Idefics2ForConditionalGeneration as
// save_pretrained writes it) into two GGUF files:
//
//   - model.gguf: the Mistral decoder as llama.cpp's "llama" architecture, laid out exactly as
//     llama.cpp's convert_hf_to_gguf.py writes Mistral-7B (metadata keys, tensor names, the Q/K
//     row permutation, tokenizer.ggml.* with the added Idefics2 tokens, the chat template), so
//     llama.cpp loads it unchanged;
//   - mmproj.gguf: the vision tower, the modality projection and the perceiver resampler with
//     llama.cpp's clip.* keys where they fit and idefics2.* keys for the rest (IDEFICS2.md §10.3),
//     plus the image processor settings.
//
// NewPlan reads config.json, the processor and tokenizer files and the safetensors headers
// (single or sharded; F32, F16 or BF16), checks every tensor against the hyper-parameters, maps
// HF names to GGUF names through one table (tensorTable; a tensor matching no entry is an
// error) and chooses each tensor's type (Scheme, vision type, overrides, row-length fallbacks).
// Plan.Run then streams the tensors chunk by chunk through quant into gguf writers: memory stays
// bounded whatever the model size, rows are quantized in parallel and both files are written
// atomically.
//
// Tokenizer: the pieces, scores and types come from tokenizer.model (a SentencePiece protobuf)
// when present; otherwise from tokenizer.json, with scores derived from the BPE merges so that
// score-based BPE reproduces HF's merge ranks (scoresFromMerges). Added tokens are CONTROL when
// special and USER_DEFINED otherwise, with llama.cpp's score −1000; the list is padded with
// unused "[PAD{id}]" tokens up to text_config.vocab_size.
//
// Shapes: HF (PyTorch) shapes are written (d0, d1, …) outermost first; ggml shapes [ne0, ne1, …]
// innermost first. A PyTorch (out, in) weight becomes ne = [in, out] with the same bytes.
package convert
