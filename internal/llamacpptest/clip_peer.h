#pragma once

#ifdef __cplusplus
extern "C" {
#endif

#include <stddef.h>

struct clip_ctx;

// peerClipInit loads the vision encoder of the mmproj at path on the CPU, flash attention off, no warm-up; NULL
// when it cannot.
struct clip_ctx * peerClipInit(const char * path);

void peerClipFree(struct clip_ctx * ctx);

// peerClipOutFloats is the number of floats one encode of a w × h image writes.
size_t peerClipOutFloats(struct clip_ctx * ctx, int w, int h);

// peerClipEncode encodes one w × h image of interleaved RGB floats (w*h*3, already normalised, the layout
// clip_image_f32 keeps) into out (clip_n_output_tokens × clip_n_mmproj_embd floats); 1 on success.
int peerClipEncode(struct clip_ctx * ctx, int threads, const float * rgb, int w, int h, float * out);

// peerClipQuiet keeps the encoder's warnings and errors on stderr and drops its info lines.
void peerClipQuiet(void);

#ifdef __cplusplus
}
#endif
