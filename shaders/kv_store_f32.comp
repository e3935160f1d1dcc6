#version 450

// KV store into f32 slots: see kv_store.glsl.
#define KV_F32
#include "kv_store.glsl"
