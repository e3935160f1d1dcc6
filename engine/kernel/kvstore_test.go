package kernel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/x448/float16"

	"headinfer/engine/gguf"
	"headinfer/vk"
	"headinfer/vk/vktest"
)

// skF16Cases are f32 values whose rounding to f16 is easy to get wrong:
// ties (round to even), values just either side of ties, subnormals,
// overflow, signed zero.
func skF16Cases() []float32 {
	v := []float32{
		0, float32(math.Copysign(0, -1)),
		65504, 65519, 65520, -65520, 1e6, float32(math.Inf(-1)),
		1e-10, -1e-10, // underflow to signed zero
		6.097555e-5, // near the largest subnormal
	}
	// Subnormal f16 values are multiples of 2^-24: (k/2)·2^-24 for odd k is
	// a tie (0.5 → 0, 1.5 → 2, 2.5 → 2), 0.75·2^-24 is not.
	for _, k := range []float64{1, 2, 3, 5, 1.5, -3} {
		v = append(v, float32(math.Ldexp(k, -25)))
	}
	// Ties and near-ties after normal f16 values: the tie is exactly half
	// an f16 ulp above h, whose f32 has 13 spare mantissa bits.
	for _, h := range []uint16{0x3c00, 0x3c01, 0x4a3f, 0xbc00, 0xc123, 0x0400, 0x7bfe} {
		f := math.Float32bits(float16.Frombits(h).Float32())
		v = append(v, math.Float32frombits(f+1<<12), math.Float32frombits(f+1<<12-1), math.Float32frombits(f+1<<12+1))
	}
	return v
}

func TestKVStore(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	const (
		headDim  = 20
		srcHeads = 3
		tokens   = 7
	)
	s := KVSlots{Tokens: tokens, SrcHeads: srcHeads, FirstHead: 1, Heads: 2,
		SlotRows: 24, SlotStride: 24*headDim + 7, RowBase: 40}
	// Out of order; 10, 64 and 70 fall outside the slot's rows [40, 64)
	// and are skipped; 63 is the last row.
	pos := []uint32{41, 40, 45, 10, 63, 70, 64}

	for _, typ := range []gguf.Type{gguf.F16, gguf.F32} {
		t.Run(typ.String(), func(t *testing.T) {
			k, err := NewKVStore(d, typ, headDim)
			if err != nil {
				t.Fatal(err)
			}
			src := randFloats(r, tokens*srcHeads*headDim, 4)
			if typ == gguf.F16 {
				// Token 0, heads 1 and 2 (the stored ones).
				if n := copy(src[headDim:], skF16Cases()); n != len(skF16Cases()) {
					t.Fatalf("only %d of %d rounding cases fit", n, len(skF16Cases()))
				}
			}
			elem := typ.BlockBytes()
			got := storeRows(t, d, k, src, pos, elem*((s.Heads-1)*s.SlotStride+s.SlotRows*headDim), s)

			// Build the expected slots: poison everywhere but the rows written.
			want := bytes.Repeat([]byte{0xff}, len(got))
			for tok, p := range pos {
				if p < uint32(s.RowBase) || p >= uint32(s.RowBase+s.SlotRows) {
					continue
				}
				for h := range s.Heads {
					for e := range headDim {
						v := src[(tok*srcHeads+s.FirstHead+h)*headDim+e]
						at := elem * (h*s.SlotStride + (int(p)-s.RowBase)*headDim + e)
						if typ == gguf.F16 {
							binary.LittleEndian.PutUint16(want[at:], float16.Fromfloat32(v).Bits())
						} else {
							binary.LittleEndian.PutUint32(want[at:], math.Float32bits(v))
						}
					}
				}
			}
			for i := 0; i < len(got); i += elem {
				if string(got[i:i+elem]) != string(want[i:i+elem]) {
					h, rem := (i/elem)/s.SlotStride, (i/elem)%s.SlotStride
					t.Fatalf("slot %d row %d element %d: bytes %x, want %x",
						h, rem/headDim, rem%headDim, got[i:i+elem], want[i:i+elem])
				}
			}
		})
	}
}

// storeRows runs k over the rows src at positions pos into dstBytes of
// poisoned slots (0xff bytes) and returns the slots' bytes.
func storeRows(t *testing.T, d *vk.Device, k *KVStore, src []float32, pos []uint32, dstBytes int, s KVSlots) []byte {
	t.Helper()
	sb, pb := upload(t, d, f32Bytes(src)), upload(t, d, skU32Bytes(pos))
	dst := poisoned(t, d, dstBytes)
	run(t, d, func(c *vk.Commands) error { return k.Record(c, sb.All(), pb.All(), dst.All(), s) })
	return download(t, d, dst)
}

