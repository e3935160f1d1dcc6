package engine

import (
	"encoding/binary"
	"fmt"
	"time"

	"headinfer/engine/offload"
	"headinfer/vk"
)

// batchStep is the device side of batched decoding: one forward pass that
// computes the next token of several sequences, each one token ahead of
// its KV cache. The projections read each weight once for all of them
// (matrix × several vectors), and each sequence's attention runs over its
// own KV cache, wherever its plan placed it, exactly as its solo decode
// step does: its q, k and v are copied into the sequence's own state, its
// attention recorded by that state, and its output copied back. The
// logits of each sequence land in its own state too, so that a Session
// reads them as after its own step.
//
// Every kernel a batched step runs computes a sequence's row with the
// arithmetic of the one-token kernel the solo step runs (the matrix ×
// vector kernels keep each vector's summation order whatever the batch),
// so a sequence's logits do not depend on who else is in the batch.
type batchStep struct {
	m    *Model
	rows int // sequences at most

	x, xb, qkv, att, gate, up, logits *vk.Buffer // one row per sequence
	ids                               *vk.Buffer // host-written token ids
	bufs                              []*vk.Buffer

	progs *programs[string] // by key
	clock *offload.Clock
}

// maxBatchPrograms bounds the recorded batched steps kept: one per set of
// sequences that stepped together, so continuous batching of a few
// sequences needs a handful; the least recently used goes first.
const maxBatchPrograms = 16

func newBatchStep(m *Model, rows int) (b *batchStep, err error) {
	c, d := m.Config, m.dev
	b = &batchStep{m: m, rows: rows, progs: newPrograms[string](maxBatchPrograms)}
	defer func() {
		if err != nil {
			b.free()
		}
	}()
	alloc := func(kind vk.MemoryKind, size uint64, label string) *vk.Buffer {
		if err != nil {
			return nil
		}
		var buf *vk.Buffer
		buf, err = d.Alloc(kind, size, label)
		b.bufs = append(b.bufs, buf)
		return buf
	}
	a := activationSizes(c, rows, 1)
	b.x = alloc(vk.DeviceLocal, a.x, "batch activations x")
	b.xb = alloc(vk.DeviceLocal, a.x, "batch activations xb")
	b.qkv = alloc(vk.DeviceLocal, a.qkv, "batch activations q, k, v")
	b.att = alloc(vk.DeviceLocal, a.att, "batch activations attention")
	b.gate = alloc(vk.DeviceLocal, a.ffn, "batch activations gate")
	b.up = alloc(vk.DeviceLocal, a.ffn, "batch activations up")
	b.logits = alloc(vk.DeviceLocal, uint64(rows)*a.logits, "batch logits")
	b.ids = alloc(vk.Upload, a.ids, "batch token ids")
	if err != nil {
		return nil, err
	}
	if b.clock, err = offload.NewClock(d); err != nil {
		return nil, err
	}
	return b, nil
}

// run computes, for each sequence i, the step of token ids[i] at position
// starts[i] (its KV length so far): afterwards seqs[i] holds its argmax
// and, with withLogits, its logits, as after its own decode step.
func (b *batchStep) run(seqs []*state, ids []int32, starts []int, withLogits bool, deadline time.Time) (offload.RunStats, error) {
	n := len(seqs)
	if n < 1 || n > b.rows || len(ids) != n || len(starts) != n {
		return offload.RunStats{}, fmt.Errorf("engine: batched step of %d sequences (%d ids, %d positions; at most %d)", n, len(ids), len(starts), b.rows)
	}
	idb := b.ids.Bytes()
	lengths := make([]int, n)
	for i, s := range seqs {
		id, at := ids[i], starts[i]
		if id < 0 || int(id) >= b.m.Config.Vocab {
			return offload.RunStats{}, fmt.Errorf("token id %d is outside the vocabulary (0..%d)", id, b.m.Config.Vocab-1)
		}
		if at+1 > s.ctx {
			return offload.RunStats{}, fmt.Errorf("context is full (%d positions): pass a larger --ctx-size", s.ctx)
		}
		binary.LittleEndian.PutUint32(idb[4*i:], uint32(id))
		binary.LittleEndian.PutUint32(s.pos.Bytes(), uint32(at))
		lengths[i] = at + 1
	}
	p, err := b.programFor(seqs, withLogits)
	if err != nil {
		return offload.RunStats{}, err
	}
	st, err := p.RunBatch(b.clock, lengths, deadline)
	if err != nil {
		return st, err
	}
	for _, s := range seqs {
		// Each sequence's share of the streamed traffic is its own.
		s.d2h += p.D2H / uint64(n)
	}
	return st, nil
}

