// cpuattn.c: flash-attention partials of decode queries over host KV rows.
// One call of hi_cpuattn_block handles one block of one KV head's rows for
// all query rows of the head's group; Go spreads blocks over threads and
// hi_cpuattn_fold combines a head's blocks in order.
//
// The block walks its rows in chunks of CH: K rows are converted to f32
// into a tile that stays in L1 (f32 rows are read in place), scores for
// every query row come from that tile, the running max and sum are updated
// (online softmax), then the V rows go through the same tile and are added
// to the unnormalised output. Converting once per chunk instead of once per
// query row keeps the f16 conversion off the per-group arithmetic.
//
// The inner steps come in portable C and, from one source for both widths
// (cpuattn_simd.h), AVX2 + FMA + F16C and AVX-512F versions, compiled for
// their targets with function attributes and used only when the CPU
// reports the features at run time, so that the binary runs on any x86-64
// or other CPU.
#include "cpuattn.h"

#include <float.h>
#include <math.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && !defined(HI_CPUATTN_PORTABLE) // the define checks the build without vector code
#include <immintrin.h>
#define HI_X86 1
#endif

#define CH HI_CPUATTN_CHUNK
#define NEG (-FLT_MAX) // "no score yet", as in attn_partial.glsl

// Floats after S that probs may read past a row's end (its vector tail
// loads a whole vector); the lanes read there are dropped.
#define S_PAD 16

int hi_cpuattn_scratch_floats(int hd, int R) {
	// qs[R*hd] (scaled queries), tile[CH*hd], S/P[R*CH], alpha[R], live[R], lo[R], padding
	return R * hd + CH * hd + R * CH + 3 * R + S_PAD;
}

// f16 bits to f32, exact for every value (subnormals, infinities, NaN).
static inline float h2f(uint16_t h) {
	uint32_t s = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, bits;
	if (e == 0) {
		if (m == 0) {
			bits = s;
		} else {
			e = 113; // 127 - 14: the exponent of 2^-14, lowered once per normalising shift
			while (!(m & 0x400u)) {
				m <<= 1;
				e--;
			}
			bits = s | (e << 23) | ((m & 0x3ffu) << 13);
		}
	} else if (e == 31) {
		bits = s | 0x7f800000u | (m << 13);
	} else {
		bits = s | ((e + 112) << 23) | (m << 13);
	}
	float f;
	memcpy(&f, &bits, 4);
	return f;
}

// The inner steps of a chunk; see the scalar versions for what each does.
typedef struct {
	// tile converts n f16 elements to f32.
	void (*tile)(float *dst, const uint16_t *src, int n);
	// scores writes S[r*CH+c] = qs[r]·k[c] for c < nc.
	void (*scores)(const float *qs, const float *k, int nc, int R, int hd, float *S);
	// probs raises the running max *m to the max of S[0..n), overwrites
	// S[0..n) with exp(S[c] - *m) and returns their sum.
	float (*probs)(float *S, int n, float *m);
	// pv sets O[r] = O[r]*alpha[r] + Σ_c P[r*CH+c]·v[c] for c < nc, O[r] at out + r*(hd+4).
	void (*pv)(const float *P, const float *alpha, const float *v, int nc, int R, int hd, float *out);
} ops;

static void tile_c(float *dst, const uint16_t *src, int n) {
	for (int i = 0; i < n; i++) {
		dst[i] = h2f(src[i]);
	}
}

static void scores_c(const float *qs, const float *k, int nc, int R, int hd, float *S) {
	for (int r = 0; r < R; r++) {
		const float *q = qs + (size_t)r * hd;
		for (int c = 0; c < nc; c++) {
			const float *kc = k + (size_t)c * hd;
			float acc = 0;
			for (int d = 0; d < hd; d++) {
				acc += q[d] * kc[d];
			}
			S[r * CH + c] = acc;
		}
	}
}

static float probs_c(float *S, int n, float *m) {
	float mx = *m;
	for (int c = 0; c < n; c++) {
		mx = S[c] > mx ? S[c] : mx;
	}
	*m = mx;
	float sum = 0;
	for (int c = 0; c < n; c++) {
		S[c] = expf(S[c] - mx);
		sum += S[c];
	}
	return sum;
}

