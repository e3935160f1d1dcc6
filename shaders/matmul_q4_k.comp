#version 450
// Y = X W^T for Q4_K weights; see matmul.glsl.
#define DQ_Q4_K
#include "matmul.glsl"
