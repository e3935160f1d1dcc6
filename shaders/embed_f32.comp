#version 450

// Embedding lookup for F32 weights: see embed.glsl.
#define TYPE_F32
#include "embed.glsl"
