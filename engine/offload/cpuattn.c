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
// There are two implementations of the inner steps: portable C, and AVX2 +
// FMA + F16C (compiled for that target with a function attribute and used
// only when the CPU reports those features at run time), so that the binary
// runs on any x86-64 or other CPU.
#include "cpuattn.h"

#include <float.h>
#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HI_X86 1
#endif

#define CH HI_CPUATTN_CHUNK
#define NEG (-FLT_MAX) // "no score yet", as in attn_partial.glsl

int hi_cpuattn_scratch_floats(int hd, int R) {
	// qs[R*hd] (scaled queries), tile[CH*hd], S/P[R*CH], alpha[R], live[R]
	return R * hd + CH * hd + R * CH + 2 * R;
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
	// probs overwrites S[0..n) with exp(S[c] - mx) and returns their sum.
	float (*probs)(float *S, int n, float mx);
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

static float probs_c(float *S, int n, float mx) {
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

#ifdef HI_X86
#define AVX __attribute__((target("avx2,fma,f16c")))

int hi_cpuattn_simd(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

AVX static void tile_avx(float *dst, const uint16_t *src, int n) {
	for (int i = 0; i < n; i += 8) {
		_mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
	}
}

AVX static inline float hsum(__m256 a) {
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

// hsum4 returns the four horizontal sums of a0..a3 in one vector.
AVX static inline __m128 hsum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
	__m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
	return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// Scores two query rows at a time against four K rows, so that eight
// independent FMA chains hide the FMA latency and each K load serves two
// rows.
AVX static void scores_avx(const float *qs, const float *k, int nc, int R, int hd, float *S) {
	const int nc4 = nc & ~3;
	int r = 0;
	for (; r + 2 <= R; r += 2) {
		const float *q0 = qs + (size_t)r * hd, *q1 = q0 + hd;
		for (int c = 0; c < nc4; c += 4) {
			const float *k0 = k + (size_t)c * hd, *k1 = k0 + hd, *k2 = k1 + hd, *k3 = k2 + hd;
			__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
			for (int d = 0; d < hd; d += 8) {
				const __m256 x0 = _mm256_loadu_ps(q0 + d), x1 = _mm256_loadu_ps(q1 + d);
				const __m256 y0 = _mm256_loadu_ps(k0 + d), y1 = _mm256_loadu_ps(k1 + d);
				const __m256 y2 = _mm256_loadu_ps(k2 + d), y3 = _mm256_loadu_ps(k3 + d);
				a0 = _mm256_fmadd_ps(x0, y0, a0);
				a1 = _mm256_fmadd_ps(x0, y1, a1);
				a2 = _mm256_fmadd_ps(x0, y2, a2);
				a3 = _mm256_fmadd_ps(x0, y3, a3);
				b0 = _mm256_fmadd_ps(x1, y0, b0);
				b1 = _mm256_fmadd_ps(x1, y1, b1);
				b2 = _mm256_fmadd_ps(x1, y2, b2);
				b3 = _mm256_fmadd_ps(x1, y3, b3);
			}
			_mm_storeu_ps(S + r * CH + c, hsum4(a0, a1, a2, a3));
			_mm_storeu_ps(S + (r + 1) * CH + c, hsum4(b0, b1, b2, b3));
		}
	}
	for (; r < R; r++) {
		const float *q0 = qs + (size_t)r * hd;
		for (int c = 0; c < nc4; c += 4) {
			const float *k0 = k + (size_t)c * hd, *k1 = k0 + hd, *k2 = k1 + hd, *k3 = k2 + hd;
			__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
			for (int d = 0; d < hd; d += 8) {
				const __m256 x0 = _mm256_loadu_ps(q0 + d);
				a0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(k0 + d), a0);
				a1 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(k1 + d), a1);
				a2 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(k2 + d), a2);
				a3 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(k3 + d), a3);
			}
			_mm_storeu_ps(S + r * CH + c, hsum4(a0, a1, a2, a3));
		}
	}
	for (r = 0; r < R; r++) {
		const float *q0 = qs + (size_t)r * hd;
		for (int c = nc4; c < nc; c++) {
			const float *k0 = k + (size_t)c * hd;
			__m256 a0 = _mm256_setzero_ps();
			for (int d = 0; d < hd; d += 8) {
				a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + d), _mm256_loadu_ps(k0 + d), a0);
			}
			S[r * CH + c] = hsum(a0);
		}
	}
}

