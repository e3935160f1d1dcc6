#version 450
// Flash-attention partials over F16 K and Q8_0 V; see attn_partial.glsl.
#extension GL_EXT_shader_16bit_storage : require
#define K_F16
#define V_Q8_0
#include "attn_partial.glsl"
