// kv_quant.glsl: llama.cpp's Q8_0 and Q4_0 blocks for KV slots: the
// quantizers the KV store runs (byte for byte ggml's quantize_row_q8_0_ref
// and quantize_row_q4_0_ref, as gguf.Quantize is) and the dequantizing
// loaders attention reads K and V through. A block is 32 values along the
// head dimension: Q8_0 {f16 d; int8 q[32]} (34 bytes), Q4_0 {f16 d;
// uint8 qs[16]} (18 bytes, value j in the low nibble of byte j, value
// j+16 in the high one). Both are 2-byte aligned, so slots are bound as
// uint16_t arrays (16-bit storage, which f16 slots need anyway).
//
// Vulkan rounds + and * correctly but lets division be off by 2.5 ulp and
// leaves the rounding of packHalf2x16 to the driver, so the quantizers
// divide and round the f16 scale in integer arithmetic: a scale one ulp
// off would change every byte of the block. Operands below 2^-126, which
// devices may flush anyway, quantize as zeros.

// kq_div is a/b rounded to nearest even, for a >= 0 and b > 0 normal,
// by long division of the significands.
float kq_div(float a, float b) {
    const uint ia = floatBitsToUint(a), ib = floatBitsToUint(b);
    const uint ea = ia >> 23, eb = ib >> 23;
    if (ea == 0u) {
        return 0.0;
    }
    uint ma = (ia & 0x7fffffu) | 0x800000u;
    const uint mb = (ib & 0x7fffffu) | 0x800000u;
    int e = int(ea) - int(eb) + 127;
    if (ma < mb) {
        ma <<= 1;
        e -= 1;
    }
    // 25 quotient bits, the last to round on; the remainder is the sticky bit.
    uint q = 0u, r = ma;
    for (int i = 0; i < 25; i++) {
        q <<= 1;
        if (r >= mb) {
            r -= mb;
            q |= 1u;
        }
        r <<= 1;
    }
    uint m = q >> 1;
    if ((q & 1u) != 0u && (r != 0u || (m & 1u) != 0u)) {
        m++;
    }
    if (m == 0x1000000u) {
        m >>= 1;
        e++;
    }
    if (e <= 0) {
        return 0.0;
    }
    if (e >= 255) {
        return uintBitsToFloat(0x7f800000u);
    }
    return uintBitsToFloat((uint(e) << 23) | (m & 0x7fffffu));
}

// kq_half is the f16 bits of f rounded to nearest even (ggml's
// GGML_FP32_TO_FP16), subnormals and overflow included.
uint kq_half(float f) {
    const uint x = floatBitsToUint(f);
    const uint sign = (x >> 16) & 0x8000u;
    const uint ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) {
        return sign | 0x7e00u;
    }
    if (ax >= 0x47800000u) {
        return sign | 0x7c00u;
    }
    if (ax < 0x38800000u) { // below 2^-14: an f16 subnormal, units of 2^-24
        const uint e = ax >> 23;
        if (e < 102u) {
            return sign;
        }
        const uint m = (ax & 0x7fffffu) | 0x800000u;
        const uint shift = 126u - e;
        uint h = m >> shift;
        const uint rem = m & ((1u << shift) - 1u), half_ = 1u << (shift - 1u);
        if (rem > half_ || (rem == half_ && (h & 1u) != 0u)) {
            h++;
        }
        return sign | h;
    }
    const uint r = ax - 0x38000000u; // rebias the exponent from 127 to 15
    uint h = r >> 13;
    const uint rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) != 0u)) {
        h++; // a carry into the exponent is right, up to infinity
    }
    return sign | h;
}

// kq_round is C's roundf: halves away from zero (GLSL's round leaves
// halves to the driver). x - trunc(x) is exact.
float kq_round(float x) {
    const float t = trunc(x);
    return abs(x - t) >= 0.5 ? t + sign(x) : t;
}

// kq_quant8 quantizes x to a Q8_0 block: the f16 scale bits in q[0], the
// codes as 16 little-endian byte pairs in q[1..16].
void kq_quant8(const float x[32], out uint q[17]) {
    float amax = 0.0;
    for (int j = 0; j < 32; j++) {
        amax = max(amax, abs(x[j]));
    }
    const float d = kq_div(amax, 127.0);
    const float id = d != 0.0 ? kq_div(1.0, d) : 0.0;
    q[0] = kq_half(d);
    for (int j = 0; j < 16; j++) {
        precise const float x0 = x[2 * j] * id;
        precise const float x1 = x[2 * j + 1] * id;
        q[1 + j] = (uint(int(kq_round(x0))) & 0xffu) | ((uint(int(kq_round(x1))) & 0xffu) << 8);
    }
}

// kq_quant4 quantizes x to a Q4_0 block: the f16 scale bits in q[0], the
// 16 code bytes as 8 little-endian pairs in q[1..8].
void kq_quant4(const float x[32], out uint q[9]) {
    float amax = 0.0, vmax = 0.0;
    for (int j = 0; j < 32; j++) {
        if (amax < abs(x[j])) {
            amax = abs(x[j]);
            vmax = x[j];
        }
    }
    precise const float d = vmax * -0.125; // vmax / -8, exact
    const float id = d != 0.0 ? sign(d) * kq_div(1.0, abs(d)) : 0.0;
    q[0] = kq_half(d);
    uint b[16];
    for (int j = 0; j < 16; j++) {
        precise const float x0 = x[j] * id;
        precise const float x1 = x[j + 16] * id;
        precise const float y0 = x0 + 8.5;
        precise const float y1 = x1 + 8.5;
        b[j] = uint(min(15, int(y0))) | (uint(min(15, int(y1))) << 4);
    }
    for (int j = 0; j < 8; j++) {
        q[1 + j] = b[2 * j] | (b[2 * j + 1] << 8);
    }
}

// KQ_LOAD8(fn, buf) defines vec4 fn(uint i): values 4i … 4i+3 of the Q8_0
// array buf (uint16_t[]), dequantized as ggml does (d · q).
#define KQ_LOAD8(fn, buf)                                                        \
    vec4 fn(uint i) {                                                            \
        const uint o = (i >> 3u) * 17u, j = (i & 7u) * 2u;                       \
        const float d = unpackHalf2x16(uint(buf[o])).x;                          \
        const uint w = uint(buf[o + 1u + j]) | (uint(buf[o + 2u + j]) << 16);    \
        const ivec4 q = ivec4(int(w << 24), int(w << 16), int(w << 8), int(w)) >> 24; \
        return d * vec4(q);                                                      \
    }

// KQ_LOAD4(fn, buf) defines vec4 fn(uint i): values 4i … 4i+3 of the Q4_0
// array buf (uint16_t[]), dequantized as ggml does (d · (q − 8)).
#define KQ_LOAD4(fn, buf)                                                        \
    vec4 fn(uint i) {                                                            \
        const uint o = (i >> 3u) * 9u, j = (i & 7u) * 4u;                        \
        const float d = unpackHalf2x16(uint(buf[o])).x;                          \
        const uint b = (j & 15u) >> 1;                                           \
        const uint w = uint(buf[o + 1u + b]) | (uint(buf[o + 2u + b]) << 16);    \
        const uvec4 n = (uvec4(w, w >> 8, w >> 16, w >> 24) >> (j < 16u ? 0u : 4u)) & 0xfu; \
        return d * (vec4(n) - 8.0);                                              \
    }
