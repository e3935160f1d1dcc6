#version 450
// Flash-attention partials over f32 K/V; see attn_partial.glsl.
#define KV4 vec4
#include "attn_partial.glsl"
