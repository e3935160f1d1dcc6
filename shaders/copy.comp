#version 450
// copy: dst = src, 16 bytes per load. It does nothing useful for the model;
// it measures the memory bandwidth a kernel can reach on this device, the
// yardstick for the matrix kernels.

layout(constant_id = 0) const uint WG = 256;  // threads per workgroup
layout(constant_id = 1) const uint PER = 4;   // uvec4 per thread
layout(local_size_x_id = 0) in;

layout(set = 0, binding = 0) readonly buffer Src { uvec4 src[]; };
layout(set = 0, binding = 1) writeonly buffer Dst { uvec4 dst[]; };

layout(push_constant) uniform Push {
    uint n;        // uvec4 to copy
    uint src_off;  // first uvec4 of src in binding 0
    uint dst_off;  // first uvec4 of dst in binding 1
} p;

void main() {
    // Consecutive threads take consecutive uvec4 on each pass, so every
    // pass of the workgroup reads one contiguous stretch.
    uint base = gl_WorkGroupID.x * WG * PER + gl_LocalInvocationID.x;
    for (uint i = 0; i < PER; i++) {
        uint j = base + i * WG;
        if (j < p.n) {
            dst[p.dst_off + j] = src[p.src_off + j];
        }
    }
}
