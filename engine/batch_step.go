package engine

import (
	"encoding/binary"
	"fmt"
	"time"

	"headinfer/engine/gguf"
	"headinfer/engine/kernel"
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
	ids, pos                          *vk.Buffer // host-written token ids and positions
	next                              *vk.Buffer // each sequence's argmax
	argmax                            *kernel.Argmax
	// joined says whether the step's products leave each sequence's q, k
	// and v back to back in qkv (one row of the stacked weights), rather
	// than all q rows, then all k, then all v.
	joined  bool
	in, out *vk.Buffer // a part's hand-off buffers (see state)
	bufs    []*vk.Buffer
	parts   []*batchStep // a split model's, one per part

	progs *programs[string] // by key
	clock *offload.Clock
}

// maxBatchPrograms bounds the recorded batched steps kept: one per set of
// sequences that stepped together, so continuous batching of a few
// sequences needs a handful; the least recently used goes first.
const maxBatchPrograms = 16

func newBatchStep(m *Model, rows int) (b *batchStep, err error) {
	if m.parts != nil {
		return newSplitBatchStep(m, rows)
	}
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
	b.pos = alloc(vk.Upload, a.ids, "batch positions")
	b.next = alloc(vk.DeviceLocal, a.ids, "batch argmax")
	if !m.part.first() {
		b.in = alloc(vk.Upload, a.x, "batch residual stream from the previous device")
	}
	if !m.part.last() {
		b.out = alloc(vk.Readback, a.x, "batch residual stream to the next device")
	}
	if err != nil {
		return nil, err
	}
	if m.part.last() {
		if b.argmax, err = kernel.NewArgmax(d, c.Vocab, rows); err != nil {
			return nil, err
		}
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
	if b.parts != nil {
		return b.runParts(seqs, ids, starts, withLogits, deadline)
	}
	idb, posb := b.ids.Bytes(), b.pos.Bytes()
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
		binary.LittleEndian.PutUint32(posb[4*i:], uint32(at))
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

// batchRows are the rows of a batched decode step, one token of each
// sequence: products read each weight once for all of them (matrix ×
// vectors), each sequence's attention runs in its own state, and every
// sequence gets logits.
type batchRows struct {
	b          *batchStep
	seqs       []*state
	withLogits bool
}

// record appends the batched step of seqs to p. It runs the
// architecture's forward pass as state.record does, with one token per
// sequence; see batchStep for what differs.
func (b *batchStep) record(p *offload.Program, seqs []*state, withLogits bool) error {
	return b.m.record(p, batchRows{b, seqs, withLogits}, len(seqs),
		activations{ids: b.ids, x: b.x, xb: b.xb, att: b.att, gate: b.gate, up: b.up, in: b.in, out: b.out})
}

func (r batchRows) product(f *pass, t *Tensor, w vk.Range, rows int, x, y vk.Range, acc bool) error {
	return f.m.ops.matvec[t.Type].RecordBatch(f.c, w, rows, t.Cols, f.n, x, y, acc)
}

func (r batchRows) vectors(*pass, gguf.Type) bool { return true }

// attention rotates the batch's q and k where the products left them
// (one rotation for all sequences, each at its own position), copies
// each sequence's q, k and v into its state, records each sequence's
// attention in its own state, and gathers their outputs into f.att.
func (r batchRows) attention(f *pass, l int, a *attnWeights) (*vk.Commands, error) {
	b, c, seqs := r.b, f.c, r.seqs
	cfg, n := b.m.Config, len(seqs)
	qDim, kvDim := cfg.Heads*cfg.HeadDim, cfg.KVHeads*cfg.HeadDim
	pos, freqs := b.pos.Range(0, uint64(4*n)), seqs[0].ropeFreqs(l)
	if b.joined {
		// Row i is q, k, v of sequence i: q and k of all rows are one
		// rotation of Heads+KVHeads heads per row, the rows width apart;
		// the heads' norms (weights of their own for q and k) go by row.
		width := qDim + 2*kvDim
		if a.QNorm != nil {
			for i := range n {
				q, k, _ := b.rowQKV(i, n)
				if err := b.m.normHeads(c, a, q, k, 1); err != nil {
					return nil, err
				}
			}
			c.Barrier()
		}
		if !cfg.AbsPos {
			qk := b.qkv.Range(0, uint64(4*((n-1)*width+qDim+kvDim)))
			if err := b.m.ops.ropeQK.RecordRows(c, qk, pos, freqs, n, width); err != nil {
				return nil, err
			}
		}
	} else {
		q, k, _ := b.regions(n)
		if err := b.m.rotate(c, l, a, q, k, pos, freqs, n, false); err != nil {
			return nil, err
		}
	}
	c.Barrier()
	for i, s := range seqs {
		q, k, v := s.qkvRanges(1)
		bq, bk, bv := b.rowQKV(i, n)
		if qk, ok := adjacent(q, k, v); ok && b.joined {
			c.Copy(qk, b.qkv.Range(bq.Off, qk.Size))
			continue
		}
		c.Copy(q, bq)
		c.Copy(k, bk)
		c.Copy(v, bv)
	}
	c.Barrier()
	// All heads on the device: each phase of the attention for all the
	// sequences before one barrier. Otherwise (streamed heads, CPU
	// attention) one sequence after another.
	caches, steps := make([]*offload.Cache, n), make([]offload.Step, n)
	kl, together := 0, true
	for i, s := range seqs {
		kc, ok := s.kv.(*offload.Cache)
		caches[i], together = kc, together && ok
		kl, steps[i] = s.step(l, 1, true)
	}
	var err error
	if together {
		if together, err = offload.AttendResident(f.p, c, caches, kl, steps); err != nil {
			return nil, err
		}
	}
	if together {
		if c, err = f.p.Compute(); err != nil {
			return nil, err
		}
	} else {
		for i, s := range seqs {
			if err := f.p.Sequence(i); err != nil {
				return nil, err
			}
			if c, err = s.attend(f.p, c, l, 1, true); err != nil {
				return nil, err
			}
			c.Barrier()
		}
	}
	for i, s := range seqs {
		c.Copy(f.att.Buf.Range(uint64(4*i*qDim), uint64(4*qDim)), s.att.Range(0, uint64(4*qDim)))
	}
	return c, nil
}

// regions are the q, k and v regions of qkv for n sequences when the
// products do not join them: all q rows, then all k, then all v.
func (b *batchStep) regions(n int) (q, k, v vk.Range) {
	cfg := b.m.Config
	qb, kvb := uint64(4*n*cfg.Heads*cfg.HeadDim), uint64(4*n*cfg.KVHeads*cfg.HeadDim)
	return b.qkv.Range(0, qb), b.qkv.Range(qb, kvb), b.qkv.Range(qb+kvb, kvb)
}

// rowQKV is sequence i's q, k and v of the n in qkv.
func (b *batchStep) rowQKV(i, n int) (q, k, v vk.Range) {
	cfg := b.m.Config
	qb, kvb := uint64(4*cfg.Heads*cfg.HeadDim), uint64(4*cfg.KVHeads*cfg.HeadDim)
	if b.joined {
		row := uint64(i) * (qb + 2*kvb)
		return b.qkv.Range(row, qb), b.qkv.Range(row+qb, kvb), b.qkv.Range(row+qb+kvb, kvb)
	}
	rq, rk, rv := b.regions(n)
	return rq.Buf.Range(rq.Off+uint64(i)*qb, qb), rk.Buf.Range(rk.Off+uint64(i)*kvb, kvb), rv.Buf.Range(rv.Off+uint64(i)*kvb, kvb)
}

// logits records every sequence's logits, each into its own state, and
// its argmax.
func (r batchRows) positions(f *pass) (vk.Range, error) {
	return vk.Range{}, fmt.Errorf("%s model embeds its positions, which batched decode steps do not give", f.m.Config.Arch)
}

func (r batchRows) logits(f *pass, norm, out *Tensor) error {
	b, c, o, vocab := r.b, f.c, f.m.ops, f.m.Config.Vocab
	if norm == nil || out == nil {
		return fmt.Errorf("%s model has no output norm or projection: batched decode steps need both", f.m.Config.Arch)
	}
	if err := o.norm.Record(c, f.x, norm.Range(), f.xb, f.n); err != nil {
		return err
	}
	c.Barrier()
	logits := b.logits.Range(0, uint64(4*f.n*vocab))
	if err := r.product(f, out, out.Range(), out.Rows, f.xb, logits, false); err != nil {
		return err
	}
	c.Barrier()
	if err := f.softCap(logits, f.n); err != nil {
		return err
	}
	if err := b.argmax.RecordRows(c, logits, b.next.Range(0, uint64(4*f.n)), vocab, f.n); err != nil {
		return err
	}
	vb := uint64(4 * vocab)
	for i, s := range r.seqs {
		c.Copy(s.logits.All(), b.logits.Range(uint64(i)*vb, vb))
	}
	c.Barrier()
	for i, s := range r.seqs {
		c.Copy(s.next.Range(0, 4), b.next.Range(uint64(4*i), 4))
	}
	if r.withLogits {
		c.Barrier()
		for _, s := range r.seqs {
			c.Copy(s.logitsHost.All(), s.logits.All())
		}
	}
	return nil
}

// qkv records the Q, K and V projections of the batch's rows of xb into
// b.qkv. Where the solo step does the three as one product over the
// stacked weights, so does the batch (each token's q, k and v then come
// out back to back); else three products, into all q rows, then all k,
// then all v. attention takes them from there.
func (r batchRows) qkv(f *pass, a *attnWeights) error {
	b, c, xb := r.b, f.c, f.xb
	m, cfg, n := b.m, b.m.Config, len(r.seqs)
	qDim, kvDim := cfg.Heads*cfg.HeadDim, cfg.KVHeads*cfg.HeadDim
	width := qDim + 2*kvDim
	q1, k1, v1 := r.seqs[0].qkvRanges(1)
	_, oneVector := adjacent(q1, k1, v1)
	wqkv, wok := joined(a.Q, a.K, a.V)
	bias, bok := joined(a.QBias, a.KBias, a.VBias)
	b.joined = wok && oneVector && (bok || a.QBias == nil) && !m.opt.separate
	if b.joined {
		out := b.qkv.Range(0, uint64(4*n*width))
		if a.QBias != nil {
			for i := range n {
				c.Copy(b.qkv.Range(uint64(4*i*width), uint64(4*width)), bias)
			}
			c.Barrier()
		}
		return r.product(f, a.Q, wqkv, width, xb, out, a.QBias != nil)
	}
	q, k, v := b.regions(n)
	for _, g := range []struct {
		w, bias *Tensor
		y       vk.Range
		dim     int
	}{{a.Q, a.QBias, q, qDim}, {a.K, a.KBias, k, kvDim}, {a.V, a.VBias, v, kvDim}} {
		if g.bias != nil {
			for i := range n {
				c.Copy(g.y.Buf.Range(g.y.Off+uint64(4*i*g.dim), uint64(4*g.dim)), g.bias.Range())
			}
			c.Barrier()
		}
		if err := r.product(f, g.w, g.w.Range(), g.w.Rows, xb, g.y, g.bias != nil); err != nil {
			return err
		}
	}
	return nil
}

func (b *batchStep) free() {
	for _, p := range b.parts {
		p.free()
	}
	b.parts = nil
	if b.progs == nil {
		return
	}
	b.progs.free()
	b.clock.Free()
	b.clock = nil
	if b.argmax != nil {
		b.argmax.Free()
		b.argmax = nil
	}
	for _, buf := range b.bufs {
		if buf != nil {
			buf.Free()
		}
	}
	b.bufs = nil
}
