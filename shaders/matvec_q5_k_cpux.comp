#version 450
// y = W x for Q5_K weights in the packed layout of CPU devices, x read as
// texels (x starts on 16 bytes); see matvec.glsl.
#define DQ_Q5_K
#define PACKED
#define XTEXEL
#include "matvec.glsl"
