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
	for _, typ := range []Type{F32, F16, BF16, Q8_0, Q4_0} {
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
		{Dequantize(12, make([]byte, 144), out), "cannot decode tensor type Q4_K"},
		{Dequantize(Q8_0, make([]byte, 34), out[:31]), "31 elements is not a whole number of Q8_0 blocks"},
		{Dequantize(Q4_0, make([]byte, 17), out), "Q4_0 data of 17 bytes holds fewer than 32 elements"},
		{func() error { _, err := Quantize(12, out); return err }(), "cannot encode tensor type Q4_K"},
		{func() error { _, err := Quantize(Q4_0, out[:5]); return err }(), "5 elements is not a whole number of Q4_0 blocks"},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("error %v, want %q", c.err, c.want)
		}
	}
}
