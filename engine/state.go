package engine

import (
	"encoding/binary"
	"fmt"
	"math"

	"headinfer/engine/kernel"
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
// KV cache, and the command buffers recorded for each shape of step.
type state struct {
	m     *Model
	chunk int
	ctx   int

	x, xb, q, k, v, att, gate, up *vk.Buffer // activations, chunk rows each
	logits                        *vk.Buffer // last token's logits
	ids, pos                      *vk.Buffer // host-written inputs (uint32 per token)
	next                          *vk.Buffer // argmax result, read by the host
	logitsHost                    *vk.Buffer // logits copied for host sampling
	freqs                         *vk.Buffer // rope inverse frequencies
	parts, acc                    *vk.Buffer // attention partials and accumulator
	partsCap                      int        // blocks per partials batch
	kv                            *deviceKV

	bufs []*vk.Buffer
	cmds map[stepShape]*vk.Commands
}

// stepShape identifies a recorded step: tokens in the chunk, KV blocks the
// attention visits, and whether the logits go to the host.
type stepShape struct {
	tokens, blocks int
	logits         bool
}

func newState(m *Model) (s *state, err error) {
	c, d := m.Config, m.dev
	s = &state{m: m, chunk: m.opt.Chunk, ctx: m.opt.CtxSize, cmds: map[stepShape]*vk.Commands{}}
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
	qdim, kvdim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	s.x = alloc(vk.DeviceLocal, 4*n*c.Dim, "activations x")
	s.xb = alloc(vk.DeviceLocal, 4*n*c.Dim, "activations xb")
	s.q = alloc(vk.DeviceLocal, 4*n*qdim, "activations q")
	s.k = alloc(vk.DeviceLocal, 4*n*kvdim, "activations k")
	s.v = alloc(vk.DeviceLocal, 4*n*kvdim, "activations v")
	s.att = alloc(vk.DeviceLocal, 4*n*qdim, "activations attention")
	s.gate = alloc(vk.DeviceLocal, 4*n*c.FFN, "activations gate")
	s.up = alloc(vk.DeviceLocal, 4*n*c.FFN, "activations up")
	s.logits = alloc(vk.DeviceLocal, 4*c.Vocab, "logits")
	s.ids = alloc(vk.Upload, 4*n, "token ids")
	s.pos = alloc(vk.Upload, 4*n, "positions")
	s.freqs = alloc(vk.Upload, 4*len(m.freqs), "rope frequencies")
	s.next = alloc(vk.Readback, 4, "next token")
	s.logitsHost = alloc(vk.Readback, 4*c.Vocab, "logits (host)")
	blocks := kernel.Blocks(s.ctx, attnBlock)
	per := kernel.PartsBytes(n, c.Heads, c.HeadDim, 1)
	s.partsCap = max(1, min(blocks, partsBudget/per))
	s.parts = alloc(vk.DeviceLocal, per*s.partsCap, "attention partials")
	s.acc = alloc(vk.DeviceLocal, per, "attention accumulator")
	if err != nil {
		return nil, err
	}
	copy(s.freqs.Bytes(), f32Bytes(m.freqs))
	if s.kv, err = newDeviceKV(m, s.ctx); err != nil {
		return nil, err
	}
	return s, nil
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
	c, ok := s.cmds[shape]
	if !ok {
		var err error
		if c, err = s.m.dev.NewCommands(); err != nil {
			return err
		}
		if err := s.record(c, n, shape.blocks); err != nil {
			c.Free()
			return err
		}
		if withLogits {
			c.Barrier()
			c.Copy(s.logitsHost.All(), s.logits.All())
		}
		if err := c.End(); err != nil {
			c.Free()
			return err
		}
		s.cmds[shape] = c
	}
	return s.m.dev.Run(c)
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
// [0, blocks) of layer l into att, a batch of partials at a time.
func (s *state) attend(c *vk.Commands, l int, q, att, pos vk.Range, n, blocks int) error {
	cfg := s.m.Config
	a := s.m.ops.attn
	// Each group of KV heads folds its batches of blocks into the
	// accumulator in order before the next group reuses it.
	for _, g := range s.kv.groups(l) {
		for b0 := 0; b0 < blocks; b0 += s.partsCap {
			nb := min(s.partsCap, blocks-b0)
			rows := min(nb*attnBlock, s.ctx-b0*attnBlock)
			k, v := s.kv.rangeOf(l, g, b0*attnBlock, rows)
			err := a.RecordPartial(c, q, k, v, pos, s.parts.All(), kernel.AttnParams{
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
	return nil
}

func (s *state) free() {
	for _, c := range s.cmds {
		c.Free()
	}
	s.cmds = nil
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
