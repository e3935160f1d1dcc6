#version 450
// y = W x for F16 weights; see matvec.glsl.
#define DQ_F16
#include "matvec.glsl"
