package engine

import (
	"fmt"
	"math"

	"headinfer/engine/gguf"
)

// Phi-3 (and 3.5) mini and medium: the Llama block with the Q, K and V
// projections fused into one attn_qkv matrix and gate and up into one
// ffn_up of twice the hidden size (gate first), rotated neox-style. The
// 128K models extend their context with LongRoPE: per-frequency factors,
// short ones up to the trained context and long ones beyond, and an
// attention factor that scales the rotated q and k.
//
// Phi-3 files declare a sliding window, which llama.cpp ignores (its
// converters do not say which layers use it, ggml-org/llama.cpp#13676);
// so do we, so that both compute the same model.

func init() {
	register("phi3", &architecture{ropeNeox: true, configure: configurePhi3, load: loadPhi3, synthBlock: synthPhi3Block})
}

func configurePhi3(f *gguf.File, c *Config) error {
	v, ok := f.Float(c.Arch + ".rope.scaling.attn_factor")
	if !ok || v == 1 {
		return nil
	}
	if !(v > 0) || math.IsInf(v, 0) {
		return fmt.Errorf("model rope attention factor %v is not positive", v)
	}
	if c.RopeDim != c.HeadDim {
		return fmt.Errorf("model has a rope attention factor with %d of %d dimensions rotated: not supported", c.RopeDim, c.HeadDim)
	}
	// Both q and k come out of RoPE scaled by the factor, so the scores
	// are scaled by its square.
	c.AttnScale = v * v / math.Sqrt(float64(c.HeadDim))
	return nil
}

// phi3Block is one Phi-3 transformer block's weights: its own tensors,
// bound by their tags, and those loaded from the fused ones (Attn's Q, K
// and V; Gate and Up).
type phi3Block struct {
	AttnNorm *Tensor `gguf:"attn_norm" shape:"dim"`
	FFNNorm  *Tensor `gguf:"ffn_norm" shape:"dim"`
	Down     *Tensor `gguf:"ffn_down" shape:"ffn,dim"`
	Out      *Tensor `gguf:"attn_output" shape:"qdim,dim"`

	Attn     attnWeights `gguf:"-"`
	Gate, Up *Tensor     `gguf:"-"`
}

// phi3Weights is a whole Phi-3 model's weights.
type phi3Weights struct {
	Embed   *Tensor `gguf:"token_embd" shape:"dim,vocab" layout:"gguf"`
	OutNorm *Tensor `gguf:"output_norm" shape:"dim"`
	Output  *Tensor `gguf:"output,optional" shape:"dim,vocab"`
	Blocks  []phi3Block
}

func loadPhi3(l *loader, c Config) (weights, error) {
	w := &phi3Weights{Blocks: make([]phi3Block, c.Layers)}
	if err := l.bind(w, "", c); err != nil {
		return nil, err
	}
	var err error
	if w.Output, err = l.output(w.Output, w.Embed); err != nil {
		return nil, err
	}
	qdim, kvdim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	for i := range w.Blocks {
		b, p := &w.Blocks[i], fmt.Sprintf("blk.%d.", i)
		if err := l.bind(b, p, c); err != nil {
			return nil, err
		}
		b.Attn.Out = b.Out
		qkv, err := l.splitRows(p+"attn_qkv.weight", c.Dim, qdim, kvdim, kvdim)
		if err != nil {
			return nil, err
		}
		b.Attn.Q, b.Attn.K, b.Attn.V = qkv[0], qkv[1], qkv[2]
		gu, err := l.splitRows(p+"ffn_up.weight", c.Dim, c.FFN, c.FFN)
		if err != nil {
			return nil, err
		}
		b.Gate, b.Up = gu[0], gu[1]
	}
	return w, nil
}

func (w *phi3Weights) embedding() *Tensor { return w.Embed }
func (w *phi3Weights) output() *Tensor    { return w.Output }

// forward records the forward pass of f's rows: the Llama block's.
func (w *phi3Weights) forward(f *pass) {
	f.embed(w.Embed)
	for l := range w.Blocks {
		b := &w.Blocks[l]
		f.norm(f.x, b.AttnNorm, f.xb)
		f.attention(l, &b.Attn)
		f.linear(b.Attn.Out, f.att, f.x, true)
		f.norm(f.x, b.FFNNorm, f.xb)
		f.swiGLU(b.Gate, b.Up)
		f.linear(b.Down, f.gate, f.x, true)
	}
	f.logits(w.OutNorm, w.Output)
}

// synthPhi3Block lists layer l's tensors of a synthetic Phi-3 model.
func synthPhi3Block(s *synthModel, l int) {
	p := fmt.Sprintf("blk.%d.", l)
	qdim, kvdim := s.Heads*s.headDim, s.KVHeads*s.headDim
	s.vec(p+"attn_norm.weight", s.Dim)
	s.mat(p+"attn_qkv.weight", s.Dim, qdim+2*kvdim)
	s.mat(p+"attn_output.weight", qdim, s.Dim)
	s.vec(p+"ffn_norm.weight", s.Dim)
	s.mat(p+"ffn_up.weight", s.Dim, 2*s.FFN)
	s.matMore(l, p+"ffn_down.weight", s.FFN, s.Dim)
}
