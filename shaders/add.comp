#version 450

// y[i] = a[i] + b[i], the residual connection. y may be bound to the same
// memory as a or b. The loop strides over the whole grid so that n may
// exceed what one dispatch's group count covers.

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
	uint n;
} p;

void main() {
	const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
	for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
		y[i] = a[i] + b[i];
	}
}
