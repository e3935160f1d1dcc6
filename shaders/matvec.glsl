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
// neighbouring units, so a subgroup reads one contiguous stretch (CPU
// devices read quantized rows in a packed layout instead, see PACKED).
// GPUs read quantized rows in fine units of a few elements of one block
// (FINE, see fine_rows), which keep a subgroup's loads contiguous where a
// whole unit of a block would not.
// Each row's partial sums are reduced with subgroupAdd and the
// per-subgroup results combined through shared memory, which works for any
// subgroup size.
//
// Bindings: 0 weights (rows back to back, GGUF layout; a texel buffer in
// the PACKED and TEXEL variants), 1 x (f32; texels in XTEXEL), 2 y (f32).
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
//   quantized: 0 scalar x, 1 vec4 x (16-byte aligned x)
layout(constant_id = 2) const uint WIDE = 0;
// GLU 1 computes silu(gate·x) * (up·x) instead: the rows of up follow
// those of gate, up_delta words further, and a workgroup takes ROWS rows
// of each (NR in all), so that one product does the feed-forward's first
// half and its activation.
layout(constant_id = 3) const uint GLU = 0;
const uint NR = ROWS * (1 + GLU);
layout(constant_id = 4) const uint NT = 1;  // vectors per workgroup
// FINE (quantized types, GGUF layout; see fine_rows): 0 the whole units
// below, 1 fine units read in 16-bit words, 2 fine units read 8 and 16
// bytes at a time (Q4_K, Q5_K: 16-byte aligned rows and binding offset).
layout(constant_id = 5) const uint FINE = 0;
layout(local_size_x_id = 0) in;

