package engine

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"headinfer/engine/kernel"
	"headinfer/engine/kv"
	"headinfer/vk"
)

// attnBlock is the number of KV positions one attention partial covers.
// The engine always splits attention at these boundaries and merges the
// partials in order, so the arithmetic does not depend on where KV lives.
const attnBlock = 256

// partsBudget bounds the attention partials buffer; blocks beyond it are
// folded into the accumulator in batches.
const partsBudget = 64 << 20

// state is one sequence's device state: activations sized for a chunk, the
// KV cache, and the programs recorded for each shape of step.
type state struct {
	m     *Model
	chunk int
	ctx   int

	x, xb, qkv, att, gate, up *vk.Buffer // activations, chunk rows each (see qkvRanges)
	logits                    *vk.Buffer // last token's logits
	ids, pos                  *vk.Buffer // host-written inputs (uint32 per token)
	next                      *vk.Buffer // argmax result, read by the host
	logitsHost                *vk.Buffer // logits copied for host sampling
	freqs                     *vk.Buffer // rope inverse frequencies
	parts, acc                *vk.Buffer // attention partials and accumulator
	partsCap                  int        // blocks per partials batch
	kv                        *kvCache

	bufs  []*vk.Buffer
	progs map[stepShape]*kv.Program
	clock *kv.Clock
	// deadline bounds the wait for each step (zero: the device's
	// default); the session sets it from its caller's context.
	deadline time.Time

	// Totals over the steps run so far.
	h2d, d2h    uint64
	copyWait    time.Duration
	dispatches  int
	submissions int
}

// stepShape identifies a recorded step: tokens in the chunk, KV blocks the
// attention visits, and whether the logits go to the host.
type stepShape struct {
	tokens, blocks int
	logits         bool
}

func newState(m *Model) (s *state, err error) {
	c, d := m.Config, m.dev
	s = &state{m: m, chunk: m.opt.Chunk, ctx: m.opt.CtxSize, progs: map[stepShape]*kv.Program{}}
	defer func() {
		if err != nil {
			s.free()
		}
	}()
	alloc := func(kind vk.MemoryKind, size int, label string) *vk.Buffer {
		if err != nil {
			return nil
		}
		var b *vk.Buffer
		b, err = d.Alloc(kind, uint64(size), label)
		s.bufs = append(s.bufs, b)
		return b
	}
	n := s.chunk
	a := activationSizes(c, n, s.ctx)
	s.x = alloc(vk.DeviceLocal, int(a.x), "activations x")
	s.xb = alloc(vk.DeviceLocal, int(a.x), "activations xb")
	s.qkv = alloc(vk.DeviceLocal, int(a.qkv), "activations q, k, v")
	s.att = alloc(vk.DeviceLocal, int(a.att), "activations attention")
	s.gate = alloc(vk.DeviceLocal, int(a.ffn), "activations gate")
	s.up = alloc(vk.DeviceLocal, int(a.ffn), "activations up")
	s.logits = alloc(vk.DeviceLocal, int(a.logits), "logits")
	s.ids = alloc(vk.Upload, int(a.ids), "token ids")
	s.pos = alloc(vk.Upload, int(a.ids), "positions")
	s.freqs = alloc(vk.Upload, 4*len(m.freqs), "rope frequencies")
	s.next = alloc(vk.Readback, 4, "next token")
	s.logitsHost = alloc(vk.Readback, int(a.logits), "logits (host)")
	s.partsCap = a.partsCap
	s.parts = alloc(vk.DeviceLocal, int(a.parts), "attention partials")
	s.acc = alloc(vk.DeviceLocal, int(a.acc), "attention accumulator")
	if err != nil {
		return nil, err
	}
	copy(s.freqs.Bytes(), f32Bytes(m.freqs))
	if s.kv, err = newKVCache(m); err != nil {
		return nil, err
	}
	if s.clock, err = kv.NewClock(d); err != nil {
		return nil, err
	}
	return s, nil
}

// qkvRanges places n rows each of q, k and v in s.qkv: back to back where
// the binding alignment allows, so that one token's q, k and v form one
// vector (see Model.qkv), else each at the next aligned offset.
func (s *state) qkvRanges(n int) (q, k, v vk.Range) {
	cfg := s.m.Config
	align := max(s.m.dev.Info().MinStorageBufferOffsetAlignment, 4)
	up := func(o uint64) uint64 { return (o + align - 1) / align * align }
	qb, kb := uint64(4*n*cfg.Heads*cfg.HeadDim), uint64(4*n*cfg.KVHeads*cfg.HeadDim)
	q = s.qkv.Range(0, qb)
	k = s.qkv.Range(up(qb), kb)
	v = s.qkv.Range(up(k.Off+kb), kb)
	return q, k, v
}

