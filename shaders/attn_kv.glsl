// attn_kv.glsl: the K and V bindings of attn_partial (both variants) and
// their loaders: vec4 load_k(uint i) and load_v(uint i) return values
// 4i … 4i+3 of the bound range, whatever the element type. The includer
// defines one of K_F16, K_F32, K_Q8_0, K_Q4_0 and one of V_F16, V_F32,
// V_Q8_0, V_Q4_0 (K and V may differ, as with llama.cpp's -ctk/-ctv).
// Quantized ranges start on a block: the kernels bind whole rows.

#if defined(K_F16) || defined(V_F16) || defined(K_Q8_0) || defined(V_Q8_0) || defined(K_Q4_0) || defined(V_Q4_0)
#extension GL_EXT_shader_16bit_storage : require
#endif
#if defined(K_Q8_0) || defined(V_Q8_0) || defined(K_Q4_0) || defined(V_Q4_0)
#include "kv_quant.glsl"
#endif

#if defined(K_F16)
layout(set = 0, binding = 1) readonly buffer Kb { f16vec4 k[]; };
vec4 load_k(uint i) { return vec4(k[i]); }
#elif defined(K_F32)
layout(set = 0, binding = 1) readonly buffer Kb { vec4 k[]; };
vec4 load_k(uint i) { return k[i]; }
#elif defined(K_Q8_0)
layout(set = 0, binding = 1) readonly buffer Kb { uint16_t k[]; };
KQ_LOAD8(load_k, k)
#elif defined(K_Q4_0)
layout(set = 0, binding = 1) readonly buffer Kb { uint16_t k[]; };
KQ_LOAD4(load_k, k)
#else
#error "define the K type"
#endif

#if defined(V_F16)
layout(set = 0, binding = 2) readonly buffer Vb { f16vec4 v[]; };
vec4 load_v(uint i) { return vec4(v[i]); }
#elif defined(V_F32)
layout(set = 0, binding = 2) readonly buffer Vb { vec4 v[]; };
vec4 load_v(uint i) { return v[i]; }
#elif defined(V_Q8_0)
layout(set = 0, binding = 2) readonly buffer Vb { uint16_t v[]; };
KQ_LOAD8(load_v, v)
#elif defined(V_Q4_0)
layout(set = 0, binding = 2) readonly buffer Vb { uint16_t v[]; };
KQ_LOAD4(load_v, v)
#else
#error "define the V type"
#endif
