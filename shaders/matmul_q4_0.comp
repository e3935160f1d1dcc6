#version 450
// Y = X W^T for Q4_0 weights; see matmul.glsl.
#define DQ_Q4_0
#include "matmul.glsl"
