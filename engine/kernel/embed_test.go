package kernel

import (
	"fmt"
	"math"
	"testing"

	"headinfer/engine/gguf"
	"headinfer/vk"
	"headinfer/vk/vktest"
)

func TestEmbed(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	const vocab, tokens = 41, 10
	for _, tc := range []struct {
		typ gguf.Type
		dim int
	}{{gguf.F32, 70}, {gguf.F16, 70}, {gguf.BF16, 70}, {gguf.Q8_0, 96}, {gguf.Q4_0, 96},
		{gguf.Q4_K, 512}, {gguf.Q5_K, 512}, {gguf.Q6_K, 768}} {
		for _, split := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/split=%v", tc.typ, split), func(t *testing.T) {
				k, err := NewEmbed(d, tc.typ, tc.dim, vocab)
				if err != nil {
					t.Fatal(err)
				}
				w, err := gguf.Quantize(tc.typ, randFloats(r, vocab*tc.dim, 2))
				if err != nil {
					t.Fatal(err)
				}
				table := make([]float32, vocab*tc.dim)
				if err := gguf.Dequantize(tc.typ, w, table); err != nil {
					t.Fatal(err)
				}
				// W starts 2 bytes into its buffer (F32: 4), so that no chunk
				// starts on a binding boundary.
				lead := 2
				if tc.typ == gguf.F32 {
					lead = 4
				}
				wb := upload(t, d, append(make([]byte, lead), w...))
				wr := wb.Range(uint64(lead), uint64(len(w)))
				if split {
					// About 5 rows per binding: 9 dispatches.
					k.maxBind = uint64(5*tc.typ.RowBytes(tc.dim)) + d.Info().MinStorageBufferOffsetAlignment
					if n := k.rowsPerBinding(); n != 5 {
						t.Fatalf("%d rows per binding, want 5", n)
					}
				} else if n := k.rowsPerBinding(); n != vocab {
					t.Fatalf("%d rows per binding, want all %d", n, vocab)
				}
				// The last row, the first, repeats, the first and last rows
				// of a split chunk, and two ids past the end.
				ids := []uint32{vocab - 1, 0, uint32(r.IntN(vocab)), vocab, 17, 17, math.MaxUint32, uint32(r.IntN(vocab)), 5, 9}
				ib := upload(t, d, skU32Bytes(ids))
				out := poisoned(t, d, 4*tokens*tc.dim)
				run(t, d, func(c *vk.Commands) error { return k.Record(c, ib.All(), wr, out.All(), tokens) })
				got := bytesF32(download(t, d, out))
				for tok, id := range ids {
					for e := range tc.dim {
						want := float32(0)
						if id < vocab {
							want = table[int(id)*tc.dim+e]
						}
						// The decode is the reference's, in f32: exact.
						if g := got[tok*tc.dim+e]; math.Float32bits(g) != math.Float32bits(want) {
							t.Fatalf("token %d (id %d) element %d = %v, want %v", tok, id, e, g, want)
						}
					}
				}
			})
		}
	}
}

func TestEmbedRejects(t *testing.T) {
	d := vktest.Device(t)
	if _, err := NewEmbed(d, gguf.Q8_0, 70, 10); err == nil {
		t.Error("a Q8_0 row of 70 elements was accepted")
	}
	if _, err := NewEmbed(d, gguf.Type(11), 256, 10); err == nil {
		t.Error("an unsupported type was accepted")
	}
	k, err := NewEmbed(d, gguf.F16, 64, 10)
	if err != nil {
		t.Fatal(err)
	}
	w := poisoned(t, d, 2*64*10-2)
	ids, out := poisoned(t, d, 4), poisoned(t, d, 4*64)
	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	if err := k.Record(c, ids.All(), w.All(), out.All(), 1); err == nil {
		t.Error("a weight range one element short was accepted")
	}
}
