// matvec.glsl: y[m] = sum_k W[m,k] * x[k] (+ y[m] when p.acc != 0), the
// decode-time projection. Included by matvec_<type>.comp after it defines
// the weight type (see dequant.glsl).
//
// A workgroup owns ROWS consecutive rows. Its threads walk the row in
// "units" (a few consecutive elements, as wide as alignment allows), so
// neighbouring threads read neighbouring memory, and each x unit is loaded
// once for all ROWS rows. Each row's partial sums are reduced with
// subgroupAdd and the per-subgroup results combined through shared memory,
// which works for any subgroup size.
//
// Bindings: 0 weights (rows back to back, GGUF layout), 1 x (f32), 2 y (f32).
// Offsets arrive as push constants because the host binds ranges starting
// at an aligned offset below the data.

#extension GL_EXT_shader_16bit_storage : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : enable

layout(constant_id = 0) const uint WG = 128;  // threads per workgroup
layout(constant_id = 1) const uint ROWS = 4;  // rows per workgroup (<= WG)
// WIDE selects the load width the host found the alignment allows:
//   F32:       0 scalar, 1 vec4 (K % 4 == 0, 16-byte aligned w and x)
//   F16, BF16: 0 scalar, 1 pairs (K % 2 == 0, 4-byte aligned w),
//              2 eight at a time (K % 8 == 0, 16-byte aligned w and x)
//   Q8_0, Q4_0: 0 scalar x, 1 vec4 x (16-byte aligned x),
//              2 groups of 8 blocks as uvec4s (a multiple of 8 blocks per
//              row, 16-byte aligned w and x)
layout(constant_id = 2) const uint WIDE = 0;
layout(local_size_x_id = 0) in;

layout(set = 0, binding = 0) readonly buffer W16 { uint16_t w16[]; };
layout(set = 0, binding = 0) readonly buffer W32 { uint w32[]; };
layout(set = 0, binding = 0) readonly buffer W128 { uvec4 w128[]; };
layout(set = 0, binding = 1) readonly buffer X1 { float x[]; };
layout(set = 0, binding = 1) readonly buffer X4 { vec4 x4[]; };
layout(set = 0, binding = 2) buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint M;      // rows in this dispatch
    uint K;      // elements per row
    uint w_off;  // first row, in uint16 words from the start of binding 0
    uint x_off;  // x[0], in floats from the start of binding 1
    uint y_off;  // y[0], in floats from the start of binding 2
    uint acc;    // nonzero: add to y instead of overwriting it
} p;

#define DQ_U16(i) w16[i]
#include "dequant.glsl"

// Per type: UNIT elements per step, XU holding the x values of one unit,
// load_x(u) and unit_dot(row, u, xu) for unit u of the row at word row.

#if defined(DQ_F32)

const uint UNIT = WIDE == 1 ? 4 : 1;
struct XU { vec4 a; };
XU load_x(uint u) {
    XU r;
    if (WIDE == 1) {
        r.a = x4[p.x_off / 4 + u];
    } else {
        r.a = vec4(x[p.x_off + u], 0.0, 0.0, 0.0);
    }
    return r;
}
float unit_dot(uint row, uint u, XU xu) {
    if (WIDE == 1) {
        return dot(uintBitsToFloat(w128[row / 8 + u]), xu.a);
    }
    return dq_load(row, u) * xu.a.x;
}

#elif defined(DQ_F16) || defined(DQ_BF16)

#if defined(DQ_F16)
vec2 unpack2(uint v) { return unpackHalf2x16(v); }
#else
vec2 unpack2(uint v) { return dq_bf16x2(v); }
#endif

