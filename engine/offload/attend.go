package offload

import (
	"fmt"
	"math"
	"slices"

	"headinfer/engine/kernel"
	"headinfer/vk"
)

// Step is what one layer's attention reads and writes in a recorded step:
// the chunk's N queries Q, its new keys K and values V (N rows of
// KVHeads·headDim f32 each, RoPE applied), their positions Pos (u32), and
// the output Att (N rows of Heads·headDim f32). Decode marks a decode
// step (N = 1, its query at position length−1), whose streamed heads
// attend on the CPU when the cache has CPU attention; prefill chunks,
// even of one token, attend on the device.
//
// See, when set, is what the queries see up to instead of their own
// positions (u32 per query): a model that attends both ways gives every
// query the chunk's last position, so that each sees the whole input
// while its rows are still stored at Pos. The kernels need no mode of
// their own: positions alone decide what is visible.
type Step struct {
	Q, K, V, Att, Pos, See vk.Range
	N                      int
	Decode                 bool
}

// visible is the positions that decide what each query sees.
func (st Step) visible() vk.Range {
	if st.See.Buf != nil {
		return st.See
	}
	return st.Pos
}

// Attend records the attention of layer l in step st into p, for every KV
// length up to the context: the positions in Pos decide what is visible,
// with the layer's window, soft cap and scale (Layout.Attn).
// The resident heads attend to all blocks of their slots (blocks past the
// last position, or wholly before the window, hold nothing visible: the
// kernel reads none of their rows, and their partials are the merge's
// neutral element, which folds as an exact no-op); each streamed head
// goes block by block through the streaming buffers, and Program.Run
// skips the blocks past the step's length and those wholly before its
// windows. Then the chunk's new rows of the streamed heads go to their
// host slots. Every head's partials are folded into the accumulator in
// block order, whatever the batches, so the arithmetic is the same
// wherever the slot lives.
func (kc *Cache) Attend(p *Program, l int, st Step) error {
	lay := kc.lay
	if l < 0 || l >= len(kc.res) {
		return fmt.Errorf("offload: attention of layer %d of %d", l, len(kc.res))
	}
	if st.N < 1 {
		return fmt.Errorf("offload: attention of %d tokens", st.N)
	}
	if st.Decode && st.See.Buf != nil {
		return fmt.Errorf("offload: a decode step of layer %d attends both ways: decode steps are causal", l)
	}
	if st.Decode && st.N == 1 && kc.cpu != nil && kc.res[l].heads < lay.KVHeads {
		return kc.attendCPU(p, l, st)
	}
	if err := kc.attendResident(p, l, st); err != nil {
		return err
	}
	if kc.res[l].heads == lay.KVHeads {
		return nil
	}
	// A context whose rows fit a streaming buffer several times over
	// moves several heads per block: fewer copies, same blocks.
	for h := kc.res[l].heads; h < lay.KVHeads; {
		heads := 1
		if 2*lay.Ctx <= lay.StreamBlock {
			heads = min(lay.StreamBlock/lay.Ctx, lay.KVHeads-h)
		}
		if err := kc.attendStreamed(p, l, h, heads, st); err != nil {
			return err
		}
		h += heads
	}
	// The host slots are written after the layer's last streamed block
	// was copied: the copies read the rows this overwrites (stale ones,
	// which the attention replaced with the new rows).
	c, err := p.Compute()
	if err != nil {
		return err
	}
	c.Barrier()
	p.D2H += uint64(st.N*(lay.KVHeads-kc.res[l].heads)) * lay.RowBytesKV()
	return kc.storeHost(c, l, st.K, st.V, st.Pos, st.N)
}

// attendResident records the attention of layer l's resident heads: each
// group of KV heads folds its batches of blocks into the accumulator in
// order before the next group reuses it. Ring slots fold their blocks
// oldest first, which is the order of the same positions in a full slot.
func (kc *Cache) attendResident(p *Program, l int, st Step) error {
	if len(kc.res[l].split) == 0 {
		return nil
	}
	if err := kc.checkRing(l, st); err != nil {
		return err
	}
	c, err := p.Compute()
	if err != nil {
		return err
	}
	return residentPhases(c, []*Cache{kc}, l, []Step{st})
}

