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
	register("phi3", &architecture{ropeNeox: true, configure: configurePhi3, load: loadPhi3, synthBlock: synthPhi3Block,
		// Phi-3's added tokens, ids 32000… in its real vocabulary.
		synthSpecials: []string{"<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>",
			"<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>"}})
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

// phi3Block is what a Phi-3 block binds by name; the rest of a
// llamaBlock comes from the fused tensors.
type phi3Block struct {
	AttnNorm *Tensor `gguf:"attn_norm" shape:"dim"`
	Out      *Tensor `gguf:"attn_output" shape:"qdim,dim"`
	FFNNorm  *Tensor `gguf:"ffn_norm" shape:"dim"`
	Down     *Tensor `gguf:"ffn_down" shape:"ffn,dim"`
}

// loadPhi3 loads a Phi-3 model as the Llama model it computes, its fused
// tensors split into the Llama block's.
func loadPhi3(l *loader, c Config) (weights, error) {
	w := &llamaWeights{Blocks: make([]llamaBlock, c.Layers)}
	if err := l.bindEnds(&w.modelEnds, c); err != nil {
		return nil, err
	}
	qdim, kvdim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	for i := range w.Blocks {
		b, p := &w.Blocks[i], fmt.Sprintf("blk.%d.", i)
		var own phi3Block
		if err := l.bind(&own, p, c); err != nil {
			return nil, err
		}
		b.AttnNorm, b.Attn.Out, b.FFNNorm, b.Down = own.AttnNorm, own.Out, own.FFNNorm, own.Down
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
