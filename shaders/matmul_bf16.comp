#version 450
// Y = X W^T for BF16 weights; see matmul.glsl.
#define DQ_BF16
#include "matmul.glsl"
