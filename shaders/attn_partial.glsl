// attn_partial.glsl: flash attention of one KV head group's queries over one
// block of KV rows, written as an unnormalised partial (m, l, O) that
// attn_merge folds exactly. Included by attn_partial_<ktype>[_<vtype>].comp
// after it defines the K and V types (see attn_kv.glsl). This is the GPU
// variant; attn_partial_cpu.glsl computes the same thing in a form
// that suits CPU drivers.
//
// Grid: x = query tile (BR tokens), y = block b of the bound KV range (rows
// [b*block, min((b+1)*block, kv_rows))), z = KV head within the dispatch
// (its K/V sit z*slot_stride elements into the bound ranges).
//
// A workgroup holds the R = BR*G query rows of its tile (G query heads per
// token, all served by the same K/V, so K/V are read once per group) in
// shared memory, pre-multiplied by scale. It walks the block in sub-tiles of
// BC rows: K sub-tile to shared, scores S = Q K^T for R x BC, one thread per
// row updates the running max and turns scores into probabilities, V
// sub-tile to shared (over K), then every thread adds P V into the output
// elements it owns in registers. Scores outside a token's visible range
// (see attn_visible in attn_common.glsl: causal, and within the sliding
// window when there is one) are excluded; a row with nothing visible in the
// block keeps m = NEG, l = 0, O = 0. With a soft cap c, a visible score s
// becomes c*tanh(s/c) before the softmax.
//
// NEG (-FLT_MAX) stands for "no score yet" instead of -inf so that the
// rescale factor exp(m_old - m_new) is exp(0) = 1, not NaN, while a row has
// seen nothing, and so that no infinities reach drivers that assume none.
//
// Partial layout (floats): parts[part][token][head][E] with E = HD + 4,
// part = part_base + b, head = z*G + j (j = query head within the group),
// n_tokens tokens and n_kv*G heads per part. An entry holds O[0..HD) then
// m, l, 0, 0 (vec4-aligned so O and (m, l) move as vec4).
//
// Bindings: 0 Q (f32 [n_tokens][q_heads*HD]), 1 K, 2 V ([rows][HD] per
// head, in elements whatever the type: slot_stride and row offsets count
// values, a quantized row being HD/32 blocks), 3 positions (u32
// [n_tokens]), 4 parts (f32, written).

#extension GL_EXT_control_flow_attributes : enable

#include "attn_common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128; // threads per workgroup
layout(constant_id = 1) const uint HD = 128; // head dimension, multiple of 4
layout(constant_id = 2) const uint G = 1;    // query heads per KV head
layout(constant_id = 3) const uint BR = 1;   // query tokens per workgroup
layout(constant_id = 4) const uint BC = 32;  // KV rows per sub-tile

const uint HD4 = HD / 4;
const uint R = BR * G;         // query rows per workgroup
const uint KS = HD4 + 1;       // shared K/V row stride in vec4, padded against bank conflicts
const uint E4 = HD4 + 1;       // partial entry size in vec4
const uint NS = (R * BC + WG - 1) / WG;   // scores per thread per sub-tile
const uint NO = (R * HD4 + WG - 1) / WG;  // output vec4s per thread

layout(push_constant) uniform Push {
    uint n_tokens;    // query tokens
    uint q_heads;     // query heads per Q row
    uint q_head0;     // query head served by z = 0, j = 0
    uint kv_start;    // absolute position of row 0 of the bound K/V
    uint kv_rows;     // rows in the bound range, per head
    uint block;       // rows per block
    uint part_base;   // part index of block 0
    uint slot_stride; // elements between heads' slots (multiple of 4)
    uint n_kv;        // KV heads in the dispatch (grid z)
    float scale;      // score scale, usually 1/sqrt(HD)
    uint window;      // sliding window in positions, 0 for none
    float softcap;    // score soft cap, 0 for none
    uint ring;        // rows of a ring slot, 0 for none (see attn_block)
} p;

layout(set = 0, binding = 0) readonly buffer Qb { vec4 q[]; };
#include "attn_kv.glsl" // bindings 1 (K) and 2 (V), load_k and load_v
layout(set = 0, binding = 3) readonly buffer Pos { uint pos[]; };
layout(set = 0, binding = 4) writeonly buffer Parts { vec4 parts[]; };

