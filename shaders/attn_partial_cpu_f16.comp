#version 450
// Flash-attention partials over f16 K/V for CPU drivers; see attn_partial_cpu.glsl.
#extension GL_EXT_shader_16bit_storage : require
#define KV4 f16vec4
#include "attn_partial_cpu.glsl"