// AttendResident records the store of the new rows (on c) and the decode
// attention of layer l for several sequences at once, sequence i in
// caches[i] with steps[i], when every cache holds all of the layer's heads
// on the device in the same shape (slots of one layout) and has scratch of
// its own. It records what Store and Attend record for each, the same
// kernels on the same ranges, but phase by phase: all the stores, one
// barrier, the partials of a group of blocks for all the sequences, one
// barrier, their merges, one barrier. A batched step then waits on a few
// barriers per layer rather than a few per sequence. It records nothing
// and returns false where a cache streams heads or differs in shape:
// Store and Attend, one sequence after another, do those.
func AttendResident(p *Program, c *vk.Commands, caches []*Cache, l int, steps []Step) (bool, error) {
	if len(caches) == 0 || len(caches) != len(steps) {
		return false, fmt.Errorf("offload: attention of %d caches for %d steps", len(caches), len(steps))
	}
	first := caches[0]
	scratch := map[*vk.Buffer]bool{}
	for i, kc := range caches {
		if scratch[kc.scratch.Parts] || scratch[kc.scratch.Acc] {
			return false, nil
		}
		scratch[kc.scratch.Parts], scratch[kc.scratch.Acc] = true, true
		if l < 0 || l >= len(kc.res) || !steps[i].Decode || steps[i].N != 1 {
			return false, nil
		}
		r, r0 := &kc.res[l], &first.res[l]
		if r.heads != kc.lay.KVHeads || r.rows != r0.rows || r.ring != r0.ring ||
			!slices.Equal(r.split, r0.split) || kc.scratch.PartsCap != first.scratch.PartsCap {
			return false, nil
		}
		if err := kc.checkRing(l, steps[i]); err != nil {
			return false, err
		}
	}
	for i, kc := range caches {
		st := steps[i]
		if err := kc.Store(c, l, st.K, st.V, st.Pos, st.N); err != nil {
			return false, err
		}
	}
	c.Barrier()
	c, err := p.Compute()
	if err != nil {
		return false, err
	}
	return true, residentPhases(c, caches, l, steps)
}

// residentPhases records attendResident's partials and merges for every
// cache at once (sequence i in caches[i] with steps[i], heads held alike):
// per group of heads and batch of blocks, all partials, a barrier, all
// merges, a barrier.
func residentPhases(c *vk.Commands, caches []*Cache, l int, steps []Step) error {
	first := caches[0]
	r0 := &first.res[l]
	blocks := kernel.Blocks(r0.rows, AttnBlock)
	for g := range r0.split {
		for b0 := 0; b0 < blocks; b0 += first.scratch.PartsCap {
			for i, kc := range caches {
				if err := kc.residentPartial(c, l, steps[i], g, b0); err != nil {
					return err
				}
			}
			c.Barrier()
			for i, kc := range caches {
				if err := kc.residentMerge(c, l, steps[i], g, b0); err != nil {
					return err
				}
			}
			c.Barrier()
		}
	}
	return nil
}

// checkRing refuses a step whose chunk and window do not fit layer l's
// ring of positions.
func (kc *Cache) checkRing(l int, st Step) error {
	r := &kc.res[l]
	if w := kc.lay.attnOf(l).Window; r.ring > 0 && RingRows(w, st.N) > r.ring {
		return fmt.Errorf("offload: layer %d's ring of %d positions is too small for a window of %d and chunks of %d", l, r.ring, w, st.N)
	}
	return nil
}

