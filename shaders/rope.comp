#version 450

// Rotary position embedding, in place, on n_tokens rows of n_heads·head_dim
// f32 (queries or keys) that start row_stride floats apart: the rows of a
// chunk back to back, or the q and k of each sequence of a batched step. The first n_rot dims of each head are rotated in
// pairs by θ = positions[t] · inv_freq[i]; the rest pass through untouched.
// Pairs are (2i, 2i+1) in the "normal" layout (Llama) and (i, i + n_rot/2)
// in the "neox" layout (Qwen2, GPT-NeoX). Positions come from a buffer so
// that recorded commands can be replayed for other positions.
// One invocation per (pair, token): x over the pairs of a token, y over tokens.

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Positions { uint positions[]; };
layout(std430, binding = 2) readonly buffer Freqs { float inv_freq[]; };

layout(push_constant) uniform Push {
	uint n_heads;
	uint head_dim;
	uint n_rot;
	uint neox;
	uint row_stride;
} p;

// The Vulkan spec bounds the error of sin and cos only on [-π, π], and
// drivers do lose accuracy beyond it, so θ (which reaches 10⁶ at a million
// positions) is reduced first. 2π is split into parts of at most 5
// significant bits, so k times each part is exact for k < 2¹⁹ (θ up to
// 3·10⁶) and the subtractions cancel exactly (Cody and Waite); the last
// part carries the remainder of 2π. Parts of 8 bits, exact only for
// k < 2¹⁶, gave errors of 0.06 in sin at 1.5 million positions.
// `precise` keeps the compiler from reassociating or fusing.
float reduce_angle(float theta) {
	precise float k = round(theta * 0.15915494309189535);
	precise float r = theta - k * 6.25;
	r = r - k * 0.03125;
	r = r - k * 0.00189208984375;
	r = r - k * 4.1961669921875e-05;
	r = r - k * 1.2556658930407139e-06;
	return r;
}

void main() {
	const uint half_rot = p.n_rot / 2;
	const uint i = gl_GlobalInvocationID.x;
	const uint t = gl_GlobalInvocationID.y;
	if (i >= p.n_heads * half_rot) {
		return;
	}
	const uint h = i / half_rot;
	const uint j = i % half_rot;
	const uint base = t * p.row_stride + h * p.head_dim;
	uint a, b;
	if (p.neox != 0) {
		a = base + j;
		b = a + half_rot;
	} else {
		a = base + 2 * j;
		b = a + 1;
	}
	// θ is the rounded f32 product, as reference implementations compute it.
	precise float theta = float(positions[t]) * inv_freq[j];
	const float r = reduce_angle(theta);
	const float c = cos(r);
	const float s = sin(r);
	const float x0 = x[a];
	const float x1 = x[b];
	x[a] = x0 * c - x1 * s;
	x[b] = x0 * s + x1 * c;
}
