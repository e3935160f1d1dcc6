package engine

import "fmt"

// The Llama architecture (Llama 2 and 3, Mistral, TinyLlama); Qwen2,
// which adds biases to the Q/K/V projections and rotates neox-style pairs;
// and Qwen3, which rotates as Qwen2 but instead of biases RMS-normalises
// every head of q and of k before RoPE.

func init() {
	register("llama", &architecture{load: loadLlama, synthBlock: synthLlamaBlock})
	register("qwen2", &architecture{ropeNeox: true, qkvBias: true, load: loadLlama, synthBlock: synthLlamaBlock})
	register("qwen3", &architecture{ropeNeox: true, qkNorm: true, load: loadLlama, synthBlock: synthLlamaBlock})
}

// llamaBlock is one transformer block's weights.
type llamaBlock struct {
	AttnNorm *Tensor `gguf:"attn_norm" shape:"dim"`
	Attn     attnWeights
	FFNNorm  *Tensor `gguf:"ffn_norm" shape:"dim"`
	Gate     *Tensor `gguf:"ffn_gate" shape:"dim,ffn" join:"gate up"`
	Up       *Tensor `gguf:"ffn_up" shape:"dim,ffn" join:"gate up"`
	Down     *Tensor `gguf:"ffn_down" shape:"ffn,dim"`
}

// llamaWeights is the whole model's weights.
type llamaWeights struct {
	modelEnds
	Blocks []llamaBlock
}

func loadLlama(l *loader, c Config) (weights, error) {
	w := &llamaWeights{Blocks: make([]llamaBlock, c.Layers)}
	if err := l.bindEnds(&w.modelEnds, c); err != nil {
		return nil, err
	}
	if err := bindBlocks(l, c, w.Blocks, func(b *llamaBlock) *attnWeights { return &b.Attn }); err != nil {
		return nil, err
	}
	return w, nil
}

// forward records the forward pass of f's rows: embeddings, every block,
// and the logits.
func (w *llamaWeights) forward(f *pass) {
	f.embed(w.Embed)
	for l := range w.Blocks {
		if !f.layer(l) {
			continue
		}
		b := &w.Blocks[l]
		// Attention: x += Wo · attention(rope(Wq·xb), rope(Wk·xb), Wv·xb).
		f.norm(f.x, b.AttnNorm, f.xb)
		f.attention(l, &b.Attn)
		f.linear(b.Attn.Out, f.att, f.x, true)

		// Feed-forward: x += Wdown · (silu(Wgate·xb) ⊙ Wup·xb).
		f.norm(f.x, b.FFNNorm, f.xb)
		f.swiGLU(b.Gate, b.Up)
		f.linear(b.Down, f.gate, f.x, true)
	}
	f.logits(w.OutNorm, w.Output)
}

// synthLlamaBlock lists layer l's tensors of a synthetic llama, qwen2 or
// qwen3 model.
func synthLlamaBlock(s *synthModel, l int) {
	p := fmt.Sprintf("blk.%d.", l)
	s.vec(p+"attn_norm.weight", s.Dim)
	s.attention(p, l)
	s.vec(p+"ffn_norm.weight", s.Dim)
	s.mat(p+"ffn_gate.weight", s.Dim, s.FFN)
	s.mat(p+"ffn_up.weight", s.Dim, s.FFN)
	s.matMore(l, p+"ffn_down.weight", s.FFN, s.Dim)
	s.attentionExtras(p)
}