// exp8 is e^x to about 2 ulp for x in [-87.3, 88.3] (clamped outside):
// x = n·ln2 + f with |f| ≤ ln2/2, e^f by a degree-7 polynomial (the
// Cephes expf coefficients), 2^n through the exponent bits.
AVX static inline __m256 exp8(__m256 x) {
	x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
	const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
	                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
	x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
	__m256 y = _mm256_set1_ps(1.9875691500e-4f);
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
	y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
	const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
	return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

AVX static float probs_avx(float *S, int n, float mx) {
	const __m256 m = _mm256_set1_ps(mx);
	__m256 sum = _mm256_setzero_ps();
	int c = 0;
	for (; c + 8 <= n; c += 8) {
		const __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(S + c), m));
		_mm256_storeu_ps(S + c, p);
		sum = _mm256_add_ps(sum, p);
	}
	float s = hsum(sum);
	if (c < n) {
		// The S row has CH ≥ c+8 slots; lanes past n are computed and dropped.
		float tmp[8];
		_mm256_storeu_ps(tmp, exp8(_mm256_sub_ps(_mm256_loadu_ps(S + c), m)));
		for (int i = 0; c + i < n; i++) {
			S[c + i] = tmp[i];
			s += tmp[i];
		}
	}
	return s;
}

// Adds P·V with 64 output columns of a query row in registers over the
// whole chunk, so that each V element is loaded once per row and the
// output is read and written once per chunk.
AVX static void pv_avx(const float *P, const float *alpha, const float *v, int nc, int R, int hd, float *out) {
	for (int r = 0; r < R; r++) {
		float *o = out + (size_t)r * (hd + 4);
		const float *p = P + r * CH;
		const __m256 a = _mm256_set1_ps(alpha[r]);
		int d0 = 0;
		for (; d0 + 64 <= hd; d0 += 64) {
			__m256 o0 = _mm256_mul_ps(a, _mm256_loadu_ps(o + d0)), o1 = _mm256_mul_ps(a, _mm256_loadu_ps(o + d0 + 8));
			__m256 o2 = _mm256_mul_ps(a, _mm256_loadu_ps(o + d0 + 16)), o3 = _mm256_mul_ps(a, _mm256_loadu_ps(o + d0 + 24));
			__m256 o4 = _mm256_mul_ps(a, _mm256_loadu_ps(o + d0 + 32)), o5 = _mm256_mul_ps(a, _mm256_loadu_ps(o + d0 + 40));
			__m256 o6 = _mm256_mul_ps(a, _mm256_loadu_ps(o + d0 + 48)), o7 = _mm256_mul_ps(a, _mm256_loadu_ps(o + d0 + 56));
			for (int c = 0; c < nc; c++) {
				const __m256 b = _mm256_broadcast_ss(p + c);
				const float *vc = v + (size_t)c * hd + d0;
				o0 = _mm256_fmadd_ps(b, _mm256_loadu_ps(vc), o0);
				o1 = _mm256_fmadd_ps(b, _mm256_loadu_ps(vc + 8), o1);
				o2 = _mm256_fmadd_ps(b, _mm256_loadu_ps(vc + 16), o2);
				o3 = _mm256_fmadd_ps(b, _mm256_loadu_ps(vc + 24), o3);
				o4 = _mm256_fmadd_ps(b, _mm256_loadu_ps(vc + 32), o4);
				o5 = _mm256_fmadd_ps(b, _mm256_loadu_ps(vc + 40), o5);
				o6 = _mm256_fmadd_ps(b, _mm256_loadu_ps(vc + 48), o6);
				o7 = _mm256_fmadd_ps(b, _mm256_loadu_ps(vc + 56), o7);
			}
			_mm256_storeu_ps(o + d0, o0);
			_mm256_storeu_ps(o + d0 + 8, o1);
			_mm256_storeu_ps(o + d0 + 16, o2);
			_mm256_storeu_ps(o + d0 + 24, o3);
			_mm256_storeu_ps(o + d0 + 32, o4);
			_mm256_storeu_ps(o + d0 + 40, o5);
			_mm256_storeu_ps(o + d0 + 48, o6);
			_mm256_storeu_ps(o + d0 + 56, o7);
		}
		for (; d0 < hd; d0 += 8) {
			__m256 o0 = _mm256_mul_ps(a, _mm256_loadu_ps(o + d0));
			for (int c = 0; c < nc; c++) {
				o0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + c), _mm256_loadu_ps(v + (size_t)c * hd + d0), o0);
			}
			_mm256_storeu_ps(o + d0, o0);
		}
	}
}

