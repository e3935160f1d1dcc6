// attn_partial_cpu.glsl: the attn_partial contract (grid, bindings, push
// constants, partial layout, masking; see attn_partial.glsl) computed in a
// way that suits CPU Vulkan drivers such as lavapipe. Included by
// attn_partial_cpu_<ktype>[_<vtype>].comp after it defines the K and V
// types (see attn_kv.glsl).
//
// A CPU driver runs a workgroup's invocations as SIMD lanes of one core and
// turns every shared or storage-buffer access into a per-lane loop, while
// per-invocation arrays indexed by constants stay in vector registers or on
// the stack. So here each invocation (lane) is a small flash attention of
// its own: it keeps all R = BR*G query rows and their output accumulators
// in private arrays, takes the block's rows tid, tid+WG, tid+2*WG, ...,
// reads each K and V row exactly once, and runs the online softmax over
// them. The lanes' (m, l, O) are then folded in lane order through shared
// memory. Every loop that indexes a private array runs over spec constants
// so the driver can unroll it; the softmax rescale is folded into the P V
// update for the same reason (a separate rescale loop is not unrolled).
//
// GPUs would spill these private arrays; they use attn_partial.glsl.

#extension GL_EXT_control_flow_attributes : enable

#include "attn_common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 8;   // lanes per workgroup
layout(constant_id = 1) const uint HD = 128; // head dimension, multiple of 4
layout(constant_id = 2) const uint G = 1;    // query heads per KV head
layout(constant_id = 3) const uint BR = 1;   // query tokens per workgroup
layout(constant_id = 4) const uint BC = 1;   // unused; keeps the spec layout of attn_partial

const uint HD4 = HD / 4;
const uint R = BR * G;   // query rows per workgroup
const uint E4 = HD4 + 1; // partial entry size in vec4

layout(push_constant) uniform Push {
    uint n_tokens;
    uint q_heads;
    uint q_head0;
    uint kv_start;
    uint kv_rows;
    uint block;
    uint part_base;
    uint slot_stride;
    uint n_kv;
    float scale;
    uint window;
    float softcap;
    uint ring;        // rows of a ring slot, 0 for none (see attn_block)
} p;

layout(set = 0, binding = 0) readonly buffer Qb { vec4 q[]; };
#include "attn_kv.glsl" // bindings 1 (K) and 2 (V), load_k and load_v
layout(set = 0, binding = 3) readonly buffer Pos { uint pos[]; };
layout(set = 0, binding = 4) writeonly buffer Parts { vec4 parts[]; };

