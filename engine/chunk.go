package engine

import (
	"headinfer/engine/gguf"
	"headinfer/engine/offload"
	"headinfer/vk"
)

// chunkRows are the rows of a pass over one sequence's chunk of n tokens
// (or its one decode token): products are matrix × matrix (matrix ×
// vector for one token), attention runs over the sequence's KV cache, and
// only the last token gets logits.
type chunkRows struct {
	s      *state
	decode bool // a decode step (see offload.Step)
	hidden bool // every token's final hidden state to s.hiddenHost
}

// record appends one forward pass of shape over the shape.tokens tokens
// in s.ids (at the positions in s.pos) to p: embeddings, every block, and
// the logits of the last token, for any position up to the context.
func (s *state) record(p *offload.Program, shape stepShape) error {
	return s.m.record(p, chunkRows{s, shape.decode, shape.hidden}, shape.tokens, s.activations())
}

func (r chunkRows) product(f *pass, t *Tensor, w vk.Range, rows int, x, y vk.Range, acc bool) error {
	if f.n == 1 {
		return f.m.ops.matvec[t.Type].Record(f.c, w, rows, t.Cols, x, y, acc)
	}
	return f.m.ops.matmul[t.Type].Record(f.c, w, rows, t.Cols, f.n, x, y, acc)
}

func (r chunkRows) vectors(f *pass, t gguf.Type) bool {
	return f.n == 1 || f.m.ops.matmul[t].Batched()
}

// qkv records the three projections, with their biases if any. When one
// token's q, k and v lie back to back, as do the weights (and biases), it
// is one product: the rows of Wq, Wk and Wv stacked.
func (r chunkRows) qkv(f *pass, a *attnWeights) error {
	q, k, v := r.s.qkvRanges(f.n)
	c := f.c
	w, wok := joined(a.Q, a.K, a.V)
	out, ook := adjacent(q, k, v)
	bias, bok := joined(a.QBias, a.KBias, a.VBias)
	if f.n == 1 && wok && ook && (bok || a.QBias == nil) && !f.m.opt.separate {
		if a.QBias != nil {
			c.Copy(out, bias)
			c.Barrier()
		}
		return r.product(f, a.Q, w, a.Q.Rows+a.K.Rows+a.V.Rows, f.xb, out, a.QBias != nil)
	}
	for _, p := range []struct {
		w, bias *Tensor
		y       vk.Range
	}{{a.Q, a.QBias, q}, {a.K, a.KBias, k}, {a.V, a.VBias, v}} {
		if p.bias != nil {
			// The bias copied into every row of y, the product
			// accumulated onto it.
			rowBytes := uint64(4 * p.w.Rows)
			for t := 0; t < f.n; t++ {
				c.Copy(vk.Range{Buf: p.y.Buf, Off: p.y.Off + uint64(t)*rowBytes, Size: rowBytes}, p.bias.Range())
			}
			c.Barrier()
		}
		if err := r.product(f, p.w, p.w.Range(), p.w.Rows, f.xb, p.y, p.bias != nil); err != nil {
			return err
		}
	}
	return nil
}

func (r chunkRows) attention(f *pass, l int, a *attnWeights) (*vk.Commands, error) {
	return r.s.attention(f.p, f.c, l, f.n, r.decode, a)
}

func (r chunkRows) positions(f *pass) (vk.Range, error) {
	return r.s.pos.Range(0, uint64(4*f.n)), nil
}

func (r chunkRows) logits(f *pass, norm, out *Tensor) error {
	s, dim := r.s, f.m.Config.Dim
	o := f.m.ops
	if r.hidden {
		// Every token's final hidden state, the output norm's as the
		// logits see it, copied out before the last token's reuses xb.
		all := uint64(4 * f.n * dim)
		hidden := s.x.Range(0, all)
		if norm != nil {
			if err := o.norm.Record(f.c, s.x.Range(0, all), norm.Range(), s.xb.Range(0, all), f.n); err != nil {
				return err
			}
			f.c.Barrier()
			hidden = s.xb.Range(0, all)
		}
		f.c.Copy(s.hiddenHost.Range(0, all), hidden)
		f.c.Barrier()
	}
	if out == nil {
		return nil
	}
	// The logits: the last token's only.
	last := s.x.Range(uint64(4*(f.n-1)*dim), uint64(4*dim))
	xl := s.xb.Range(0, uint64(4*dim))
	if err := o.norm.Record(f.c, last, norm.Range(), xl, 1); err != nil {
		return err
	}
	f.c.Barrier()
	if err := o.matvec[out.Type].Record(f.c, out.Range(), out.Rows, out.Cols, xl, s.logits.All(), false); err != nil {
		return err
	}
	f.c.Barrier()
	if err := f.softCap(s.logits.All(), 1); err != nil {
		return err
	}
	return o.argmax.Record(f.c, s.logits.All(), s.next.Range(0, 4), f.m.Config.Vocab)
}