#if defined(PACKED) || defined(TEXEL)
// PACKED: the packed layout of quantized rows (CPU devices; see
// engine/kernel/pack.go); TEXEL: F16 and BF16 rows read eight at a time
// (WIDE 2) on CPU devices. Binding 0 is then a uniform texel buffer of
// 16-byte texels, which a CPU device fetches for all lanes in a few vector
// instructions; the storage-buffer code below is compiled but unused
// (binding 3 is never bound).
#extension GL_EXT_samplerless_texture_functions : require
layout(set = 0, binding = 0) uniform utextureBuffer wt;
#define W_BINDING 3
#else
#define W_BINDING 0
#endif
layout(set = 0, binding = W_BINDING) readonly buffer W16 { uint16_t w16[]; };
layout(set = 0, binding = W_BINDING) readonly buffer W32 { uint w32[]; };
layout(set = 0, binding = W_BINDING) readonly buffer W64 { uvec2 w64[]; };
layout(set = 0, binding = W_BINDING) readonly buffer W128 { uvec4 w128[]; };
#if defined(XTEXEL)
// x read as texels too (packed rows, F16 and BF16 texel rows, where x
// starts on 16 bytes): four floats a fetch; the storage-buffer x below is
// then never bound.
layout(set = 0, binding = 1) uniform utextureBuffer xt;
#define X_BINDING 4
#else
#define X_BINDING 1
#endif
layout(set = 0, binding = X_BINDING) readonly buffer X1 { float x[]; };
layout(set = 0, binding = X_BINDING) readonly buffer X2 { vec2 x2[]; };
layout(set = 0, binding = X_BINDING) readonly buffer X4 { vec4 x4[]; };
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
// load_x(u); WU holding the raw weight words of one unit, load_w(row, u)
// for unit u of the row at word row, and unit_dot(w, u, xu). A workgroup
// of several vectors loads each unit of its rows once and applies it to
// all of them: one read of the weights per step, whatever the batch, and
// each vector's sums the same arithmetic in the same order as alone.

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
struct WU { vec4 a; };
WU load_w(uint row, uint u) {
    WU r;
    if (WIDE == 1) {
        r.a = uintBitsToFloat(w128[row / 8 + u]);
    } else {
        r.a = vec4(dq_load(row, u), 0.0, 0.0, 0.0);
    }
    return r;
}
float unit_dot(WU w, uint u, XU xu) {
    if (WIDE == 1) {
        return dot(w.a, xu.a);
    }
    return w.a.x * xu.a.x;
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
#if defined(XTEXEL)
    // Only WIDE 2 runs here, as for TEXEL.
    r.a = uintBitsToFloat(texelFetch(xt, int(xo / 4 + 2 * u)));
    r.b = uintBitsToFloat(texelFetch(xt, int(xo / 4 + 2 * u + 1)));
    return r;
#endif
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
// WIDE 2: eight weights in q; 1: two in q.x; 0: one in f.
struct WU { uvec4 q; float f; };
WU load_w(uint row, uint u) {
    WU r;
    r.q = uvec4(0);
    r.f = 0.0;
#if defined(TEXEL)
    // Only WIDE 2 runs here (the host picks this kernel for it alone): no
    // storage-buffer access may be reachable, as binding 3 is never bound.
    r.q = texelFetch(wt, int(row / 8 + u));
#else
    if (WIDE == 2) {
        r.q = w128[row / 8 + u];
    } else if (WIDE == 1) {
        r.q.x = w32[row / 2 + u];
    } else {
        r.f = dq_load(row, u);
    }
#endif
    return r;
}
float unit_dot(WU w, uint u, XU xu) {
#if !defined(TEXEL)
    if (WIDE == 1) {
        return dot(unpack2(w.q.x), xu.a.xy);
    } else if (WIDE == 0) {
        return w.f * xu.a.x;
    }
#endif
    return dot(vec4(unpack2(w.q.x), unpack2(w.q.y)), xu.a) + dot(vec4(unpack2(w.q.z), unpack2(w.q.w)), xu.b);
}

#elif defined(DQ_Q8_0) || defined(DQ_Q4_0)

// A unit is a piece of one block read as 16-bit words, so the threads of a
// subgroup read one contiguous stretch together (GPUs; CPU devices read
// the packed layout, see PACKED).

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

// The unit's two quant words (x, y) and its block's f16 scale (z).
struct WU { uvec3 q; };
WU load_w(uint row, uint u) {
    const uint PER = 32 / UNIT;  // units per block
    uint blk = row + (u / PER) * (BLOCK_BYTES / 2);
    uint w = blk + 1 + 4 * (u % PER);
    WU r;
    r.q = uvec3(uint(w16[w]) | (uint(w16[w + 1]) << 16), uint(w16[w + 2]) | (uint(w16[w + 3]) << 16), uint(w16[blk]));
    return r;
}

#if defined(DQ_Q8_0)
float unit_dot(WU w, uint u, XU xu) {
    return dq_half(w.q.z) * (dot(dq_i8x4(w.q.x), xu.v[0]) + dot(dq_i8x4(w.q.y), xu.v[1]));
}
#else
float unit_dot(WU w, uint u, XU xu) {
    float s = dot(dq_u4lo(w.q.x), xu.v[0]) + dot(dq_u4lo(w.q.y), xu.v[1]) +
              dot(dq_u4hi(w.q.x), xu.v[4]) + dot(dq_u4hi(w.q.y), xu.v[5]);
    return dq_half(w.q.z) * s;
}
#endif

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

// words4 gathers bytes b..b+15 of the block at word blk (b even).
uvec4 words4(uint blk, uint b) {
    return uvec4(dq_word(blk, b), dq_word(blk, b + 4), dq_word(blk, b + 8), dq_word(blk, b + 12));
}

#if defined(DQ_Q6_K)
// q6_unit_dot is unit_dot for unit 2n + h of a block held in registers: a,
// b and hi its 16 bytes of ql[64n + 16h..], ql[64n + 32 + 16h..] and
// qh[32n + 16h..], sc the block's scale bytes 8n..8n+7, d its scale.
float q6_unit_dot(uvec4 a, uvec4 b, uvec4 hi, uvec2 sc, uint h, float d, XU xu) {
    vec4 s0 = vec4(0.0), s1 = vec4(0.0), s2 = vec4(0.0), s3 = vec4(0.0);
    [[unroll]] for (uint i = 0; i < 4; i++) {
        s0 = fma(dq_bits4hi(a[i], 0, hi[i], 0, 3u), xu.v[i], s0);
        s1 = fma(dq_bits4hi(b[i], 0, hi[i], 2, 3u), xu.v[4 + i], s1);
        s2 = fma(dq_bits4hi(a[i], 4, hi[i], 4, 3u), xu.v[8 + i], s2);
        s3 = fma(dq_bits4hi(b[i], 4, hi[i], 6, 3u), xu.v[12 + i], s3);
    }
    // Scale 8n + h + 2c: byte h + 2c of sc.
    vec4 scv = vec4(bitfieldExtract(int(sc.x), int(8 * h), 8), bitfieldExtract(int(sc.x), int(8 * h + 16), 8),
                    bitfieldExtract(int(sc.y), int(8 * h), 8), bitfieldExtract(int(sc.y), int(8 * h + 16), 8));
    vec4 dots = vec4(hsum(s0), hsum(s1), hsum(s2), hsum(s3)) - 32.0 * xu.s;
    return d * dot(scv, dots);
}

// The unit's bytes of ql (a, b) and qh (hi), its scale bytes and d.
struct WU { uvec4 a, b, hi; uvec2 sc; float d; };
WU load_w(uint row, uint u) {
    uint blk = row + (u / 4) * 105;
    uint n = (u % 4) / 2, h = u % 2;
    uint qa = 64 * n + 16 * h;
    WU r;
    r.a = words4(blk, qa);
    r.b = words4(blk, qa + 32);
    r.hi = words4(blk, 128 + 32 * n + 16 * h);
    r.sc = uvec2(dq_word(blk, 192 + 8 * n), dq_word(blk, 196 + 8 * n));
    r.d = dq_half(uint(DQ_U16(blk + 104)));
    return r;
}
float unit_dot(WU w, uint u, XU xu) { return q6_unit_dot(w.a, w.b, w.hi, w.sc, u % 2, w.d, xu); }
#else

// k_scale_min is dq_k_scale_min from the block's first 16 bytes, whose y, z
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
#if defined(DQ_Q5_K)
        uint hw = i < 4 ? hb0[i] : hb1[i - 4];
        vec4 ql = dq_bits4hi(q, 0, hw, 2 * j, 1u), qh = dq_bits4hi(q, 4, hw, 2 * j + 1, 1u);
#else
        vec4 ql = dq_bits4(q, 0, 15u), qh = dq_bits4(q, 4, 15u);
#endif
        lo = fma(ql, xu.v[i], lo);
        hi = fma(qh, xu.v[8 + i], hi);
    }
    vec2 a = k_scale_min(h, 2 * j), b = k_scale_min(h, 2 * j + 1);
    return (a.x * hsum(lo) - a.y * (xu.s[0] + xu.s[1])) + (b.x * hsum(hi) - b.y * (xu.s[2] + xu.s[3]));
}