static void pv_c(const float *P, const float *alpha, const float *v, int nc, int R, int hd, float *out) {
	for (int r = 0; r < R; r++) {
		float *o = out + (size_t)r * (hd + 4);
		const float a = alpha[r];
		for (int d = 0; d < hd; d++) {
			o[d] *= a;
		}
		for (int c = 0; c < nc; c++) {
			const float p = P[r * CH + c];
			const float *vc = v + (size_t)c * hd;
			for (int d = 0; d < hd; d++) {
				o[d] += p * vc[d];
			}
		}
	}
}

static const ops ops_c = {tile_c, scores_c, probs_c, pv_c};

// tile_q8_c dequantizes nb Q8_0 blocks to f32: d*q, one rounding, as
// ggml's dequantize_row_q8_0 (and the shaders) compute it.
static void tile_q8_c(float *dst, const uint8_t *src, int nb) {
	for (int b = 0; b < nb; b++, src += 34, dst += 32) {
		const float d = h2f((uint16_t)(src[0] | src[1] << 8));
		for (int j = 0; j < 32; j++) {
			dst[j] = d * (float)(int8_t)src[2 + j];
		}
	}
}

// tile_q4_c dequantizes nb Q4_0 blocks to f32: d*(q-8).
static void tile_q4_c(float *dst, const uint8_t *src, int nb) {
	for (int b = 0; b < nb; b++, src += 18, dst += 32) {
		const float d = h2f((uint16_t)(src[0] | src[1] << 8));
		for (int j = 0; j < 16; j++) {
			dst[j] = d * (float)((src[2 + j] & 0xf) - 8);
			dst[j + 16] = d * (float)((src[2 + j] >> 4) - 8);
		}
	}
}

// The block dequantizers of one code; the arithmetic is exact but for the
// one product, so every code gives the same bits.
typedef struct {
	void (*q8)(float *dst, const uint8_t *src, int nb);
	void (*q4)(float *dst, const uint8_t *src, int nb);
} deq;

static const deq deq_c = {tile_q8_c, tile_q4_c};

#ifdef HI_X86
int hi_cpuattn_simd(void) {
	__builtin_cpu_init();
	if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") || !__builtin_cpu_supports("f16c")) {
		return 0;
	}
	return __builtin_cpu_supports("avx512f") ? 2 : 1;
}

// AVX2 + FMA + F16C: 8 lanes.
#define FN(name) name##_avx2
#define TGT __attribute__((target("avx2,fma,f16c")))
#define V __m256
#define W 8
#define VLOAD _mm256_loadu_ps
#define VSTORE _mm256_storeu_ps
#define VSET1 _mm256_set1_ps
#define VZERO _mm256_setzero_ps
#define VADD _mm256_add_ps
#define VSUB _mm256_sub_ps
#define VMUL _mm256_mul_ps
#define VMAX _mm256_max_ps
#define VFMA _mm256_fmadd_ps
#define VCVTPH(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define VMIN _mm256_min_ps
#define VFNMADD _mm256_fnmadd_ps
#define VROUND(x) _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define VLDEXP ldexp_avx2
#define HSUM hsum_avx2
#define HMAX hmax_avx2
#define HSUM4(a, b, c, d, out) _mm_storeu_ps(out, hsum4_avx2(a, b, c, d))

