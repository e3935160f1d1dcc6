#version 450

// out[i] = gelu(gate[i]) · up[i], GELU in its tanh form
// gelu(g) = g/2 · (1 + tanh(√(2/π)·(g + 0.044715·g³))), as Gemma's MLP and
// ggml's gelu use. out may be bound to the same memory as gate.

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Gate { float gate[]; };
layout(std430, binding = 1) readonly buffer Up { float up[]; };
layout(std430, binding = 2) writeonly buffer Out { float o[]; };

layout(push_constant) uniform Push {
	uint n;
} p;

void main() {
	const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
	for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
		const float g = gate[i];
		// ½(1 + tanh z) = 1/(1 + e^(−2z)): no cancellation where tanh is
		// near −1, and e^(−2z) overflowing to +∞ gives the right 0.
		const float z = 0.7978845608 * (g + 0.044715 * g * g * g);
		o[i] = g / (1.0 + exp(-2.0 * z)) * up[i];
	}
}