// key names a set of sequences in order, by their states, and whether the
// step copies logits to the host.
func (b *batchStep) key(seqs []*state, withLogits bool) string {
	k := fmt.Sprint(withLogits)
	for _, s := range seqs {
		k += fmt.Sprintf(" %d", s.id)
	}
	return k
}

// programFor returns the step of seqs, recording it on first use.
func (b *batchStep) programFor(seqs []*state, withLogits bool) (*offload.Program, error) {
	p, _, err := b.progs.get(b.key(seqs, withLogits), func() (*offload.Program, error) {
		streams, pipelined := false, false
		for _, s := range seqs {
			streams = streams || s.kv.Streams()
			pipelined = pipelined || s.pipelined
		}
		p := offload.NewProgram(b.m.dev, streams, pipelined)
		err := b.record(p, seqs, withLogits)
		if err == nil {
			err = p.End()
		} else {
			p.End()
		}
		if err != nil {
			p.Free()
			return nil, err
		}
		return p, nil
	})
	return p, err
}

// record appends the batched step of seqs to p. It follows state.record
// with one token per sequence; see batchStep for what differs.
func (b *batchStep) record(p *offload.Program, seqs []*state, withLogits bool) error {
	m, w, cfg, o := b.m, b.m.w, b.m.Config, b.m.ops
	n := len(seqs)
	rows := func(buf *vk.Buffer, width int) vk.Range { return buf.Range(0, uint64(4*n*width)) }
	x, xb, att := rows(b.x, cfg.Dim), rows(b.xb, cfg.Dim), rows(b.att, cfg.Heads*cfg.HeadDim)
	gate, up := rows(b.gate, cfg.FFN), rows(b.up, cfg.FFN)
	qDim := cfg.Heads * cfg.HeadDim
	product := func(c *vk.Commands, t *Tensor, wr vk.Range, rows int, x, y vk.Range, acc bool) error {
		return m.ops.matvec[t.Type].RecordBatch(c, wr, rows, t.Cols, n, x, y, acc)
	}

	c, err := p.Compute()
	if err != nil {
		return err
	}
	try := func(e error) {
		if err == nil {
			err = e
		}
	}
	try(o.embed.Record(c, b.ids.Range(0, uint64(4*n)), w.Embed.Range(), x, n))
	c.Barrier()
	for l := range w.Blocks {
		blk := &w.Blocks[l]
		try(o.norm.Record(c, x, blk.AttnNorm.Range(), xb, n))
		c.Barrier()
		try(b.qkvInto(c, blk, seqs, xb, product))
		c.Barrier()
		if err != nil {
			return err
		}
		for i, s := range seqs {
			if err := p.Sequence(i); err != nil {
				return err
			}
			if c, err = s.attention(p, c, l, 1, true); err != nil {
				return err
			}
			c.Barrier()
		}
		for i, s := range seqs {
			c.Copy(att.Buf.Range(uint64(4*i*qDim), uint64(4*qDim)), s.att.Range(0, uint64(4*qDim)))
		}
		c.Barrier()
		try(product(c, blk.Out, blk.Out.Range(), blk.Out.Rows, att, x, true))
		c.Barrier()

		try(o.norm.Record(c, x, blk.FFNNorm.Range(), xb, n))
		c.Barrier()
		mv := m.ops.matvec[blk.Gate.Type]
		if wgu, ok := joined(blk.Gate, blk.Up); ok && mv.CanGLU(blk.Gate.Rows, blk.Gate.Cols) && !m.opt.separate {
			try(mv.RecordGLU(c, wgu, blk.Gate.Rows, blk.Gate.Cols, n, xb, gate))
		} else {
			try(product(c, blk.Gate, blk.Gate.Range(), blk.Gate.Rows, xb, gate, false))
			try(product(c, blk.Up, blk.Up.Range(), blk.Up.Rows, xb, up, false))
			c.Barrier()
			try(o.swiglu.Record(c, gate, up, gate, n*cfg.FFN))
		}
		c.Barrier()
		try(product(c, blk.Down, blk.Down.Range(), blk.Down.Rows, gate, x, true))
		c.Barrier()
	}

	// Every sequence's logits, each into its own state.
	try(o.norm.Record(c, x, w.OutNorm.Range(), xb, n))
	c.Barrier()
	logits := b.logits.Range(0, uint64(4*n*cfg.Vocab))
	try(product(c, w.Output, w.Output.Range(), w.Output.Rows, xb, logits, false))
	c.Barrier()
	vb := uint64(4 * cfg.Vocab)
	for i, s := range seqs {
		c.Copy(s.logits.All(), b.logits.Range(uint64(i)*vb, vb))
	}
	c.Barrier()
	for i, s := range seqs {
		if i > 0 {
			c.Barrier() // the argmax kernels share their scratch
		}
		try(o.argmax.Record(c, s.logits.All(), s.next.Range(0, 4), cfg.Vocab))
	}
	if withLogits {
		c.Barrier()
		for _, s := range seqs {
			c.Copy(s.logitsHost.All(), s.logits.All())
		}
	}
	return err
}

