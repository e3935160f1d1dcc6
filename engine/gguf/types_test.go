package gguf

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestDequantizeLayout decodes hand-built blocks, checking the byte layouts
// the shaders also rely on independently of Quantize.
func TestDequantizeLayout(t *testing.T) {
	q4 := []byte{0x00, 0x38} // d = 0.5 as f16
	for j := range 16 {
		q4 = append(q4, byte(j)|byte(15-j)<<4)
	}
	q8 := []byte{0x00, 0x34} // d = 0.25
	for j := range 32 {
		q8 = append(q8, byte(int8(j-16)))
	}
	for _, c := range []struct {
		typ  Type
		data []byte
		want func(i int) float64
	}{
		{Q4_0, q4, func(i int) float64 {
			if i < 16 {
				return 0.5 * float64(i-8) // low nibble of byte i
			}
			return 0.5 * float64(15-(i-16)-8) // high nibble of byte i-16
		}},
		{Q8_0, q8, func(i int) float64 { return 0.25 * float64(i-16) }},
		{F16, []byte{0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x01, 0x00}, func(i int) float64 {
			return []float64{1, -2, 65504, math.Ldexp(1, -24)}[i]
		}},
		{BF16, []byte{0x80, 0x3f, 0x20, 0xc1}, func(i int) float64 { return []float64{1, -10}[i] }},
		{F32, []byte{0, 0, 0xc0, 0x3f}, func(int) float64 { return 1.5 }},
	} {
		n := c.typ.BlockSize() * len(c.data) / c.typ.BlockBytes()
		out := make([]float32, n)
		if err := Dequantize(c.typ, c.data, out); err != nil {
			t.Fatal(err)
		}
		for i, v := range out {
			if float64(v) != c.want(i) {
				t.Errorf("%v element %d = %v, want %v", c.typ, i, v, c.want(i))
			}
		}
	}
}

func TestBF16Rounding(t *testing.T) {
	for _, c := range []struct {
		in   float32
		want uint16
	}{
		{1, 0x3f80}, {1 + 1.0/256, 0x3f80}, {1 + 3.0/256, 0x3f82}, {1 + 1.5/256, 0x3f81}, {-2, 0xc000},
		{float32(math.Inf(1)), 0x7f80},
	} {
		if got := BF16Bits(c.in); got != c.want {
			t.Errorf("BF16Bits(%v) = %#x, want %#x", c.in, got, c.want)
		}
	}
	if got := BF16Bits(float32(math.NaN())); got&0x7f80 != 0x7f80 || got&0x7f == 0 {
		t.Errorf("NaN became %#x", got)
	}
}

// TestQuantizeRoundTrip bounds each codec's error on fresh random data
// against a float64 reference of the block scale.
func TestQuantizeRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(rand.Uint64(), 5))
	x := make([]float32, 32*37)
	for i := range x {
		x[i] = float32(r.NormFloat64() * math.Exp(r.NormFloat64()))
	}
	x[5] = 0
	for i := 64; i < 96; i++ {
		x[i] = 0 // an all-zero block must not divide by zero
	}
	for _, typ := range []Type{F32, F16, BF16, Q8_0, Q4_0} { // the K-quants: TestQuantizeKRoundTrip
		data, err := Quantize(typ, x)
		if err != nil || len(data) != typ.RowBytes(len(x)) {
			t.Fatalf("%v: %d bytes, %v", typ, len(data), err)
		}
		out := make([]float32, len(x))
		if err := Dequantize(typ, data, out); err != nil {
			t.Fatal(err)
		}
		for b := 0; b < len(x); b += 32 {
			var amax float64
			for _, v := range x[b : b+32] {
				amax = max(amax, math.Abs(float64(v)))
			}
			for i := b; i < b+32; i++ {
				v := math.Abs(float64(x[i]))
				// Quantized: half a step, plus the f16 rounding of the scale
				// times the largest code; Q4_0's codes reach -8 but only +7,
				// so the top of the range loses up to a whole step.
				tol := map[Type]float64{F32: 0, F16: max(v*0x1p-11, 0x1p-25), BF16: v * 0x1p-8,
					Q8_0: amax / 127 * (0.5 + 127*0x1p-11), Q4_0: amax / 8 * (1 + 8*0x1p-11)}[typ]
				if err := math.Abs(float64(out[i]) - float64(x[i])); err > tol {
					t.Fatalf("%v element %d: %v became %v (error %g > %g)", typ, i, x[i], out[i], err, tol)
				}
			}
		}
	}
}

