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
//              2 pairs of blocks as 32-bit words (an even number of
//              blocks per row, 4-byte aligned w, 16-byte aligned x)
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

// Two quantized layouts. WIDE < 2: a unit is a piece of one block read as
// 16-bit words, so neighbouring threads read neighbouring pieces. WIDE 2:
// a unit is a pair of blocks, which starts 4-byte aligned (34 and 18 bytes
// are even), read as whole 32-bit words: half the loads, which is what
// bounds a CPU device.
#if defined(DQ_Q8_0)
const uint UNIT = WIDE == 2 ? 64 : 8;   // a quarter block: 8 int8 in four words
#else
const uint UNIT = WIDE == 2 ? 64 : 16;  // half a block: 8 bytes holding 16 nibbles
#endif

struct XU { vec4 v[16]; };

// xk returns the position in x of the first element of unit u.
uint xk(uint u) {
#if defined(DQ_Q4_0)
    if (WIDE < 2) {
        return (u / 2) * 32 + 8 * (u % 2);
    }
#endif
    return u * UNIT;
}

XU load_x(uint u) {
    XU r;
    uint k = p.x_off + xk(u);
#if defined(DQ_Q4_0)
    // Half a block pairs elements 8h.. with 16+8h..: vec4s 0, 1, 4, 5 from k.
    const uint n4 = WIDE == 2 ? 16 : 6;
#else
    const uint n4 = WIDE == 2 ? 16 : 2;
#endif
    [[unroll]] for (uint i = 0; i < n4; i++) {
        if (WIDE >= 1) {
            r.v[i] = x4[k / 4 + i];
        } else {
            r.v[i] = vec4(x[k + 4 * i], x[k + 4 * i + 1], x[k + 4 * i + 2], x[k + 4 * i + 3]);
        }
    }
    return r;
}

#if defined(DQ_Q8_0)

float unit_dot(uint row, uint u, XU xu) {
    if (WIDE == 2) {
        // Words 0..8 hold d0 | q0[0..1], q0[2..29], q0[30..31] | d1; words
        // 9..16 hold q1. Block 0's words straddle x's vec4s by two.
        uint wb = row / 2 + u * 17;
        uint w0 = w32[wb];
        uint w8 = w32[wb + 8];
        float s0 = dot(dq_i8x2(w0 >> 16), xu.v[0].xy) + dot(dq_i8x2(w8), xu.v[7].zw);
        [[unroll]] for (uint i = 1; i < 8; i++) {
            s0 += dot(dq_i8x4(w32[wb + i]), vec4(xu.v[i - 1].zw, xu.v[i].xy));
        }
        float s1 = 0.0;
        [[unroll]] for (uint i = 0; i < 8; i++) {
            s1 += dot(dq_i8x4(w32[wb + 9 + i]), xu.v[8 + i]);
        }
        return dq_half(w0 & 0xffffu) * s0 + dq_half(w8 >> 16) * s1;
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
        // Words 0..4 hold d0 | q0[0..1], q0[2..13], q0[14..15] | d1; words
        // 5..8 hold q1. Byte j's low nibble is element j, its high nibble
        // element j+16.
        uint wb = row / 2 + u * 9;
        uint w0 = w32[wb];
        uint w4 = w32[wb + 4];
        float s0 = dot(dq_u4lo(w0 >> 16).xy, xu.v[0].xy) + dot(dq_u4hi(w0 >> 16).xy, xu.v[4].xy) +
                   dot(dq_u4lo(w4).xy, xu.v[3].zw) + dot(dq_u4hi(w4).xy, xu.v[7].zw);
        [[unroll]] for (uint i = 1; i < 4; i++) {
            uint w = w32[wb + i];
            s0 += dot(dq_u4lo(w), vec4(xu.v[i - 1].zw, xu.v[i].xy)) +
                  dot(dq_u4hi(w), vec4(xu.v[i + 3].zw, xu.v[i + 4].xy));
        }
        float s1 = 0.0;
        [[unroll]] for (uint i = 0; i < 4; i++) {
            uint w = w32[wb + 5 + i];
            s1 += dot(dq_u4lo(w), xu.v[8 + i]) + dot(dq_u4hi(w), xu.v[12 + i]);
        }
        return dq_half(w0 & 0xffffu) * s0 + dq_half(w4 >> 16) * s1;
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