// residentPartial records the partials of resident group g of layer l
// over the blocks from b0 (as many as the scratch holds) into the
// scratch; residentMerge folds them into the accumulator, and into Att
// after the last blocks.
func (kc *Cache) residentPartial(c *vk.Commands, l int, st Step, g, b0 int) error {
	lay, r := kc.lay, &kc.res[l]
	grp, at := r.split[g], lay.attnOf(l)
	nb := min(kc.scratch.PartsCap, kernel.Blocks(r.rows, AttnBlock)-b0)
	rows := min(nb*AttnBlock, r.rows-b0*AttnBlock)
	kr, vr := kc.rangeOf(l, grp, b0*AttnBlock, rows)
	if r.ring > 0 {
		kr, vr = kc.rangeOf(l, grp, 0, r.ring) // a ring is bound whole
	}
	return kc.ops.Attn.RecordPartial(c, st.Q, kr, vr, st.visible(), kc.scratch.Parts.All(), kernel.AttnParams{
		NTokens: st.N, QHeads: lay.Heads, QHead0: grp.first * lay.Group(),
		KVStart: b0 * AttnBlock, KVRows: rows, Block: AttnBlock,
		SlotStride: r.slotElems, KVHeads: grp.n, Scale: at.Scale, Window: at.Window, SoftCap: at.SoftCap,
		Ring: r.ring,
	})
}

func (kc *Cache) residentMerge(c *vk.Commands, l int, st Step, g, b0 int) error {
	lay, r := kc.lay, &kc.res[l]
	grp, blocks := r.split[g], kernel.Blocks(r.rows, AttnBlock)
	nb := min(kc.scratch.PartsCap, blocks-b0)
	return kc.ops.Attn.RecordMerge(c, kc.scratch.Parts.All(), kc.scratch.Acc.All(), st.Att, kernel.MergeParams{
		NTokens: st.N, Heads: grp.n * lay.Group(), NParts: nb,
		Init: b0 == 0, Finalize: b0+nb >= blocks,
		OutHeads: lay.Heads, OutHead0: grp.first * lay.Group(),
	})
}

