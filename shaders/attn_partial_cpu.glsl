// CPU-variant prototype
#extension GL_EXT_control_flow_attributes : enable

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 8;
layout(constant_id = 1) const uint HD = 128;
layout(constant_id = 2) const uint G = 1;
layout(constant_id = 3) const uint BR = 1;
layout(constant_id = 4) const uint BC = 1; // unused here

const uint HD4 = HD / 4;
const uint R = BR * G;
const uint E4 = HD4 + 1;
const float NEG = -3.402823466e38;

layout(push_constant) uniform Push {
    uint n_tokens; uint q_heads; uint q_head0; uint kv_start; uint kv_rows;
    uint block; uint part_base; uint slot_stride; uint n_kv; float scale;
} p;

layout(set = 0, binding = 0) readonly buffer Qb { vec4 q[]; };
layout(set = 0, binding = 1) readonly buffer Kb { KV4 k[]; };
layout(set = 0, binding = 2) readonly buffer Vb { KV4 v[]; };
layout(set = 0, binding = 3) readonly buffer Pos { uint pos[]; };
layout(set = 0, binding = 4) writeonly buffer Parts { vec4 parts[]; };

shared vec4 Ow[WG * HD4];
shared float Mw[WG * R];
shared float Lw[WG * R];

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint t0 = gl_WorkGroupID.x * BR;
    const uint b = gl_WorkGroupID.y;
    const uint z = gl_WorkGroupID.z;
    const uint nt = min(BR, p.n_tokens - t0);
    const uint row0 = b * p.block;
    const uint rows = min(p.block, p.kv_rows - row0);
    const uint kvbase = z * (p.slot_stride / 4) + row0 * HD4;
    const uint first = p.kv_start + row0;

    vec4 qr[R * HD4];
    vec4 o[R * HD4];
    float m[R], l[R];
    uint tp[BR];
    uint pmax = 0;
    [[unroll]] for (uint tl = 0; tl < BR; tl++) {
        tp[tl] = pos[t0 + min(tl, nt - 1)];
        pmax = max(pmax, tp[tl]);
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
    const uint live = pmax < first ? 0 : min(rows, pmax - first + 1);

    for (uint c0 = 0; c0 < live; c0 += WG) {
        const uint c = c0 + tid;
        const uint cl = min(c, live - 1);
        float s[R];
        [[unroll]] for (uint r = 0; r < R; r++) s[r] = 0.0;
        [[unroll]] for (uint d4 = 0; d4 < HD4; d4++) {
            const vec4 kr = vec4(k[kvbase + cl * HD4 + d4]);
            [[unroll]] for (uint r = 0; r < R; r++) s[r] += dot(qr[r * HD4 + d4], kr);
        }
        float pr[R];
        [[unroll]] for (uint r = 0; r < R; r++) {
            const bool ok = c < live && r / G < nt && first + c <= tp[r / G];
            const float mx = ok ? max(m[r], s[r]) : m[r];
            const float a = exp(m[r] - mx);
            pr[r] = ok ? exp(s[r] - mx) : 0.0;
            l[r] = l[r] * a + pr[r];
            m[r] = mx;
            [[unroll]] for (uint d4 = 0; d4 < HD4; d4++) o[r * HD4 + d4] *= a;
        }
        [[unroll]] for (uint d4 = 0; d4 < HD4; d4++) {
            const vec4 vr = vec4(v[kvbase + cl * HD4 + d4]);
            [[unroll]] for (uint r = 0; r < R; r++) o[r * HD4 + d4] += pr[r] * vr;
        }
    }

    // Combine the lanes' partials, lane by lane in order.
    [[unroll]] for (uint r = 0; r < R; r++) {
        Mw[tid * R + r] = m[r];
        Lw[tid * R + r] = l[r];
    }
    barrier();
    const uint heads = p.n_kv * G;
    const uint part = p.part_base + b;
    [[unroll]] for (uint r = 0; r < R; r++) {
        float M = NEG;
        for (uint w = 0; w < WG; w++) M = max(M, Mw[w * R + r]);
        const float f = exp(m[r] - M);
        [[unroll]] for (uint d4 = 0; d4 < HD4; d4++) Ow[tid * HD4 + d4] = o[r * HD4 + d4] * f;
        barrier();
        const uint tl = r / G, j = r % G;
        const uint eb = ((part * p.n_tokens + t0 + tl) * heads + z * G + j) * E4;
        for (uint d4 = tid; d4 < HD4; d4 += WG) {
            vec4 sum = vec4(0);
            for (uint w = 0; w < WG; w++) sum += Ow[w * HD4 + d4];
            if (tl < nt) parts[eb + d4] = sum;
        }
        if (tid == 0 && tl < nt) {
            float L = 0.0;
            for (uint w = 0; w < WG; w++) L += Lw[w * R + r] * exp(Mw[w * R + r] - M);
            parts[eb + HD4] = vec4(M, L, 0.0, 0.0);
        }
        barrier();
    }
}
