#version 460
// Compiles only where glslc knows GL_EXT_integer_dot_product (packed 4x8-bit dot products).
#extension GL_EXT_integer_dot_product : require
layout(local_size_x = 1) in;
layout(binding = 0) buffer Out { int v[]; } dst;
void main() {
    dst.v[0] = dotPacked4x8EXT(int(gl_GlobalInvocationID.x), 0x01010101);
}
