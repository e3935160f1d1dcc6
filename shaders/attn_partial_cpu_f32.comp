#version 450
#define KV4 vec4
#include "attn_partial_cpu.glsl"
