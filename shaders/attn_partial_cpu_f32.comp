#version 450
// Flash-attention partials over F32 K/V for CPU drivers; see attn_partial_cpu.glsl.
#define K_F32
#define V_F32
#include "attn_partial_cpu.glsl"
