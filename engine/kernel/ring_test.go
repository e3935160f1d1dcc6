package kernel

import (
	"bytes"
	"fmt"
	"math"
	"testing"

	"headinfer/engine/gguf"
	"headinfer/vk"
	"headinfer/vk/vktest"
)

// ringOf lays out KV heads as rings of ring rows, as a sliding-window
// layer's cache holds them after writing positions 0 … p.rows−1 (p.start
// must be 0): position q in row q mod ring, the latest ring positions
// kept. Rows no position reached yet stay NaN, which a kernel that read
// them would turn into NaN output.
func (p *attnProblem) ringOf(full []byte, t gguf.Type, ring int) []byte {
	row := t.RowBytes(p.hd)
	out := bytes.Repeat([]byte{0xff}, p.nKV*ring*row)
	for g := range p.nKV {
		for q := max(0, p.rows-ring); q < p.rows; q++ {
			src := full[KVBytes(t, uint64(g*p.stride+q*p.hd)):][:row]
			copy(out[(g*ring+q%ring)*row:], src)
		}
	}
	return out
}

// TestAttentionRingMatchesFullSlot checks ring slots against full ones:
// the partials of a ring's blocks, merged oldest first, must give the
// bits of the same queries over a full slot (whose blocks outside the
// ring hold nothing visible), and the float64 reference. The rows no
// query sees are NaN in both layouts, so reading one fails the test.
func TestAttentionRingMatchesFullSlot(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	cases := []struct {
		kv                  gguf.Type
		hd, group, nKV      int
		nTok, rows          int
		block, window, ring int
		softCap             float32
	}{
		{gguf.F16, 64, 2, 2, 1, 1000, 64, 100, 192, 0},    // decode, wrapped many times
		{gguf.F16, 64, 2, 2, 33, 700, 64, 40, 192, 50},    // prefill chunk straddling the window, soft cap
		{gguf.F32, 32, 4, 1, 1, 150, 64, 100, 192, 0},     // not yet wrapped: rows past the last position are NaN
		{gguf.F16, 128, 1, 2, 9, 2049, 256, 512, 1024, 0}, // the engine's block size, position at a block's start
		{gguf.F32, 16, 2, 2, 5, 513, 16, 7, 48, 0},        // ring of three blocks, a tiny window
		{gguf.Q8_0, 64, 2, 2, 1, 1000, 64, 100, 192, 0},   // quantized slots: blocks along the head, rows whole
		{gguf.Q4_0, 32, 2, 2, 33, 700, 64, 40, 192, 50},
	}
	for _, tc := range cases {
		if tc.ring < tc.nTok+tc.window+tc.block-2 {
			t.Fatalf("ring %d is too small for %d queries and window %d", tc.ring, tc.nTok, tc.window)
		}
		for _, vr := range attnVariants {
			name := fmt.Sprintf("%s/%v/hd%d/g%d/kv%d/tok%d/len%d/block%d/window%d/ring%d",
				vr.name, tc.kv, tc.hd, tc.group, tc.nKV, tc.nTok, tc.rows, tc.block, tc.window, tc.ring)
			t.Run(name, func(t *testing.T) {
				p := newAttnProblem(r, tc.kv, tc.hd, tc.group, tc.nKV, tc.nTok, tc.rows, 0, 8)
				p.window, p.softCap = tc.window, tc.softCap
				p.poisonUnseen()
				a := attnNew(t, d, tc.kv, tc.hd, tc.group, vr.v)
				in := p.upload(t, d)
				kr, vr := upload(t, d, p.ringOf(p.kBytes, p.kv, tc.ring)), upload(t, d, p.ringOf(p.vBytes, p.vt, tc.ring))
				nb := tc.ring / tc.block
				heads := tc.nKV * tc.group
				outBytes := tc.nTok * heads * tc.hd * 4
				// The ring's blocks in one dispatch, and in two that
				// split them (as a small partials buffer does).
				parts := poisoned(t, d, PartsBytes(tc.nTok, heads, tc.hd, nb))
				acc1, out1 := poisoned(t, d, PartsBytes(tc.nTok, heads, tc.hd, 1)), poisoned(t, d, outBytes)
				acc2, out2 := poisoned(t, d, PartsBytes(tc.nTok, heads, tc.hd, 1)), poisoned(t, d, outBytes)
				ringParams := func(b0, blocks int) AttnParams {
					return AttnParams{NTokens: tc.nTok, QHeads: heads, KVStart: b0 * tc.block, KVRows: blocks * tc.block,
						Block: tc.block, SlotStride: tc.ring * tc.hd, KVHeads: tc.nKV, Scale: p.scale,
						Window: tc.window, SoftCap: tc.softCap, Ring: tc.ring}
				}
				run(t, d, func(c *vk.Commands) error {
					if err := a.RecordPartial(c, in.q.All(), kr.All(), vr.All(), in.pos.All(), parts.All(), ringParams(0, nb)); err != nil {
						return err
					}
					c.Barrier()
					return a.RecordMerge(c, parts.All(), acc1.All(), out1.All(), MergeParams{NTokens: tc.nTok, Heads: heads,
						NParts: nb, Init: true, Finalize: true, OutHeads: heads})
				})
				split := nb / 2
				run(t, d, func(c *vk.Commands) error {
					for i, span := range [][2]int{{0, split}, {split, nb - split}} {
						if err := a.RecordPartial(c, in.q.All(), kr.All(), vr.All(), in.pos.All(), parts.All(), ringParams(span[0], span[1])); err != nil {
							return err
						}
						c.Barrier()
						err := a.RecordMerge(c, parts.All(), acc2.All(), out2.All(), MergeParams{NTokens: tc.nTok, Heads: heads,
							NParts: span[1], Init: i == 0, Finalize: i == 1, OutHeads: heads})
						if err != nil {
							return err
						}
						c.Barrier()
					}
					return nil
				})
				ringOut, splitOut := download(t, d, out1), download(t, d, out2)
				if !bytes.Equal(ringOut, splitOut) {
					t.Fatal("the ring's blocks in two dispatches differ from one")
				}
				for g := range tc.nKV {
					full := p.headColumns(p.oneHead(t, d, a, in, g, tc.block), g)
					got := p.headColumns(bytesF32(ringOut), g)
					for i := range full {
						if math.Float32bits(full[i]) != math.Float32bits(got[i]) {
							t.Fatalf("KV head %d element %d: ring %v, full slot %v", g, i, got[i], full[i])
						}
					}
					want, mag := p.reference(g)
					attnAssert(t, got, want, mag, 1e-5)
				}
			})
		}
	}
}

