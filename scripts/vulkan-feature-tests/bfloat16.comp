#version 460
// Compiles only where glslc knows GL_EXT_bfloat16 (the bfloat16_t scalar type).
#extension GL_EXT_bfloat16 : require
layout(local_size_x = 1) in;
layout(binding = 0) buffer Out { float v[]; } dst;
void main() {
    bfloat16_t x = bfloat16_t(dst.v[0]);
    dst.v[0] = float(x);
}
