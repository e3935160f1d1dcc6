#version 450
// y = W x for Q6_K weights; see matvec.glsl.
#define DQ_Q6_K
#include "matvec.glsl"
