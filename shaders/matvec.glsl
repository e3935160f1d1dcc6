// matvec.glsl: y[m] = sum_k W[m,k] * x[k] (+ y[m] when p.acc != 0), the
// decode-time projection. Included by matvec_<type>.comp after it defines
// the weight type (see dequant.glsl).
//
// Workgroups along z take NT vectors each (x and y advance by x_stride and
// y_stride floats from one to the next): the products of a prefill chunk
// in one dispatch, for CPU devices, where the tiled matmul kernel is slow
// and a dispatch per token costs more than the product. A workgroup's
// vectors share its setup and its weight loads.
//
// A workgroup owns ROWS consecutive rows. Its threads walk the rows in
// "units" (a few consecutive elements, as wide as alignment allows), each x
// unit loaded once for all ROWS rows; neighbouring threads take
// neighbouring units, so a subgroup reads one contiguous stretch (except in
// the CPU layout of quantized rows, see raw_rows). Each row's partial sums
// are reduced with subgroupAdd and the per-subgroup results combined
// through shared memory, which works for any subgroup size.
//
// Bindings: 0 weights (rows back to back, GGUF layout), 1 x (f32), 2 y (f32).
// Offsets arrive as push constants because the host binds ranges starting
// at an aligned offset below the data.

#extension GL_EXT_shader_16bit_storage : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : enable

layout(constant_id = 0) const uint WG = 128;  // threads per workgroup
layout(constant_id = 1) const uint ROWS = 4;  // rows per workgroup
// WIDE selects the load width the host found the alignment allows:
//   F32:       0 scalar, 1 vec4 (K % 4 == 0, 16-byte aligned w and x)
//   F16, BF16: 0 scalar, 1 pairs (K % 2 == 0, 4-byte aligned w),
//              2 eight at a time (K % 8 == 0, 16-byte aligned w and x)
//   Q8_0, Q4_0: 0 scalar x, 1 vec4 x (16-byte aligned x),
//              2 raw 16-byte pieces of the row (a multiple of 8 blocks per
//              row, 16-byte aligned w), for CPU devices
layout(constant_id = 2) const uint WIDE = 0;
// GLU 1 computes silu(gate·x) * (up·x) instead: the rows of up follow
// those of gate, up_delta words further, and a workgroup takes ROWS rows
// of each (NR in all), so that one product does the feed-forward's first
// half and its activation.
layout(constant_id = 3) const uint GLU = 0;
const uint NR = ROWS * (1 + GLU);
layout(constant_id = 4) const uint NT = 1;  // vectors per workgroup
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
    uint x_stride;  // floats from one vector of x to the next (z workgroups)
    uint y_stride;  // floats from one vector of y to the next
    uint up_delta;  // GLU: from a gate row to its up row, in uint16 words
    uint n;         // vectors in this dispatch
} p;

// The x[0] of the vector being read, in floats from the start of binding 1.
uint xo;

// The workgroup's rows (where each starts, in uint16 words of binding 0)
// and this thread's partial sums, sum[t * NR + r] for vector t and row r.
// Globals, as arrays sized by specialization constants cannot be passed
// to functions.
uint base[NR];
float sum[NT * NR];

