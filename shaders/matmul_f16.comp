#version 450
// Y = X W^T for F16 weights; see matmul.glsl.
#define DQ_F16
#include "matmul.glsl"
