#version 450
// Y = X W^T for Q6_K weights; see matmul.glsl.
#define DQ_Q6_K
#include "matmul.glsl"
