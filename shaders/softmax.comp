#version 450
#extension GL_KHR_shader_subgroup_arithmetic : require

// Softmax of each of n rows of cols f32 values, one workgroup per row,
// with the row maximum subtracted before exp so that nothing overflows.
// y may be bound to the same memory as x: every element is read and
// written by the same invocation. A row that is entirely -inf gives NaN.

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
	uint cols;
} p;

// One slot per subgroup; sized for the smallest possible subgroup.
shared float partial[gl_WorkGroupSize.x];
shared float total;

float workgroup_max(float v) {
	v = subgroupMax(v);
	if (subgroupElect()) {
		partial[gl_SubgroupID] = v;
	}
	barrier();
	if (gl_SubgroupID == 0) {
		float m = -1.0 / 0.0;
		for (uint i = gl_SubgroupInvocationID; i < gl_NumSubgroups; i += gl_SubgroupSize) {
			m = max(m, partial[i]);
		}
		m = subgroupMax(m);
		if (subgroupElect()) {
			total = m;
		}
	}
	barrier();
	return total;
}

float workgroup_sum(float v) {
	v = subgroupAdd(v);
	if (subgroupElect()) {
		partial[gl_SubgroupID] = v;
	}
	barrier();
	if (gl_SubgroupID == 0) {
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
	const uint base = gl_WorkGroupID.x * p.cols;
	float m = -1.0 / 0.0;
	for (uint i = gl_LocalInvocationID.x; i < p.cols; i += gl_WorkGroupSize.x) {
		m = max(m, x[base + i]);
	}
	m = workgroup_max(m);
	float s = 0.0;
	for (uint i = gl_LocalInvocationID.x; i < p.cols; i += gl_WorkGroupSize.x) {
		s += exp(x[base + i] - m);
	}
	s = workgroup_sum(s);
	const float inv = 1.0 / s;
	for (uint i = gl_LocalInvocationID.x; i < p.cols; i += gl_WorkGroupSize.x) {
		y[base + i] = exp(x[base + i] - m) * inv;
	}
}
