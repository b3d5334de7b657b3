#version 460
// Compiles only where glslc knows GL_NV_cooperative_matrix2 (tensor layouts).
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_NV_cooperative_matrix2 : require
layout(local_size_x = 32) in;
void main() {
    tensorLayoutNV<2> layout2 = createTensorLayoutNV(2);
    layout2 = setTensorLayoutDimensionNV(layout2, 16, 16);
}
