// Package llamacpptest checks that the text model.gguf written by convert/ loads in llama.cpp unchanged and gives
// the same logits as Hugging Face's reference and as this repository's runtime (graph/). Its benchmarks run the
// peer side by side with `idefics2-run bench`: llama-bench's pp/tg (BenchmarkLlamaCpp), llama-batched-bench
// (BenchmarkLlamaBatched), and llama.cpp's CLIP encoder of mtmd on a synthetic SigLIP mmproj of the Idefics2-8B
// shapes (BenchmarkClipEncode).
//
// Everything but this comment sits behind the `llamacpp` build tag, because it compiles llama.cpp (about 160 C++
// files, vendored by the pinned github.com/ollama/ollama module) with cgo. Run it with
//
//	OD=$(go list -m -f '{{.Dir}}' github.com/ollama/ollama)
//	eval "$(make -s env)"
//	CGO_CPPFLAGS="$CGO_CPPFLAGS -I$OD/llama/llama.cpp/include -I$OD/llama/llama.cpp/tools/mtmd" \
//	    nice go test -tags llamacpp -count=1 -v ./internal/llamacpptest/
//
// The binding is our own small cgo file over llama.h rather than ollama's `llama` Go package: that package also
// compiles llama.cpp's common/ and tools/mtmd/, which include headers from llama.cpp/vendor (nlohmann/json,
// stb_image, miniaudio), and Go module zips drop every vendor directory, so it cannot build from the module cache.
// The core library (llama/llama.cpp/src) needs none of them, nor does mtmd's clip.cpp, which clip_peer.cpp
// compiles from the include path above (the module's tools/mtmd/models package brings its graph builders). Our own
// binding also lets the test pick an F32 KV cache, which ollama's wrapper cannot.
package llamacpptest
