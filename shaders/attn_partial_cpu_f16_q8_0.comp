#version 450
// Flash-attention partials over F16 K and Q8_0 V for CPU drivers; see attn_partial_cpu.glsl.
#extension GL_EXT_shader_16bit_storage : require
#define K_F16
#define V_Q8_0
#include "attn_partial_cpu.glsl"