// attendStreamed records the attention of streamed KV heads h …
// h+heads−1 of layer l: per streamed block, a copy of its rows from the
// host slots into a streaming buffer (heads back to back), the chunk's new
// rows stored over the stale ones (the KV store skips the tokens of other
// blocks), and the partials of its attention blocks folded into the
// accumulator; a block runs only when the step's KV length reaches it.
// The heads' output is written after their last block, by a merge that
// only finalizes, so that it does not depend on which block ran last.
// Several heads share a block only when all their rows fit it.
//
// A sliding-window layer streams blocks of about its window (windowSpan)
// that run only while a step's window reaches them, so that a step far
// into the context copies about twice the window, not the context; its
// accumulator is initialised by a merge of its own, since the block that
// would have done it may be skipped.
func (kc *Cache) attendStreamed(p *Program, l, h, heads int, st Step) error {
	lay := kc.lay
	a, group, at := kc.ops.Attn, lay.Group(), lay.attnOf(l)
	per := kernel.PartsBytes(st.N, heads*group, lay.HeadDim, 1)
	capBlocks := max(1, int(kc.scratch.Parts.Size())/per)
	kRow, vRow := lay.RowBytes(false), lay.RowBytes(true)
	span, until := lay.StreamBlock/heads, func(int) int { return math.MaxInt }
	if at.Window > 0 {
		span = min(span, windowSpan(at.Window))
		// The earliest query, at length−N, sees positions from
		// length−N−Window+1 on: the block ending at p0+rows−1 is
		// needed while length < p0+rows+N+Window−1.
		until = func(end int) int { return end + st.N + at.Window - 1 }
		c, err := p.Compute()
		if err != nil {
			return err
		}
		err = a.RecordMerge(c, vk.Range{}, kc.scratch.Acc.All(), vk.Range{}, kernel.MergeParams{
			NTokens: st.N, Heads: heads * group, Init: true,
		})
		if err != nil {
			return err
		}
		c.Barrier()
	}
	for p0 := 0; p0 < lay.Ctx; p0 += span {
		rows := min(span, lay.Ctx-p0)
		kHead, vHead := uint64(rows)*kRow, uint64(rows)*vRow
		var slotErr error
		j, err := p.StreamSpan(p0, until(p0+rows), func(t *vk.Commands) {
			buf := kc.stream[p.Blocks()%2]
			for i := 0; i < heads; i++ {
				hk, hv, err := kc.host.Slot(l, h+i, p0, rows)
				if err != nil {
					slotErr = err
					return
				}
				t.Copy(buf.k.Range(uint64(i)*kHead, kHead), hk)
				t.Copy(buf.v.Range(uint64(i)*vHead, vHead), hv)
			}
		}, uint64(heads)*(kHead+vHead))
		if err != nil {
			return err
		}
		if slotErr != nil {
			return slotErr
		}
		buf := kc.stream[j%2]
		c, err := p.Attend(j)
		if err != nil {
			return err
		}
		slots := kernel.KVSlots{Tokens: st.N, SrcHeads: lay.KVHeads, FirstHead: h, Heads: heads,
			SlotStride: rows * lay.HeadDim, SlotRows: rows, RowBase: p0}
		if err := kc.storeKV(c, st.K, st.V, st.Pos, buf.k.Range(0, uint64(heads)*kHead), buf.v.Range(0, uint64(heads)*vHead), slots); err != nil {
			return err
		}
		c.Barrier()
		nbj := kernel.Blocks(rows, AttnBlock)
		for b0 := 0; b0 < nbj; b0 += capBlocks {
			nb := min(capBlocks, nbj-b0)
			r := min(nb*AttnBlock, rows-b0*AttnBlock)
			kr := buf.k.Range(uint64(b0*AttnBlock)*kRow, uint64(heads-1)*kHead+uint64(r)*kRow)
			vr := buf.v.Range(uint64(b0*AttnBlock)*vRow, uint64(heads-1)*vHead+uint64(r)*vRow)
			err := a.RecordPartial(c, st.Q, kr, vr, st.visible(), kc.scratch.Parts.All(), kernel.AttnParams{
				NTokens: st.N, QHeads: lay.Heads, QHead0: h * group,
				KVStart: p0 + b0*AttnBlock, KVRows: r, Block: AttnBlock,
				SlotStride: rows * lay.HeadDim, KVHeads: heads, Scale: at.Scale, Window: at.Window, SoftCap: at.SoftCap,
			})
			if err != nil {
				return err
			}
			c.Barrier()
			err = a.RecordMerge(c, kc.scratch.Parts.All(), kc.scratch.Acc.All(), st.Att, kernel.MergeParams{
				NTokens: st.N, Heads: heads * group, NParts: nb, Init: at.Window == 0 && p0 == 0 && b0 == 0,
			})
			if err != nil {
				return err
			}
			c.Barrier()
		}
	}
	c, err := p.Compute()
	if err != nil {
		return err
	}
	err = a.RecordMerge(c, vk.Range{}, kc.scratch.Acc.All(), st.Att, kernel.MergeParams{
		NTokens: st.N, Heads: heads * group, Finalize: true, OutHeads: lay.Heads, OutHead0: h * group,
	})
	if err != nil {
		return err
	}
	c.Barrier()
	return nil
}

// windowSpan is the positions per streamed block of a layer with sliding
// window w: the window rounded up to attention blocks, so that a decode
// step's window spans at most two streamed blocks, but no fewer than
// minWindowSpan, which bounds the blocks a long context records.
func windowSpan(w int) int {
	return max(minWindowSpan, (w+AttnBlock-1)/AttnBlock*AttnBlock)
}

// minWindowSpan is the smallest streamed block of a sliding-window layer:
// smaller windows (Gemma 3's 512 or 1024) would otherwise record hundreds
// of blocks per head at long contexts, each a command buffer or two.
const minWindowSpan = 8 * AttnBlock

// scaleOf is the default attention score scale for heads of headDim values.
func scaleOf(headDim int) float32 { return float32(1 / math.Sqrt(float64(headDim))) }
