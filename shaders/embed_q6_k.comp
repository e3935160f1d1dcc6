#version 450

// Embedding lookup for Q6_K weights: see embed.glsl.
#define TYPE_Q6_K
#include "embed.glsl"