TGT static inline float hsum_avx2(__m256 a) {
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

TGT static inline float hmax_avx2(__m256 a) {
	__m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
	s = _mm_max_ps(s, _mm_movehl_ps(s, s));
	s = _mm_max_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

// hsum4_avx2 returns the four horizontal sums of a0..a3 in one vector.
TGT static inline __m128 hsum4_avx2(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
	__m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
	return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// ldexp_avx2 is y·2^n for integral n in [-126, 127], through the exponent bits.
TGT static inline __m256 ldexp_avx2(__m256 y, __m256 n) {
	const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
	return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

#include "cpuattn_simd.h"
static const ops ops_avx2 = {tile_avx2, scores_avx2, probs_avx2, pv_avx2};

// tile_q8_avx2 is tile_q8_c eight values at a time: sign-extend the codes
// to i32, convert (exact) and multiply by the scale.
TGT static void tile_q8_avx2(float *dst, const uint8_t *src, int nb) {
	for (int b = 0; b < nb; b++, src += 34, dst += 32) {
		const __m256 d = _mm256_set1_ps(h2f((uint16_t)(src[0] | src[1] << 8)));
		for (int j = 0; j < 32; j += 8) {
			const __m128i q = _mm_loadl_epi64((const __m128i *)(src + 2 + j));
			_mm256_storeu_ps(dst + j, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
		}
	}
}

// tile_q4_avx2 is tile_q4_c: low nibbles give values 0..15, high nibbles
// 16..31, each less 8, times the scale.
TGT static void tile_q4_avx2(float *dst, const uint8_t *src, int nb) {
	const __m128i lo4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
	for (int b = 0; b < nb; b++, src += 18, dst += 32) {
		const __m256 d = _mm256_set1_ps(h2f((uint16_t)(src[0] | src[1] << 8)));
		const __m128i x = _mm_loadu_si128((const __m128i *)(src + 2));
		const __m128i lo = _mm_sub_epi8(_mm_and_si128(x, lo4), eight);
		const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(x, 4), lo4), eight);
		const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
		for (int i = 0; i < 4; i++) {
			_mm256_storeu_ps(dst + 8 * i, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[i]))));
		}
	}
}

static const deq deq_avx2 = {tile_q8_avx2, tile_q4_avx2};

#undef FN
#undef TGT
#undef V
#undef W
#undef VLOAD
#undef VSTORE
#undef VSET1
#undef VZERO
#undef VADD
#undef VSUB
#undef VMUL
#undef VMAX
#undef VFMA
#undef VCVTPH
#undef VMIN
#undef VFNMADD
#undef VROUND
#undef VLDEXP
#undef HSUM
#undef HMAX
#undef HSUM4

// AVX-512F: 16 lanes, twice the work per instruction where the core
// executes 512-bit operations at full width.
#define FN(name) name##_avx512
#define TGT __attribute__((target("avx512f,avx2,fma,f16c")))
#define V __m512
#define W 16
#define WIDE_REGS // 32 vector registers: wider register blocking
#define VLOAD _mm512_loadu_ps
#define VSTORE _mm512_storeu_ps
#define VSET1 _mm512_set1_ps
#define VZERO _mm512_setzero_ps
#define VADD _mm512_add_ps
#define VSUB _mm512_sub_ps
#define VMUL _mm512_mul_ps
#define VMAX _mm512_max_ps
#define VFMA _mm512_fmadd_ps
#define VCVTPH(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define VMIN _mm512_min_ps
#define VFNMADD _mm512_fnmadd_ps
#define VROUND(x) _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define VLDEXP _mm512_scalef_ps
#define HSUM _mm512_reduce_add_ps
#define HMAX _mm512_reduce_max_ps
#define HSUM4(a, b, c, d, out) _mm_storeu_ps(out, hsum4_avx2(half512(a), half512(b), half512(c), half512(d)))

// half512 adds the two 256-bit halves of a.
TGT static inline __m256 half512(__m512 a) {
	return _mm256_add_ps(_mm512_castps512_ps256(a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
}

#include "cpuattn_simd.h"
static const ops ops_avx512 = {tile_avx512, scores_avx512, probs_avx512, pv_avx512};

// tile_q8_avx512 and tile_q4_avx512 are tile_q8_c and tile_q4_c sixteen
// values at a time (the same products, so the same bits).
TGT static void tile_q8_avx512(float *dst, const uint8_t *src, int nb) {
	for (int b = 0; b < nb; b++, src += 34, dst += 32) {
		const __m512 d = _mm512_set1_ps(h2f((uint16_t)(src[0] | src[1] << 8)));
		for (int j = 0; j < 32; j += 16) {
			const __m128i q = _mm_loadu_si128((const __m128i *)(src + 2 + j));
			_mm512_storeu_ps(dst + j, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q))));
		}
	}
}

