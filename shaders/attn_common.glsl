// attn_common.glsl: what both attn_partial variants (attn_partial.glsl,
// attn_partial_cpu.glsl) decide the same way: which KV positions a query
// sees, and the score soft cap. Included; defines no bindings.

const float NEG = -3.402823466e38; // "no score yet", see attn_partial.glsl

// attn_visible: KV position kp is visible to a query at position tp iff
// kp <= tp (causal) and, with a sliding window w > 0, tp - kp < w: the
// query sees the w positions tp-w+1 .. tp. This is llama.cpp's standard
// sliding window (LLAMA_SWA_TYPE_STANDARD: is_masked_swa masks p0 from a
// query at p1 when p1 - p0 >= n_swa).
bool attn_visible(uint kp, uint tp, uint w) {
    return kp <= tp && (w == 0u || tp - kp < w);
}

// attn_block places block b of a dispatch (grid y): its first row in the
// bound K/V ranges (row0), its row count, and the absolute position held
// by row0 (first).
//
// Without a ring (ring == 0), block b is rows [b*block, min((b+1)*block,
// kv_rows)) of ranges whose row 0 holds position kv_start.
//
// With a ring of `ring` rows (a multiple of block; a sliding-window
// layer's slots, see offload.Layout.Rings) position q lives in row
// q % ring, and the bound ranges are whole rings. The ring's ring/block
// row blocks then hold the latest ring/block position blocks, the newest
// of which holds `last`, the chunk's last position; the dispatch covers
// them oldest first from the (kv_start/block)-th on. A position block
// before position 0 is empty (rows = 0). Stale rows past `last` in the
// newest block are never read: they lie past every query's position.
void attn_block(uint b, uint kv_start, uint kv_rows, uint block, uint ring, uint last,
                out uint row0, out uint rows, out uint first) {
    if (ring == 0u) {
        row0 = b * block;
        rows = min(block, kv_rows - row0);
        first = kv_start + row0;
        return;
    }
    const uint nb = ring / block;
    const uint age = kv_start / block + b; // 0: the oldest block the ring holds
    const uint newest = last / block;
    if (newest + age + 1u < nb) {
        row0 = 0u;
        rows = 0u;
        first = 0u;
        return;
    }
    const uint pb = newest + age + 1u - nb; // the position block
    row0 = (pb % nb) * block;
    rows = block;
    first = pb * block;
}

// attn_skip: the rows of a block starting at absolute position first that
// lie before the window of every query at positions >= pmin, which no
// query of a tile whose earliest position is pmin sees.
uint attn_skip(uint pmin, uint first, uint w) {
    if (w == 0u || pmin < w) {
        return 0u;
    }
    const uint lo = pmin - w + 1u; // the earliest visible position
    return lo > first ? lo - first : 0u;
}

// attn_tanh is tanh(x) to a few ulp. Neither form alone is accurate
// everywhere: 1 - 2/(exp(2|x|)+1) loses the leading digits of small x to
// cancellation, so below 1/4 the Taylor series is used instead (through
// x^9; the first omitted term is below 1e-8 relative there). Both forms
// are written out rather than left to the driver's tanh, whose accuracy
// Vulkan does not bound tightly and which differs between drivers.
float attn_tanh(float x) {
    const float a = abs(x);
    if (a < 0.25) {
        const float x2 = x * x;
        return x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0)))));
    }
    // exp overflows to +inf for large |x|, and 2/inf = 0 gives exactly 1.
    const float t = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
    return x < 0.0 ? -t : t;
}

// attn_cap soft-caps the score s at c: c*tanh(s/c), or s itself when c is
// 0 (no cap), applied after the scale and before the softmax as Gemma 2
// does.
float attn_cap(float s, float c) {
    return c > 0.0 ? c * attn_tanh(s / c) : s;
}
