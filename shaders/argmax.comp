#version 450

// First pass of argmax over rows of n f32 values, back to back: workgroup
// (g, r) reduces the values [g·per_group, (g+1)·per_group) of row r to its
// best (key, index), written to partial[r·groups + g]. argmax_final.comp
// reduces each row's partials.

#include "argmax.glsl"

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Partial { uvec2 partial[]; };

layout(push_constant) uniform Push {
	uint n;
	uint per_group;
} p;

void main() {
	const uint row = gl_WorkGroupID.y;
	const uint base = row * p.n;
	const uint lo = gl_WorkGroupID.x * p.per_group;
	const uint hi = min(lo + p.per_group, p.n);
	// Each invocation scans in increasing index, so a strict > keeps the
	// lowest index of its equal maxima.
	uint key = 0u;
	uint idx = 0xffffffffu;
	for (uint i = lo + gl_LocalInvocationID.x; i < hi; i += gl_WorkGroupSize.x) {
		const uint k = order_key(x[base + i]);
		if (k > key || idx == 0xffffffffu) {
			key = k;
			idx = i;
		}
	}
	const uvec2 b = workgroup_best(key, idx);
	if (gl_LocalInvocationID.x == 0) {
		partial[row * gl_NumWorkGroups.x + gl_WorkGroupID.x] = b;
	}
}
