#version 450
// y = W x for Q8_0 weights in the packed layout of CPU devices, x read as
// texels (x starts on 16 bytes); see matvec.glsl.
#define DQ_Q8_0
#define PACKED
#define XTEXEL
#include "matvec.glsl"
