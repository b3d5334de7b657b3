// Package runner runs Idefics2 GGUF model pairs: it loads a text model and its mmproj once (Load), builds prompts
// from chat messages or raw text with images exactly as Hugging Face's Idefics2Processor does (ChatPrompt,
// RawPrompt), and generates on sessions that own a KV cache (Session.Generate), with streaming callbacks,
// cancellation through a context, samplers (greedy, temperature, top-k, top-p, min-p, repetition / presence /
// frequency penalties, seeded), stop tokens and stop strings.
//
// A prompt goes through these steps: the chat template stored in the GGUF (tokenizer.chat_template) renders the
// messages, processor.ExpandImageTokens replaces each <image> marker with the image's token run (image_seq_len and
// do_image_splitting from the mmproj), the tokenizer built from the GGUF's tokenizer.ggml.* keys encodes it (special
// tokens recognised, BOS added), and the images are decoded and preprocessed as one batch with the settings stored
// in the mmproj. Generate encodes each (sub-)image with the vision tower and connector, evaluates the prompt with the
// connector rows in place of the <image> tokens and then decodes token by token. It never generates <image> or
// <fake_token_around_image>, and stops at </s>, <end_of_utterance> or the GGUF's eot token.
//
// Many requests at once go through a Scheduler (Model.NewScheduler): continuous batching of several sequences per
// decoder step (graph.Batch), chunked prefill, images encoded in pieces between steps (graph.ImageJob), n answers
// from one prompt evaluation, logprobs, and prompt-prefix and image-embedding caches shared by the requests.
//
// Tensors written by the dump (GenerateOptions.DumpDir) use NumPy's shapes, outermost first, as Hugging Face has
// them.
//
// Errors caused by the caller's input are *InputError (IsInputError); front ends map them to "bad input".
package runner
