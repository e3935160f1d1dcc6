#version 450
// attn_merge: folds flash-attention partials (see attn_partial.glsl for the
// layout) part_first .. part_first+n_parts-1, one after another in index
// order, into a running accumulator acc[token][head][E] of the same layout,
// and on finalize writes O/l to out[token][(out_head0 + head)*HD + d].
//
// Folding is strictly sequential and the accumulator is stored as the same
// f32 values the loop carries, so merging parts 0..9 in one dispatch or
// 0..3 then 4..9 in two gives bit-identical results. Folding a partial into
// the neutral accumulator (m = NEG, l = 0, O = 0; what init selects instead
// of reading acc) reproduces the partial exactly. With m = NEG for "nothing
// seen" both rescale factors are exp(0) = 1 when neither side has seen a
// score, so l and O stay 0 instead of becoming NaN; a row that saw nothing
// finalizes to 0.
//
// A workgroup of 64 threads owns whole entries (HD/4 threads each, one vec4
// of O per thread), so every thread of an entry reads the old (m, l) before
// the barrier and only then does one of them overwrite it.
//
// Bindings: 0 parts (read), 1 acc (read and written), 2 out (written on
// finalize; bind any range otherwise).

#extension GL_EXT_control_flow_attributes : enable

layout(local_size_x = 64) in;
layout(constant_id = 0) const uint HD = 128; // head dimension, multiple of 4, <= 256

const uint HD4 = HD / 4;
const uint E4 = HD4 + 1;        // entry size in vec4: O then (m, l, 0, 0)
const uint EPW = 64 / HD4;      // entries per workgroup
const float NEG = -3.402823466e38;

layout(push_constant) uniform Push {
    uint n_tokens;
    uint heads;      // heads per token in parts and acc
    uint part_first;
    uint n_parts;
    uint init;       // 1: start from the neutral element instead of acc
    uint finalize;   // 1: also write O/l to out
    uint out_heads;  // heads per out row
    uint out_head0;  // out head of entry head 0
} p;

layout(set = 0, binding = 0) readonly buffer Parts { vec4 parts[]; };
layout(set = 0, binding = 1) buffer Acc { vec4 acc[]; };
layout(set = 0, binding = 2) writeonly buffer Out { vec4 o4[]; };

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    const uint el = tid / HD4, d4 = tid % HD4;
    const uint entries = p.n_tokens * p.heads;
    const uint e = wg * EPW + el;
    const bool valid = el < EPW && e < entries;

    float m = NEG, l = 0.0;
    vec4 o = vec4(0);
    if (valid && p.init == 0) {
        const vec4 ml = acc[e * E4 + HD4];
        m = ml.x;
        l = ml.y;
        o = acc[e * E4 + d4];
    }
    barrier();
    if (!valid) {
        return;
    }
    for (uint i = 0; i < p.n_parts; i++) {
        const uint base = ((p.part_first + i) * entries + e) * E4;
        const vec4 ml = parts[base + HD4];
        const float mn = max(m, ml.x);
        const float a = exp(m - mn);
        const float c = exp(ml.x - mn);
        l = l * a + ml.y * c;
        o = o * a + parts[base + d4] * c;
        m = mn;
    }
    acc[e * E4 + d4] = o;
    if (d4 == 0) {
        acc[e * E4 + HD4] = vec4(m, l, 0.0, 0.0);
    }
    if (p.finalize != 0) {
        const uint t = e / p.heads, h = e % p.heads;
        o4[(t * p.out_heads + p.out_head0 + h) * HD4 + d4] = l > 0.0 ? o / l : vec4(0);
    }
}
