// dequant.glsl: decoding GGUF weight data (F32, F16, BF16, Q8_0, Q4_0,
// Q4_K, Q5_K, Q6_K) in a compute shader.
//
// Quantized rows are only 2-byte aligned (a Q8_0 block is 34 bytes, a Q4_0
// block 18, a Q6_K block 210), so every type is addressed here in uint16_t units: a row, a
// block and an element are all found from a uint16 index into the weight
// buffer. Arithmetic is f32; no 8-bit storage or f16 arithmetic is needed.
//
// Before including, the shader must:
//   - enable GL_EXT_shader_16bit_storage;
//   - define exactly one of DQ_F32, DQ_F16, DQ_BF16, DQ_Q8_0, DQ_Q4_0,
//     DQ_Q4_K, DQ_Q5_K, DQ_Q6_K;
//   - define DQ_U16(i) as an expression giving the i-th uint16_t of the
//     weight data, e.g. `#define DQ_U16(i) w16[i]`.
//
// It then provides:
//   DQ_BLOCK        elements per storage block (1, 32 or 256)
//   DQ_BLOCK_U16    uint16 words per storage block
//   uint  dq_row_u16(uint k)           words in a row of k elements
//   float dq_load(uint row, uint k)    element k of the row starting at word row
//   vec4  dq_load4(uint row, uint k)   elements k..k+3 (k % 4 == 0)
// and small decoders used by kernels that read several words at once:
//   float dq_half(uint v)              f16 bits to float
//   vec2  dq_bf16x2(uint v)            two bf16 packed in a uint
//   vec2  dq_i8x2(uint v)              two int8 in the low 16 bits of v
//   vec4  dq_i8x4(uint v)              four int8 packed in v
//   vec4  dq_u4lo(uint v), dq_u4hi(uint v)
//                                      low / high nibbles of the four bytes
//                                      of v, minus 8 (Q4_0's offset)
//   vec4  dq_bits4(uint v, uint sh, uint mask)
//                                      (byte >> sh) & mask for the four
//                                      bytes of v (dq_ubits4: as integers)
//   vec4  dq_bytes4(uint v)            the four bytes of v
//   vec4  dq_bits4hi(uint v, uint sh, uint h, uint hsh, uint hmask)
//                                      a nibble of v's bytes with high bits
//                                      from h's (K-quants)
// and for the K-quants (blk: the block's first word):
//   uint  dq_word(uint blk, uint b)    bytes b..b+3 of the block (b even)
//   vec2  dq_k_scale_min(uint blk, uint s)
//                                      Q4_K/Q5_K: (d·sc, dmin·m) of sub-block s

#ifndef DQ_U16
#error "define DQ_U16(i) before including dequant.glsl"
#endif

float dq_half(uint v) { return unpackHalf2x16(v).x; }

vec2 dq_bf16x2(uint v) { return vec2(uintBitsToFloat(v << 16), uintBitsToFloat(v & 0xffff0000u)); }

// bitfieldExtract on a signed value sign-extends, which is how int8 decodes.
vec2 dq_i8x2(uint v) { return vec2(bitfieldExtract(int(v), 0, 8), bitfieldExtract(int(v), 8, 8)); }

vec4 dq_i8x4(uint v) {
    return vec4(bitfieldExtract(int(v), 0, 8), bitfieldExtract(int(v), 8, 8), bitfieldExtract(int(v), 16, 8),
                bitfieldExtract(int(v), 24, 8));
}

vec4 dq_u4lo(uint v) {
    return vec4(float(v & 15u), float((v >> 8) & 15u), float((v >> 16) & 15u), float((v >> 24) & 15u)) - 8.0;
}

vec4 dq_u4hi(uint v) {
    return vec4(float((v >> 4) & 15u), float((v >> 12) & 15u), float((v >> 20) & 15u), float(v >> 28)) - 8.0;
}

uvec4 dq_ubits4(uint v, uint sh, uint mask) { return (uvec4(v) >> uvec4(sh, sh + 8u, sh + 16u, sh + 24u)) & mask; }

vec4 dq_bits4(uint v, uint sh, uint mask) { return vec4(dq_ubits4(v, sh, mask)); }

// dq_bytes4 converts the four bytes of v.
vec4 dq_bytes4(uint v) { return vec4(v & 0xffu, (v >> 8) & 0xffu, (v >> 16) & 0xffu, v >> 24); }

