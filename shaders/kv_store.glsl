// Shared by kv_store_<kvtype>.comp: copies a chunk's new K (or V) rows into
// the KV slots of one or more KV heads.
//
// src is f32 [n_tokens][src_heads·head_dim] (K after RoPE). Source head
// head_lo + h goes to slot h of dst; slots sit slot_stride elements apart
// and each is [slot_rows][head_dim]. Token t goes to row
// positions[t] − row_base of its slot; a token whose row falls outside
// [0, slot_rows) belongs to another block of the cache and is skipped.
// Ring slots (ring != 0) hold position q in row q % slot_rows instead.
// One invocation per element: x over heads·head_dim, y over tokens; for
// the block-quantized types (KV_Q8_0, KV_Q4_0) one per block of 32
// elements along the head dimension, which it quantizes alone (see
// kv_quant.glsl): x over heads·head_dim/32. Slot strides and offsets stay
// in elements; a quantized slot's element e lies in block e/32.
//
// The includer defines KV_F16, KV_F32, KV_Q8_0 or KV_Q4_0.

#if defined(KV_F16) || defined(KV_Q8_0) || defined(KV_Q4_0)
#extension GL_EXT_shader_16bit_storage : require
#endif
#if defined(KV_Q8_0) || defined(KV_Q4_0)
#define KV_QUANT
#include "kv_quant.glsl"
#endif

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Src { float src[]; };
layout(std430, binding = 1) readonly buffer Positions { uint positions[]; };
#if defined(KV_F16) || defined(KV_QUANT)
layout(std430, binding = 2) writeonly buffer Dst { uint16_t dst[]; };
#elif defined(KV_F32)
layout(std430, binding = 2) writeonly buffer Dst { float dst[]; };
#else
#error "define the KV type"
#endif

layout(push_constant) uniform Push {
	uint head_dim;
	uint heads;       // slots written by this dispatch
	uint src_heads;   // heads per src row
	uint head_lo;     // src head written to slot 0
	uint slot_stride; // elements between consecutive slots in dst
	uint slot_rows;
	uint row_base;    // position held by row 0 of each slot
	uint ring;        // 1: the slots are rings of slot_rows rows
} p;

#ifdef KV_QUANT
const uint QK = 32u;
#else
const uint QK = 1u;
#endif

void main() {
	const uint i = gl_GlobalInvocationID.x * QK; // the (first) element
	const uint t = gl_GlobalInvocationID.y;
	if (i >= p.heads * p.head_dim) {
		return;
	}
	const uint pos = positions[t];
	uint row = pos % p.slot_rows;
	if (p.ring == 0u) {
		if (pos < p.row_base || pos - p.row_base >= p.slot_rows) {
			return;
		}
		row = pos - p.row_base;
	}
	const uint h = i / p.head_dim;
	const uint e = i % p.head_dim;
	const uint from = (t * p.src_heads + p.head_lo + h) * p.head_dim + e;
	const uint at = h * p.slot_stride + row * p.head_dim + e;
#if defined(KV_QUANT)
	float x[32];
	for (uint j = 0u; j < 32u; j++) {
		x[j] = src[from + j];
	}
#if defined(KV_Q8_0)
	uint q[17];
	kq_quant8(x, q);
#else
	uint q[9];
	kq_quant4(x, q);
#endif
	const uint o = at / 32u * uint(q.length());
	for (uint j = 0u; j < uint(q.length()); j++) {
		dst[o + j] = uint16_t(q[j]);
	}
#elif defined(KV_F16)
	const float v = src[from];
	// packHalf2x16 rounds to nearest even on the drivers this runs on; the
	// test checks it bit for bit against a software rounding.
	dst[at] = uint16_t(packHalf2x16(vec2(v, 0.0)));
#else
	dst[at] = src[from];
#endif
}
