#version 450

// KV store into f16 slots: see kv_store.glsl.
#define KV_F16
#include "kv_store.glsl"
