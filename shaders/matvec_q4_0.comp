#version 450
// y = W x for Q4_0 weights; see matvec.glsl.
#define DQ_Q4_0
#include "matvec.glsl"
