#version 450

// Embedding lookup for Q4_K weights: see embed.glsl.
#define TYPE_Q4_K
#include "embed.glsl"
