// cpuattn_simd.h: the vector steps of cpuattn.c, written once for any
// vector width. cpuattn.c includes it once per instruction set after
// defining:
//   FN(name)  the name with the set's suffix      TGT  the target attribute
//   V, W      the f32 vector type and its lanes
//   VLOAD VSTORE VSET1 VZERO VADD VSUB VMUL VMAX VMIN
//   VFMA(a, b, c) = a*b + c    VFNMADD(a, b, c) = c - a*b
//   VROUND(x) to the nearest integer              VLDEXP(y, n) y·2^n
//   VCVTPH(p) W f16 values at p as f32
//   HSUM(v)   the sum of the lanes                HMAX(v) their max
//   HSUM4(a, b, c, d, out)  the four sums, stored to out[0..3]
// Head dimensions must be multiples of W.

TGT static void FN(tile)(float *dst, const uint16_t *src, int n) {
	for (int i = 0; i < n; i += W) {
		VSTORE(dst + i, VCVTPH(src + i));
	}
}

// Scores two query rows at a time against four K rows, so that eight
// independent FMA chains hide the FMA latency and each K load serves two
// rows.
TGT static void FN(scores)(const float *qs, const float *k, int nc, int R, int hd, float *S) {
	const int nc4 = nc & ~3;
	int r = 0;
#ifdef WIDE_REGS
	// With 32 registers: four query rows against four K rows, sixteen
	// chains, each load serving four FMAs.
	for (; r + 4 <= R; r += 4) {
		const float *q0 = qs + (size_t)r * hd, *q1 = q0 + hd, *q2 = q1 + hd, *q3 = q2 + hd;
		for (int c = 0; c < nc4; c += 4) {
			const float *k0 = k + (size_t)c * hd, *k1 = k0 + hd, *k2 = k1 + hd, *k3 = k2 + hd;
			V a[4][4];
			for (int i = 0; i < 4; i++) {
				for (int j = 0; j < 4; j++) {
					a[i][j] = VZERO();
				}
			}
			for (int d = 0; d < hd; d += W) {
				const V y0 = VLOAD(k0 + d), y1 = VLOAD(k1 + d), y2 = VLOAD(k2 + d), y3 = VLOAD(k3 + d);
				const float *qi[4] = {q0, q1, q2, q3};
				for (int i = 0; i < 4; i++) {
					const V x = VLOAD(qi[i] + d);
					a[i][0] = VFMA(x, y0, a[i][0]);
					a[i][1] = VFMA(x, y1, a[i][1]);
					a[i][2] = VFMA(x, y2, a[i][2]);
					a[i][3] = VFMA(x, y3, a[i][3]);
				}
			}
			for (int i = 0; i < 4; i++) {
				HSUM4(a[i][0], a[i][1], a[i][2], a[i][3], S + (r + i) * CH + c);
			}
		}
	}
#endif
	for (; r + 2 <= R; r += 2) {
		const float *q0 = qs + (size_t)r * hd, *q1 = q0 + hd;
		for (int c = 0; c < nc4; c += 4) {
			const float *k0 = k + (size_t)c * hd, *k1 = k0 + hd, *k2 = k1 + hd, *k3 = k2 + hd;
			V a0 = VZERO(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
			for (int d = 0; d < hd; d += W) {
				const V x0 = VLOAD(q0 + d), x1 = VLOAD(q1 + d);
				const V y0 = VLOAD(k0 + d), y1 = VLOAD(k1 + d), y2 = VLOAD(k2 + d), y3 = VLOAD(k3 + d);
				a0 = VFMA(x0, y0, a0);
				a1 = VFMA(x0, y1, a1);
				a2 = VFMA(x0, y2, a2);
				a3 = VFMA(x0, y3, a3);
				b0 = VFMA(x1, y0, b0);
				b1 = VFMA(x1, y1, b1);
				b2 = VFMA(x1, y2, b2);
				b3 = VFMA(x1, y3, b3);
			}
			HSUM4(a0, a1, a2, a3, S + r * CH + c);
			HSUM4(b0, b1, b2, b3, S + (r + 1) * CH + c);
		}
	}
	for (; r < R; r++) {
		const float *q0 = qs + (size_t)r * hd;
		for (int c = 0; c < nc4; c += 4) {
			const float *k0 = k + (size_t)c * hd, *k1 = k0 + hd, *k2 = k1 + hd, *k3 = k2 + hd;
			V a0 = VZERO(), a1 = a0, a2 = a0, a3 = a0;
			for (int d = 0; d < hd; d += W) {
				const V x0 = VLOAD(q0 + d);
				a0 = VFMA(x0, VLOAD(k0 + d), a0);
				a1 = VFMA(x0, VLOAD(k1 + d), a1);
				a2 = VFMA(x0, VLOAD(k2 + d), a2);
				a3 = VFMA(x0, VLOAD(k3 + d), a3);
			}
			HSUM4(a0, a1, a2, a3, S + r * CH + c);
		}
	}
	for (r = 0; r < R; r++) {
		const float *q0 = qs + (size_t)r * hd;
		for (int c = nc4; c < nc; c++) {
			const float *k0 = k + (size_t)c * hd;
			V a0 = VZERO();
			for (int d = 0; d < hd; d += W) {
				a0 = VFMA(VLOAD(q0 + d), VLOAD(k0 + d), a0);
			}
			S[r * CH + c] = HSUM(a0);
		}
	}
}

// exp is e^x for x in [-87.3, 88.3] (clamped outside) as e^f · 2^n with
// x = n·ln2 + f, |f| ≤ ln2/2 and e^f from a degree-7 polynomial (the
// Cephes expf coefficients), to about 2 ulp.
TGT static inline V FN(exp)(V x) {
	x = VMIN(VMAX(x, VSET1(-87.3f)), VSET1(88.3f));
	const V n = VROUND(VMUL(x, VSET1(1.44269504088896341f)));
	x = VFNMADD(n, VSET1(0.693359375f), x); // ln2 in two parts, so that n·ln2 is exact
	x = VFNMADD(n, VSET1(-2.12194440e-4f), x);
	V y = VSET1(1.9875691500e-4f);
	y = VFMA(y, x, VSET1(1.3981999507e-3f));
	y = VFMA(y, x, VSET1(8.3334519073e-3f));
	y = VFMA(y, x, VSET1(4.1665795894e-2f));
	y = VFMA(y, x, VSET1(1.6666665459e-1f));
	y = VFMA(y, x, VSET1(5.0000001201e-1f));
	y = VFMA(y, VMUL(x, x), VADD(x, VSET1(1.0f)));
	return VLDEXP(y, n);
}

TGT static float FN(probs)(float *S, int n, float *mp) {
	float mx = *mp;
	int c = 0;
	{
		V v = VSET1(mx);
		for (; c + W <= n; c += W) {
			v = VMAX(v, VLOAD(S + c));
		}
		mx = HMAX(v);
		for (; c < n; c++) {
			mx = S[c] > mx ? S[c] : mx;
		}
	}
	*mp = mx;
	const V m = VSET1(mx);
	V sum = VZERO();
	for (c = 0; c + W <= n; c += W) {
		const V p = FN(exp)(VSUB(VLOAD(S + c), m));
		VSTORE(S + c, p);
		sum = VADD(sum, p);
	}
	float s = HSUM(sum);
	if (c < n) {
		// The S row has CH ≥ c+W slots; lanes past n are computed and dropped.
		float tmp[W];
		VSTORE(tmp, FN(exp)(VSUB(VLOAD(S + c), m)));
		for (int i = 0; c + i < n; i++) {
			S[c + i] = tmp[i];
			s += tmp[i];
		}
	}
	return s;
}

// PV_SEG adds P·V into columns [d0, d0+N*W) of output row o, those columns
// held in N registers over the whole chunk, so that each V element is
// loaded once per query row and the output read and written once per chunk.
#define PV_SEG(N)                                                              \
	{                                                                          \
		V acc[N];                                                              \
		for (int i = 0; i < N; i++) {                                          \
			acc[i] = VMUL(a, VLOAD(o + d0 + i * W));                           \
		}                                                                      \
		for (int c = 0; c < nc; c++) {                                         \
			const V b = VSET1(p[c]);                                           \
			const float *vc = v + (size_t)c * hd + d0;                         \
			for (int i = 0; i < N; i++) {                                      \
				acc[i] = VFMA(b, VLOAD(vc + i * W), acc[i]);                   \
			}                                                                  \
		}                                                                      \
		for (int i = 0; i < N; i++) {                                          \
			VSTORE(o + d0 + i * W, acc[i]);                                    \
		}                                                                      \
		d0 += N * W;                                                           \
	}

#ifdef WIDE_REGS
// PV_SEG2 is PV_SEG for two query rows (o0, p0, a0 and o1, p1, a1) at
// once, so that each V load serves two FMAs.
#define PV_SEG2(N)                                                             \
	{                                                                          \
		V acc0[N], acc1[N];                                                    \
		for (int i = 0; i < N; i++) {                                          \
			acc0[i] = VMUL(a0, VLOAD(o0 + d0 + i * W));                        \
			acc1[i] = VMUL(a1, VLOAD(o1 + d0 + i * W));                        \
		}                                                                      \
		for (int c = 0; c < nc; c++) {                                         \
			const V b0 = VSET1(p0[c]), b1 = VSET1(p1[c]);                      \
			const float *vc = v + (size_t)c * hd + d0;                         \
			for (int i = 0; i < N; i++) {                                      \
				const V y = VLOAD(vc + i * W);                                 \
				acc0[i] = VFMA(b0, y, acc0[i]);                                \
				acc1[i] = VFMA(b1, y, acc1[i]);                                \
			}                                                                  \
		}                                                                      \
		for (int i = 0; i < N; i++) {                                          \
			VSTORE(o0 + d0 + i * W, acc0[i]);                                  \
			VSTORE(o1 + d0 + i * W, acc1[i]);                                  \
		}                                                                      \
		d0 += N * W;                                                           \
	}
#endif

TGT static void FN(pv)(const float *P, const float *alpha, const float *v, int nc, int R, int hd, float *out) {
	int r = 0;
#ifdef WIDE_REGS
	for (; r + 2 <= R; r += 2) {
		float *o0 = out + (size_t)r * (hd + 4), *o1 = o0 + hd + 4;
		const float *p0 = P + r * CH, *p1 = p0 + CH;
		const V a0 = VSET1(alpha[r]), a1 = VSET1(alpha[r + 1]);
		int d0 = 0;
		while (d0 + 8 * W <= hd) PV_SEG2(8)
		while (d0 + 4 * W <= hd) PV_SEG2(4)
		while (d0 < hd) PV_SEG2(1)
	}
#endif
	for (; r < R; r++) {
		float *o = out + (size_t)r * (hd + 4);
		const float *p = P + r * CH;
		const V a = VSET1(alpha[r]);
		int d0 = 0;
		while (d0 + 8 * W <= hd) PV_SEG(8)
		while (d0 + 4 * W <= hd) PV_SEG(4)
		while (d0 < hd) PV_SEG(1)
	}
}
#undef PV_SEG
#undef PV_SEG2