// run computes the forward pass of ids at positions start, start+1, …
// (len(ids) ≤ chunk) and leaves the last token's argmax in s.next (and its
// logits in s.logitsHost when withLogits).
func (s *state) run(ids []int32, start int, withLogits bool) error {
	n := len(ids)
	if n == 0 || n > s.chunk {
		return fmt.Errorf("engine: %d tokens in one step (chunk is %d)", n, s.chunk)
	}
	if start+n > s.ctx {
		return fmt.Errorf("context is full: %d positions needed, --ctx-size is %d", start+n, s.ctx)
	}
	idb, posb := s.ids.Bytes(), s.pos.Bytes()
	for i, id := range ids {
		if id < 0 || int(id) >= s.m.Config.Vocab {
			return fmt.Errorf("token id %d is outside the vocabulary (0..%d)", id, s.m.Config.Vocab-1)
		}
		binary.LittleEndian.PutUint32(idb[4*i:], uint32(id))
		binary.LittleEndian.PutUint32(posb[4*i:], uint32(start+i))
	}
	shape := stepShape{tokens: n, blocks: kernel.Blocks(start+n, attnBlock), logits: withLogits}
	p, ok := s.progs[shape]
	if !ok {
		var err error
		if p, err = s.program(shape); err != nil {
			return err
		}
		s.progs[shape] = p
	}
	st, err := p.RunUntil(s.clock, s.deadline)
	if err != nil {
		return err
	}
	s.h2d += p.H2D
	s.d2h += p.D2H
	s.dispatches += p.Dispatches()
	s.submissions += p.Submissions()
	s.copyWait += st.CopyWait
	return nil
}

// maxPrograms bounds the recorded step shapes kept: a decode step's shape
// changes every attnBlock positions and a long context would otherwise
// keep thousands.
const maxPrograms = 8

// program records the step of one shape.
func (s *state) program(shape stepShape) (*kv.Program, error) {
	if len(s.progs) >= maxPrograms {
		for sh, p := range s.progs {
			p.Free()
			delete(s.progs, sh)
		}
	}
	// Pipelined over two queues only when there are two: on one queue,
	// submissions per block would cost time and overlap nothing.
	pipelined := s.m.dev.Info().TransferQueue || s.m.opt.pipeline
	p := kv.NewProgram(s.m.dev, s.kv.host != nil, pipelined)
	if err := s.record(p, shape.tokens, shape.blocks); err != nil {
		p.End()
		p.Free()
		return nil, err
	}
	if shape.logits {
		c, err := p.Compute()
		if err != nil {
			p.Free()
			return nil, err
		}
		c.Barrier()
		c.Copy(s.logitsHost.All(), s.logits.All())
	}
	if err := p.End(); err != nil {
		p.Free()
		return nil, err
	}
	return p, nil
}

// argmax is the greedy next token of the last step.
func (s *state) argmax() int32 { return int32(binary.LittleEndian.Uint32(s.next.Bytes())) }

