#version 450

// y[i] = s·x[i], or with a cap c > 0, y[i] = c·tanh(s·x[i]/c): the
// embedding scale of Gemma (s = √dim) and the soft-capping of its final
// logits (s = 1). y may be bound to the same memory as x.

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
	uint n;
	float s;
	float cap;
} p;

// tanh to a few ulps of its value: the library's tanh, computed through
// exp, loses the relative accuracy of small arguments to cancellation.
float tanhAccurate(float z) {
	const float a = abs(z);
	if (a < 0.125) {
		const float z2 = z * z;
		return z * (1.0 + z2 * (-1.0 / 3.0 + z2 * (2.0 / 15.0 + z2 * (-17.0 / 315.0))));
	}
	const float e = exp(-2.0 * min(a, 10.0)); // tanh is ±1 in f32 beyond 10
	const float t = (1.0 - e) / (1.0 + e);
	return z < 0.0 ? -t : t;
}

void main() {
	const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
	for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
		const float v = p.s * x[i];
		y[i] = p.cap > 0.0 ? p.cap * tanhAccurate(v / p.cap) : v;
	}
}