const uint UNIT = WIDE == 2 ? 8 : (WIDE == 1 ? 2 : 1);
struct XU { vec4 a; vec4 b; };
XU load_x(uint u) {
    XU r;
    if (WIDE == 2) {
        r.a = x4[p.x_off / 4 + 2 * u];
        r.b = x4[p.x_off / 4 + 2 * u + 1];
    } else if (WIDE == 1) {
        r.a = vec4(x[p.x_off + 2 * u], x[p.x_off + 2 * u + 1], 0.0, 0.0);
        r.b = vec4(0.0);
    } else {
        r.a = vec4(x[p.x_off + u], 0.0, 0.0, 0.0);
        r.b = vec4(0.0);
    }
    return r;
}
float unit_dot(uint row, uint u, XU xu) {
    if (WIDE == 2) {
        uvec4 q = w128[row / 8 + u];
        return dot(vec4(unpack2(q.x), unpack2(q.y)), xu.a) + dot(vec4(unpack2(q.z), unpack2(q.w)), xu.b);
    } else if (WIDE == 1) {
        return dot(unpack2(w32[row / 2 + u]), xu.a.xy);
    }
    return dq_load(row, u) * xu.a.x;
}

#elif defined(DQ_Q8_0) || defined(DQ_Q4_0)

// Two quantized layouts.
// WIDE < 2 (for GPUs): a unit is a piece of one block read as 16-bit words,
// so the threads of a subgroup read one contiguous stretch together.
// WIDE 2 (for CPU devices, where each load instruction costs a loop over
// the subgroup's lanes whatever its width): a unit is a group of 8 blocks,
// 272 or 144 bytes, 16-byte aligned when a row holds a multiple of 8
// blocks, read as whole uvec4s: an eighth of the loads.
#if defined(DQ_Q8_0)
const uint UNIT = WIDE == 2 ? 256 : 8;   // WIDE < 2: a quarter block, 8 int8 in four words
const uint GROUP_U128 = 17;              // uvec4s in 8 blocks
#else
const uint UNIT = WIDE == 2 ? 256 : 16;  // WIDE < 2: half a block, 8 bytes holding 16 nibbles
const uint GROUP_U128 = 9;
#endif

// The x values of a unit, as vec4s. For Q4_0's half block, vec4s 0, 1
// are elements 8h.. and 4, 5 elements 16+8h.. of the block.
const uint XV = WIDE == 2 ? 64 : 6;
struct XU { vec4 v[64]; };  // the first XV used

XU load_x(uint u) {
    XU r;
    uint k = p.x_off + u * UNIT;
#if defined(DQ_Q4_0)
    if (WIDE < 2) {
        k = p.x_off + (u / 2) * 32 + 8 * (u % 2);
    }
#endif
    [[unroll]] for (uint i = 0; i < XV; i++) {
        if (WIDE >= 1) {
            r.v[i] = x4[k / 4 + i];
        } else {
            r.v[i] = vec4(x[k + 4 * i], x[k + 4 * i + 1], x[k + 4 * i + 2], x[k + 4 * i + 3]);
        }
    }
    return r;
}

// The 32-bit word of a group that holds bytes P..P+3; P is even, and
// when it is not a multiple of 4 the word straddles two loaded words.
#define GROUP_WORD(w, P) ((P) % 4 == 0 ? w[(P) / 4] : (w[(P) / 4] >> 16) | (w[(P) / 4 + 1] << 16))
#define GROUP_HALF(w, P) ((P) % 4 == 0 ? w[(P) / 4] & 0xffffu : w[(P) / 4] >> 16)

#if defined(DQ_Q8_0)