TGT static void tile_q4_avx512(float *dst, const uint8_t *src, int nb) {
	const __m128i lo4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
	for (int b = 0; b < nb; b++, src += 18, dst += 32) {
		const __m512 d = _mm512_set1_ps(h2f((uint16_t)(src[0] | src[1] << 8)));
		const __m128i x = _mm_loadu_si128((const __m128i *)(src + 2));
		const __m128i lo = _mm_sub_epi8(_mm_and_si128(x, lo4), eight);
		const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(x, 4), lo4), eight);
		_mm512_storeu_ps(dst, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo))));
		_mm512_storeu_ps(dst + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi))));
	}
}

static const deq deq_avx512 = {tile_q8_avx512, tile_q4_avx512};
#undef WIDE_REGS
#else
int hi_cpuattn_simd(void) { return 0; }
#endif

// row_bytes is the size of a row of hd elements of KV type t.
static inline size_t row_bytes_of(int t, int hd) {
	switch (t) {
	case HI_KV_F32:
		return (size_t)hd * 4;
	case HI_KV_F16:
		return (size_t)hd * 2;
	case HI_KV_Q8_0:
		return (size_t)hd / 32 * 34;
	default:
		return (size_t)hd / 32 * 18;
	}
}

// rows_f32 gives rows [c0, c0+nc) of x (type t, rb bytes a row) as f32:
// in place for f32, else converted into tile.
static inline const float *rows_f32(const ops *op, const deq *dq, int t, const void *x, size_t rb,
                                    int c0, int nc, int hd, float *tile) {
	const uint8_t *src = (const uint8_t *)x + (size_t)c0 * rb;
	switch (t) {
	case HI_KV_F32:
		return (const float *)src;
	case HI_KV_F16:
		op->tile(tile, (const uint16_t *)src, nc * hd);
		break;
	case HI_KV_Q8_0:
		dq->q8(tile, src, nc * hd / 32);
		break;
	default:
		dq->q4(tile, src, nc * hd / 32);
	}
	return tile;
}

// Chunks ahead of the current one whose rows are prefetched. The block
// alternates between converting a chunk (loads) and computing on it (no
// loads); asking for later chunks' lines keeps memory busy during the
// arithmetic, which the hardware prefetchers do not fully do.
#define PF_AHEAD 2 // prefetched into L2 and L3 (locality 1), L1 holds the tile

// prefetch_chunk asks for the cache lines of K and V rows [c0, c0+CH),
// clipped to rows.
static inline void prefetch_chunk(const void *k, const void *v, size_t krb, size_t vrb, int c0, int rows) {
	if (c0 >= rows) {
		return;
	}
	const int n = rows - c0 < CH ? rows - c0 : CH;
	const char *kp = (const char *)k + (size_t)c0 * krb, *vp = (const char *)v + (size_t)c0 * vrb;
	for (size_t off = 0; off < (size_t)n * krb; off += 64) {
		__builtin_prefetch(kp + off, 0, 1);
	}
	for (size_t off = 0; off < (size_t)n * vrb; off += 64) {
		__builtin_prefetch(vp + off, 0, 1);
	}
}

