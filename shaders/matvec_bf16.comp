#version 450
// y = W x for BF16 weights; see matvec.glsl.
#define DQ_BF16
#include "matvec.glsl"
