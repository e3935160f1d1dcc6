#version 450
// Flash-attention partials over F16 K/V for CPU drivers; see attn_partial_cpu.glsl.
#extension GL_EXT_shader_16bit_storage : require
#define K_F16
#define V_F16
#include "attn_partial_cpu.glsl"