func TestKVStoreRejects(t *testing.T) {
	d := vktest.Device(t)
	if _, err := NewKVStore(d, gguf.Q4_K, 256); err == nil {
		t.Error("a Q4_K KV cache was accepted")
	}
	if _, err := NewKVStore(d, gguf.Q8_0, 40); err == nil || !strings.Contains(err.Error(), "head size that is a multiple of 32; this model's is 40") {
		t.Errorf("a Q8_0 KV cache of 40-value heads: %v", err)
	}
	k, err := NewKVStore(d, gguf.F16, 8)
	if err != nil {
		t.Fatal(err)
	}
	buf := poisoned(t, d, 4096)
	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	good := KVSlots{Tokens: 2, SrcHeads: 2, FirstHead: 0, Heads: 2, SlotRows: 16, SlotStride: 128}
	if err := k.Record(c, buf.All(), buf.All(), buf.All(), good); err != nil {
		t.Fatalf("a valid store was refused: %v", err)
	}
	for name, s := range map[string]KVSlots{
		"heads past the source": {Tokens: 2, SrcHeads: 2, FirstHead: 1, Heads: 2, SlotRows: 16, SlotStride: 128},
		"overlapping slots":     {Tokens: 2, SrcHeads: 2, FirstHead: 0, Heads: 2, SlotRows: 16, SlotStride: 127},
		"destination too small": {Tokens: 2, SrcHeads: 2, FirstHead: 0, Heads: 2, SlotRows: 16, SlotStride: 2000},
		"negative row base":     {Tokens: 2, SrcHeads: 2, FirstHead: 0, Heads: 2, SlotRows: 16, SlotStride: 128, RowBase: -1},
	} {
		if err := k.Record(c, buf.All(), buf.All(), buf.All(), s); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestKVStoreRing checks ring slots: position p goes to row p mod rows,
// wrapping within one chunk, whatever RowBase says.
func TestKVStoreRing(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	const headDim, srcHeads, rows = 8, 2, 8
	s := KVSlots{Tokens: 7, SrcHeads: srcHeads, Heads: srcHeads, SlotRows: rows, SlotStride: rows * headDim, RowBase: 99, Ring: true}
	pos := []uint32{13, 14, 15, 16, 17, 18, 19} // rows 5, 6, 7, 0, 1, 2, 3
	k, err := NewKVStore(d, gguf.F32, headDim)
	if err != nil {
		t.Fatal(err)
	}
	src := randFloats(r, s.Tokens*srcHeads*headDim, 4)
	dst := poisoned(t, d, 4*srcHeads*rows*headDim)
	sb, pb := upload(t, d, f32Bytes(src)), upload(t, d, skU32Bytes(pos))
	run(t, d, func(c *vk.Commands) error { return k.Record(c, sb.All(), pb.All(), dst.All(), s) })
	got := download(t, d, dst)
	for h := range srcHeads {
		for row := range rows {
			for e := range headDim {
				at := 4 * ((h*rows+row)*headDim + e)
				want := uint32(math.MaxUint32) // poison: row 4 is not written
				for tok, p := range pos {
					if int(p)%rows == row {
						want = math.Float32bits(src[(tok*srcHeads+h)*headDim+e])
					}
				}
				if g := binary.LittleEndian.Uint32(got[at:]); g != want {
					t.Fatalf("head %d row %d element %d: %#x, want %#x", h, row, e, g, want)
				}
			}
		}
	}
}

// TestKVStoreQuant checks the Q8_0 and Q4_0 stores byte for byte against
// gguf.Quantize of the same rows: random rows, rows of rounding ties
// (halves of the step), rows whose scale is an f16 subnormal or rounds
// to even, and all-zero rows; skipped tokens and ring slots as for f16.
func TestKVStoreQuant(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	const headDim, srcHeads, tokens = 64, 3, 9
	pos := []uint32{41, 40, 45, 10, 63, 70, 68, 50, 51} // distinct rows of a 24-row ring too
	for _, typ := range []gguf.Type{gguf.Q8_0, gguf.Q4_0} {
		for _, ring := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/ring=%v", typ, ring), func(t *testing.T) {
				s := KVSlots{Tokens: tokens, SrcHeads: srcHeads, FirstHead: 1, Heads: 2,
					SlotRows: 24, SlotStride: 24*headDim + 32, RowBase: 40, Ring: ring}
				k, err := NewKVStore(d, typ, headDim)
				if err != nil {
					t.Fatal(err)
				}
				src := randFloats(r, tokens*srcHeads*headDim, 4)
				fill := func(tok, h int, f func(j int) float32) {
					for j := range headDim {
						src[(tok*srcHeads+h)*headDim+j] = f(j)
					}
				}
				fill(0, 1, func(j int) float32 { return float32(j%16-8) * 0.5 })              // ties of step 1 or 1/2
				fill(1, 2, func(j int) float32 { return float32(r.NormFloat64() * 1e-4) })    // subnormal f16 scales
				fill(2, 1, func(j int) float32 { return 0 })                                  // zero blocks
				fill(4, 2, func(j int) float32 { return float32(j-31) * 127.0 / 32 / 8 * 3 }) // scale near an f16 tie
				fill(7, 1, func(j int) float32 { return float32(r.NormFloat64() * 1e3) })

				rowBytes := typ.RowBytes(headDim)
				got := storeRows(t, d, k, src, pos, int(KVBytes(typ, uint64((s.Heads-1)*s.SlotStride+s.SlotRows*headDim))), s)

				want := bytes.Repeat([]byte{0xff}, len(got))
				for tok, p := range pos {
					row := int(p) - s.RowBase
					if ring {
						row = int(p) % s.SlotRows
					} else if row < 0 || row >= s.SlotRows {
						continue
					}
					for h := range s.Heads {
						from := (tok*srcHeads + s.FirstHead + h) * headDim
						q, err := gguf.Quantize(typ, src[from:from+headDim])
						if err != nil {
							t.Fatal(err)
						}
						at := int(KVBytes(typ, uint64(h*s.SlotStride+row*headDim)))
						copy(want[at:], q)
					}
				}
				for i := 0; i < len(got); i += rowBytes {
					end := min(len(got), i+rowBytes)
					if string(got[i:end]) != string(want[i:end]) {
						t.Fatalf("bytes %d..%d:\n got % x\nwant % x", i, end, got[i:end], want[i:end])
					}
				}
			})
		}
	}
}
