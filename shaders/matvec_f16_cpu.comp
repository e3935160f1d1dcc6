#version 450
// y = W x for F16 weights read as texels (CPU devices, WIDE 2); see matvec.glsl.
#define DQ_F16
#define TEXEL
#include "matvec.glsl"