// load_w (the GGUF layout) gathers the same registers from 16-bit words:
// the block's header (h), the unit's qs (q0, q1) and the block's qh (hb0,
// hb1: Q5_K).
struct WU { uvec4 h, q0, q1, hb0, hb1; };
WU load_w(uint row, uint u) {
    uint blk = row + (u / 4) * DQ_BLOCK_U16;
    uint j = u % 4;
    WU r;
    r.h = words4(blk, 0);
    r.q0 = words4(blk, DQ_QS + 32 * j);
    r.q1 = words4(blk, DQ_QS + 32 * j + 16);
    r.hb0 = uvec4(0);
    r.hb1 = uvec4(0);
#if defined(DQ_Q5_K)
    r.hb0 = words4(blk, 16);
    r.hb1 = words4(blk, 32);
#endif
    return r;
}
float unit_dot(WU w, uint u, XU xu) { return k_unit_dot(w.h, w.q0, w.q1, w.hb0, w.hb1, u % 4, xu); }

#endif

#endif

#if !defined(DQ_F32) && !defined(DQ_F16) && !defined(DQ_BF16) && !defined(PACKED)
#define MV_FINE

// Fine units (FINE != 0; GPUs): a unit is a few elements of one block, and
// consecutive threads take consecutive units, so that each load of a
// subgroup reads a short contiguous stretch of the weights and of x. (A
// whole unit above puts a 144-byte Q4_K block, and 256 bytes of x, between
// neighbouring threads: every load instruction touches a cache line per
// thread; and a 4096-element Q4_K row has only 64 such units.)
//   Q8_0: 4 elements, 8 units a block: quant bytes 4i..4i+3.
//   Q4_0: 8 elements, 4 a block: quant bytes 4i..4i+3, the low nibbles
//     elements 4i.., the high ones 16+4i...
//   Q4_K, Q5_K: 16 elements, 16 a block: unit i = 4j + m takes qs bytes
//     32j + 8m..+7, elements 64j + 8m.. (low nibbles, sub-block 2j) and
//     64j + 32 + 8m.. (high, sub-block 2j+1); Q5_K's qh bytes 8m..8m+7.
//   Q6_K: 8 elements, 32 a block: unit i = 16n + m takes elements
//     128n + 32c + 2m and 2m+1 of the quarters c, from the 2 bytes each of
//     ql[64n + 2m..], ql[64n + 32 + 2m..] and qh[32n + 2m..], with scale
//     bytes 8n + m/8 + 2c.
// FINE 2 reads Q4_K and Q5_K blocks (144 and 176 bytes, so 16-byte
// aligned where the first row is) 16 and 8 bytes at a time; otherwise
// weights are read in 16-bit words, as the other types' blocks (34, 18,
// 210 bytes) are only 2-byte aligned.

