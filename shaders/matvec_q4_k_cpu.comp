#version 450
// y = W x for Q4_K weights in the packed layout of CPU devices; see matvec.glsl.
#define DQ_Q4_K
#define PACKED
#include "matvec.glsl"