func TestCodecErrors(t *testing.T) {
	out := make([]float32, 32)
	for _, c := range []struct {
		err  error
		want string
	}{
		{Dequantize(15, make([]byte, 292), out), "cannot decode tensor type Q8_K"},
		{Dequantize(Q8_0, make([]byte, 34), out[:31]), "31 elements is not a whole number of Q8_0 blocks"},
		{Dequantize(Q4_0, make([]byte, 17), out), "Q4_0 data of 17 bytes holds fewer than 32 elements"},
		{func() error { _, err := Quantize(11, out); return err }(), "cannot encode tensor type Q3_K"},
		{func() error { _, err := Quantize(Q4_0, out[:5]); return err }(), "5 elements is not a whole number of Q4_0 blocks"},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("error %v, want %q", c.err, c.want)
		}
	}
}

// kHandScales are the 6-bit scales and mins of the hand-built Q4_K and Q5_K
// blocks below, and kHandScaleBytes their packing, worked out by hand:
// bytes 0-3 hold sc[0..3] with the top 2 bits of sc[4..7] (all 0b10) in bits
// 6-7; bytes 4-7 hold m[0..3] with the top 2 bits of m[4..7] (0b10); bytes
// 8-11 hold the low nibbles of sc[4..7] (1, 2, 3, 4) and, above them, of
// m[4..7] (8, 9, 10, 11).
var (
	kHandSc         = [8]float64{1, 2, 3, 4, 33, 34, 35, 36}
	kHandM          = [8]float64{5, 6, 7, 8, 40, 41, 42, 43}
	kHandScaleBytes = []byte{0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x81, 0x92, 0xa3, 0xb4}
)

// TestDequantizeKLayout decodes hand-built K-quant super-blocks. The want
// functions spell out the layout in the plainest terms, and a few elements
// are also checked against values worked out by hand.
func TestDequantizeKLayout(t *testing.T) {
	// qs byte i: low nibble i%16, high nibble 15-i%16.
	qs := make([]byte, 128)
	for i := range qs {
		qs[i] = byte(i%16) | byte(15-i%16)<<4
	}
	q4k := append([]byte{0x00, 0x38, 0x00, 0x34}, kHandScaleBytes...) // d = 0.5, dmin = 0.25
	q4k = append(q4k, qs...)
	qh := make([]byte, 32)
	for l := range qh {
		qh[l] = byte(l) // bit s of qh[l] is the fifth bit of element 32s+l
	}
	q5k := append([]byte{0x00, 0x38, 0x00, 0x34}, kHandScaleBytes...)
	q5k = append(append(q5k, qh...), qs...)
	nib := func(s, l int) float64 { // the nibble of element 32s+l in qs
		if s%2 == 0 {
			return float64(l % 16)
		}
		return float64(15 - l%16)
	}

	q6k := make([]byte, 0, 210)
	q6k = append(q6k, qs...) // ql
	for range 64 {
		q6k = append(q6k, 0xe4) // qh: bit pairs 0, 1, 2, 3 from the bottom
	}
	sc6 := []int8{1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12, 13, -14, 15, -16}
	for _, s := range sc6 {
		q6k = append(q6k, byte(s))
	}
	q6k = append(q6k, 0x00, 0x38) // d = 0.5

	for _, c := range []struct {
		typ  Type
		data []byte
		want func(e int) float64
		hand map[int]float64
	}{
		{Q4_K, q4k, func(e int) float64 {
			s, l := e/32, e%32
			return 0.5*kHandSc[s]*nib(s, l) - 0.25*kHandM[s]
		}, map[int]float64{
			0:   -1.25,  // 0.5·1·0 − 0.25·5
			37:  8.5,    // s 1, l 5: high nibble 10; 0.5·2·10 − 0.25·6
			200: 129.5,  // s 6, l 8: low nibble 8; 0.5·35·8 − 0.25·42
			255: -10.75, // s 7, l 31: high nibble 0; −0.25·43
		}},
		{Q5_K, q5k, func(e int) float64 {
			s, l := e/32, e%32
			return 0.5*kHandSc[s]*(nib(s, l)+16*float64(l>>s&1)) - 0.25*kHandM[s]
		}, map[int]float64{
			35:  26.5, // s 1, l 3: high nibble 12, qh[3] bit 1 set: 28; 0.5·2·28 − 0.25·6
			144: 254,  // s 4, l 16: low nibble 0, qh[16] bit 4 set: 16; 0.5·33·16 − 0.25·40
			255: -10.75,
		}},
		{Q6_K, q6k, func(e int) float64 {
			n, c, l := e/128, (e%128)/32, e%32
			lo := float64(l % 16) // ql index 64n+32(c%2)+l is l mod 16
			if c >= 2 {
				lo = float64(15 - l%16)
			}
			return 0.5 * float64(sc6[8*n+2*c+l/16]) * (lo + 16*float64(c) - 32)
		}, map[int]float64{
			0:   -16,  // q 0−32, scale 1
			200: 45.5, // half 1, quarter 2, l 8: high nibble 7, high bits 2: 39−32; scale[12] = 13
			255: -128, // half 1, quarter 3, l 31: high nibble 0, high bits 3: 48−32; scale[15] = −16
		}},
	} {
		if len(c.data) != c.typ.BlockBytes() {
			t.Fatalf("%v block built with %d bytes", c.typ, len(c.data))
		}
		// Two super-blocks: the second a copy, so that block addressing counts too.
		data := append(append([]byte{}, c.data...), c.data...)
		out := make([]float32, 512)
		if err := Dequantize(c.typ, data, out); err != nil {
			t.Fatal(err)
		}
		for i, v := range out {
			if float64(v) != c.want(i%256) {
				t.Errorf("%v element %d = %v, want %v", c.typ, i, v, c.want(i%256))
			}
		}
		for e, w := range c.hand {
			if float64(out[e]) != w || c.want(e) != w {
				t.Errorf("%v element %d = %v (layout says %v), worked out by hand %v", c.typ, e, out[e], c.want(e), w)
			}
		}
	}
}

