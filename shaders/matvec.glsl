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
//   Q4_K, Q5_K, Q6_K: 0 scalar x, 1 vec4 x (16-byte aligned x),
//              Q4_K, Q5_K: 2 whole blocks as uvec4s (16-byte aligned w
//              and x), for CPU devices
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

#elif defined(DQ_Q4_K) || defined(DQ_Q5_K) || defined(DQ_Q6_K)

// A unit is 64 elements of one super-block whose quant bytes lie together,
// so that every byte loaded is used:
//   Q4_K, Q5_K: unit j of the block (u % 4) is sub-blocks 2j and 2j+1,
//     elements 64j.., the low and high nibbles of qs[32j..32j+31] (and bits
//     2j, 2j+1 of all of qh);
//   Q6_K: unit u % 4 = 2n + h is elements 128n + 32c + 16h + i for the
//     four quarters c and i < 16, from ql[64n + 16h..], ql[64n + 32 + 16h..]
//     and qh[32n + 16h..], 16 bytes each.
// x arrives as four groups of 16 elements (v[4g..4g+3]) with each group's
// sum (for the mins of Q4_K/Q5_K and the offset 32 of Q6_K).
// Rows are read in 16-bit words, so any 2-byte alignment (a Q6_K block is
// 210 bytes) works.
const uint UNIT = 64;
struct XU {
    vec4 v[16];
    vec4 s;
};

XU load_x(uint u) {
    XU r;
    [[unroll]] for (uint g = 0; g < 4; g++) {
#if defined(DQ_Q6_K)
        uint k = xo + (u / 4) * 256 + ((u % 4) / 2) * 128 + 32 * g + 16 * (u % 2);
#else
        uint k = xo + u * 64 + 16 * g;
#endif
        [[unroll]] for (uint i = 0; i < 4; i++) {
            if (WIDE >= 1) {
                r.v[4 * g + i] = x4[k / 4 + i];
            } else {
                r.v[4 * g + i] = vec4(x[k + 4 * i], x[k + 4 * i + 1], x[k + 4 * i + 2], x[k + 4 * i + 3]);
            }
        }
        r.s[g] = dot((r.v[4 * g] + r.v[4 * g + 1]) + (r.v[4 * g + 2] + r.v[4 * g + 3]), vec4(1.0));
    }
    return r;
}

float hsum(vec4 v) { return (v.x + v.y) + (v.z + v.w); }

#if defined(DQ_Q6_K)
float unit_dot(uint row, uint u, XU xu) {
    uint blk = row + (u / 4) * 105;
    uint n = (u % 4) / 2, h = u % 2;
    uint qa = 64 * n + 16 * h, qb = qa + 32, qh = 128 + 32 * n + 16 * h;
    vec4 s0 = vec4(0.0), s1 = vec4(0.0), s2 = vec4(0.0), s3 = vec4(0.0);
    [[unroll]] for (uint i = 0; i < 4; i++) {
        uint a = dq_word(blk, qa + 4 * i), b = dq_word(blk, qb + 4 * i), hi = dq_word(blk, qh + 4 * i);
        s0 = fma(dq_bits4(a, 0, 15u) + 16.0 * dq_bits4(hi, 0, 3u), xu.v[i], s0);
        s1 = fma(dq_bits4(b, 0, 15u) + 16.0 * dq_bits4(hi, 2, 3u), xu.v[4 + i], s1);
        s2 = fma(dq_bits4(a, 4, 15u) + 16.0 * dq_bits4(hi, 4, 3u), xu.v[8 + i], s2);
        s3 = fma(dq_bits4(b, 4, 15u) + 16.0 * dq_bits4(hi, 6, 3u), xu.v[12 + i], s3);
    }
    // Scales 8n + h + 2c: byte h of words 96 + 4n + c.
    uint sw = blk + 96 + 4 * n;
    vec4 sc = vec4(bitfieldExtract(int(uint(w16[sw])), int(8 * h), 8), bitfieldExtract(int(uint(w16[sw + 1])), int(8 * h), 8),
                   bitfieldExtract(int(uint(w16[sw + 2])), int(8 * h), 8), bitfieldExtract(int(uint(w16[sw + 3])), int(8 * h), 8));
    vec4 dots = vec4(hsum(s0), hsum(s1), hsum(s2), hsum(s3)) - 32.0 * xu.s;
    return dq_half(uint(w16[blk + 104])) * dot(sc, dots);
}
#else

// The CPU layout (WIDE 2) of Q4_K and Q5_K: a block of 144 or 176 bytes is
// a whole number of uvec4s, so in a 16-byte-aligned row every block is
// too, and a thread reads whole blocks 16 bytes per load (a CPU device
// pays a loop over the subgroup's lanes for every load instruction):
// uvec4 0 holds d, dmin and the 12 scale bytes, Q5_K's qh follows in two,
// then qs, two uvec4s per unit.
const uint BLOCK_V = DQ_BLOCK_U16 / 8;
const uint QS_V = DQ_QS / 16;

