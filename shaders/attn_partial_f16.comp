#version 450
// Flash-attention partials over f16 K/V; see attn_partial.glsl.
#extension GL_EXT_shader_16bit_storage : require
#define KV4 f16vec4
#include "attn_partial.glsl"