// logitsInto copies the last step's logits (when it asked for them).
func (s *state) logitsInto(dst []float32) []float32 {
	b := s.logitsHost.Bytes()
	dst = dst[:0]
	for i := 0; i < s.m.Config.Vocab; i++ {
		dst = append(dst, math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
	}
	return dst
}

// attend records attention of the n queries in q over KV blocks
// [0, blocks) of layer l into att: the resident heads from their slots,
// then each streamed head block by block through the streaming buffers;
// then it writes the chunk's new rows (k, v) of the streamed heads to
// their host slots. Every head's partials are folded into the
// accumulator in block order, whatever the batches, so the arithmetic is
// the same wherever the slot lives.
func (s *state) attend(p *kv.Program, l int, q, k, v, att, pos vk.Range, n, blocks int) error {
	cfg := s.m.Config
	a := s.m.ops.attn
	c, err := p.Compute()
	if err != nil {
		return err
	}
	// Each group of KV heads folds its batches of blocks into the
	// accumulator in order before the next group reuses it.
	for _, g := range s.kv.groups(l) {
		for b0 := 0; b0 < blocks; b0 += s.partsCap {
			nb := min(s.partsCap, blocks-b0)
			rows := min(nb*attnBlock, s.ctx-b0*attnBlock)
			kr, vr := s.kv.rangeOf(l, g, b0*attnBlock, rows)
			err := a.RecordPartial(c, q, kr, vr, pos, s.parts.All(), kernel.AttnParams{
				NTokens: n, QHeads: cfg.Heads, QHead0: g.first * cfg.Group(),
				KVStart: b0 * attnBlock, KVRows: rows, Block: attnBlock,
				SlotStride: s.kv.slotElems, KVHeads: g.n, Scale: scaleOf(cfg.HeadDim),
			})
			if err != nil {
				return err
			}
			c.Barrier()
			err = a.RecordMerge(c, s.parts.All(), s.acc.All(), att, kernel.MergeParams{
				NTokens: n, Heads: g.n * cfg.Group(), NParts: nb,
				Init: b0 == 0, Finalize: b0+nb >= blocks,
				OutHeads: cfg.Heads, OutHead0: g.first * cfg.Group(),
			})
			if err != nil {
				return err
			}
			c.Barrier()
		}
	}
	if s.kv.resident(l) == cfg.KVHeads {
		return nil
	}
	// A step whose rows fit a streaming buffer several times over moves
	// several heads per block: fewer copies and submissions, same blocks.
	end := min(blocks*attnBlock, s.ctx)
	for h := s.kv.resident(l); h < cfg.KVHeads; {
		heads := 1
		if 2*end <= s.kv.streamBlock {
			heads = min(s.kv.streamBlock/end, cfg.KVHeads-h)
		}
		if err := s.attendStreamed(p, l, h, heads, q, k, v, att, pos, n, blocks); err != nil {
			return err
		}
		h += heads
	}
	// The host slots are written after the layer's last streamed block
	// was copied: the copies read the rows this overwrites (stale ones,
	// which the attention replaced with the new rows).
	if c, err = p.Compute(); err != nil {
		return err
	}
	c.Barrier()
	p.D2H += uint64(2*n*(cfg.KVHeads-s.kv.resident(l))*cfg.HeadDim) * s.kv.elem
	return s.kv.storeHost(c, l, k, v, pos, n)
}

// attendStreamed records the attention of streamed KV heads h …
// h+heads−1 of layer l over blocks [0, blocks): per streamed block, a copy
// of its rows from the host slots into a streaming buffer (heads back to
// back), the chunk's new rows stored over the stale ones, and the
// partials of its attention blocks folded into the accumulator. Several
// heads share a block only when all their rows fit it. (The decode
// attention of streamed heads could run on the CPU where the rows live
// instead; this is the one place that would change.)
func (s *state) attendStreamed(p *kv.Program, l, h, heads int, q, k, v, att, pos vk.Range, n, blocks int) error {
	cfg, kc := s.m.Config, s.kv
	a := s.m.ops.attn
	group := cfg.Group()
	end := min(blocks*attnBlock, s.ctx)  // rows the step reads
	newFrom := max(0, end-attnBlock-n+1) // no new row lies before this
	per := kernel.PartsBytes(n, heads*group, cfg.HeadDim, 1)
	capBlocks := max(1, int(s.parts.Size())/per)
	rowBytes := uint64(cfg.HeadDim) * kc.elem
	for p0 := 0; p0 < end; p0 += kc.streamBlock {
		rows := min(kc.streamBlock/heads, end-p0)
		headBytes := uint64(rows) * rowBytes
		j, err := p.Stream(func(t *vk.Commands) {
			buf := kc.stream[p.Blocks()%2]
			for i := 0; i < heads; i++ {
				hk, hv := kc.host.Slot(l, h+i, p0, rows)
				t.Copy(buf.k.Range(uint64(i)*headBytes, headBytes), hk)
				t.Copy(buf.v.Range(uint64(i)*headBytes, headBytes), hv)
			}
		}, 2*uint64(heads)*headBytes)
		if err != nil {
			return err
		}
		buf := kc.stream[j%2]
		c, err := p.Attend(j)
		if err != nil {
			return err
		}
		if p0+rows > newFrom {
			size := uint64(heads) * headBytes
			slots := kernel.KVSlots{Tokens: n, SrcHeads: cfg.KVHeads, FirstHead: h, Heads: heads,
				SlotStride: rows * cfg.HeadDim, SlotRows: rows, RowBase: p0}
			if err := kc.storeKV(c, k, v, pos, buf.k.Range(0, size), buf.v.Range(0, size), slots); err != nil {
				return err
			}
			c.Barrier()
		}
		nbj := kernel.Blocks(rows, attnBlock)
		for b0 := 0; b0 < nbj; b0 += capBlocks {
			nb := min(capBlocks, nbj-b0)
			r := min(nb*attnBlock, rows-b0*attnBlock)
			off := uint64(b0*attnBlock) * rowBytes
			size := uint64(heads-1)*headBytes + uint64(r)*rowBytes
			err := a.RecordPartial(c, q, buf.k.Range(off, size), buf.v.Range(off, size), pos, s.parts.All(), kernel.AttnParams{
				NTokens: n, QHeads: cfg.Heads, QHead0: h * group,
				KVStart: p0 + b0*attnBlock, KVRows: r, Block: attnBlock,
				SlotStride: rows * cfg.HeadDim, KVHeads: heads, Scale: scaleOf(cfg.HeadDim),
			})
			if err != nil {
				return err
			}
			c.Barrier()
			err = a.RecordMerge(c, s.parts.All(), s.acc.All(), att, kernel.MergeParams{
				NTokens: n, Heads: heads * group, NParts: nb,
				Init: p0 == 0 && b0 == 0, Finalize: p0+rows >= end && b0+nb >= nbj,
				OutHeads: cfg.Heads, OutHead0: h * group,
			})
			if err != nil {
				return err
			}
			c.Barrier()
		}
	}
	return nil
}

func (s *state) free() {
	for _, p := range s.progs {
		p.Free()
	}
	s.progs = nil
	s.clock.Free()
	s.clock = nil
	if s.kv != nil {
		s.kv.free()
	}
	for _, b := range s.bufs {
		if b != nil {
			b.Free()
		}
	}
	s.bufs = nil
}

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}
