#version 450
// y = W x for Q8_0 weights in the packed layout of CPU devices; see matvec.glsl.
#define DQ_Q8_0
#define PACKED
#include "matvec.glsl"