// attention appends to p, after c, layer l's attention of the n tokens
// whose q, k and v the projections left in s.qkv: the heads' norm where
// the architecture has one, RoPE, the store of the new K and V rows, and
// attention over the KV cache into s.att. It returns the compute commands
// to go on recording into. decode says that it is a decode step (see
// offload.Step).
func (s *state) attention(p *offload.Program, c *vk.Commands, l, n int, decode bool, a *attnWeights) (*vk.Commands, error) {
	q, k, _ := s.qkvRanges(n)
	if err := s.m.rotate(c, l, a, q, k, s.pos.Range(0, uint64(4*n)), s.ropeFreqs(l), n, n == 1); err != nil {
		return nil, err
	}
	c.Barrier()
	return s.attend(p, c, l, n, decode)
}

// rotate records the heads' norms (where the architecture has them) and
// RoPE of n tokens' q and k rows at q and k, token t at position pos[t]
// with the rotation frequencies freqs. one says that q and k hold a
// single token, which a single rotation of both covers when they lie back
// to back.
func (m *Model) rotate(c *vk.Commands, l int, a *attnWeights, q, k, pos, freqs vk.Range, n int, one bool) error {
	if a.QNorm != nil {
		if err := m.normHeads(c, a, q, k, n); err != nil {
			return err
		}
		c.Barrier()
	}
	o, cfg := m.ops, m.Config
	switch qk, joined := adjacent(q, k); {
	case cfg.AbsPos:
		// Positions were added to the embeddings: nothing rotates.
		return nil
	case one && joined && !m.opt.separate:
		return o.ropeQK.Record(c, qk, pos, freqs, 1)
	default:
		if err := o.ropeQ.Record(c, q, pos, freqs, n); err != nil {
			return err
		}
		return o.ropeK.Record(c, k, pos, freqs, n)
	}
}

// normHeads records the norms of the heads of n tokens' q and k, in
// place, each head a row: q is n·Heads rows of HeadDim, k n·KVHeads; the
// K rows are stored normalised.
func (m *Model) normHeads(c *vk.Commands, a *attnWeights, q, k vk.Range, n int) error {
	if err := m.ops.headNorm.Record(c, q, a.QNorm.Range(), q, n*m.Config.Heads); err != nil {
		return err
	}
	return m.ops.headNorm.Record(c, k, a.KNorm.Range(), k, n*m.Config.KVHeads)
}

// attend appends to p, after c, the rest of layer l's attention once
// q and k are rotated: the store of the new K and V rows and attention
// over the KV cache into s.att.
func (s *state) attend(p *offload.Program, c *vk.Commands, l, n int, decode bool) (*vk.Commands, error) {
	kl, st := s.step(l, n, decode)
	if err := s.kv.Store(c, kl, st.K, st.V, st.Pos, n); err != nil {
		return nil, err
	}
	c.Barrier()
	if err := s.kv.Attend(p, kl, st); err != nil {
		return nil, err
	}
	return p.Compute()
}

// step returns layer l's index in this device's cache and what its
// attention of n tokens reads and writes.
func (s *state) step(l, n int, decode bool) (int, offload.Step) {
	q, k, v := s.qkvRanges(n)
	att := s.att.Range(0, uint64(4*n*s.m.Config.Heads*s.m.Config.HeadDim))
	st := offload.Step{Q: q, K: k, V: v, Att: att, Pos: s.pos.Range(0, uint64(4*n)), N: n, Decode: decode}
	if s.see != nil {
		st.See = s.see.Range(0, uint64(4*n))
	}
	return l - s.m.part.lo, st
}