float unit_dot(uint row, uint u, XU xu) {
    if (WIDE == 2) {
        uint w[4 * GROUP_U128 + 1];
        uint g = row / 8 + u * GROUP_U128;
        [[unroll]] for (uint i = 0; i < GROUP_U128; i++) {
            uvec4 q = w128[g + i];
            w[4 * i] = q.x;
            w[4 * i + 1] = q.y;
            w[4 * i + 2] = q.z;
            w[4 * i + 3] = q.w;
        }
        w[4 * GROUP_U128] = 0;  // never used: keeps GROUP_WORD's second word in range
        float s = 0.0;
        [[unroll]] for (uint b = 0; b < 8; b++) {
            float sb = 0.0;
            [[unroll]] for (uint j = 0; j < 8; j++) {
                sb += dot(dq_i8x4(GROUP_WORD(w, 34 * b + 2 + 4 * j)), xu.v[8 * b + j]);
            }
            s += dq_half(GROUP_HALF(w, 34 * b)) * sb;
        }
        return s;
    }
    uint blk = row + (u / 4) * 17;
    uint w = blk + 1 + 4 * (u % 4);
    uint q0 = uint(w16[w]) | (uint(w16[w + 1]) << 16);
    uint q1 = uint(w16[w + 2]) | (uint(w16[w + 3]) << 16);
    return dq_half(uint(w16[blk])) * (dot(dq_i8x4(q0), xu.v[0]) + dot(dq_i8x4(q1), xu.v[1]));
}

#else  // DQ_Q4_0

float unit_dot(uint row, uint u, XU xu) {
    if (WIDE == 2) {
        uint w[4 * GROUP_U128 + 1];
        uint g = row / 8 + u * GROUP_U128;
        [[unroll]] for (uint i = 0; i < GROUP_U128; i++) {
            uvec4 q = w128[g + i];
            w[4 * i] = q.x;
            w[4 * i + 1] = q.y;
            w[4 * i + 2] = q.z;
            w[4 * i + 3] = q.w;
        }
        w[4 * GROUP_U128] = 0;
        float s = 0.0;
        [[unroll]] for (uint b = 0; b < 8; b++) {
            float sb = 0.0;
            [[unroll]] for (uint j = 0; j < 4; j++) {
                uint v = GROUP_WORD(w, 18 * b + 2 + 4 * j);
                sb += dot(dq_u4lo(v), xu.v[8 * b + j]) + dot(dq_u4hi(v), xu.v[8 * b + 4 + j]);
            }
            s += dq_half(GROUP_HALF(w, 18 * b)) * sb;
        }
        return s;
    }
    uint blk = row + (u / 2) * 9;
    uint w = blk + 1 + 4 * (u % 2);
    uint q0 = uint(w16[w]) | (uint(w16[w + 1]) << 16);
    uint q1 = uint(w16[w + 2]) | (uint(w16[w + 3]) << 16);
    float s = dot(dq_u4lo(q0), xu.v[0]) + dot(dq_u4lo(q1), xu.v[1]) +
              dot(dq_u4hi(q0), xu.v[4]) + dot(dq_u4hi(q1), xu.v[5]);
    return dq_half(uint(w16[blk])) * s;
}

#endif

#endif

shared float red[ROWS][WG];

void main() {
    uint row0 = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * ROWS;
    if (row0 >= p.M) {
        return;  // the whole workgroup leaves together: no barrier is skipped
    }
    uint tid = gl_LocalInvocationID.x;
    uint stride = dq_row_u16(p.K);

    // Rows past M repeat the last row so the loop stays uniform; their
    // sums are never stored.
    uint base[ROWS];
    float sum[ROWS];
    [[unroll]] for (uint r = 0; r < ROWS; r++) {
        base[r] = p.w_off + min(row0 + r, p.M - 1) * stride;
        sum[r] = 0.0;
    }

    uint units = p.K / UNIT;
    for (uint u = tid; u < units; u += WG) {
        XU xu = load_x(u);
        [[unroll]] for (uint r = 0; r < ROWS; r++) {
            sum[r] += unit_dot(base[r], u, xu);
        }
    }

    [[unroll]] for (uint r = 0; r < ROWS; r++) {
        float s = subgroupAdd(sum[r]);
        if (subgroupElect()) {
            red[r][gl_SubgroupID] = s;
        }
    }
    barrier();
    if (tid < ROWS && row0 + tid < p.M) {
        float t = 0.0;
        for (uint i = 0; i < gl_NumSubgroups; i++) {
            t += red[tid][i];
        }
        uint yi = p.y_off + row0 + tid;
        y[yi] = p.acc != 0 ? y[yi] + t : t;
    }
}
