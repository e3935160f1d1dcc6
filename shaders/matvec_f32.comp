#version 450
// y = W x for F32 weights; see matvec.glsl.
#define DQ_F32
#include "matvec.glsl"
