#version 450
// y = W x for F16 weights read as texels (CPU devices, WIDE 2), x read as
// texels too (x starts on 16 bytes); see matvec.glsl.
#define DQ_F16
#define TEXEL
#define XTEXEL
#include "matvec.glsl"