shared vec4 Qs[R * HD4];
shared vec4 KVs[BC * KS];
shared float Ps[R * BC];
shared float Ms[R];
shared float Ls[R];
shared float As[R];
shared uint Tpos[BR];

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint t0 = gl_WorkGroupID.x * BR;
    const uint b = gl_WorkGroupID.y;
    const uint z = gl_WorkGroupID.z;
    const uint nt = min(BR, p.n_tokens - t0);
    uint row0, rows, first; // first: the absolute position of the block's row 0
    attn_block(b, p.kv_start, p.kv_rows, p.block, p.ring, pos[p.n_tokens - 1u], row0, rows, first);
    const uint kvbase = z * (p.slot_stride / 4) + row0 * HD4;

    for (uint i = tid; i < R * HD4; i += WG) {
        const uint r = i / HD4, d4 = i % HD4;
        const uint tl = r / G, j = r % G;
        vec4 x = vec4(0);
        if (tl < nt) {
            x = p.scale * q[((t0 + tl) * p.q_heads + p.q_head0 + z * G + j) * HD4 + d4];
        }
        Qs[i] = x;
    }
    for (uint i = tid; i < BR; i += WG) {
        Tpos[i] = i < nt ? pos[t0 + i] : 0;
    }
    for (uint i = tid; i < R; i += WG) {
        Ms[i] = NEG;
        Ls[i] = 0.0;
    }
    // Rows past the tile's last visible position, and rows before the
    // window of its first, are masked for every query: walk only the rows
    // between (skipping a fully masked sub-tile is exactly a no-op).
    uint pmax = 0, pmin = 0xffffffffu;
    for (uint tl = 0; tl < nt; tl++) {
        pmax = max(pmax, pos[t0 + tl]);
        pmin = min(pmin, pos[t0 + tl]);
    }
    const uint live = pmax < first ? 0 : min(rows, pmax - first + 1);
    const uint skip = min(live, attn_skip(pmin, first, p.window));
    // Sub-tiles start at multiples of BC from the block's row 0, whatever
    // the tile's window start, so that a query's rows fall into the same
    // sub-tiles, and round the same, whichever chunk it comes in (prefix
    // reuse gives the bits of a fresh prefill). The rows of the first
    // sub-tile before skip, masked for every query here, load as zeros:
    // they may hold anything, and zeros change no sum.
    const uint from = skip < live ? skip / BC * BC : live;

    vec4 acc[NO];
    [[unroll]] for (uint n = 0; n < NO; n++) {
        acc[n] = vec4(0);
    }
    barrier();

    for (uint c0 = from; c0 < live; c0 += BC) {
        const uint nc = min(BC, live - c0);
        for (uint i = tid; i < BC * HD4; i += WG) {
            const uint c = i / HD4, d4 = i % HD4;
            KVs[c * KS + d4] = c < nc && c0 + c >= skip ? load_k(kvbase + (c0 + c) * HD4 + d4) : vec4(0);
        }
        barrier();
        [[unroll]] for (uint n = 0; n < NS; n++) {
            const uint i = tid + n * WG;
            if (i < R * BC) {
                const uint r = i / BC, c = i % BC;
                const uint tl = r / G;
                float s = NEG;
                if (c < nc && tl < nt && attn_visible(first + c0 + c, Tpos[tl], p.window)) {
                    float dot4 = 0.0;
                    for (uint d4 = 0; d4 < HD4; d4++) {
                        dot4 += dot(Qs[r * HD4 + d4], KVs[c * KS + d4]);
                    }
                    s = attn_cap(dot4, p.softcap);
                }
                Ps[i] = s;
            }
        }
        barrier();
        for (uint i = tid; i < BC * HD4; i += WG) {
            const uint c = i / HD4, d4 = i % HD4;
            KVs[c * KS + d4] = c < nc && c0 + c >= skip ? load_v(kvbase + (c0 + c) * HD4 + d4) : vec4(0);
        }
        for (uint r = tid; r < R; r += WG) {
            const float mo = Ms[r];
            float mx = mo;
            for (uint c = 0; c < nc; c++) {
                mx = max(mx, Ps[r * BC + c]);
            }
            float sum = 0.0;
            for (uint c = 0; c < nc; c++) {
                const float s = Ps[r * BC + c];
                const float e = s == NEG ? 0.0 : exp(s - mx);
                Ps[r * BC + c] = e;
                sum += e;
            }
            const float alpha = exp(mo - mx);
            Ms[r] = mx;
            Ls[r] = Ls[r] * alpha + sum;
            As[r] = alpha;
        }
        barrier();
        [[unroll]] for (uint n = 0; n < NO; n++) {
            const uint i = tid + n * WG;
            if (i < R * HD4) {
                const uint r = i / HD4, d4 = i % HD4;
                vec4 o = acc[n] * As[r];
                for (uint c = 0; c < nc; c++) {
                    o += Ps[r * BC + c] * KVs[c * KS + d4];
                }
                acc[n] = o;
            }
        }
        barrier();
    }

    const uint heads = p.n_kv * G;
    const uint part = p.part_base + b;
    [[unroll]] for (uint n = 0; n < NO; n++) {
        const uint i = tid + n * WG;
        if (i < R * HD4) {
            const uint r = i / HD4, d4 = i % HD4;
            const uint tl = r / G, j = r % G;
            if (tl < nt) {
                parts[((part * p.n_tokens + t0 + tl) * heads + z * G + j) * E4 + d4] = acc[n];
            }
        }
    }
    for (uint r = tid; r < R; r += WG) {
        const uint tl = r / G, j = r % G;
        if (tl < nt) {
            parts[((part * p.n_tokens + t0 + tl) * heads + z * G + j) * E4 + HD4] =
                vec4(Ms[r], Ls[r], 0.0, 0.0);
        }
    }
}
