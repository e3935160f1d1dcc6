#version 450
// Y = X W^T for Q8_0 weights; see matmul.glsl.
#define DQ_Q8_0
#include "matmul.glsl"