// k_scale_min is dq_k_scale_min from the block's first uvec4, whose y, z
// and w hold scale bytes 0-3, 4-7 and 8-11: sub-block s needs lane s % 4
// of each (see dq_k_scale_min for which bits).
vec2 k_scale_min(uvec4 h, uint s) {
    uint sh = 8 * (s % 4);
    uint a = (h.y >> sh) & 0xffu, b = (h.z >> sh) & 0xffu, c = (h.w >> sh) & 0xffu;
    uint sc = s < 4 ? a & 63u : (c & 15u) | ((a >> 6) << 4);
    uint m = s < 4 ? b & 63u : (c >> 4) | ((b >> 6) << 4);
    vec2 dd = unpackHalf2x16(h.x);
    return vec2(dd.x * float(sc), dd.y * float(m));
}

// k_unit_dot is unit_dot for unit j of a block held in registers: h its
// first uvec4, q0 and q1 the unit's 32 bytes of qs, hb the block's qh
// (Q5_K).
float k_unit_dot(uvec4 h, uvec4 q0, uvec4 q1, uvec4 hb0, uvec4 hb1, uint j, XU xu) {
    vec4 lo = vec4(0.0), hi = vec4(0.0);
    [[unroll]] for (uint i = 0; i < 8; i++) {
        uint q = i < 4 ? q0[i] : q1[i - 4];
        vec4 ql = dq_bits4(q, 0, 15u), qh = dq_bits4(q, 4, 15u);
#if defined(DQ_Q5_K)
        uint hw = i < 4 ? hb0[i] : hb1[i - 4];
        ql += 16.0 * dq_bits4(hw, 2 * j, 1u);
        qh += 16.0 * dq_bits4(hw, 2 * j + 1, 1u);
#endif
        lo = fma(ql, xu.v[i], lo);
        hi = fma(qh, xu.v[8 + i], hi);
    }
    vec2 a = k_scale_min(h, 2 * j), b = k_scale_min(h, 2 * j + 1);
    return (a.x * hsum(lo) - a.y * (xu.s[0] + xu.s[1])) + (b.x * hsum(hi) - b.y * (xu.s[2] + xu.s[3]));
}

// unit_dot (the GPU layout) gathers the same registers from 16-bit words.
uvec4 words4(uint blk, uint b) {
    return uvec4(dq_word(blk, b), dq_word(blk, b + 4), dq_word(blk, b + 8), dq_word(blk, b + 12));
}
float unit_dot(uint row, uint u, XU xu) {
    uint blk = row + (u / 4) * DQ_BLOCK_U16;
    uint j = u % 4;
    uvec4 hb0 = uvec4(0), hb1 = uvec4(0);
#if defined(DQ_Q5_K)
    hb0 = words4(blk, 16);
    hb1 = words4(blk, 32);
#endif
    return k_unit_dot(words4(blk, 0), words4(blk, DQ_QS + 32 * j), words4(blk, DQ_QS + 32 * j + 16), hb0, hb1, j, xu);
}

// k_rows adds to sum[t * NR + r] this thread's share of row r times
// vector t in the CPU layout: a contiguous run of the row's blocks.
void k_rows(uint tid) {
    uint blocks = p.K / 256;
    uint per = (blocks + WG - 1) / WG;
    uint b0 = tid * per;
    uint b1 = min(blocks, b0 + per);
    for (uint b = b0; b < b1; b++) {
        uvec4 h[NR];
        uvec4 hb0[NR], hb1[NR];
        [[unroll]] for (uint r = 0; r < NR; r++) {
            uint v = base[r] / 8 + b * BLOCK_V;
            h[r] = w128[v];
#if defined(DQ_Q5_K)
            hb0[r] = w128[v + 1];
            hb1[r] = w128[v + 2];
#else
            hb0[r] = uvec4(0);
            hb1[r] = uvec4(0);
#endif
        }
        for (uint j = 0; j < 4; j++) {
            uvec4 q0[NR], q1[NR];
            [[unroll]] for (uint r = 0; r < NR; r++) {
                uint v = base[r] / 8 + b * BLOCK_V + QS_V + 2 * j;
                q0[r] = w128[v];
                q1[r] = w128[v + 1];
            }
            [[unroll]] for (uint t = 0; t < NT; t++) {
                xo = x_at(t);
                XU xu = load_x(4 * b + j);
                [[unroll]] for (uint r = 0; r < NR; r++) {
                    sum[t * NR + r] += k_unit_dot(h[r], q0[r], q1[r], hb0[r], hb1[r], j, xu);
                }
            }
        }
    }
}
#endif

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
#elif defined(DQ_Q4_K) || defined(DQ_Q5_K)
    if (WIDE == 2) {
        k_rows(tid);
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
