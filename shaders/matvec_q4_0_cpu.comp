#version 450
// y = W x for Q4_0 weights in the packed layout of CPU devices; see matvec.glsl.
#define DQ_Q4_0
#define PACKED
#include "matvec.glsl"
