#version 450
// y = W x for Q6_K weights in the packed layout of CPU devices; see matvec.glsl.
#define DQ_Q6_K
#define PACKED
#include "matvec.glsl"
