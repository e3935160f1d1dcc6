#version 450
// y = W x for Q4_K weights; see matvec.glsl.
#define DQ_Q4_K
#include "matvec.glsl"
