package gguf

import (
	"math"

	"github.com/x448/float16"
)

// The K-quants: super-blocks of 256 weights (ggml's QK_K), as llama.cpp's
// Q4_K_M, Q5_K_M and Q6_K files hold them.
//
// Q4_K (144 bytes): f16 d, f16 dmin, 12 bytes packing eight 6-bit scales
// sc[s] and eight 6-bit mins m[s] (see kScaleMin), then 128 bytes qs.
// Sub-block s covers elements 32s..32s+31: byte 32(s/2)+l of qs holds
// element 32s+l in its low nibble when s is even, its high nibble when s
// is odd. Value: d·sc[s]·q − dmin·m[s].
//
// Q5_K (176 bytes): as Q4_K with 32 bytes qh between the scales and qs;
// bit s of qh[l] is the fifth bit (16) of element 32s+l.
//
// Q6_K (210 bytes, so only 2-byte aligned in a row): 128 bytes ql, 64 bytes
// qh, 16 int8 scales, f16 d. Element e: half n = e/128, quarter c =
// (e%128)/32, l = e%32; its low 4 bits are the low (c < 2) or high (c ≥ 2)
// nibble of ql[64n + 32(c%2) + l], its high 2 bits are bits 2c, 2c+1 of
// qh[32n + l], and its scale is scales[8n + 2c + l/16]. Value:
// d·scale·(q − 32).

const qkK = 256

// kScaleMin returns the 6-bit scale and min of sub-block s (0..7) from the
// 12 packed bytes: s < 4 keeps them in the low 6 bits of bytes s and s+4;
// s ≥ 4 keeps their low 4 bits in the nibbles of byte s+4 and their top 2
// bits in the top bits of bytes s−4 (scale) and s (min).
func kScaleMin(q []byte, s int) (sc, m uint8) {
	if s < 4 {
		return q[s] & 63, q[s+4] & 63
	}
	return q[s+4]&15 | (q[s-4]>>6)<<4, q[s+4]>>4 | (q[s]>>6)<<4
}

// kPackScaleMin is kScaleMin's inverse for all eight sub-blocks.
func kPackScaleMin(q []byte, sc, m *[8]uint8) {
	for j := 0; j < 4; j++ {
		q[j] = sc[j] | (sc[j+4]>>4)<<6
		q[j+4] = m[j] | (m[j+4]>>4)<<6
		q[j+8] = sc[j+4]&15 | (m[j+4]&15)<<4
	}
}

func dequantizeK(t Type, data []byte, out []float32) {
	bb := t.BlockBytes()
	for b := 0; b < len(out)/qkK; b++ {
		blk := data[bb*b : bb*(b+1)]
		y := out[qkK*b : qkK*(b+1)]
		if t == Q6_K {
			d := f16(blk[208:])
			for e := range y {
				n, c, l := e/128, (e%128)/32, e%32
				lo := blk[64*n+32*(c%2)+l]
				if c >= 2 {
					lo >>= 4
				}
				q := int(lo&15) | int(blk[128+32*n+l]>>(2*c)&3)<<4
				y[e] = d * float32(int8(blk[192+8*n+2*c+l/16])) * float32(q-32)
			}
			continue
		}
		d, dmin := f16(blk), f16(blk[2:])
		qs := blk[16:]
		var qh []byte
		if t == Q5_K {
			qh, qs = blk[16:48], blk[48:]
		}
		for s := 0; s < 8; s++ {
			sc, m := kScaleMin(blk[4:16], s)
			d1, m1 := d*float32(sc), dmin*float32(m)
			for l := 0; l < 32; l++ {
				q := qs[32*(s/2)+l]
				if s%2 == 1 {
					q >>= 4
				}
				q &= 15
				if qh != nil {
					q |= (qh[l] >> s & 1) << 4
				}
				y[32*s+l] = d1*float32(q) - m1
			}
		}
	}
}

// quantizeK encodes super-blocks of 256 values.
//
// The scale search, this package's own: for each sub-block (32 values for
// Q4_K/Q5_K, 16 for Q6_K) a few candidate step sizes around range/levels
// are tried; each candidate rounds every value to the nearest level, then
// refits the step (and for Q4_K/Q5_K the min) by least squares to those
// levels, and the candidate with the smallest squared error wins
// (kFitAffine, kFitSymmetric). The sub-block steps and mins are then
// rounded to the 6-bit (Q4_K/Q5_K) or int8 (Q6_K) scales of one f16
// super-block scale, and the values rounded to nearest once more with the
// scales as stored, so that rounding the scales costs no extra error
// beyond theirs.
func quantizeK(t Type, in []float32, out []byte) {
	bb := t.BlockBytes()
	for b := 0; b < len(in)/qkK; b++ {
		x := in[qkK*b : qkK*(b+1)]
		blk := out[bb*b : bb*(b+1)]
		if t == Q6_K {
			quantizeQ6K(x, blk)
			continue
		}
		nmax := 15
		if t == Q5_K {
			nmax = 31
		}
		var steps, mins [8]float32
		var maxStep, maxMin float32
		for s := 0; s < 8; s++ {
			steps[s], mins[s] = kFitAffine(x[32*s:32*s+32], nmax)
			maxStep, maxMin = max(maxStep, steps[s]), max(maxMin, mins[s])
		}
		d := roundF16(maxStep / 63)
		dmin := roundF16(maxMin / 63)
		var sc, m [8]uint8
		for s := 0; s < 8; s++ {
			if d > 0 {
				sc[s] = uint8(min(63, math.Round(float64(steps[s]/d))))
			}
			if dmin > 0 {
				m[s] = uint8(min(63, math.Round(float64(mins[s]/dmin))))
			}
		}
		put16(blk, float16.Fromfloat32(d).Bits())
		put16(blk[2:], float16.Fromfloat32(dmin).Bits())
		kPackScaleMin(blk[4:16], &sc, &m)
		qs := blk[16:]
		var qh []byte
		if t == Q5_K {
			qh, qs = blk[16:48], blk[48:]
			clear(qh)
		}
		clear(qs)
		for s := 0; s < 8; s++ {
			d1, m1 := d*float32(sc[s]), dmin*float32(m[s])
			for l := 0; l < 32; l++ {
				q := 0
				if d1 > 0 {
					q = max(0, min(nmax, int(math.Round(float64((x[32*s+l]+m1)/d1)))))
				}
				qs[32*(s/2)+l] |= byte(q&15) << (4 * (s % 2))
				if qh != nil {
					qh[l] |= byte(q>>4) << s
				}
			}
		}
	}
}

