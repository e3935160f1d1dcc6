#version 450
#extension GL_EXT_shader_16bit_storage : require
#define KV4 f16vec4
#include "attn_partial_cpu.glsl"