func TestAttentionRejectsBadRing(t *testing.T) {
	d := vktest.Device(t)
	a := attnNew(t, d, gguf.F32, 8, 1, attnAuto)
	big := poisoned(t, d, 1<<16)
	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	good := AttnParams{NTokens: 1, QHeads: 1, KVRows: 64, Block: 32, KVHeads: 1, Scale: 0.3, Ring: 64}
	if err := a.RecordPartial(c, big.All(), big.All(), big.All(), big.All(), big.All(), good); err != nil {
		t.Errorf("valid parameters rejected: %v", err)
	}
	for _, f := range []func(*AttnParams){
		func(p *AttnParams) { p.Ring = 48 },                    // not whole blocks
		func(p *AttnParams) { p.KVStart = 16 },                 // range not on a block
		func(p *AttnParams) { p.KVStart, p.KVRows = 32, 64 },   // range past the ring
		func(p *AttnParams) { p.KVRows = 40 },                  // part of a block
		func(p *AttnParams) { p.Ring = -64 },                   // negative
		func(p *AttnParams) { p.KVHeads, p.SlotStride = 2, 8 }, // the heads' rings overlap
	} {
		p := good
		f(&p)
		if err := a.RecordPartial(c, big.All(), big.All(), big.All(), big.All(), big.All(), p); err == nil {
			t.Errorf("%+v accepted", p)
		}
	}
}