// dq_bits4hi returns the nibbles at bit sh of v's four bytes with bits
// (h >> hsh) & hmask of the same bytes of h above them: 5- or 6-bit
// K-quants, assembled for all four bytes at once before the conversion.
vec4 dq_bits4hi(uint v, uint sh, uint h, uint hsh, uint hmask) {
    uint hb = ((h >> hsh) & (hmask * 0x01010101u)) << 4;
    return dq_bytes4(((v >> sh) & 0x0f0f0f0fu) | hb);
}

#if defined(DQ_Q4_K) || defined(DQ_Q5_K) || defined(DQ_Q6_K)
// Byte offsets within a block are even wherever four bytes are read, so two
// 16-bit loads serve on any row alignment.
uint dq_word(uint blk, uint b) { return uint(DQ_U16(blk + b / 2)) | (uint(DQ_U16(blk + b / 2 + 1)) << 16); }
uint dq_byte(uint blk, uint b) { return (uint(DQ_U16(blk + b / 2)) >> (8 * (b & 1))) & 0xffu; }
#endif

#if defined(DQ_Q4_K) || defined(DQ_Q5_K)
// The 6-bit scale and min of sub-block s, packed in the 12 bytes from byte
// 4 (as gguf.kScaleMin reads them): s < 4 keeps them in the low 6 bits of
// scale bytes s and s+4; s >= 4 keeps their low 4 bits in the nibbles of
// scale byte s+4 and their top 2 bits in the top bits of scale bytes s-4
// (scale) and s (min).
vec2 dq_k_scale_min(uint blk, uint s) {
    uint sc, m;
    if (s < 4) {
        sc = dq_byte(blk, 4 + s) & 63u;
        m = dq_byte(blk, 8 + s) & 63u;
    } else {
        uint b = dq_byte(blk, 8 + s);
        sc = (b & 15u) | ((dq_byte(blk, s) >> 6) << 4);
        m = (b >> 4) | ((dq_byte(blk, 4 + s) >> 6) << 4);
    }
    return vec2(dq_half(uint(DQ_U16(blk))) * float(sc), dq_half(uint(DQ_U16(blk + 1))) * float(m));
}
#endif

#if defined(DQ_F32)

#define DQ_BLOCK 1
#define DQ_BLOCK_U16 2
float dq_load(uint row, uint k) {
    return uintBitsToFloat(uint(DQ_U16(row + 2 * k)) | (uint(DQ_U16(row + 2 * k + 1)) << 16));
}
vec4 dq_load4(uint row, uint k) {
    return vec4(dq_load(row, k), dq_load(row, k + 1), dq_load(row, k + 2), dq_load(row, k + 3));
}

#elif defined(DQ_F16)

#define DQ_BLOCK 1
#define DQ_BLOCK_U16 1
float dq_load(uint row, uint k) { return dq_half(uint(DQ_U16(row + k))); }
vec4 dq_load4(uint row, uint k) {
    return vec4(dq_load(row, k), dq_load(row, k + 1), dq_load(row, k + 2), dq_load(row, k + 3));
}

#elif defined(DQ_BF16)

#define DQ_BLOCK 1
#define DQ_BLOCK_U16 1
float dq_load(uint row, uint k) { return uintBitsToFloat(uint(DQ_U16(row + k)) << 16); }
vec4 dq_load4(uint row, uint k) {
    return vec4(dq_load(row, k), dq_load(row, k + 1), dq_load(row, k + 2), dq_load(row, k + 3));
}

#elif defined(DQ_Q8_0)

// Block: f16 scale d, then 32 int8 q; value j = d * q[j].
#define DQ_BLOCK 32
#define DQ_BLOCK_U16 17
float dq_load(uint row, uint k) {
    uint blk = row + (k / 32) * 17;
    uint j = k % 32;
    uint v = uint(DQ_U16(blk + 1 + j / 2));
    return dq_half(uint(DQ_U16(blk))) * float(bitfieldExtract(int(v), int(8 * (j & 1)), 8));
}
vec4 dq_load4(uint row, uint k) {
    uint blk = row + (k / 32) * 17;
    uint w = blk + 1 + (k % 32) / 2;
    return dq_half(uint(DQ_U16(blk))) *
           vec4(dq_i8x2(uint(DQ_U16(w))), dq_i8x2(uint(DQ_U16(w + 1))));
}

