#version 450
#extension GL_KHR_shader_subgroup_arithmetic : require

// Layer normalisation of n rows of dim f32 values, one workgroup per row:
// y[r][i] = (x[r][i] - mean(x[r])) / sqrt(var(x[r]) + eps) · w[i] + b[i],
// the variance the mean square of x - mean (BERT's norm, where RMSNorm
// leaves the mean in). The variance is taken about the mean in a second
// pass rather than as mean(x²) - mean², which cancels badly when the mean
// is large against the spread. y may be bound to the same memory as x:
// every element is read and written by the same invocation.

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) readonly buffer B { float b[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };

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
	const float t = total;
	// The next call writes partial and total again: everyone must have
	// read this one's first.
	barrier();
	return t;
}

void main() {
	const uint base = gl_WorkGroupID.x * p.dim;
	float s = 0.0;
	for (uint i = gl_LocalInvocationID.x; i < p.dim; i += gl_WorkGroupSize.x) {
		s += x[base + i];
	}
	const float mean = workgroup_sum(s) / float(p.dim);
	float ss = 0.0;
	for (uint i = gl_LocalInvocationID.x; i < p.dim; i += gl_WorkGroupSize.x) {
		const float d = x[base + i] - mean;
		ss += d * d;
	}
	const float scale = inversesqrt(workgroup_sum(ss) / float(p.dim) + p.eps);
	for (uint i = gl_LocalInvocationID.x; i < p.dim; i += gl_WorkGroupSize.x) {
		y[base + i] = (x[base + i] - mean) * scale * w[i] + b[i];
	}
}
