#version 450

// y[i] = act(x[i] + b[i mod cols]): a bias of cols values added to every
// row of a product's output, then, with gelu set, GELU in its tanh form
// gelu(v) = v/2 · (1 + tanh(√(2/π)·(v + 0.044715·v³))), as BERT's
// feed-forward and ggml's gelu use. y may be bound to the same memory as
// x. The loop strides over the whole grid so that n may exceed what one
// dispatch's group count covers.

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
	uint n;
	uint cols;
	uint gelu;
} p;

void main() {
	const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
	for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
		float v = x[i] + b[i % p.cols];
		if (p.gelu != 0u) {
			// ½(1 + tanh z) = 1/(1 + e^(−2z)), as in geglu.comp.
			const float z = 0.7978845608 * (v + 0.044715 * v * v * v);
			v = v / (1.0 + exp(-2.0 * z));
		}
		y[i] = v;
	}
}
