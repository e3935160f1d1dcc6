package engine

import (
	"fmt"

	"headinfer/engine/gguf"
	"headinfer/engine/offload"
	"headinfer/vk"
)

// pass records one forward pass over its rows: the n tokens of one
// sequence's chunk (state) or one token of each of n sequences (a batched
// decode step, batchStep). An architecture writes its forward pass once,
// against pass, for both: the steps are the same, only how the rows meet
// the weights, where q, k and v go, how attention runs and which rows get
// logits differ, and those are the rows' business (passRows).
//
// Every method records its work and a barrier after it. The first error
// sticks: later calls record nothing, and the recorder reads it from err.
//
// On a model split over devices each device records the pass over its own
// layers (Model.part): an architecture's forward pass asks layer(l) before
// each block, and the methods record nothing outside the device's share.
// The first device embeds the tokens and hands the residual stream on
// after its last block (to out); the next one starts from it (in).
type pass struct {
	m    *Model
	rows passRows
	n    int
	p    *offload.Program
	c    *vk.Commands
	err  error
	idle bool     // outside the device's share of the layers: record nothing
	ids  vk.Range // n token ids (u32)

	// in and out hold the n rows of the residual stream that reach this
	// device from the previous one and leave it for the next, in host
	// memory; unused (zero) where there is no such device.
	in, out vk.Range

	// The activations, n rows each: the residual stream x, the normed
	// input to a projection xb, the heads' attention output att, and the
	// feed-forward's hidden gate (and its scratch up).
	x, xb, att, gate, up vk.Range
}

// passRows is what differs between a chunk of one sequence and a batch of
// sequences.
type passRows interface {
	// product records y = W·x (or y += W·x when acc) for the pass's rows
	// of x, W being rows × t.Cols weights of t's type at w (t itself, or
	// several tensors of its type stacked).
	product(f *pass, t *Tensor, w vk.Range, rows int, x, y vk.Range, acc bool) error
	// vectors says whether products of type t run as matrix × vectors,
	// whose arithmetic the fused gated kernels share.
	vectors(f *pass, t gguf.Type) bool
	// qkv records the Q, K and V projections of f.xb into where attention
	// reads them.
	qkv(f *pass, a *attnWeights) error
	// attention records layer l's attention of the rows' q, k and v into
	// f.att, and returns the commands to go on recording into.
	attention(f *pass, l int, a *attnWeights) (*vk.Commands, error)
	// logits records the final norm and the output projection of the
	// rows that get logits, and their argmax. A nil norm leaves the
	// hidden states as they are; a nil out records no logits (a model
	// that only embeds).
	logits(f *pass, norm, out *Tensor) error
	// positions is the rows' positions (u32 each), for models that
	// embed them.
	positions(f *pass) (vk.Range, error)
}

// activations are the buffers a pass works in, as pass names them; in
// and out are the hand-off buffers of a split model (nil where unused).
type activations struct {
	ids, x, xb, att, gate, up *vk.Buffer
	in, out                   *vk.Buffer
}

// record records the model's forward pass over n rows into p, with
// rows deciding what differs.
func (m *Model) record(p *offload.Program, rows passRows, n int, a activations) error {
	c, err := p.Compute()
	if err != nil {
		return err
	}
	cfg := m.Config
	width := func(b *vk.Buffer, w int) vk.Range {
		if b == nil {
			return vk.Range{}
		}
		return b.Range(0, uint64(4*n*w))
	}
	f := &pass{m: m, rows: rows, n: n, p: p, c: c, ids: width(a.ids, 1),
		x: width(a.x, cfg.Dim), xb: width(a.xb, cfg.Dim), att: width(a.att, cfg.Heads*cfg.HeadDim),
		gate: width(a.gate, cfg.FFN), up: width(a.up, cfg.FFN),
		in: width(a.in, cfg.Dim), out: width(a.out, cfg.Dim)}
	m.w.forward(f)
	return f.err
}

// fail keeps the first error.
func (f *pass) fail(err error) {
	if f.err == nil {
		f.err = err
	}
}

// ok says whether recording goes on.
func (f *pass) ok() bool { return f.err == nil && !f.idle }

// layer says whether block l is the device's to record. Past the
// device's last block it records the hand-off of the residual stream to
// the next device.
func (f *pass) layer(l int) bool {
	pt := f.m.part
	if l == pt.hi && !pt.last() && f.err == nil {
		f.c.Copy(f.out, f.x)
		f.c.Barrier()
	}
	f.idle = l < pt.lo || l >= pt.hi
	return !f.idle
}

// embed records x = the embeddings of the pass's tokens, or on a device
// that does not run the first layer, x = the residual stream the
// previous one handed on.
func (f *pass) embed(t *Tensor) {
	if !f.m.part.first() {
		if f.ok() {
			f.c.Copy(f.x, f.in)
			f.c.Barrier()
		}
		f.idle = true // until its first layer
		return
	}
	if f.ok() {
		f.fail(f.m.ops.embed.Record(f.c, f.ids, t.Range(), f.x, f.n))
		f.c.Barrier()
	}
}

