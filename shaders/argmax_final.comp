#version 450

// Second pass of argmax: workgroup r reduces the count partial (key,
// index) pairs of row r from argmax.comp and writes the index to
// result[r].

#include "argmax.glsl"

layout(std430, binding = 0) readonly buffer Partial { uvec2 partial[]; };
layout(std430, binding = 1) writeonly buffer Result { uint result[]; };

layout(push_constant) uniform Push {
	uint count;
} p;

void main() {
	const uint row = gl_WorkGroupID.y;
	uint key = 0u;
	uint idx = 0xffffffffu;
	for (uint i = gl_LocalInvocationID.x; i < p.count; i += gl_WorkGroupSize.x) {
		const uvec2 c = partial[row * p.count + i];
		if (c.x > key || (c.x == key && c.y < idx)) {
			key = c.x;
			idx = c.y;
		}
	}
	const uvec2 b = workgroup_best(key, idx);
	if (gl_LocalInvocationID.x == 0) {
		result[row] = b.y;
	}
}