// TestQuantizeKRoundTrip bounds the K-quant codecs' error on fresh random
// data, per sub-block, by one step of the sub-block's own range (rounding,
// plus the fit trading the extremes for the bulk) plus what rounding the
// sub-block scales to the super-block's 6-bit or int8 grid can move the
// top of the range (nmax half-steps of that grid).
func TestQuantizeKRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(rand.Uint64(), 9))
	x := make([]float32, 256*9)
	for i := range x {
		x[i] = float32(r.NormFloat64() * math.Exp(0.5*r.NormFloat64()))
	}
	for i := 256; i < 512; i++ {
		x[i] = 0 // an all-zero super-block must not divide by zero
	}
	for i := 512; i < 768; i++ {
		x[i] = float32(math.Abs(float64(x[i]))) + 1 // all positive: min 0
	}
	for _, typ := range []Type{Q4_K, Q5_K, Q6_K} {
		data, err := Quantize(typ, x)
		if err != nil || len(data) != typ.RowBytes(len(x)) {
			t.Fatalf("%v: %d bytes, %v", typ, len(data), err)
		}
		out := make([]float32, len(x))
		if err := Dequantize(typ, data, out); err != nil {
			t.Fatal(err)
		}
		sub, levels, grid := 32, 15.0, 63.0
		switch typ {
		case Q5_K:
			levels = 31
		case Q6_K:
			sub, levels, grid = 16, 63, 127
		}
		var sum2, err2 float64
		for b := 0; b < len(x); b += 256 {
			var bmax float64
			for _, v := range x[b : b+256] {
				bmax = max(bmax, math.Abs(float64(v)))
			}
			for s := b; s < b+256; s += sub {
				lo, hi := 0.0, 0.0
				for _, v := range x[s : s+sub] {
					lo, hi = min(lo, float64(v)), max(hi, float64(v))
				}
				tol := (hi-lo)/levels + levels/2*(2*bmax/levels)/grid
				for i := s; i < s+sub; i++ {
					e := math.Abs(float64(out[i]) - float64(x[i]))
					if e > tol {
						t.Fatalf("%v element %d: %v became %v (error %g > %g)", typ, i, x[i], out[i], e, tol)
					}
					sum2 += float64(x[i]) * float64(x[i])
					err2 += e * e
				}
			}
		}
		// The RMS error of a good fit sits well below the worst case.
		rms, limit := math.Sqrt(err2/sum2), map[Type]float64{Q4_K: 0.1, Q5_K: 0.05, Q6_K: 0.03}[typ]
		if rms > limit {
			t.Errorf("%v: relative RMS error %.4f > %g", typ, rms, limit)
		}
		t.Logf("%v: relative RMS error %.4f", typ, rms)
	}
}
