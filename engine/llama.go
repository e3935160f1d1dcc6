package engine

import (
	"fmt"

	"headinfer/engine/offload"
	"headinfer/vk"
)

// The Llama architecture (Llama 2 and 3, Mistral, TinyLlama); Qwen2,
// which adds biases to the Q/K/V projections and rotates neox-style pairs;
// and Qwen3, which rotates as Qwen2 but instead of biases RMS-normalises
// every head of q and of k before RoPE.

// llamaBlock is one transformer block's weights.
type llamaBlock struct {
	AttnNorm *Tensor `gguf:"attn_norm" shape:"dim"`
	Q        *Tensor `gguf:"attn_q" shape:"dim,qdim" join:"qkv"`
	K        *Tensor `gguf:"attn_k" shape:"dim,kvdim" join:"qkv"`
	V        *Tensor `gguf:"attn_v" shape:"dim,kvdim" join:"qkv"`
	QBias    *Tensor `gguf:"attn_q.bias,optional" shape:"qdim" join:"qkv bias"`
	KBias    *Tensor `gguf:"attn_k.bias,optional" shape:"kvdim" join:"qkv bias"`
	VBias    *Tensor `gguf:"attn_v.bias,optional" shape:"kvdim" join:"qkv bias"`
	QNorm    *Tensor `gguf:"attn_q_norm,optional" shape:"headdim"`
	KNorm    *Tensor `gguf:"attn_k_norm,optional" shape:"headdim"`
	Out      *Tensor `gguf:"attn_output" shape:"qdim,dim"`
	FFNNorm  *Tensor `gguf:"ffn_norm" shape:"dim"`
	Gate     *Tensor `gguf:"ffn_gate" shape:"dim,ffn" join:"gate up"`
	Up       *Tensor `gguf:"ffn_up" shape:"dim,ffn" join:"gate up"`
	Down     *Tensor `gguf:"ffn_down" shape:"ffn,dim"`
}

// llamaWeights is the whole model's weights.
type llamaWeights struct {
	Embed   *Tensor `gguf:"token_embd" shape:"dim,vocab" layout:"gguf"`
	OutNorm *Tensor `gguf:"output_norm" shape:"dim"`
	Output  *Tensor `gguf:"output,optional" shape:"dim,vocab"` // absent: tied to Embed
	Blocks  []llamaBlock
}

func loadLlama(l *loader, c Config) (*llamaWeights, error) {
	w := &llamaWeights{Blocks: make([]llamaBlock, c.Layers)}
	if err := l.bind(w, "", c); err != nil {
		return nil, err
	}
	if w.Output == nil {
		out, err := l.matrix(w.Embed)
		if err != nil {
			return nil, err
		}
		w.Output = out
	}
	for i := range w.Blocks {
		if err := l.bind(&w.Blocks[i], fmt.Sprintf("blk.%d.", i), c); err != nil {
			return nil, err
		}
		b := &w.Blocks[i]
		if c.QKVBias != (b.QBias != nil) {
			return nil, fmt.Errorf("blk.%d: %s model must have Q/K/V biases iff its architecture does", i, c.Arch)
		}
		for _, n := range []struct {
			t    *Tensor
			name string
		}{{b.QNorm, "attn_q_norm"}, {b.KNorm, "attn_k_norm"}} {
			if c.QKNorm && n.t == nil {
				return nil, fmt.Errorf("%s model lacks tensor blk.%d.%s.weight (want shape [%d])", c.Arch, i, n.name, c.HeadDim)
			}
			if !c.QKNorm && n.t != nil {
				return nil, fmt.Errorf("%s model has tensor blk.%d.%s.weight, which its architecture does not use", c.Arch, i, n.name)
			}
		}
	}
	return w, nil
}

