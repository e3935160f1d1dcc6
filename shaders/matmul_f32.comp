#version 450
// Y = X W^T for F32 weights; see matmul.glsl.
#define DQ_F32
#include "matmul.glsl"