// norm records y = RMSNorm(x)·w over the pass's rows. y may be x.
func (f *pass) norm(x vk.Range, w *Tensor, y vk.Range) {
	if f.ok() {
		f.fail(f.m.ops.norm.Record(f.c, x, w.Range(), y, f.n))
		f.c.Barrier()
	}
}

// linear records y = W·x, or y += W·x when acc.
func (f *pass) linear(w *Tensor, x, y vk.Range, acc bool) {
	if f.ok() {
		f.fail(f.rows.product(f, w, w.Range(), w.Rows, x, y, acc))
		f.c.Barrier()
	}
}

// product is linear for products whose output is not the residual
// width (BERT's up projection into f.gate).
func (f *pass) product(w *Tensor, x, y vk.Range, acc bool) { f.linear(w, x, y, acc) }

// layerNorm records y = LayerNorm(x)·w + b over the pass's rows. y may
// be x.
func (f *pass) layerNorm(x vk.Range, w, b *Tensor, y vk.Range) {
	if f.ok() {
		f.fail(f.m.ops.layerNorm.Record(f.c, x, w.Range(), b.Range(), y, f.n))
		f.c.Barrier()
	}
}

// bias records y += b over the pass's rows of cols values (b holds
// cols), then with gelu y = gelu(y).
func (f *pass) bias(y vk.Range, b *Tensor, cols int, gelu bool) {
	if f.ok() {
		f.fail(f.m.ops.bias.Record(f.c, y, b.Range(), y, f.n, cols, gelu))
		f.c.Barrier()
	}
}

// copy records dst = src over the pass's rows of the residual width.
func (f *pass) copy(dst, src vk.Range) {
	if f.ok() {
		size := uint64(4 * f.n * f.m.Config.Dim)
		f.c.Copy(vk.Range{Buf: dst.Buf, Off: dst.Off, Size: size}, vk.Range{Buf: src.Buf, Off: src.Off, Size: size})
		f.c.Barrier()
	}
}

// addPositions records x += the embeddings of the rows' positions (table
// t, one row per position), through f.xb.
func (f *pass) addPositions(t *Tensor) {
	if !f.ok() {
		return
	}
	pos, err := f.rows.positions(f)
	if err != nil {
		f.fail(err)
		return
	}
	f.fail(f.m.ops.posEmbed.Record(f.c, pos, t.Range(), f.xb, f.n))
	f.c.Barrier()
	f.add(f.x, f.xb)
}

// attention records layer l's attention block up to the heads' output in
// f.att: the Q, K and V projections of f.xb, the heads' norms where the
// architecture has them, RoPE, the store of the new K and V rows, and
// attention over the KV cache.
func (f *pass) attention(l int, a *attnWeights) {
	if !f.ok() {
		return
	}
	f.fail(f.rows.qkv(f, a))
	f.c.Barrier()
	if !f.ok() {
		return
	}
	c, err := f.rows.attention(f, l, a)
	if err != nil {
		f.fail(err)
		return
	}
	f.c = c
	f.c.Barrier()
}

// swiGLU records f.gate = silu(Wgate·xb) ⊙ (Wup·xb). Where the products
// run as matrix × vectors and the two matrices lie back to back, it is
// one fused pass over both.
func (f *pass) swiGLU(gate, up *Tensor) {
	if !f.ok() {
		return
	}
	mv := f.m.ops.matvec[gate.Type]
	if w, ok := joined(gate, up); ok && f.rows.vectors(f, gate.Type) && mv.CanGLU(gate.Rows, gate.Cols) && !f.m.opt.separate {
		f.fail(mv.RecordGLU(f.c, w, gate.Rows, gate.Cols, f.n, f.xb, f.gate))
		f.c.Barrier()
		return
	}
	f.glu(gate, up, f.m.ops.swiglu.Record)
}

// geGLU records f.gate = gelu(Wgate·xb) ⊙ (Wup·xb), GELU in its tanh
// form.
func (f *pass) geGLU(gate, up *Tensor) {
	if f.ok() {
		f.glu(gate, up, f.m.ops.geglu.Record)
	}
}

// glu records the two products and the gated activation act over them.
func (f *pass) glu(gate, up *Tensor, act func(c *vk.Commands, gate, up, out vk.Range, n int) error) {
	f.fail(f.rows.product(f, gate, gate.Range(), gate.Rows, f.xb, f.gate, false))
	f.fail(f.rows.product(f, up, up.Range(), up.Rows, f.xb, f.up, false))
	f.c.Barrier()
	if f.ok() {
		f.fail(act(f.c, f.gate, f.up, f.gate, f.n*gate.Rows))
	}
	f.c.Barrier()
}

