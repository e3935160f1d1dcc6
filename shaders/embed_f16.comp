#version 450

// Embedding lookup for F16 weights: see embed.glsl.
#define TYPE_F16
#include "embed.glsl"