#if defined(DQ_Q8_0)
const uint FUNIT = 4;
#elif defined(DQ_Q4_0) || defined(DQ_Q6_K)
const uint FUNIT = 8;
#else
const uint FUNIT = 16;
#endif
const uint FPB = DQ_BLOCK / FUNIT;  // units per block

float fsum(vec4 v) { return (v.x + v.y) + (v.z + v.w); }

vec4 xv4(uint k) {
    if (WIDE >= 1) {
        return x4[k / 4];
    }
    return vec4(x[k], x[k + 1], x[k + 2], x[k + 3]);
}

vec2 xv2(uint k) {
    if (WIDE >= 1) {
        return x2[k / 2];
    }
    return vec2(x[k], x[k + 1]);
}

uint w16pair(uint i) { return uint(w16[i]) | (uint(w16[i + 1]) << 16); }

// x for unit u, as fine_dot wants it; s: Q4_K and Q5_K's sums of its two
// halves (for the mins).
struct XF { vec4 v[4]; vec2 s; };
XF load_xf(uint u) {
    XF r;
    uint blk = u / FPB, i = u % FPB;
#if defined(DQ_Q8_0)
    r.v[0] = xv4(xo + 4 * u);
#elif defined(DQ_Q4_0)
    uint k = xo + 32 * blk + 4 * i;
    r.v[0] = xv4(k);
    r.v[1] = xv4(k + 16);
#elif defined(DQ_Q6_K)
    // v[0]: quarters 0 and 1, v[1]: quarters 2 and 3, two elements each.
    uint k = xo + 256 * blk + 128 * (i / 16) + 2 * (i % 16);
    r.v[0] = vec4(xv2(k), xv2(k + 32));
    r.v[1] = vec4(xv2(k + 64), xv2(k + 96));
#else
    uint k = xo + 256 * blk + 64 * (i / 4) + 8 * (i % 4);
    r.v[0] = xv4(k);
    r.v[1] = xv4(k + 4);
    r.v[2] = xv4(k + 32);
    r.v[3] = xv4(k + 36);
    r.s = vec2(fsum(r.v[0] + r.v[1]), fsum(r.v[2] + r.v[3]));
#endif
    return r;
}

