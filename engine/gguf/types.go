package gguf

import (
	"fmt"
	"math"

	"github.com/x448/float16"
)

// Type is a ggml tensor element type, numbered as in the GGUF format.
type Type uint32

// The tensor types this engine loads. Other GGUF types are recognised by
// number only so that errors can name them.
const (
	F32  Type = 0
	F16  Type = 1
	Q4_0 Type = 2
	Q8_0 Type = 8
	Q4_K Type = 12
	Q5_K Type = 13
	Q6_K Type = 14
	BF16 Type = 30
)

// SupportedTypes lists the types the engine loads, in the order error
// messages and help texts name them.
var SupportedTypes = []Type{F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K}

// SupportedNames is SupportedTypes as text, for messages.
func SupportedNames() string {
	s := ""
	for i, t := range SupportedTypes {
		if i > 0 {
			s += ", "
		}
		s += t.String()
	}
	return s
}

var typeNames = map[Type]string{
	0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
	10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
	16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S",
	22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
	29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// Supported reports whether the engine can load tensors of this type.
func (t Type) Supported() bool {
	switch t {
	case F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K:
		return true
	}
	return false
}

// BlockSize is the number of elements in one storage block of the type
// (1 for plain float types, 32 for Q8_0 and Q4_0, 256 for the K-quants).
func (t Type) BlockSize() int {
	switch t {
	case Q8_0, Q4_0:
		return 32
	case Q4_K, Q5_K, Q6_K:
		return 256
	}
	return 1
}

// BlockBytes is the size in bytes of one storage block of the type.
func (t Type) BlockBytes() int {
	switch t {
	case F32:
		return 4
	case F16, BF16:
		return 2
	case Q8_0:
		return 34 // f16 scale + 32 int8
	case Q4_0:
		return 18 // f16 scale + 16 bytes of nibbles
	case Q4_K:
		return 144 // f16 d, dmin + 12 bytes of 6-bit scales and mins + 128 bytes of nibbles
	case Q5_K:
		return 176 // Q4_K's + 32 bytes of fifth bits
	case Q6_K:
		return 210 // 128 bytes of low nibbles, 64 of high 2-bit pairs, 16 int8 scales, f16 d
	}
	return 0
}

// RowBytes is the size in bytes of n elements of the type. n must be a
// multiple of BlockSize.
func (t Type) RowBytes(n int) int { return n / t.BlockSize() * t.BlockBytes() }

// Dequantize decodes len(out) elements of type t from data into out.
// len(out) must be a multiple of t.BlockSize().
func Dequantize(t Type, data []byte, out []float32) error {
	if !t.Supported() {
		return fmt.Errorf("gguf: cannot decode tensor type %v", t)
	}
	if len(out)%t.BlockSize() != 0 {
		return fmt.Errorf("gguf: %d elements is not a whole number of %v blocks", len(out), t)
	}
	if need := t.RowBytes(len(out)); len(data) < need {
		return fmt.Errorf("gguf: %v data of %d bytes holds fewer than %d elements", t, len(data), len(out))
	}
	switch t {
	case F32:
		for i := range out {
			out[i] = math.Float32frombits(le32(data[4*i:]))
		}
	case F16:
		for i := range out {
			out[i] = float16.Frombits(le16(data[2*i:])).Float32()
		}
	case BF16:
		for i := range out {
			out[i] = math.Float32frombits(uint32(le16(data[2*i:])) << 16)
		}
	case Q8_0:
		for b := 0; b < len(out)/32; b++ {
			blk := data[34*b:]
			d := float16.Frombits(le16(blk)).Float32()
			for j := 0; j < 32; j++ {
				out[32*b+j] = d * float32(int8(blk[2+j]))
			}
		}
	case Q4_0:
		for b := 0; b < len(out)/32; b++ {
			blk := data[18*b:]
			d := float16.Frombits(le16(blk)).Float32()
			for j := 0; j < 16; j++ {
				q := blk[2+j]
				out[32*b+j] = d * float32(int(q&0x0f)-8)
				out[32*b+j+16] = d * float32(int(q>>4)-8)
			}
		}
	case Q4_K, Q5_K, Q6_K:
		dequantizeK(t, data, out)
	}
	return nil
}

// Quantize encodes in as type t, the way llama.cpp's reference quantizers
// do (the K-quants with this package's own scale search, see quantizeK).
// len(in) must be a multiple of t.BlockSize().
func Quantize(t Type, in []float32) ([]byte, error) {
	if !t.Supported() {
		return nil, fmt.Errorf("gguf: cannot encode tensor type %v", t)
	}
	if len(in)%t.BlockSize() != 0 {
		return nil, fmt.Errorf("gguf: %d elements is not a whole number of %v blocks", len(in), t)
	}
	out := make([]byte, t.RowBytes(len(in)))
	switch t {
	case F32:
		for i, v := range in {
			put32(out[4*i:], math.Float32bits(v))
		}
	case F16:
		for i, v := range in {
			put16(out[2*i:], float16.Fromfloat32(v).Bits())
		}
	case BF16:
		for i, v := range in {
			put16(out[2*i:], BF16Bits(v))
		}
	case Q8_0:
		for b := 0; b < len(in)/32; b++ {
			x := in[32*b : 32*b+32]
			var amax float32
			for _, v := range x {
				amax = max(amax, abs32(v))
			}
			d := amax / 127
			id := float32(0)
			if d != 0 {
				id = 1 / d
			}
			blk := out[34*b:]
			put16(blk, float16.Fromfloat32(d).Bits())
			for j, v := range x {
				// roundf: halves away from zero. The explicit float32
				// conversion keeps the product rounded to float32, as
				// ggml's x0 = x[j]*id is, whatever the compiler fuses.
				blk[2+j] = byte(int8(math.Round(float64(float32(v * id)))))
			}
		}
	case Q4_0:
		for b := 0; b < len(in)/32; b++ {
			x := in[32*b : 32*b+32]
			var amax, vmax float32
			for _, v := range x {
				if abs32(v) > amax {
					amax, vmax = abs32(v), v
				}
			}
			d := vmax / -8
			id := float32(0)
			if d != 0 {
				id = 1 / d
			}
			blk := out[18*b:]
			put16(blk, float16.Fromfloat32(d).Bits())
			for j := 0; j < 16; j++ {
				// ggml's (int8_t)(x*id + 8.5f), the product rounded on its
				// own (no fused multiply-add) and the sum truncated.
				q0 := min(15, int(float32(x[j]*id)+8.5))
				q1 := min(15, int(float32(x[j+16]*id)+8.5))
				blk[2+j] = byte(q0) | byte(q1)<<4
			}
		}
	case Q4_K, Q5_K, Q6_K:
		quantizeK(t, in, out)
	}
	return out, nil
}

// BF16Bits rounds v to bfloat16 (round to nearest even) and returns its bits.
func BF16Bits(v float32) uint16 {
	b := math.Float32bits(v)
	if b&0x7fffffff > 0x7f800000 { // NaN: keep it quiet
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

func abs32(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }

func le16(b []byte) uint16 { return uint16(b[0]) | uint16(b[1])<<8 }
func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
func put16(b []byte, v uint16) { b[0], b[1] = byte(v), byte(v>>8) }
func put32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}
