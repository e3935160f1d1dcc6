#version 450
#extension GL_KHR_shader_subgroup_arithmetic : require

// RMS normalisation of n rows of dim f32 values, one workgroup per row:
// y[r][i] = x[r][i] / sqrt(mean(x[r]²) + eps) · w[i].
// y may be bound to the same memory as x: every element is read and
// written by the same invocation, so no invocation reads what another wrote.

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
	uint dim;
	float eps;
} p;

// One slot per subgroup; sized for the smallest possible subgroup.
shared float partial[gl_WorkGroupSize.x];
shared float total;

float workgroup_sum(float v) {
	v = subgroupAdd(v);
	if (subgroupElect()) {
		partial[gl_SubgroupID] = v;
	}
	barrier();
	if (gl_SubgroupID == 0) {
		// There may be more subgroups than lanes (workgroup 256, subgroup 8).
		float s = 0.0;
		for (uint i = gl_SubgroupInvocationID; i < gl_NumSubgroups; i += gl_SubgroupSize) {
			s += partial[i];
		}
		s = subgroupAdd(s);
		if (subgroupElect()) {
			total = s;
		}
	}
	barrier();
	return total;
}

void main() {
	const uint base = gl_WorkGroupID.x * p.dim;
	float ss = 0.0;
	for (uint i = gl_LocalInvocationID.x; i < p.dim; i += gl_WorkGroupSize.x) {
		const float v = x[base + i];
		ss += v * v;
	}
	ss = workgroup_sum(ss);
	const float scale = inversesqrt(ss / float(p.dim) + p.eps);
	for (uint i = gl_LocalInvocationID.x; i < p.dim; i += gl_WorkGroupSize.x) {
		y[base + i] = x[base + i] * scale * w[i];
	}
}