// The raw words of unit u of the row at word row: q its quant bytes, h
// the block's scale words (Q4_K, Q5_K: its first 16 bytes; Q6_K: the
// unit's four scale words, shifted to its byte), e Q5_K's qh bytes or
// Q6_K's d.
struct WF { uvec4 h; uvec2 q; uvec2 e; };
WF load_wf(uint row, uint u) {
    uint blk = row + (u / FPB) * DQ_BLOCK_U16, i = u % FPB;
    WF r;
    r.h = uvec4(0);
    r.q = uvec2(0);
    r.e = uvec2(0);
#if defined(DQ_Q8_0) || defined(DQ_Q4_0)
    r.q.x = w16pair(blk + 1 + 2 * i);
    r.h.x = uint(w16[blk]);
#elif defined(DQ_Q6_K)
    uint n = i / 16, m = i % 16;
    uint a = uint(w16[blk + 32 * n + m]), b = uint(w16[blk + 32 * n + 16 + m]);
    uint hq = uint(w16[blk + 64 + 16 * n + m]);
    r.q = uvec2(a | (b << 16), hq | ((hq >> 2) << 16));
    uint sc = blk + 96 + 4 * n;
    r.h = uvec4(uint(w16[sc]), uint(w16[sc + 1]), uint(w16[sc + 2]), uint(w16[sc + 3])) >> (8 * (m / 8));
    r.e.x = uint(w16[blk + 104]);
#else
    uint j = i / 4, m = i % 4;
    uint qs = DQ_QS + 32 * j + 8 * m;  // bytes into the block
    if (FINE == 2) {
        r.h = w128[blk / 8];
        r.q = w64[(blk + qs / 2) / 4];
#if defined(DQ_Q5_K)
        r.e = w64[(blk + 8 + 4 * m) / 4];
#endif
    } else {
        r.h = words4(blk, 0);
        r.q = uvec2(dq_word(blk, qs), dq_word(blk, qs + 4));
#if defined(DQ_Q5_K)
        r.e = uvec2(dq_word(blk, 16 + 8 * m), dq_word(blk, 20 + 8 * m));
#endif
    }
#endif
    return r;
}

float fine_dot(WF w, uint u, XF xf) {
#if defined(DQ_Q8_0)
    return dq_half(w.h.x) * dot(dq_i8x4(w.q.x), xf.v[0]);
#elif defined(DQ_Q4_0)
    return dq_half(w.h.x) * (dot(dq_u4lo(w.q.x), xf.v[0]) + dot(dq_u4hi(w.q.x), xf.v[1]));
#elif defined(DQ_Q6_K)
    // Bytes of q.x: ql[l], ql[l+1] (quarters 0; 2 in the high nibbles),
    // ql[32+l], ql[33+l] (quarters 1; 3); q.y holds qh[l], qh[l+1] and
    // the same shifted to quarter 1's bits, so that each conversion
    // assembles two quarters.
    vec4 p01 = (dq_bits4hi(w.q.x, 0, w.q.y, 0, 3u) - 32.0) * xf.v[0];
    vec4 p23 = (dq_bits4hi(w.q.x, 4, w.q.y, 4, 3u) - 32.0) * xf.v[1];
    vec4 dots = vec4(p01.x + p01.y, p01.z + p01.w, p23.x + p23.y, p23.z + p23.w);
    vec4 scv = vec4(bitfieldExtract(int(w.h.x), 0, 8), bitfieldExtract(int(w.h.y), 0, 8),
                    bitfieldExtract(int(w.h.z), 0, 8), bitfieldExtract(int(w.h.w), 0, 8));
    return dq_half(w.e.x) * dot(scv, dots);
#else
    uint j = (u % FPB) / 4;
#if defined(DQ_Q5_K)
    vec4 lo = fma(dq_bits4hi(w.q.x, 0, w.e.x, 2 * j, 1u), xf.v[0], dq_bits4hi(w.q.y, 0, w.e.y, 2 * j, 1u) * xf.v[1]);
    vec4 hi = fma(dq_bits4hi(w.q.x, 4, w.e.x, 2 * j + 1, 1u), xf.v[2],
                  dq_bits4hi(w.q.y, 4, w.e.y, 2 * j + 1, 1u) * xf.v[3]);
#else
    vec4 lo = fma(dq_bits4(w.q.x, 0, 15u), xf.v[0], dq_bits4(w.q.y, 0, 15u) * xf.v[1]);
    vec4 hi = fma(dq_bits4(w.q.x, 4, 15u), xf.v[2], dq_bits4(w.q.y, 4, 15u) * xf.v[3]);
#endif
    vec2 a = k_scale_min(w.h, 2 * j), b = k_scale_min(w.h, 2 * j + 1);
    return (a.x * fsum(lo) - a.y * xf.s.x) + (b.x * fsum(hi) - b.y * xf.s.y);
#endif
}

