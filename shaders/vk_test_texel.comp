#version 450
// Test kernel of package vk: y[i] = texel i of binding 0 (a uniform texel
// buffer of R32G32B32A32_UINT texels) for i < p.n, including texels past
// the view's end, which read as zero.
#extension GL_EXT_samplerless_texture_functions : require

layout(local_size_x = 8) in;

layout(set = 0, binding = 0) uniform utextureBuffer src;
layout(set = 0, binding = 1) writeonly buffer Y { uvec4 y[]; };

layout(push_constant) uniform Push { uint n; } p;

void main() {
	uint i = gl_GlobalInvocationID.x;
	if (i < p.n) {
		y[i] = texelFetch(src, int(i));
	}
}