#elif defined(DQ_Q4_0)

// Block: f16 scale d, then 16 bytes; byte j holds element j in its low
// nibble and element j+16 in its high nibble; value = d * (nibble - 8).
#define DQ_BLOCK 32
#define DQ_BLOCK_U16 9
float dq_load(uint row, uint k) {
    uint blk = row + (k / 32) * 9;
    uint j = k % 32;
    uint byte_ = (uint(DQ_U16(blk + 1 + (j % 16) / 2)) >> (8 * (j & 1))) & 0xffu;
    uint nib = j < 16 ? byte_ & 15u : byte_ >> 4;
    return dq_half(uint(DQ_U16(blk))) * (float(nib) - 8.0);
}
vec4 dq_load4(uint row, uint k) {
    uint blk = row + (k / 32) * 9;
    uint j = k % 32;
    uint w = blk + 1 + (j % 16) / 2;
    uint v = uint(DQ_U16(w)) | (uint(DQ_U16(w + 1)) << 16);
    return dq_half(uint(DQ_U16(blk))) * (j < 16 ? dq_u4lo(v) : dq_u4hi(v));
}

#elif defined(DQ_Q4_K) || defined(DQ_Q5_K)

// Super-block (see gguf/kquants.go): f16 d, f16 dmin, 12 scale bytes, (Q5_K:
// 32 bytes qh,) 128 bytes qs. Element 32s+l: nibble s%2 of qs[32(s/2)+l]
// (+16 when bit s of qh[l] is set); value d·sc·q − dmin·m.
#define DQ_BLOCK 256
#if defined(DQ_Q4_K)
#define DQ_BLOCK_U16 72
#define DQ_QS 16u
#else
#define DQ_BLOCK_U16 88
#define DQ_QS 48u
#endif
vec4 dq_load4(uint row, uint k) {
    uint blk = row + (k / 256) * DQ_BLOCK_U16;
    uint s = (k % 256) / 32, l = k % 32;
    vec4 q = dq_bits4(dq_word(blk, DQ_QS + 32 * (s / 2) + l), 4 * (s % 2), 15u);
#if defined(DQ_Q5_K)
    q += 16.0 * dq_bits4(dq_word(blk, 16 + l), s, 1u);
#endif
    vec2 sm = dq_k_scale_min(blk, s);
    return sm.x * q - sm.y;
}
float dq_load(uint row, uint k) { return dq_load4(row, k & ~3u)[k & 3u]; }

#elif defined(DQ_Q6_K)

// Super-block: ql[128], qh[64], int8 scales[16], f16 d (105 words). Element
// e: half n = e/128, quarter c = (e%128)/32, l = e%32; low 4 bits: nibble
// c/2 of ql[64n + 32(c%2) + l]; high 2 bits: bits 2c of qh[32n + l]; scale
// scales[8n + 2c + l/16]; value d·scale·(q − 32).
#define DQ_BLOCK 256
#define DQ_BLOCK_U16 105
vec4 dq_load4(uint row, uint k) {
    uint blk = row + (k / 256) * 105;
    uint e = k % 256;
    uint n = e / 128, c = (e % 128) / 32, l = e % 32;
    vec4 q = dq_bits4(dq_word(blk, 64 * n + 32 * (c % 2) + l), 4 * (c / 2), 15u) +
             16.0 * dq_bits4(dq_word(blk, 128 + 32 * n + l), 2 * c, 3u);
    float sc = float(bitfieldExtract(int(dq_byte(blk, 192 + 8 * n + 2 * c + l / 16)), 0, 8));
    return dq_half(uint(DQ_U16(blk + 104))) * sc * (q - 32.0);
}
float dq_load(uint row, uint k) { return dq_load4(row, k & ~3u)[k & 3u]; }

#else
#error "define one of DQ_F32, DQ_F16, DQ_BF16, DQ_Q8_0, DQ_Q4_0, DQ_Q4_K, DQ_Q5_K, DQ_Q6_K before including dequant.glsl"
#endif

uint dq_row_u16(uint k) { return (k / DQ_BLOCK) * DQ_BLOCK_U16; }
