#version 450
// y = W x for Q5_K weights; see matvec.glsl.
#define DQ_Q5_K
#include "matvec.glsl"
