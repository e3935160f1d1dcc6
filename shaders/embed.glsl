// Token embedding lookup, shared by embed_<type>.comp: out[t][:] is row
// ids[t] of W (GGUF layout [vocab][dim]) decoded to f32.
//
// W may exceed the largest range one binding can hold, so the host splits
// it into chunks of whole rows and records one dispatch per chunk, binding
// that chunk as W; each dispatch writes only the tokens whose row it holds,
// so the dispatches write disjoint rows and need no barrier between them.
// A binding must start at an aligned offset, so a chunk may begin w_off
// elements into its binding.
// Ids at or above vocab would read past W: the dispatch of the last chunk
// writes zeros for them instead.
//
// The includer defines one of TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q8_0,
// TYPE_Q4_0, TYPE_Q4_K, TYPE_Q5_K, TYPE_Q6_K (the K-quants decoded by
// dequant.glsl). Quantized rows are only 2-byte aligned, so all 16-bit types
// are read as uint16_t and decoded with integer and f32 arithmetic.

#extension GL_EXT_shader_16bit_storage : require

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Ids { uint ids[]; };
#ifdef TYPE_F32
layout(std430, binding = 1) readonly buffer W { float w[]; };
#else
layout(std430, binding = 1) readonly buffer W { uint16_t w[]; };
#endif
layout(std430, binding = 2) writeonly buffer Out { float o[]; };

layout(push_constant) uniform Push {
	uint dim;
	uint row_lo; // W[0] is row row_lo of the whole matrix
	uint row_hi; // one past the last row bound; == vocab for the last chunk
	uint vocab;
	uint w_off; // where row row_lo starts in w[], in elements of w[]
} p;

#if defined(TYPE_Q4_K)
#define DQ_Q4_K
#elif defined(TYPE_Q5_K)
#define DQ_Q5_K
#elif defined(TYPE_Q6_K)
#define DQ_Q6_K
#endif
#if defined(DQ_Q4_K) || defined(DQ_Q5_K) || defined(DQ_Q6_K)
#define DQ_U16(i) w[i]
#include "dequant.glsl"
#endif

float half_bits(uint h) {
	return unpackHalf2x16(h).x;
}

// decode returns element e of row r of the bound chunk.
float decode(uint r, uint e) {
#if defined(TYPE_F32)
	return w[p.w_off + r * p.dim + e];
#elif defined(TYPE_F16)
	return half_bits(uint(w[p.w_off + r * p.dim + e]));
#elif defined(TYPE_BF16)
	return uintBitsToFloat(uint(w[p.w_off + r * p.dim + e]) << 16);
#elif defined(TYPE_Q8_0)
	// Block of 17 uint16: scale, then 32 int8 two to a uint16 (low byte first).
	const uint blk = p.w_off + (r * p.dim + e) / 32 * 17;
	const uint j = e % 32;
	const int q = bitfieldExtract(int(uint(w[blk + 1 + j / 2])), int(j % 2) * 8, 8);
	return half_bits(uint(w[blk])) * float(q);
#elif defined(TYPE_Q4_0)
	// Block of 9 uint16: scale, then 16 bytes; byte k holds element k in its
	// low nibble and element k + 16 in its high nibble.
	const uint blk = p.w_off + (r * p.dim + e) / 32 * 9;
	const uint j = e % 32;
	const uint k = j % 16;
	const uint byte_ = (uint(w[blk + 1 + k / 2]) >> ((k % 2) * 8)) & 0xffu;
	const uint q = (byte_ >> ((j / 16) * 4)) & 0xfu;
	return half_bits(uint(w[blk])) * float(int(q) - 8);
#elif defined(DQ_BLOCK)
	return dq_load(p.w_off + r * dq_row_u16(p.dim), e);
#else
#error "define the weight type"
#endif
}

void main() {
	const uint e = gl_GlobalInvocationID.x;
	const uint t = gl_GlobalInvocationID.y;
	if (e >= p.dim) {
		return;
	}
	const uint id = ids[t];
	if (id >= p.vocab) {
		if (p.row_hi == p.vocab) {
			o[t * p.dim + e] = 0.0;
		}
		return;
	}
	if (id < p.row_lo || id >= p.row_hi) {
		return;
	}
	o[t * p.dim + e] = decode(id - p.row_lo, e);
}