// The current unit of each of the workgroup's rows.
WF wf[NR];

// fine_rows adds to sum[t * NR + r] this thread's share of row r times
// vector t, in fine units (the loop of main's, unit for unit).
void fine_rows() {
    uint units = p.K / FUNIT;
    xo = x_at(0);
    for (uint u = gl_LocalInvocationID.x; u < units; u += WG) {
        if (NT > 1) {
            [[unroll]] for (uint r = 0; r < NR; r++) {
                wf[r] = load_wf(base[r], u);
            }
        }
        [[unroll]] for (uint t = 0; t < NT; t++) {
            if (NT > 1) {
                xo = x_at(t);
            }
            XF xf = load_xf(u);
            [[unroll]] for (uint r = 0; r < NR; r++) {
                if (NT > 1) {
                    sum[t * NR + r] += fine_dot(wf[r], u, xf);
                } else {
                    sum[t * NR + r] += fine_dot(load_wf(base[r], u), u, xf);
                }
            }
        }
    }
}

#endif

#if defined(PACKED)

// The packed layout (engine/kernel/pack.go), for CPU devices. Lane l of a
// workgroup takes, in step s, lane unit s·WG + l (256 weights) of each of
// its ROWS rows, a sub-unit of 64 weights at a time; every texel it reads
// is one 16-byte fetch, and the workgroup's fetches walk its group of rows
// forward. All lanes run the same steps; a lane past the row's last unit
// reads zero weights (the padding) and x from the row's start.

#if defined(DQ_Q4_0)
const uint PT = 9;
#elif defined(DQ_Q8_0)
const uint PT = 17;
#elif defined(DQ_Q4_K)
const uint PT = 9;
#elif defined(DQ_Q5_K)
const uint PT = 11;
#else
const uint PT = 13;
#endif
#if defined(DQ_Q6_K)
const uint TAIL = (2 * WG + 15) / 16;  // texels per row of the lanes' f16 d
#else
const uint TAIL = 0;
#endif
const uint STEP = (PT * WG + TAIL) * ROWS;  // texels of one step of a group

#if defined(DQ_Q4_0) || defined(DQ_Q8_0)
struct XP {
    vec4 v[16];
    vec4 s;
};
float hsum(vec4 v) { return (v.x + v.y) + (v.z + v.w); }
#else
#define XP XU
#endif

