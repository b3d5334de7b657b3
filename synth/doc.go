// Package synth writes synthetic Idefics2 checkpoints: a Hugging Face checkpoint folder laid out
// exactly as Idefics2ForConditionalGeneration.save_pretrained writes it (config.json, the
// processor and tokenizer files, sharded safetensors with model.safetensors.index.json), with
// random weights of a realistic scale instead of trained ones.
//
// Speed does not depend on weight values, so a synthetic checkpoint of the real idefics2-8b
// shapes (Preset "idefics2-8b", about 16.8 GB in BF16) serves the converter and runtime
// benchmarks without downloading the model; Preset "tiny" has the hidden sizes of the p1 test
// fixture and serves tests.
//
// Weights are streamed: every shard's safetensors header is written first (all sizes are known
// up front), then the data in chunks generated in parallel, so memory stays bounded by a few
// chunks per worker whatever the model size. Values depend only on the seed, the tensor name and
// the position in the tensor, never on the number of workers or the shard layout.
//
// Shapes in this package are PyTorch shapes (outermost first), as safetensors stores them.
package synth
