#version 450
// Flash-attention partials over Q8_0 K and F16 V; see attn_partial.glsl.
#extension GL_EXT_shader_16bit_storage : require
#define K_Q8_0
#define V_F16
#include "attn_partial.glsl"
