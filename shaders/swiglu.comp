#version 450

// out[i] = silu(gate[i]) · up[i] with silu(g) = g / (1 + exp(-g)).
// out may be bound to the same memory as gate (each element is read and
// written by one invocation). The loop strides over the whole grid so that
// n may exceed what one dispatch's group count covers.

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
		o[i] = g / (1.0 + exp(-g)) * up[i];
	}
}