static const ops ops_avx = {tile_avx, scores_avx, probs_avx, pv_avx};
#else
int hi_cpuattn_simd(void) { return 0; }
#endif

void hi_cpuattn_block(hi_cpuattn_shape s, const float *q, const uint32_t *pos,
                      const void *k, const void *v, int64_t first, int rows,
                      float *scratch, float *out) {
	const ops *op = &ops_c;
#ifdef HI_X86
	if (s.simd) {
		op = &ops_avx;
	}
#endif
	const int hd = s.hd, G = s.group, R = s.group * s.ntok, E = hd + 4;
	float *qs = scratch;
	float *tile = qs + (size_t)R * hd;
	float *S = tile + (size_t)CH * hd;
	float *alpha = S + (size_t)R * CH;
	float *live = alpha + R; // visible rows per query row, as float to share the scratch

	int maxlive = 0;
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
		float *o = out + (size_t)r * E;
		memset(o, 0, sizeof(float) * hd);
		o[hd] = NEG;
		o[hd + 1] = 0;
		o[hd + 2] = 0;
		o[hd + 3] = 0;
	}

	for (int c0 = 0; c0 < maxlive; c0 += CH) {
		const int nc = maxlive - c0 < CH ? maxlive - c0 : CH;
		const float *kt, *vt;
		if (s.kv_f16) {
			op->tile(tile, (const uint16_t *)k + (size_t)c0 * hd, nc * hd);
			kt = tile;
		} else {
			kt = (const float *)k + (size_t)c0 * hd;
		}
		op->scores(qs, kt, nc, R, hd, S);
		for (int r = 0; r < R; r++) {
			float *o = out + (size_t)r * E;
			float *Sr = S + r * CH;
			int nv = (int)live[r] - c0;
			nv = nv < 0 ? 0 : (nv > nc ? nc : nv);
			if (nv == 0) {
				// Nothing visible to this row in the chunk: an exact no-op.
				memset(Sr, 0, sizeof(float) * nc);
				alpha[r] = 1;
				continue;
			}
			float mx = o[hd];
			for (int c = 0; c < nv; c++) {
				mx = Sr[c] > mx ? Sr[c] : mx;
			}
			const float sum = op->probs(Sr, nv, mx);
			memset(Sr + nv, 0, sizeof(float) * (nc - nv));
			alpha[r] = expf(o[hd] - mx);
			o[hd] = mx;
			o[hd + 1] = o[hd + 1] * alpha[r] + sum;
		}
		if (s.kv_f16) {
			op->tile(tile, (const uint16_t *)v + (size_t)c0 * hd, nc * hd);
			vt = tile;
		} else {
			vt = (const float *)v + (size_t)c0 * hd;
		}
		op->pv(S, alpha, vt, nc, R, hd, out);
	}
}

void hi_cpuattn_fold(const float *blocks, int nblocks, int hd, int group, int ntok,
                     float *dst, int64_t tstride) {
	const int E = hd + 4, R = group * ntok;
	for (int r = 0; r < R; r++) {
		float *o = dst + (int64_t)(r / group) * tstride + (int64_t)(r % group) * E;
		float m = NEG, l = 0;
		memset(o, 0, sizeof(float) * hd);
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
