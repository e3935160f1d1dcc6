#version 450

// KV store into Q8_0 slots: see kv_store.glsl.
#define KV_Q8_0
#include "kv_store.glsl"