// add records x += y over the pass's rows of the residual width.
func (f *pass) add(x, y vk.Range) {
	if f.ok() {
		f.fail(f.m.ops.add.Record(f.c, x, y, x, f.n*f.m.Config.Dim))
		f.c.Barrier()
	}
}

// scale records x = s·x over the pass's rows of the residual width.
func (f *pass) scale(x vk.Range, s float64) {
	if f.ok() {
		f.fail(f.m.ops.scale.Record(f.c, x, x, f.n*f.m.Config.Dim, float32(s), 0))
		f.c.Barrier()
	}
}

// logits records the logits of the rows that get them: the final norm,
// the output projection and the argmax.
func (f *pass) logits(norm, out *Tensor) {
	if f.ok() {
		f.fail(f.rows.logits(f, norm, out))
	}
}

// attnWeights are an attention block's weights, as every architecture
// names them: the projections, their biases (qwen2) and the heads' norms
// (qwen3, gemma3) where the architecture has them.
type attnWeights struct {
	Q     *Tensor `gguf:"attn_q" shape:"dim,qdim" join:"qkv"`
	K     *Tensor `gguf:"attn_k" shape:"dim,kvdim" join:"qkv"`
	V     *Tensor `gguf:"attn_v" shape:"dim,kvdim" join:"qkv"`
	QBias *Tensor `gguf:"attn_q.bias,optional" shape:"qdim" join:"qkv bias"`
	KBias *Tensor `gguf:"attn_k.bias,optional" shape:"kvdim" join:"qkv bias"`
	VBias *Tensor `gguf:"attn_v.bias,optional" shape:"kvdim" join:"qkv bias"`
	QNorm *Tensor `gguf:"attn_q_norm,optional" shape:"headdim"`
	KNorm *Tensor `gguf:"attn_k_norm,optional" shape:"headdim"`
	Out   *Tensor `gguf:"attn_output" shape:"qdim,dim"`
}

// check reports optional tensors of layer l that the configuration
// requires or forbids.
func (a *attnWeights) check(c Config, l int) error {
	for _, t := range []struct {
		t      *Tensor
		name   string
		want   bool
		length int
	}{
		{a.QBias, "attn_q.bias", c.QKVBias, c.Heads * c.HeadDim}, {a.KBias, "attn_k.bias", c.QKVBias, c.KVHeads * c.HeadDim},
		{a.VBias, "attn_v.bias", c.QKVBias, c.KVHeads * c.HeadDim},
		{a.QNorm, "attn_q_norm.weight", c.QKNorm, c.HeadDim}, {a.KNorm, "attn_k_norm.weight", c.QKNorm, c.HeadDim},
	} {
		if t.want && t.t == nil {
			return fmt.Errorf("%s model lacks tensor blk.%d.%s (want shape [%d])", c.Arch, l, t.name, t.length)
		}
		if !t.want && t.t != nil {
			return fmt.Errorf("%s model has tensor blk.%d.%s, which its architecture does not use", c.Arch, l, t.name)
		}
	}
	return nil
}

// softCap records the final soft-capping of rows of logits, where the
// architecture has it.
func (f *pass) softCap(logits vk.Range, rows int) error {
	limit := f.m.Config.FinalSoftCap
	if limit <= 0 {
		return nil
	}
	if err := f.m.ops.scale.Record(f.c, logits, logits, rows*f.m.Config.Vocab, 1, float32(limit)); err != nil {
		return err
	}
	f.c.Barrier()
	return nil
}

// modelEnds are the weights around the blocks that every architecture
// has: the token embeddings, the final norm and the output projection.
type modelEnds struct {
	Embed   *Tensor `gguf:"token_embd" shape:"dim,vocab" layout:"gguf"`
	OutNorm *Tensor `gguf:"output_norm" shape:"dim"`
	Output  *Tensor `gguf:"output,optional" shape:"dim,vocab"` // absent: tied to Embed
}

func (e *modelEnds) embedding() *Tensor { return e.Embed }
func (e *modelEnds) output() *Tensor    { return e.Output }

// bindEnds binds e and ties the output projection to the embeddings where
// the file has none.
func (l *loader) bindEnds(e *modelEnds, c Config) error {
	if err := l.bind(e, "", c); err != nil {
		return err
	}
	var err error
	e.Output, err = l.output(e.Output, e.Embed)
	return err
}

// bindBlocks binds each block from its layer's tensors ("blk.N.…") and
// checks its attention's optional tensors against the configuration.
func bindBlocks[B any](l *loader, c Config, blocks []B, attn func(*B) *attnWeights) error {
	for i := range blocks {
		if err := l.bind(&blocks[i], fmt.Sprintf("blk.%d.", i), c); err != nil {
			return err
		}
		if err := attn(&blocks[i]).check(c, i); err != nil {
			return err
		}
	}
	return nil
}
