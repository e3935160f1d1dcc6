#version 450
// Test kernel of package vk: y[i] = x[i] * MUL + p.add for i < p.n.
// It exercises specialization constants (workgroup size, MUL), push
// constants and two storage-buffer bindings.

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MUL = 1;

layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
	uint n;
	float add;
} p;

void main() {
	uint i = gl_GlobalInvocationID.x;
	if (i < p.n) {
		y[i] = x[i] * float(MUL) + p.add;
	}
}