// x_at returns where vector t of this workgroup starts; vectors past the
// dispatch's repeat its last one (their sums are never stored).
uint x_at(uint t) {
    return p.x_off + min(gl_WorkGroupID.z * NT + t, p.n - 1) * p.x_stride;
}

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
        r.a = x4[xo / 4 + u];
    } else {
        r.a = vec4(x[xo + u], 0.0, 0.0, 0.0);
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
        r.a = x4[xo / 4 + 2 * u];
        r.b = x4[xo / 4 + 2 * u + 1];
    } else if (WIDE == 1) {
        r.a = vec4(x[xo + 2 * u], x[xo + 2 * u + 1], 0.0, 0.0);
        r.b = vec4(0.0);
    } else {
        r.a = vec4(x[xo + u], 0.0, 0.0, 0.0);
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
//
// WIDE < 2 (GPUs): a unit is a piece of one block read as 16-bit words, so
// the threads of a subgroup read one contiguous stretch together.
//
// WIDE 2 (CPU devices, where every load instruction costs a loop over the
// subgroup's lanes): see raw_rows.

#if defined(DQ_Q8_0)
const uint BLOCK_BYTES = 34;
const uint UNIT = 8;   // a quarter block: 8 int8 in four words
const uint XV = 2;     // vec4s of x per unit
#else
const uint BLOCK_BYTES = 18;
const uint UNIT = 16;  // half a block: 8 bytes holding 16 nibbles
const uint XV = 6;     // vec4s 0, 1: elements 8h.., vec4s 4, 5: elements 16+8h..
#endif

struct XU { vec4 v[XV]; };

XU load_x(uint u) {
    XU r;
    uint k = xo + u * UNIT;
#if defined(DQ_Q4_0)
    k = xo + (u / 2) * 32 + 8 * (u % 2);
#endif
    [[unroll]] for (uint i = 0; i < XV; i++) {
        if (WIDE == 1) {
            r.v[i] = x4[k / 4 + i];
        } else {
            r.v[i] = vec4(x[k + 4 * i], x[k + 4 * i + 1], x[k + 4 * i + 2], x[k + 4 * i + 3]);
        }
    }
    return r;
}

#if defined(DQ_Q8_0)
float unit_dot(uint row, uint u, XU xu) {
    uint blk = row + (u / 4) * 17;
    uint w = blk + 1 + 4 * (u % 4);
    uint q0 = uint(w16[w]) | (uint(w16[w + 1]) << 16);
    uint q1 = uint(w16[w + 2]) | (uint(w16[w + 3]) << 16);
    return dq_half(uint(w16[blk])) * (dot(dq_i8x4(q0), xu.v[0]) + dot(dq_i8x4(q1), xu.v[1]));
}
#else
float unit_dot(uint row, uint u, XU xu) {
    uint blk = row + (u / 2) * 9;
    uint w = blk + 1 + 4 * (u % 2);
    uint q0 = uint(w16[w]) | (uint(w16[w + 1]) << 16);
    uint q1 = uint(w16[w + 2]) | (uint(w16[w + 3]) << 16);
    float s = dot(dq_u4lo(q0), xu.v[0]) + dot(dq_u4lo(q1), xu.v[1]) +
              dot(dq_u4hi(q0), xu.v[4]) + dot(dq_u4hi(q1), xu.v[5]);
    return dq_half(uint(w16[blk])) * s;
}
#endif

// The CPU layout. A unit is 16 raw bytes of the row, one uvec4, read
// without regard to block boundaries (rows must be 16-byte aligned: a
// multiple of 8 blocks). Blocks are longer than 16 bytes, so a unit holds
// the tail of one block ("prev") and possibly, from byte soff, the scale
// and head of the next. Each thread walks a contiguous run of units, so
// the prev scale is the one it saw last and costs no load.

// The x values of a raw unit: for each byte, the x its quant multiplies,
// split by block so that each part can take its own scale (zero for the
// other part's bytes and for scale bytes). Q4_0 has a second set for the
// high nibbles.
#if defined(DQ_Q8_0)
const uint RAW_XV = 8;   // prev[4], next[4]
#else
const uint RAW_XV = 16;  // prev lo[4], prev hi[4], next lo[4], next hi[4]
#endif
struct RawX {
    vec4 v[RAW_XV];
    uint soff;  // offset in the unit of the next block's scale; >= 16: none
};

RawX load_raw_x(uint u) {
    RawX r;
    uint pos = 16 * u;  // first byte of the unit in the row
    uint b0 = pos / BLOCK_BYTES;
    uint b1 = (pos + BLOCK_BYTES - 1) / BLOCK_BYTES;
    r.soff = b1 * BLOCK_BYTES - pos;
    bool at_scale = r.soff == 0;  // the unit starts at a scale: no prev part, b1 == b0
    // Byte t of the unit is quant j = pos + t - BLOCK_BYTES b - 2 of its
    // block b, which multiplies x[32 b + j] (Q4_0's high nibble x[32 b + j +
    // 16]). With base the x index of byte 0 taken as part of block b0, all
    // the unit needs lies in one short window of x, loaded without
    // branches; soff then decides which part each byte belongs to.
    // Indices are clamped to x: the window's ends may pass the row's.
    int base = int(xo + b0 * 32 + pos) - int(b0 * BLOCK_BYTES) - 2;
#if defined(DQ_Q8_0)
    // prev byte t: x[base + t]; next (block b0 + 1): x[base + t - 2].
    const int W0 = -2;
    const uint NW = 18;
#else
    // prev byte t: lo x[base + t], hi x[base + 16 + t]; next (block b0 + 1):
    // lo x[base + 14 + t], hi x[base + 30 + t].
    const int W0 = 0;
    const uint NW = 46;
#endif
    float w[NW];
    [[unroll]] for (uint i = 0; i < NW; i++) {
        w[i] = x[clamp(base + W0 + int(i), int(xo), int(xo + p.K) - 1)];
    }
    [[unroll]] for (uint t = 0; t < 16; t++) {
        bool prev = t < r.soff;
        bool next = t >= r.soff + 2;
#if defined(DQ_Q8_0)
        r.v[t / 4][t % 4] = prev ? w[t + 2] : 0.0;
        r.v[4 + t / 4][t % 4] = next ? (at_scale ? w[t + 2] : w[t]) : 0.0;
#else
        r.v[t / 4][t % 4] = prev ? w[t] : 0.0;
        r.v[4 + t / 4][t % 4] = prev ? w[16 + t] : 0.0;
        r.v[8 + t / 4][t % 4] = next ? (at_scale ? w[t] : w[14 + t]) : 0.0;
        r.v[12 + t / 4][t % 4] = next ? (at_scale ? w[16 + t] : w[30 + t]) : 0.0;
#endif
    }
    return r;
}

// raw_dot adds the unit's two parts, each times its scale, and returns in
// d the scale now in force: the next block's if the unit holds its scale.
float raw_dot(uvec4 q, RawX xr, inout float d) {
    // vec4 accumulators: four independent multiply-add chains per part
    // rather than one long one.
    vec4 sp = vec4(0.0), sn = vec4(0.0);
    [[unroll]] for (uint i = 0; i < 4; i++) {
#if defined(DQ_Q8_0)
        vec4 v = vec4(ivec4(q[i] << 24, q[i] << 16, q[i] << 8, q[i]) >> 24);
        sp = fma(v, xr.v[i], sp);
        sn = fma(v, xr.v[4 + i], sn);
#else
        vec4 lo = dq_u4lo(q[i]), hi = dq_u4hi(q[i]);
        sp = fma(lo, xr.v[i], fma(hi, xr.v[4 + i], sp));
        sn = fma(lo, xr.v[8 + i], fma(hi, xr.v[12 + i], sn));
#endif
    }
    float dp = d;
    if (xr.soff < 16) {
        uint wi = xr.soff / 4;
        uint wd = wi == 0 ? q.x : (wi == 1 ? q.y : (wi == 2 ? q.z : q.w));
        d = dq_half(xr.soff % 4 == 0 ? wd & 0xffffu : wd >> 16);
    }
    return dp * ((sp.x + sp.y) + (sp.z + sp.w)) + d * ((sn.x + sn.y) + (sn.z + sn.w));
}

// raw_rows adds to sum[t * NR + r] this thread's share of row r times
// vector t in the CPU layout: a contiguous run of the row's units of 16
// raw bytes.
void raw_rows(uint tid, uint units) {
    uint per = (units + WG - 1) / WG;
    uint u0 = tid * per;
    uint u1 = min(units, u0 + per);
    if (u0 >= u1) {
        return;
    }
    float d[NR];
    uint b0 = (16 * u0) / BLOCK_BYTES;
    [[unroll]] for (uint r = 0; r < NR; r++) {
        d[r] = dq_half(uint(w16[base[r] + b0 * (BLOCK_BYTES / 2)]));
    }
    if (NT == 1) {
        // One vector: the scale in force moves on in place.
        xo = x_at(0);
        for (uint u = u0; u < u1; u++) {
            RawX xr = load_raw_x(u);
            [[unroll]] for (uint r = 0; r < NR; r++) {
                sum[r] += raw_dot(w128[base[r] / 8 + u], xr, d[r]);
            }
        }
        return;
    }
    for (uint u = u0; u < u1; u++) {
        uvec4 q[NR];
        [[unroll]] for (uint r = 0; r < NR; r++) {
            q[r] = w128[base[r] / 8 + u];
        }
        float dn[NR];  // the scale in force after this unit
        [[unroll]] for (uint t = 0; t < NT; t++) {
            xo = x_at(t);
            RawX xr = load_raw_x(u);
            [[unroll]] for (uint r = 0; r < NR; r++) {
                dn[r] = d[r];
                sum[t * NR + r] += raw_dot(q[r], xr, dn[r]);
            }
        }
        [[unroll]] for (uint r = 0; r < NR; r++) {
            d[r] = dn[r];
        }
    }
}

#endif

shared float red[NT * NR][WG];

void main() {
    uint row0 = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * ROWS;
    if (row0 >= p.M) {
        return;  // the whole workgroup leaves together: no barrier is skipped
    }
    uint tid = gl_LocalInvocationID.x;
    uint stride = dq_row_u16(p.K);
    uint t0 = gl_WorkGroupID.z * NT;  // first vector

    // Rows past M repeat the last row so the loop stays uniform; their
    // sums are never stored.
    [[unroll]] for (uint r = 0; r < NR; r++) {
        base[r] = p.w_off + min(row0 + r % ROWS, p.M - 1) * stride + (r / ROWS) * p.up_delta;
    }
    [[unroll]] for (uint i = 0; i < NT * NR; i++) {
        sum[i] = 0.0;
    }

#if defined(DQ_Q8_0) || defined(DQ_Q4_0)
    if (WIDE == 2) {
        raw_rows(tid, dq_row_u16(p.K) / 8);
    } else
#endif
    {
        uint units = p.K / UNIT;
        xo = x_at(0);
        for (uint u = tid; u < units; u += WG) {
            [[unroll]] for (uint t = 0; t < NT; t++) {
                if (NT > 1) {
                    xo = x_at(t);
                }
                XU xu = load_x(u);
                [[unroll]] for (uint r = 0; r < NR; r++) {
                    sum[t * NR + r] += unit_dot(base[r], u, xu);
                }
            }
        }
    }

    [[unroll]] for (uint i = 0; i < NT * NR; i++) {
        float s = subgroupAdd(sum[i]);
        if (subgroupElect()) {
            red[i][gl_SubgroupID] = s;
        }
    }
    barrier();
    for (uint i = tid; i < NT * ROWS; i += WG) {
        uint t = i / ROWS, r = i % ROWS;
        if (t0 + t >= p.n || row0 + r >= p.M) {
            continue;
        }
        float v = 0.0;
        for (uint j = 0; j < gl_NumSubgroups; j++) {
            v += red[t * NR + r][j];
        }
        if (GLU != 0) {
            float u = 0.0;
            for (uint j = 0; j < gl_NumSubgroups; j++) {
                u += red[t * NR + ROWS + r][j];
            }
            v = v / (1.0 + exp(-v)) * u;  // as swiglu.comp
        }
        uint yi = p.y_off + (t0 + t) * p.y_stride + row0 + r;
        y[yi] = p.acc != 0 ? y[yi] + v : v;
    }
}
