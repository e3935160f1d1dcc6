#version 450

// Embedding lookup for Q5_K weights: see embed.glsl.
#define TYPE_Q5_K
#include "embed.glsl"
