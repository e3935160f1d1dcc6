#version 450
// Test kernel of package vk: widens f16 values read through 16-bit
// storage, y[i] = float(h[i]), to check that the feature is enabled.
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require

layout(local_size_x = 64) in;

layout(set = 0, binding = 0) readonly buffer H { uint16_t h[]; };
layout(set = 0, binding = 1) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push { uint n; } p;

void main() {
	uint i = gl_GlobalInvocationID.x;
	if (i < p.n) {
		y[i] = unpackHalf2x16(uint(h[i])).x;
	}
}