// load_xp returns x for sub-unit j of lane unit lu of the row, grouped as
// the type's unit dot product wants it, with each 16-element group's sum.
XP load_xp(uint lu, uint j) {
    XP r;
    [[unroll]] for (uint g = 0; g < 4; g++) {
#if defined(DQ_Q6_K)
        uint k = xo + lu * 256 + (j / 2) * 128 + 32 * g + 16 * (j % 2);
#else
        uint k = xo + lu * 256 + 64 * j + 16 * g;
#endif
        [[unroll]] for (uint i = 0; i < 4; i++) {
#if defined(XTEXEL)
            r.v[4 * g + i] = uintBitsToFloat(texelFetch(xt, int(k / 4 + i)));
#else
            if (WIDE >= 1) {
                r.v[4 * g + i] = x4[k / 4 + i];
            } else {
                r.v[4 * g + i] = vec4(x[k + 4 * i], x[k + 4 * i + 1], x[k + 4 * i + 2], x[k + 4 * i + 3]);
            }
#endif
        }
        r.s[g] = dot((r.v[4 * g] + r.v[4 * g + 1]) + (r.v[4 * g + 2] + r.v[4 * g + 3]), vec4(1.0));
    }
    return r;
}

uvec4 tex(uint i) { return texelFetch(wt, int(i)); }

// The texels of the current sub-unit of each row (pa..pd), and what the
// unit's rows keep across sub-units (ph: the scales texel or the block
// header; pe: Q5_K's second qh texel; pdd: Q6_K's d).
uvec4 pa[NR], pb[NR], pc[NR], pd[NR], ph[NR], pe[NR];
float pdd[NR];

// fetch_sub loads row r's texels for sub-unit j; at is where texel t of
// this lane's unit of row r lies: at + t·ROWS·WG.
void fetch_sub(uint r, uint at, uint j, uint tail) {
    const uint TS = ROWS * WG;
    if (j == 0) {
        ph[r] = tex(at + (PT - 1) * TS);  // Q4_0, Q8_0: scales; Q6_K: scale bytes
#if defined(DQ_Q4_K) || defined(DQ_Q5_K)
        ph[r] = tex(at);  // the header
#endif
#if defined(DQ_Q5_K)
        pd[r] = tex(at + TS);
        pe[r] = tex(at + 2 * TS);
#endif
#if defined(DQ_Q6_K)
        uvec4 tw = tex(tail);
        uint lw = (gl_LocalInvocationID.x % 8) / 2;
        uint w = lw == 0 ? tw.x : (lw == 1 ? tw.y : (lw == 2 ? tw.z : tw.w));
        pdd[r] = unpackHalf2x16(w)[gl_LocalInvocationID.x % 2];
#endif
    }
#if defined(DQ_Q4_0)
    pa[r] = tex(at + (2 * j) * TS);
    pb[r] = tex(at + (2 * j + 1) * TS);
#elif defined(DQ_Q8_0)
    pa[r] = tex(at + (4 * j) * TS);
    pb[r] = tex(at + (4 * j + 1) * TS);
    pc[r] = tex(at + (4 * j + 2) * TS);
    pd[r] = tex(at + (4 * j + 3) * TS);
#elif defined(DQ_Q4_K)
    pa[r] = tex(at + (1 + 2 * j) * TS);
    pb[r] = tex(at + (2 + 2 * j) * TS);
#elif defined(DQ_Q5_K)
    pa[r] = tex(at + (3 + 2 * j) * TS);
    pb[r] = tex(at + (4 + 2 * j) * TS);
#else
    uint n = j / 2, h = j % 2;
    pa[r] = tex(at + (4 * n + h) * TS);
    pb[r] = tex(at + (4 * n + 2 + h) * TS);
    pc[r] = tex(at + (8 + 2 * n + h) * TS);
#endif
}

