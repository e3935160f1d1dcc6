#version 450
// y = W x for Q8_0 weights; see matvec.glsl.
#define DQ_Q8_0
#include "matvec.glsl"
