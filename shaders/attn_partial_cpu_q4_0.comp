#version 450
// Flash-attention partials over Q4_0 K/V for CPU drivers; see attn_partial_cpu.glsl.
#extension GL_EXT_shader_16bit_storage : require
#define K_Q4_0
#define V_Q4_0
#include "attn_partial_cpu.glsl"