// sub_dot is row r's sub-unit j times x.
float sub_dot(uint r, uint j, XP xp) {
#if defined(DQ_Q4_0)
    vec4 la = vec4(0.0), lb = vec4(0.0);
    [[unroll]] for (uint i = 0; i < 4; i++) {
        la = fma(dq_bits4(pa[r][i], 0, 15u), xp.v[i], fma(dq_bits4(pa[r][i], 4, 15u), xp.v[4 + i], la));
        lb = fma(dq_bits4(pb[r][i], 0, 15u), xp.v[8 + i], fma(dq_bits4(pb[r][i], 4, 15u), xp.v[12 + i], lb));
    }
    vec2 d = unpackHalf2x16(ph[r][j]);
    return d.x * (hsum(la) - 8.0 * (xp.s[0] + xp.s[1])) + d.y * (hsum(lb) - 8.0 * (xp.s[2] + xp.s[3]));
#elif defined(DQ_Q8_0)
    vec4 la = vec4(0.0), lb = vec4(0.0);
    [[unroll]] for (uint i = 0; i < 4; i++) {
        la = fma(dq_i8x4(pa[r][i]), xp.v[i], fma(dq_i8x4(pb[r][i]), xp.v[4 + i], la));
        lb = fma(dq_i8x4(pc[r][i]), xp.v[8 + i], fma(dq_i8x4(pd[r][i]), xp.v[12 + i], lb));
    }
    vec2 d = unpackHalf2x16(ph[r][j]);
    return d.x * hsum(la) + d.y * hsum(lb);
#elif defined(DQ_Q4_K)
    return k_unit_dot(ph[r], pa[r], pb[r], uvec4(0), uvec4(0), j, xp);
#elif defined(DQ_Q5_K)
    return k_unit_dot(ph[r], pa[r], pb[r], pd[r], pe[r], j, xp);
#else
    uvec2 sc = j < 2 ? ph[r].xy : ph[r].zw;
    return q6_unit_dot(pa[r], pb[r], pc[r], sc, j % 2, pdd[r], xp);
#endif
}

// packed_rows adds to sum[t * NR + r] this lane's share of row r times
// vector t.
void packed_rows(uint row0) {
    uint lane = gl_LocalInvocationID.x;
    uint units = p.K / 256;
    uint steps = (units + WG - 1) / WG;
    uint g = row0 / ROWS;
    for (uint s = 0; s < steps; s++) {
        uint lu = s * WG + lane;
        uint xu_at = lu < units ? lu : 0;
        for (uint j = 0; j < 4; j++) {
            [[unroll]] for (uint r = 0; r < NR; r++) {
                uint sb = p.w_off / 8 + (r / ROWS) * (p.up_delta / 8) + (g * steps + s) * STEP;
                uint at = sb + (r % ROWS) * WG + lane;
                uint tail = sb + PT * ROWS * WG + (r % ROWS) * TAIL + lane / 8;
                fetch_sub(r, at, j, tail);
            }
            [[unroll]] for (uint t = 0; t < NT; t++) {
                xo = x_at(t);
                XP xp = load_xp(xu_at, j);
                [[unroll]] for (uint r = 0; r < NR; r++) {
                    sum[t * NR + r] += sub_dot(r, j, xp);
                }
            }
        }
    }
}

#endif

// The current unit of each of the workgroup's rows (GGUF layout).
WU wu[NR];

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

#if defined(PACKED)
    packed_rows(row0);
#else
#if defined(MV_FINE)
    if (FINE != 0) {
        fine_rows();
    } else
#endif
    {
        uint units = p.K / UNIT;
        xo = x_at(0);
        for (uint u = tid; u < units; u += WG) {
            if (NT > 1) {
                [[unroll]] for (uint r = 0; r < NR; r++) {
                    wu[r] = load_w(base[r], u);
                }
            }
            [[unroll]] for (uint t = 0; t < NT; t++) {
                if (NT > 1) {
                    xo = x_at(t);
                }
                XU xu = load_x(u);
                [[unroll]] for (uint r = 0; r < NR; r++) {
                    // One vector loads each unit where it uses it: holding
                    // all rows' units first (as a batch must) made the
                    // single-vector Q6_K kernel 4× slower on an H200.
                    if (NT > 1) {
                        sum[t * NR + r] += unit_dot(wu[r], u, xu);
                    } else {
                        sum[t * NR + r] += unit_dot(load_w(base[r], u), u, xu);
                    }
                }
            }
        }
    }
#endif

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
