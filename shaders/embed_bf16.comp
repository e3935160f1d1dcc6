#version 450

// Embedding lookup for BF16 weights: see embed.glsl.
#define TYPE_BF16
#include "embed.glsl"
