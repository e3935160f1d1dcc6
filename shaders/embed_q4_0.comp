#version 450

// Embedding lookup for Q4_0 weights: see embed.glsl.
#define TYPE_Q4_0
#include "embed.glsl"
