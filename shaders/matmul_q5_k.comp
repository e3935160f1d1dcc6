#version 450
// Y = X W^T for Q5_K weights; see matmul.glsl.
#define DQ_Q5_K
#include "matmul.glsl"
