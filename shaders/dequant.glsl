// dequant.glsl: decoding GGUF weight data (F32, F16, BF16, Q8_0, Q4_0) in
// a compute shader.
//
// Quantized rows are only 2-byte aligned (a Q8_0 block is 34 bytes, a Q4_0
// block 18), so every type is addressed here in uint16_t units: a row, a
// block and an element are all found from a uint16 index into the weight
// buffer. Arithmetic is f32; no 8-bit storage or f16 arithmetic is needed.
//
// Before including, the shader must:
//   - enable GL_EXT_shader_16bit_storage;
//   - define exactly one of DQ_F32, DQ_F16, DQ_BF16, DQ_Q8_0, DQ_Q4_0;
//   - define DQ_U16(i) as an expression giving the i-th uint16_t of the
//     weight data, e.g. `#define DQ_U16(i) w16[i]`.
//
// It then provides:
//   DQ_BLOCK        elements per storage block (1 or 32)
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

#else
#error "define one of DQ_F32, DQ_F16, DQ_BF16, DQ_Q8_0, DQ_Q4_0 before including dequant.glsl"
#endif

uint dq_row_u16(uint k) { return (k / DQ_BLOCK) * DQ_BLOCK_U16; }
