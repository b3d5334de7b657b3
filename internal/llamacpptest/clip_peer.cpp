//go:build llamacpp

// llama.cpp's CLIP encoder (tools/mtmd/clip.cpp of the pinned ollama module, found on the include path
// -I$OLLAMA/llama/llama.cpp/tools/mtmd), compiled into this package so that the image benchmarks can run the
// peer's SigLIP encode beside ours. Its graph builders (tools/mtmd/models) come from the module's own Go package.
// The rest of mtmd (mtmd.cpp, mtmd-helper.cpp) needs headers from llama.cpp/vendor, which the module zip lacks.

#include "clip.cpp"

#include "clip_peer.h"

// clip.h declares C++ functions; these wrappers give cgo C entry points.

extern "C" struct clip_ctx * peerClipInit(const char * path) {
	clip_context_params params = {};
	params.use_gpu = false;
	params.flash_attn_type = CLIP_FLASH_ATTN_TYPE_DISABLED;
	params.image_min_tokens = -1;
	params.image_max_tokens = -1;
	params.warmup = false;
	clip_init_result res = clip_init(path, params);
	if (res.ctx_a != nullptr) {
		clip_free(res.ctx_a);
	}
	return res.ctx_v;
}

extern "C" void peerClipFree(struct clip_ctx * ctx) { clip_free(ctx); }

extern "C" size_t peerClipOutFloats(struct clip_ctx * ctx, int w, int h) {
	return clip_embd_nbytes_by_img(ctx, w, h) / sizeof(float);
}

extern "C" int peerClipEncode(struct clip_ctx * ctx, int threads, const float * rgb, int w, int h, float * out) {
	clip_image_f32 img;
	img.nx = w;
	img.ny = h;
	img.buf.assign(rgb, rgb + (size_t) w * h * 3);
	return clip_image_encode(ctx, threads, &img, out) ? 1 : 0;
}

// quietClipLog keeps the encoder's warnings and errors and drops its per-load info chatter.
static void quietClipLog(enum ggml_log_level level, const char * text, void * user_data) {
	(void) user_data;
	if (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) {
		fputs(text, stderr);
	}
}

extern "C" void peerClipQuiet(void) {
	g_logger_state.log_callback = quietClipLog;
	g_logger_state.log_callback_user_data = nullptr;
}