func quantizeQ6K(x []float32, blk []byte) {
	var steps [16]float32
	var amax float32
	for g := 0; g < 16; g++ {
		steps[g] = kFitSymmetric(x[16*g : 16*g+16])
		amax = max(amax, abs32(steps[g]))
	}
	d := roundF16(amax / 127)
	var sc [16]int8
	for g := range sc {
		if d > 0 {
			sc[g] = int8(max(-127, min(127, math.Round(float64(steps[g]/d)))))
		}
	}
	clear(blk)
	for e := 0; e < qkK; e++ {
		n, c, l := e/128, (e%128)/32, e%32
		g := 8*n + 2*c + l/16
		step := d * float32(sc[g])
		q := 0
		if step != 0 {
			q = max(-32, min(31, int(math.Round(float64(x[e]/step)))))
		}
		u := byte(q + 32)
		blk[64*n+32*(c%2)+l] |= (u & 15) << (4 * (c / 2))
		blk[128+32*n+l] |= (u >> 4) << (2 * c)
	}
	for g, s := range sc {
		blk[192+g] = byte(s)
	}
	put16(blk[208:], float16.Fromfloat32(d).Bits())
}

// kFitAffine finds step ≥ 0 and min ≥ 0 for x ≈ step·q − min with integer
// q in [0, nmax]; see quantizeK.
func kFitAffine(x []float32, nmax int) (step, mn float32) {
	lo, hi := float32(0), float32(0)
	for _, v := range x {
		lo, hi = min(lo, v), max(hi, v)
	}
	if hi == lo {
		return 0, -lo
	}
	best := math.Inf(1)
	n := float64(len(x))
	for i := 0; i <= 8; i++ {
		// Candidate steps from range/(nmax-1) to range/(nmax+1).
		cand := float64(hi-lo) / (float64(nmax) - 1 + 0.25*float64(i))
		var sq, sq2, sx, sxq float64
		for _, v := range x {
			q := math.Max(0, math.Min(float64(nmax), math.Round((float64(v)-float64(lo))/cand)))
			sq += q
			sq2 += q * q
			sx += float64(v)
			sxq += float64(v) * q
		}
		// Least squares for x ≈ a·q + c; the stored form needs c ≤ 0.
		den := n*sq2 - sq*sq
		if den <= 0 {
			continue
		}
		a := (n*sxq - sx*sq) / den
		c := (sx - a*sq) / n
		if c > 0 {
			c, a = 0, sxq/sq2
		}
		if a <= 0 {
			continue
		}
		var e float64
		for _, v := range x {
			q := math.Max(0, math.Min(float64(nmax), math.Round((float64(v)-c)/a)))
			r := a*q + c - float64(v)
			e += r * r
		}
		if e < best {
			best, step, mn = e, float32(a), float32(-c)
		}
	}
	if math.IsInf(best, 1) { // no usable fit: the plain range split
		return (hi - lo) / float32(nmax), -lo
	}
	return step, mn
}

// kFitSymmetric finds a step (of either sign) for x ≈ step·q with integer
// q in [−32, 31]: the sign lets the largest magnitude take level −32.
func kFitSymmetric(x []float32) float32 {
	var amax, vmax float32
	for _, v := range x {
		if abs32(v) > amax {
			amax, vmax = abs32(v), v
		}
	}
	if amax == 0 {
		return 0
	}
	best, step := math.Inf(1), float64(0)
	for i := 0; i <= 8; i++ {
		// vmax at level −32 ... −30: the step's sign opposes vmax's.
		cand := -float64(vmax) / (32 - 0.25*float64(i))
		var sxq, sq2 float64
		for _, v := range x {
			q := math.Max(-32, math.Min(31, math.Round(float64(v)/cand)))
			sxq += float64(v) * q
			sq2 += q * q
		}
		if sq2 == 0 {
			continue
		}
		a := sxq / sq2
		var e float64
		for _, v := range x {
			q := math.Max(-32, math.Min(31, math.Round(float64(v)/a)))
			r := a*q - float64(v)
			e += r * r
		}
		if e < best {
			best, step = e, a
		}
	}
	return float32(step)
}

func f16(b []byte) float32 { return float16.Frombits(le16(b)).Float32() }

func roundF16(v float32) float32 { return float16.Fromfloat32(v).Float32() }