// qkvInto records the Q, K and V projections of the batch's rows of xb
// and copies each sequence's into its own state, laid out as that state's
// solo decode step lays them out. Where the solo step does the three as
// one product over the stacked weights, so does the batch (each token's
// q, k and v then come out back to back, one copy); else three products.
func (b *batchStep) qkvInto(c *vk.Commands, blk *llamaBlock, seqs []*state, xb vk.Range,
	product func(c *vk.Commands, t *Tensor, wr vk.Range, rows int, x, y vk.Range, acc bool) error) error {
	m, cfg, n := b.m, b.m.Config, len(seqs)
	qDim, kvDim := cfg.Heads*cfg.HeadDim, cfg.KVHeads*cfg.HeadDim
	width := qDim + 2*kvDim
	q1, k1, v1 := seqs[0].qkvRanges(1)
	_, oneVector := adjacent(q1, k1, v1)
	wqkv, wok := joined(blk.Q, blk.K, blk.V)
	bias, bok := joined(blk.QBias, blk.KBias, blk.VBias)
	if wok && oneVector && (bok || blk.QBias == nil) && !m.opt.separate {
		out := b.qkv.Range(0, uint64(4*n*width))
		if blk.QBias != nil {
			for i := 0; i < n; i++ {
				c.Copy(b.qkv.Range(uint64(4*i*width), uint64(4*width)), bias)
			}
			c.Barrier()
		}
		if err := product(c, blk.Q, wqkv, width, xb, out, blk.QBias != nil); err != nil {
			return err
		}
		c.Barrier()
		for i, s := range seqs {
			q, _, _ := s.qkvRanges(1)
			c.Copy(s.qkv.Range(q.Off, uint64(4*width)), b.qkv.Range(uint64(4*i*width), uint64(4*width)))
		}
		return nil
	}
	// Three products into three regions of b.qkv: q rows, then k, then v.
	regions := []struct {
		w, bias *Tensor
		off     uint64
		dim     int
	}{{blk.Q, blk.QBias, 0, qDim}, {blk.K, blk.KBias, uint64(4 * n * qDim), kvDim}, {blk.V, blk.VBias, uint64(4 * n * (qDim + kvDim)), kvDim}}
	for _, r := range regions {
		y := b.qkv.Range(r.off, uint64(4*n*r.dim))
		if r.bias != nil {
			for i := 0; i < n; i++ {
				c.Copy(b.qkv.Range(r.off+uint64(4*i*r.dim), uint64(4*r.dim)), r.bias.Range())
			}
			c.Barrier()
		}
		if err := product(c, r.w, r.w.Range(), r.w.Rows, xb, y, r.bias != nil); err != nil {
			return err
		}
	}
	c.Barrier()
	for i, s := range seqs {
		q, k, v := s.qkvRanges(1)
		for j, dst := range []vk.Range{q, k, v} {
			r := regions[j]
			c.Copy(dst, b.qkv.Range(r.off+uint64(4*i*r.dim), uint64(4*r.dim)))
		}
	}
	return nil
}

func (b *batchStep) free() {
	b.progs.free()
	b.clock.Free()
	b.clock = nil
	for _, buf := range b.bufs {
		if buf != nil {
			buf.Free()
		}
	}
	b.bufs = nil
}
