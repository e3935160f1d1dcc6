#version 450

// KV store into Q4_0 slots: see kv_store.glsl.
#define KV_Q4_0
#include "kv_store.glsl"