shared vec4 Ow[WG * R * HD4];
shared float Mw[WG * R];
shared float Lw[WG * R];

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint t0 = gl_WorkGroupID.x * BR;
    const uint b = gl_WorkGroupID.y;
    const uint z = gl_WorkGroupID.z;
    const uint nt = min(BR, p.n_tokens - t0);
    uint row0, rows, first; // first: the absolute position of the block's row 0
    attn_block(b, p.kv_start, p.kv_rows, p.block, p.ring, pos[p.n_tokens - 1u], row0, rows, first);
    const uint kvbase = z * (p.slot_stride / 4) + row0 * HD4;

    // Padding rows of a partial tile repeat the tile's last token; they are
    // masked out and never written.
    vec4 qr[R * HD4];
    vec4 o[R * HD4];
    float m[R], l[R];
    uint tp[BR];
    uint pmax = 0, pmin = 0xffffffffu;
    [[unroll]] for (uint tl = 0; tl < BR; tl++) {
        tp[tl] = pos[t0 + min(tl, nt - 1)];
        pmax = max(pmax, tp[tl]);
        pmin = min(pmin, tp[tl]);
    }
    [[unroll]] for (uint r = 0; r < R; r++) {
        const uint tl = r / G, j = r % G;
        const uint qb = ((t0 + min(tl, nt - 1)) * p.q_heads + p.q_head0 + z * G + j) * HD4;
        [[unroll]] for (uint d4 = 0; d4 < HD4; d4++) {
            qr[r * HD4 + d4] = p.scale * q[qb + d4];
            o[r * HD4 + d4] = vec4(0);
        }
        m[r] = NEG;
        l[r] = 0.0;
    }
    // Rows past the tile's last position, and rows before the window of
    // its first, are masked for every query.
    const uint live = pmax < first ? 0 : min(rows, pmax - first + 1);
    const uint skip = min(live, attn_skip(pmin, first, p.window));
    // Lanes take rows by their index from the block's row 0, whatever the
    // tile's window start, so that a query's rows meet the same lanes, and
    // round the same, whichever chunk it comes in (prefix reuse gives the
    // bits of a fresh prefill). Lanes before skip, masked for every query
    // here, read row skip instead: the rows before it may hold anything.
    const uint from = skip < live ? skip / WG * WG : live;

    for (uint c0 = from; c0 < live; c0 += WG) {
        const uint c = c0 + tid;
        const uint cl = clamp(c, skip, live - 1); // lanes outside [skip, live) read a valid row and mask it
        float s[R];
        [[unroll]] for (uint r = 0; r < R; r++) {
            s[r] = 0.0;
        }
        [[unroll]] for (uint d4 = 0; d4 < HD4; d4++) {
            const vec4 kr = load_k(kvbase + cl * HD4 + d4);
            [[unroll]] for (uint r = 0; r < R; r++) {
                s[r] += dot(qr[r * HD4 + d4], kr);
            }
        }
        // A masked row leaves m unchanged, so its factor is exp(0) = 1 and
        // its weight 0: an exact no-op on (m, l, O).
        float w[R], a[R];
        [[unroll]] for (uint r = 0; r < R; r++) {
            const bool ok = c < live && r / G < nt && attn_visible(first + c, tp[r / G], p.window);
            const float sc = attn_cap(s[r], p.softcap);
            const float mx = ok ? max(m[r], sc) : m[r];
            a[r] = exp(m[r] - mx);
            w[r] = ok ? exp(sc - mx) : 0.0;
            l[r] = l[r] * a[r] + w[r];
            m[r] = mx;
        }
        [[unroll]] for (uint d4 = 0; d4 < HD4; d4++) {
            const vec4 vr = load_v(kvbase + cl * HD4 + d4);
            [[unroll]] for (uint r = 0; r < R; r++) {
                o[r * HD4 + d4] = o[r * HD4 + d4] * a[r] + w[r] * vr;
            }
        }
    }

    // Fold the lanes' partials, lane 0 first. One barrier only: on a CPU
    // driver every barrier splits the shader into resumable pieces, and the
    // private arrays would be saved and restored across each.
    [[unroll]] for (uint r = 0; r < R; r++) {
        Mw[tid * R + r] = m[r];
        Lw[tid * R + r] = l[r];
        [[unroll]] for (uint d4 = 0; d4 < HD4; d4++) {
            Ow[(tid * R + r) * HD4 + d4] = o[r * HD4 + d4];
        }
    }
    barrier();
    const uint heads = p.n_kv * G;
    const uint part = p.part_base + b;
    for (uint i = tid; i < R * E4; i += WG) {
        const uint r = i / E4, d4 = i % E4;
        const uint tl = r / G, j = r % G;
        if (tl < nt) {
            float M = NEG;
            for (uint x = 0; x < WG; x++) {
                M = max(M, Mw[x * R + r]);
            }
            vec4 sum = vec4(0);
            float L = 0.0;
            for (uint x = 0; x < WG; x++) {
                const float f = exp(Mw[x * R + r] - M);
                if (d4 < HD4) {
                    sum += Ow[(x * R + r) * HD4 + d4] * f;
                } else {
                    L += Lw[x * R + r] * f;
                }
            }
            const uint eb = ((part * p.n_tokens + t0 + tl) * heads + z * G + j) * E4;
            parts[eb + d4] = d4 < HD4 ? sum : vec4(M, L, 0.0, 0.0);
        }
    }
}
