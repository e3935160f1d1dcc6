package engine

import (
	"fmt"
	"math"

	"headinfer/engine/gguf"
)

// Gemma 2 and Gemma 3 (text). Against Llama, a block normalises its
// attention's and its feed-forward's outputs too before adding them to the
// residual stream ("sandwich" norms), the feed-forward gates with GELU,
// the embeddings are scaled by √dim, and some layers attend only to a
// sliding window of positions. Gemma 2 soft-caps attention scores and the
// logits, windows every other layer and scales queries by
// 1/√query_pre_attn_scalar; Gemma 3 drops the caps, normalises q and k
// per head as Qwen3 does, windows five layers of six, and rotates the
// windowed layers with a base of its own.

func init() {
	register("gemma2", &architecture{ropeNeox: true, configure: configureGemma2, load: loadGemma,
		synthBlock: synthGemmaBlock, synthEps: 1e-6, synthKV: func(a string) []gguf.KV {
			return []gguf.KV{{Key: a + ".attn_logit_softcapping", Value: float32(50)}, {Key: a + ".final_logit_softcapping", Value: float32(30)}}
		}})
	register("gemma3", &architecture{ropeNeox: true, qkNorm: true, configure: configureGemma3, load: loadGemma,
		synthBlock: synthGemmaBlock, synthEps: 1e-6})
}

// gemmaQueryScale is the attention scale of Gemma models: 1/√head_dim,
// except in the 27B models, whose queries are scaled by 1/√(dim/heads).
// GGUF files do not carry query_pre_attn_scalar: llama.cpp tells the 27B
// models by their layer count, and so do we.
func gemmaQueryScale(c *Config, layers27B int) float64 {
	if c.Layers == layers27B {
		return 1 / math.Sqrt(float64(c.Dim/c.Heads))
	}
	return 1 / math.Sqrt(float64(c.HeadDim))
}

func configureGemma2(f *gguf.File, c *Config) error {
	c.EmbedScale = math.Sqrt(float64(c.Dim))
	var err error
	if c.SlidingWindow, err = gemmaWindow(f, c, 4096); err != nil {
		return err
	}
	c.SlidingPattern = 2
	c.AttnSoftCap, c.FinalSoftCap = 50, 30 // the released models' values, when the file does not say
	if v, ok := f.Float(c.Arch + ".attn_logit_softcapping"); ok {
		c.AttnSoftCap = v
	}
	if v, ok := f.Float(c.Arch + ".final_logit_softcapping"); ok {
		c.FinalSoftCap = v
	}
	c.AttnScale = gemmaQueryScale(c, 46)
	return nil
}

func configureGemma3(f *gguf.File, c *Config) error {
	c.EmbedScale = math.Sqrt(float64(c.Dim))
	var err error
	if c.SlidingWindow, err = gemmaWindow(f, c, 0); err != nil {
		return err
	}
	if c.SlidingWindow > 0 {
		c.SlidingPattern, c.LocalRopeBase = 6, 10000
	}
	if v, ok := f.Float(c.Arch + ".final_logit_softcapping"); ok {
		c.FinalSoftCap = v
	}
	c.AttnScale = gemmaQueryScale(c, 62)
	return nil
}

// gemmaWindow reads the sliding window (def when the file has none).
func gemmaWindow(f *gguf.File, c *Config, def int) (int, error) {
	v, ok := f.Uint(c.Arch + ".attention.sliding_window")
	if !ok {
		return def, nil
	}
	if v >= 1<<31 {
		return 0, fmt.Errorf("model metadata %s.attention.sliding_window = %d is out of range", c.Arch, v)
	}
	return int(v), nil
}

// gemmaBlock is one Gemma transformer block's weights.
type gemmaBlock struct {
	AttnNorm     *Tensor `gguf:"attn_norm" shape:"dim"`
	Attn         attnWeights
	PostAttnNorm *Tensor `gguf:"post_attention_norm" shape:"dim"`
	FFNNorm      *Tensor `gguf:"ffn_norm" shape:"dim"`
	Gate         *Tensor `gguf:"ffn_gate" shape:"dim,ffn"`
	Up           *Tensor `gguf:"ffn_up" shape:"dim,ffn"`
	Down         *Tensor `gguf:"ffn_down" shape:"ffn,dim"`
	PostFFNNorm  *Tensor `gguf:"post_ffw_norm" shape:"dim"`
}

// gemmaWeights is a whole Gemma model's weights.
type gemmaWeights struct {
	modelEnds // the output tied to the embeddings, as usual
	Blocks    []gemmaBlock
}

func loadGemma(l *loader, c Config) (weights, error) {
	w := &gemmaWeights{Blocks: make([]gemmaBlock, c.Layers)}
	if err := l.bindEnds(&w.modelEnds, c); err != nil {
		return nil, err
	}
	if err := bindBlocks(l, c, w.Blocks, func(b *gemmaBlock) *attnWeights { return &b.Attn }); err != nil {
		return nil, err
	}
	return w, nil
}

// forward records the forward pass of f's rows.
func (w *gemmaWeights) forward(f *pass) {
	f.embed(w.Embed)
	f.scale(f.x, f.m.Config.EmbedScale)
	for l := range w.Blocks {
		if !f.layer(l) {
			continue
		}
		b := &w.Blocks[l]
		// Attention: x += norm(Wo · attention(…)), the attention's
		// output normalised before it joins the residual stream.
		f.norm(f.x, b.AttnNorm, f.xb)
		f.attention(l, &b.Attn)
		f.linear(b.Attn.Out, f.att, f.xb, false)
		f.norm(f.xb, b.PostAttnNorm, f.xb)
		f.add(f.x, f.xb)

		// Feed-forward: x += norm(Wdown · (gelu(Wgate·xb) ⊙ Wup·xb)).
		f.norm(f.x, b.FFNNorm, f.xb)
		f.geGLU(b.Gate, b.Up)
		f.linear(b.Down, f.gate, f.xb, false)
		f.norm(f.xb, b.PostFFNNorm, f.xb)
		f.add(f.x, f.xb)
	}
	f.logits(w.OutNorm, w.Output)
}

// synthGemmaBlock lists layer l's tensors of a synthetic Gemma model.
func synthGemmaBlock(s *synthModel, l int) {
	p := fmt.Sprintf("blk.%d.", l)
	s.vec(p+"attn_norm.weight", s.Dim)
	s.attention(p, l)
	s.attentionExtras(p)
	s.vec(p+"post_attention_norm.weight", s.Dim)
	s.vec(p+"ffn_norm.weight", s.Dim)
	s.mat(p+"ffn_gate.weight", s.Dim, s.FFN)
	s.mat(p+"ffn_up.weight", s.Dim, s.FFN)
	s.matMore(l, p+"ffn_down.weight", s.FFN, s.Dim)
	s.vec(p+"post_ffw_norm.weight", s.Dim)
}