// record appends one forward pass over the n tokens in s.ids (at the
// positions in s.pos) to p: embeddings, every block, and the logits of the
// last token, for any position up to the context. decode says that it is
// a decode step (see offload.Step).
func (s *state) record(p *offload.Program, n int, decode bool) error {
	m, w, cfg, o := s.m, s.m.w, s.m.Config, s.m.ops
	rows := func(b *vk.Buffer, width int) vk.Range { return b.Range(0, uint64(4*n*width)) }
	x, xb := rows(s.x, cfg.Dim), rows(s.xb, cfg.Dim)
	q, k, v := s.qkvRanges(n)
	att := rows(s.att, cfg.Heads*cfg.HeadDim)
	gate, up := rows(s.gate, cfg.FFN), rows(s.up, cfg.FFN)
	ids := s.ids.Range(0, uint64(4*n))

	c, err := p.Compute()
	if err != nil {
		return err
	}
	try := func(e error) {
		if err == nil {
			err = e
		}
	}
	try(o.embed.Record(c, ids, w.Embed.Range(), x, n))
	c.Barrier()
	for l := range w.Blocks {
		b := &w.Blocks[l]
		// Attention: x += Wo · attention(rope(Wq·xb), rope(Wk·xb), Wv·xb).
		try(o.norm.Record(c, x, b.AttnNorm.Range(), xb, n))
		c.Barrier()
		try(m.qkv(c, b, xb, q, k, v, n))
		c.Barrier()
		if err != nil {
			return err
		}
		if c, err = s.attention(p, c, l, n, decode); err != nil {
			return err
		}
		c.Barrier()
		try(m.matmul(c, b.Out, att, x, n, true))
		c.Barrier()

		// Feed-forward: x += Wdown · (silu(Wgate·xb) ⊙ Wup·xb).
		try(o.norm.Record(c, x, b.FFNNorm.Range(), xb, n))
		c.Barrier()
		try(m.gateUp(c, b, xb, gate, up, n))
		c.Barrier()
		try(m.matmul(c, b.Down, gate, x, n, true))
		c.Barrier()
	}

	// Logits of the last token only.
	last := s.x.Range(uint64(4*(n-1)*cfg.Dim), uint64(4*cfg.Dim))
	xl := s.xb.Range(0, uint64(4*cfg.Dim))
	try(o.norm.Record(c, last, w.OutNorm.Range(), xl, 1))
	c.Barrier()
	try(m.matmul(c, w.Output, xl, s.logits.All(), 1, false))
	c.Barrier()
	try(o.argmax.Record(c, s.logits.All(), s.next.Range(0, 4), cfg.Vocab))
	return err
}

// attention appends to p, after c, layer l's attention of the n tokens
// whose q, k and v the projections left in s.qkv: the heads' norm where
// the architecture has one, RoPE, the store of the
// new K and V rows, and attention over the KV cache into s.att. It returns
// the compute commands to go on recording into. decode says that it is a
// decode step (see offload.Step).
func (s *state) attention(p *offload.Program, c *vk.Commands, l, n int, decode bool) (*vk.Commands, error) {
	o := s.m.ops
	q, k, v := s.qkvRanges(n)
	pos := s.pos.Range(0, uint64(4*n))
	var err error
	try := func(e error) {
		if err == nil {
			err = e
		}
	}
	if b := &s.m.w.Blocks[l]; b.QNorm != nil {
		// In place, each head a row: q is n·Heads rows of HeadDim, k
		// n·KVHeads; the K rows are stored normalised.
		cfg := s.m.Config
		try(o.headNorm.Record(c, q, b.QNorm.Range(), q, n*cfg.Heads))
		try(o.headNorm.Record(c, k, b.KNorm.Range(), k, n*cfg.KVHeads))
		c.Barrier()
	}
	if qk, joined := adjacent(q, k); n == 1 && joined && !s.m.opt.separate {
		try(o.ropeQK.Record(c, qk, pos, s.freqs.All(), 1))
	} else {
		try(o.ropeQ.Record(c, q, pos, s.freqs.All(), n))
		try(o.ropeK.Record(c, k, pos, s.freqs.All(), n))
	}
	c.Barrier()
	try(s.kv.Store(c, l, k, v, pos, n))
	c.Barrier()
	att := s.att.Range(0, uint64(4*n*s.m.Config.Heads*s.m.Config.HeadDim))
	try(s.kv.Attend(p, l, offload.Step{Q: q, K: k, V: v, Att: att, Pos: pos, N: n, Decode: decode}))
	if err != nil {
		return nil, err
	}
	return p.Compute()
}
