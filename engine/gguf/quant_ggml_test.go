package gguf

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/x448/float16"
)

// TestQuantizeGGMLBytes checks Q8_0 and Q4_0 against blocks worked by hand
// from ggml's quantize_row_q8_0_ref and quantize_row_q4_0_ref: Q8_0 rounds
// halves away from zero (roundf), Q4_0 takes the signed value of largest
// magnitude as the scale's sign and truncates x/d + 8.5.
func TestQuantizeGGMLBytes(t *testing.T) {
	x := make([]float32, 32)
	x[0], x[1], x[2], x[3], x[4] = 127, 0.5, -2.5, 1.5, -0.5
	for j := 5; j < 32; j++ {
		x[j] = float32(j) - 20 // -15 … 11
	}
	want := []byte{0x00, 0x3c, 127, 1, 0xfd, 2, 0xff}
	for j := 5; j < 32; j++ {
		want = append(want, byte(int8(j-20)))
	}
	got, err := Quantize(Q8_0, x)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Q8_0:\n got % x\nwant % x", got, want)
	}

	// Largest magnitude -8: d = 1 (f16 0x3c00), q = min(15, trunc(x + 8.5)).
	y := make([]float32, 32)
	y[0], y[1], y[2], y[3], y[16], y[17] = -8, 0.5, 7.9, 3.2, -7.5, 6.5
	q := make([]int, 32)
	for j := range y {
		q[j] = min(15, int(y[j]+8.5))
	}
	if q[0] != 0 || q[1] != 9 || q[2] != 15 || q[3] != 11 || q[16] != 1 || q[17] != 15 || q[4] != 8 {
		t.Fatalf("worked codes %v", q)
	}
	want = []byte{0x00, 0x3c}
	for j := 0; j < 16; j++ {
		want = append(want, byte(q[j])|byte(q[j+16])<<4)
	}
	if got, _ = Quantize(Q4_0, y); !bytes.Equal(got, want) {
		t.Errorf("Q4_0:\n got % x\nwant % x", got, want)
	}
}

// TestQuantizeGGMLReference compares Q8_0 and Q4_0 with a transcription of
// ggml's reference quantizers on random blocks, including blocks whose
// values sit on rounding ties and all-zero blocks.
func TestQuantizeGGMLReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 8))
	for trial := 0; trial < 2000; trial++ {
		x := make([]float32, 64)
		for i := range x {
			switch trial % 4 {
			case 0:
				x[i] = float32(rng.NormFloat64())
			case 1: // halves of a power-of-two scale: ties for roundf
				x[i] = float32(rng.IntN(255)-127) / 2
			case 2:
				x[i] = float32(rng.NormFloat64() * 1e-3)
			}
		}
		for _, typ := range []Type{Q8_0, Q4_0} {
			got, err := Quantize(typ, x)
			if err != nil {
				t.Fatal(err)
			}
			if want := ggmlRef(typ, x); !bytes.Equal(got, want) {
				t.Fatalf("trial %d %v:\n got % x\nwant % x", trial, typ, got, want)
			}
		}
	}
}

// ggmlRef is ggml's quantize_row_q8_0_ref / quantize_row_q4_0_ref, step
// for step in float32.
func ggmlRef(typ Type, x []float32) []byte {
	var out []byte
	for b := 0; b < len(x)/32; b++ {
		blk := x[32*b : 32*b+32]
		var amax, vmax float32
		for _, v := range blk {
			a := float32(math.Abs(float64(v)))
			if amax < a {
				amax, vmax = a, v
			}
		}
		var d float32
		if typ == Q8_0 {
			d = amax / 127
		} else {
			d = vmax / -8
		}
		var id float32
		if d != 0 {
			id = 1 / d
		}
		h := float16.Fromfloat32(d).Bits()
		out = append(out, byte(h), byte(h>>8))
		if typ == Q8_0 {
			for _, v := range blk {
				x0 := float32(v * id)
				r := float32(math.Trunc(float64(x0)))
				if math.Abs(float64(x0-r)) >= 0.5 {
					r += float32(math.Copysign(1, float64(x0)))
				}
				out = append(out, byte(int8(r)))
			}
			continue
		}
		for j := 0; j < 16; j++ {
			x0 := float32(blk[j] * id)
			x1 := float32(blk[j+16] * id)
			q0 := min(15, int8(x0+8.5))
			q1 := min(15, int8(x1+8.5))
			out = append(out, byte(q0)|byte(q1)<<4)
		}
	}
	return out
}
