#version 450
// Flash-attention partials over F32 K/V; see attn_partial.glsl.
#define K_F32
#define V_F32
#include "attn_partial.glsl"
