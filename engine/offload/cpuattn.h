// cpuattn.h: decode attention of streamed KV heads on the CPU, over the
// host KV store. See cpuattn.go for the contract; this is the arithmetic.
#ifndef HEADINFER_CPUATTN_H
#define HEADINFER_CPUATTN_H

#include <stdint.h>

// Rows of K (then V) converted to f32 and attended at a time: a tile of
// HI_CPUATTN_CHUNK rows of up to 256 floats stays in L1.
#define HI_CPUATTN_CHUNK 32

// KV element types: llama.cpp's Q8_0 {f16 d; int8 q[32]} and Q4_0 {f16 d;
// uint8 qs[16]: value j in the low nibble of byte j, j+16 in the high}
// blocks of 32 values along the head dimension, dequantized as d*q and
// d*(q-8) (ggml's dequantize_row_q8_0/q4_0).
#define HI_KV_F32 0
#define HI_KV_F16 1
#define HI_KV_Q8_0 2
#define HI_KV_Q4_0 3

// The shape of one block task; scalars only, so that Go may pass it by
// value without cgo pointer checks.
typedef struct {
	int hd;       // head dimension, a multiple of 4
	int group;    // query heads per KV head
	int ntok;     // query tokens
	int qstride;  // floats from one token's Q row to the next's
	int k_type;   // element type of K: one of HI_KV_*
	int v_type;   // element type of V
	int simd;     // code: 0 portable, 1 AVX2/FMA/F16C, 2 AVX-512F (at most hi_cpuattn_simd())
	float scale;  // score scale
	float softcap; // score soft cap c: s becomes c*tanh(s/c); 0 for none
	int64_t window; // sliding window in positions, 0 for none
} hi_cpuattn_shape;

// hi_cpuattn_simd is the best code this CPU runs: 0 portable, 1 AVX2 + FMA +
// F16C (head dimensions multiple of 8), 2 AVX-512F (multiple of 16).
int hi_cpuattn_simd(void);

// hi_cpuattn_scratch_floats is the scratch one worker needs for a shape.
int hi_cpuattn_scratch_floats(int hd, int rows_q);

// hi_cpuattn_block attends the group*ntok query rows (query head j of token t
// is q + t*qstride + j*hd, already RoPE'd, unscaled) to KV rows [0, rows) at
// k and v (row c is absolute position first + c), causally and within the
// sliding window (row c is visible to token t iff first + c <= pos[t] and,
// with a window, pos[t] - (first + c) < window), each score soft-capped
// after the scale when softcap > 0. It writes one partial entry of hd+4
// floats per query row r = t*group + j to out + r*(hd+4): O (unnormalised),
// then m, l, 0, 0. A row that sees nothing gets m = -FLT_MAX, l = 0, O = 0.
void hi_cpuattn_block(hi_cpuattn_shape s, const float *q, const uint32_t *pos,
                      const void *k, const void *v, int64_t first, int rows,
                      float *scratch, float *out);

// hi_cpuattn_fold folds nblocks block partials (each rows_q entries of hd+4
// floats, in order) the way attn_merge folds parts into the entries r =
// t*group + j at dst + t*tstride + j*(hd+4), starting from those entries or,
// with init, from the neutral element. The running values are the f32 the
// entries hold, so folding in one call or in several gives the same bits.
void hi_cpuattn_fold(const float *blocks, int nblocks, int hd, int group, int ntok,
                     float *dst, int64_t tstride, int init);

#endif
