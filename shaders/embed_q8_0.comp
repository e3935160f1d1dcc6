#version 450

// Embedding lookup for Q8_0 weights: see embed.glsl.
#define TYPE_Q8_0
#include "embed.glsl"