void hi_cpuattn_block(hi_cpuattn_shape s, const float *q, const uint32_t *pos,
                      const void *k, const void *v, int64_t first, int rows,
                      float *scratch, float *out) {
	const ops *op = &ops_c;
	const deq *dq = &deq_c;
#ifdef HI_X86
	if (s.simd == 1) {
		op = &ops_avx2;
		dq = &deq_avx2;
	} else if (s.simd == 2) {
		op = &ops_avx512;
		dq = &deq_avx512;
	}
#endif
	const int hd = s.hd, G = s.group, R = s.group * s.ntok, E = hd + 4;
	const size_t krb = row_bytes_of(s.k_type, hd), vrb = row_bytes_of(s.v_type, hd);
	float *qs = scratch;
	float *tile = qs + (size_t)R * hd;
	float *S = tile + (size_t)CH * hd;
	float *alpha = S + (size_t)R * CH;
	float *live = alpha + R; // end of the visible rows per query row, as float to share the scratch
	float *lo = live + R;    // start of the visible rows per query row (the window's)

	int maxlive = 0, minlo = rows;
	for (int r = 0; r < R; r++) {
		const int t = r / G, j = r % G;
		const float *src = q + (size_t)t * s.qstride + (size_t)j * hd;
		for (int d = 0; d < hd; d++) {
			qs[(size_t)r * hd + d] = s.scale * src[d];
		}
		int64_t n = (int64_t)pos[t] - first + 1;
		n = n < 0 ? 0 : (n > rows ? rows : n);
		live[r] = (float)n; // rows ≤ 2^24, so exact
		if (n > maxlive) {
			maxlive = (int)n;
		}
		// The window's first position pos[t] - window + 1, as a row.
		int64_t a = 0;
		if (s.window > 0 && (int64_t)pos[t] >= s.window) {
			a = (int64_t)pos[t] - s.window + 1 - first;
			a = a < 0 ? 0 : (a > n ? n : a);
		}
		lo[r] = (float)a;
		if (a < minlo) {
			minlo = (int)a;
		}
		float *o = out + (size_t)r * E;
		memset(o, 0, sizeof(float) * hd);
		o[hd] = NEG;
		o[hd + 1] = 0;
		o[hd + 2] = 0;
		o[hd + 3] = 0;
	}

	// Rows before every query row's window are neither read nor computed.
	minlo = minlo < maxlive ? minlo : maxlive;
	for (int c = 0; c < PF_AHEAD; c++) {
		prefetch_chunk(k, v, krb, vrb, minlo + c * CH, maxlive);
	}
	for (int c0 = minlo; c0 < maxlive; c0 += CH) {
		const int nc = maxlive - c0 < CH ? maxlive - c0 : CH;
		prefetch_chunk(k, v, krb, vrb, c0 + PF_AHEAD * CH, maxlive);
		const float *kt = rows_f32(op, dq, s.k_type, k, krb, c0, nc, hd, tile);
		op->scores(qs, kt, nc, R, hd, S);
		for (int r = 0; r < R; r++) {
			float *o = out + (size_t)r * E;
			float *Sr = S + r * CH;
			// The row sees chunk rows [va, nv).
			int nv = (int)live[r] - c0;
			nv = nv < 0 ? 0 : (nv > nc ? nc : nv);
			int va = (int)lo[r] - c0;
			va = va < 0 ? 0 : (va > nv ? nv : va);
			if (nv == va) {
				// Nothing visible to this row in the chunk: an exact no-op.
				memset(Sr, 0, sizeof(float) * nc);
				alpha[r] = 1;
				continue;
			}
			if (s.softcap > 0) {
				for (int c = va; c < nv; c++) {
					Sr[c] = s.softcap * tanhf(Sr[c] / s.softcap);
				}
			}
			float mx = o[hd];
			const float sum = op->probs(Sr + va, nv - va, &mx);
			memset(Sr, 0, sizeof(float) * va);
			memset(Sr + nv, 0, sizeof(float) * (nc - nv));
			alpha[r] = expf(o[hd] - mx);
			o[hd] = mx;
			o[hd + 1] = o[hd + 1] * alpha[r] + sum;
		}
		const float *vt = rows_f32(op, dq, s.v_type, v, vrb, c0, nc, hd, tile);
		op->pv(S, alpha, vt, nc, R, hd, out);
	}
}

void hi_cpuattn_fold(const float *blocks, int nblocks, int hd, int group, int ntok,
                     float *dst, int64_t tstride, int init) {
	const int E = hd + 4, R = group * ntok;
	for (int r = 0; r < R; r++) {
		float *o = dst + (int64_t)(r / group) * tstride + (int64_t)(r % group) * E;
		float m = NEG, l = 0;
		if (init) {
			memset(o, 0, sizeof(float) * hd);
		} else {
			m = o[hd];
			l = o[hd + 1];
		}
		for (int b = 0; b < nblocks; b++) {
			const float *x = blocks + ((size_t)b * R + r) * E;
			const float mn = x[hd] > m ? x[hd] : m;
			const float a = expf(m - mn), c = expf(x[hd] - mn);
			l = l * a + x[hd + 1] * c;
			for (int d = 0; d < hd; d++) {
				o[d] = o[d] * a + x[d] * c;
			}
			m = mn;
		}
		o[hd] = m;
		o[hd + 1] = l;
		o[hd + 2] = 0;
		o[hd + 3] = 0;
	}
}
