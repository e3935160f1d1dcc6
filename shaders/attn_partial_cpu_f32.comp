#version 450
// Flash-attention partials over f32 K/V for CPU drivers; see attn_partial_cpu.glsl.
#define KV4 vec4
#include "attn_partial_cpu.glsl"
