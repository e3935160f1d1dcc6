package engine

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"strings"

	"headinfer/engine/gguf"
)

// BERT, as llama.cpp's converter writes it (sentence-transformers models
// such as all-MiniLM and bge): an encoder that reads its whole input at
// once and gives every token a vector, for embeddings. Against Llama the
// block is post-norm (each residual sum is normalised, by LayerNorm with
// a bias, rather than each block input by RMSNorm), every projection has a
// bias, the feed-forward is up → GELU → down without a gate, positions
// are learned embeddings added to the token's rather than a rotation,
// attention runs both ways, and there is no output projection: the model
// embeds, it does not generate.

//
// nomic-bert (nomic-embed-text) is the same encoder with Llama's
// insides: Q, K and V fused in one attn_qkv matrix and rotated
// neox-style instead of position embeddings, a SwiGLU feed-forward
// (ffn_gate, ffn_up, ffn_down), and no biases but the norms'.

func init() {
	register("bert", &architecture{qkvBias: true, configure: configureBert, load: loadBert, synthFile: synthBert})
	register("nomic-bert", &architecture{ropeNeox: true, configure: configureBert, load: loadNomic, synthFile: synthNomic})
}

// configureBert reads what a BERT-family model's metadata says beyond the
// shared keys: its LayerNorm epsilon, and the tables its embeddings add
// up.
func configureBert(f *gguf.File, c *Config) error {
	c.LayerNorm, c.AbsPos, c.EmbedOnly = true, c.Arch == "bert", true
	c.NormEps = 1e-12 // the released models' value
	if v, ok := f.Float(c.Arch + ".attention.layer_norm_epsilon"); ok {
		c.NormEps = v
	}
	if !c.NonCausal {
		// llama.cpp requires the key; a file that says the model is
		// causal is not a BERT model as this loader knows it.
		if _, ok := f.Bool(c.Arch + ".attention.causal"); ok {
			return fmt.Errorf("%s model says it attends causally (%s.attention.causal true): a BERT encoder attends both ways", c.Arch, c.Arch)
		}
		c.NonCausal = true
	}
	t, ok := f.Tensor("token_types.weight")
	if !ok {
		return fmt.Errorf("%s model has no token_types.weight tensor", c.Arch)
	}
	if len(t.Dims) != 2 || t.Dims[0] != uint64(c.Dim) || t.Dims[1] == 0 || t.Dims[1] > 1<<16 {
		return fmt.Errorf("token_types.weight has shape %v, want [%d, types]", t.Dims, c.Dim)
	}
	c.TokenTypes = int(t.Dims[1])
	return nil
}

// bertBlock is one BERT layer's weights.
type bertBlock struct {
	Attn        attnWeights
	OutBias     *Tensor `gguf:"attn_output.bias" shape:"dim"`
	AttnNorm    *Tensor `gguf:"attn_output_norm" shape:"dim"`
	AttnNormB   *Tensor `gguf:"attn_output_norm.bias" shape:"dim"`
	Up          *Tensor `gguf:"ffn_up" shape:"dim,ffn"`
	UpBias      *Tensor `gguf:"ffn_up.bias" shape:"ffn"`
	Down        *Tensor `gguf:"ffn_down" shape:"ffn,dim"`
	DownBias    *Tensor `gguf:"ffn_down.bias" shape:"dim"`
	OutputNorm  *Tensor `gguf:"layer_output_norm" shape:"dim"`
	OutputNormB *Tensor `gguf:"layer_output_norm.bias" shape:"dim"`
}

// bertWeights is a whole BERT model's weights.
type bertWeights struct {
	Embed     *Tensor `gguf:"token_embd" shape:"dim,vocab" layout:"gguf"`
	Positions *Tensor `gguf:"position_embd" shape:"dim,ctx" layout:"gguf"`
	EmbedNorm *Tensor `gguf:"token_embd_norm" shape:"dim"`
	EmbedNB   *Tensor `gguf:"token_embd_norm.bias" shape:"dim"`
	// Type0 is row 0 of token_types, the embedding of the first
	// segment, which every token of an input gets (as in llama.cpp),
	// as F32 whatever the file's type.
	Type0  *Tensor
	Blocks []bertBlock
}

func (w *bertWeights) embedding() *Tensor { return w.Embed }
func (w *bertWeights) output() *Tensor    { return nil }
func (w *bertWeights) positions() *Tensor { return w.Positions }

func loadBert(l *loader, c Config) (weights, error) {
	w := &bertWeights{Blocks: make([]bertBlock, c.Layers)}
	if err := l.bind(w, "", c); err != nil {
		return nil, err
	}
	var err error
	if w.Type0, err = l.row("token_types.weight", c.Dim, c.TokenTypes, 0); err != nil {
		return nil, err
	}
	if err := bindBlocks(l, c, w.Blocks, func(b *bertBlock) *attnWeights { return &b.Attn }); err != nil {
		return nil, err
	}
	return w, nil
}

// forward records BERT's forward pass of f's rows: the sum of the token,
// position and first-segment embeddings, normalised; then per layer
// attention and feed-forward, each added to its input and normalised.
// The last layer's output is the tokens' final hidden states: there is no
// output norm and no output projection.
func (w *bertWeights) forward(f *pass) {
	f.embed(w.Embed)
	f.addPositions(w.Positions)
	f.bias(f.x, w.Type0, f.m.Config.Dim, false)
	f.layerNorm(f.x, w.EmbedNorm, w.EmbedNB, f.x)
	for l := range w.Blocks {
		if !f.layer(l) {
			continue
		}
		b := &w.Blocks[l]
		// x = norm(x + Wo·attention(Wq·x+bq, Wk·x+bk, Wv·x+bv) + bo).
		f.copy(f.xb, f.x)
		f.attention(l, &b.Attn)
		f.linear(b.Attn.Out, f.att, f.x, true)
		f.bias(f.x, b.OutBias, f.m.Config.Dim, false)
		f.layerNorm(f.x, b.AttnNorm, b.AttnNormB, f.x)

		// x = norm(x + Wdown·gelu(Wup·x + bup) + bdown).
		f.product(b.Up, f.x, f.gate, false)
		f.bias(f.gate, b.UpBias, b.Up.Rows, true)
		f.linear(b.Down, f.gate, f.x, true)
		f.bias(f.x, b.DownBias, f.m.Config.Dim, false)
		f.layerNorm(f.x, b.OutputNorm, b.OutputNormB, f.x)
	}
	f.logits(nil, nil)
}

// synthBert lists the metadata and tensors of a synthetic BERT model as
// llama.cpp's converter writes them, with a WordPiece vocabulary.
func synthBert(s *synthModel) []gguf.KV {
	a := s.Arch
	kv := []gguf.KV{
		{Key: a + ".attention.layer_norm_epsilon", Value: float32(1e-12)},
		{Key: a + ".attention.causal", Value: false},
		{Key: a + ".pooling_type", Value: uint32(s.bertPooling())},
	}
	kv = append(kv, synthWordPiece(s.Vocab)...)
	s.ts = []synthTensor{
		{"token_embd.weight", s.Dim, s.Vocab, s.Type, func(r *rand.Rand, n int) []float32 { return synthMatrix(r, n, 1) }},
		{"token_types.weight", s.Dim, 2, gguf.F32, func(r *rand.Rand, n int) []float32 { return synthMatrix(r, n, 1) }},
		{"position_embd.weight", s.Dim, s.Ctx, gguf.F32, func(r *rand.Rand, n int) []float32 { return synthMatrix(r, n, 1) }},
	}
	s.vec("token_embd_norm.weight", s.Dim)
	s.bias("token_embd_norm.bias", s.Dim)
	for l := 0; l < s.Layers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		qdim, kvdim := s.Heads*s.headDim, s.KVHeads*s.headDim
		s.mat(p+"attn_q.weight", s.Dim, qdim)
		s.bias(p+"attn_q.bias", qdim)
		s.mat(p+"attn_k.weight", s.Dim, kvdim)
		s.bias(p+"attn_k.bias", kvdim)
		s.mat(p+"attn_v.weight", s.Dim, kvdim)
		s.bias(p+"attn_v.bias", kvdim)
		s.mat(p+"attn_output.weight", qdim, s.Dim)
		s.bias(p+"attn_output.bias", s.Dim)
		s.vec(p+"attn_output_norm.weight", s.Dim)
		s.bias(p+"attn_output_norm.bias", s.Dim)
		s.mat(p+"ffn_up.weight", s.Dim, s.FFN)
		s.bias(p+"ffn_up.bias", s.FFN)
		s.mat(p+"ffn_down.weight", s.FFN, s.Dim)
		s.bias(p+"ffn_down.bias", s.Dim)
		s.vec(p+"layer_output_norm.weight", s.Dim)
		s.bias(p+"layer_output_norm.bias", s.Dim)
	}
	return kv
}

// nomicBlock is a nomic-bert layer's weights: those it binds by name,
// and its attention's, split from the fused attn_qkv.
type nomicBlock struct {
	Named nomicNamed
	Attn  attnWeights
}

// nomicNamed is what a nomic-bert layer binds by name.
type nomicNamed struct {
	Out         *Tensor `gguf:"attn_output" shape:"qdim,dim"`
	AttnNorm    *Tensor `gguf:"attn_output_norm" shape:"dim"`
	AttnNormB   *Tensor `gguf:"attn_output_norm.bias" shape:"dim"`
	Gate        *Tensor `gguf:"ffn_gate" shape:"dim,ffn" join:"gate up"`
	Up          *Tensor `gguf:"ffn_up" shape:"dim,ffn" join:"gate up"`
	Down        *Tensor `gguf:"ffn_down" shape:"ffn,dim"`
	OutputNorm  *Tensor `gguf:"layer_output_norm" shape:"dim"`
	OutputNormB *Tensor `gguf:"layer_output_norm.bias" shape:"dim"`
}

// nomicWeights is a whole nomic-bert model's weights.
type nomicWeights struct {
	Embed     *Tensor `gguf:"token_embd" shape:"dim,vocab" layout:"gguf"`
	EmbedNorm *Tensor `gguf:"token_embd_norm" shape:"dim"`
	EmbedNB   *Tensor `gguf:"token_embd_norm.bias" shape:"dim"`
	Type0     *Tensor // as bertWeights.Type0
	Blocks    []nomicBlock
}

func (w *nomicWeights) embedding() *Tensor { return w.Embed }
func (w *nomicWeights) output() *Tensor    { return nil }

func loadNomic(l *loader, c Config) (weights, error) {
	w := &nomicWeights{Blocks: make([]nomicBlock, c.Layers)}
	if err := l.bind(w, "", c); err != nil {
		return nil, err
	}
	var err error
	if w.Type0, err = l.row("token_types.weight", c.Dim, c.TokenTypes, 0); err != nil {
		return nil, err
	}
	qdim, kvdim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	for i := range w.Blocks {
		b, p := &w.Blocks[i], fmt.Sprintf("blk.%d.", i)
		if err := l.bind(&b.Named, p, c); err != nil {
			return nil, err
		}
		qkv, err := l.splitRows(p+"attn_qkv.weight", c.Dim, qdim, kvdim, kvdim)
		if err != nil {
			return nil, err
		}
		b.Attn.Q, b.Attn.K, b.Attn.V, b.Attn.Out = qkv[0], qkv[1], qkv[2], b.Named.Out
	}
	return w, nil
}

// forward records nomic-bert's forward pass: BERT's, with rotated q and
// k in place of position embeddings and SwiGLU in place of GELU.
func (w *nomicWeights) forward(f *pass) {
	f.embed(w.Embed)
	f.bias(f.x, w.Type0, f.m.Config.Dim, false)
	f.layerNorm(f.x, w.EmbedNorm, w.EmbedNB, f.x)
	for l := range w.Blocks {
		if !f.layer(l) {
			continue
		}
		b, n := &w.Blocks[l], &w.Blocks[l].Named
		f.copy(f.xb, f.x)
		f.attention(l, &b.Attn)
		f.linear(b.Attn.Out, f.att, f.x, true)
		f.layerNorm(f.x, n.AttnNorm, n.AttnNormB, f.x)

		// x = norm(x + Wdown·(silu(Wgate·x) ⊙ Wup·x)).
		f.copy(f.xb, f.x)
		f.swiGLU(n.Gate, n.Up)
		f.linear(n.Down, f.gate, f.x, true)
		f.layerNorm(f.x, n.OutputNorm, n.OutputNormB, f.x)
	}
	f.logits(nil, nil)
}

// synthNomic lists the metadata and tensors of a synthetic nomic-bert
// model as llama.cpp's converter writes them.
func synthNomic(s *synthModel) []gguf.KV {
	a := s.Arch
	kv := []gguf.KV{
		{Key: a + ".attention.layer_norm_epsilon", Value: float32(1e-12)},
		{Key: a + ".attention.causal", Value: false},
		{Key: a + ".pooling_type", Value: uint32(s.bertPooling())},
		{Key: a + ".rope.freq_base", Value: float32(cmp.Or(s.RopeBase, 1000))},
	}
	kv = append(kv, synthWordPiece(s.Vocab)...)
	s.ts = []synthTensor{
		{"token_embd.weight", s.Dim, s.Vocab, s.Type, func(r *rand.Rand, n int) []float32 { return synthMatrix(r, n, 1) }},
		{"token_types.weight", s.Dim, 2, gguf.F32, func(r *rand.Rand, n int) []float32 { return synthMatrix(r, n, 1) }},
	}
	s.vec("token_embd_norm.weight", s.Dim)
	s.bias("token_embd_norm.bias", s.Dim)
	for l := 0; l < s.Layers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		qdim, kvdim := s.Heads*s.headDim, s.KVHeads*s.headDim
		s.mat(p+"attn_qkv.weight", s.Dim, qdim+2*kvdim)
		s.mat(p+"attn_output.weight", qdim, s.Dim)
		s.vec(p+"attn_output_norm.weight", s.Dim)
		s.bias(p+"attn_output_norm.bias", s.Dim)
		s.mat(p+"ffn_gate.weight", s.Dim, s.FFN)
		s.mat(p+"ffn_up.weight", s.Dim, s.FFN)
		s.mat(p+"ffn_down.weight", s.FFN, s.Dim)
		s.vec(p+"layer_output_norm.weight", s.Dim)
		s.bias(p+"layer_output_norm.bias", s.Dim)
	}
	return kv
}

// bertPooling is llama.cpp's number for the spec's pooling.
func (s *synthModel) bertPooling() int {
	switch s.Pooling {
	case PoolCLS:
		return 2
	case PoolLast:
		return 3
	case PoolNone:
		return 0
	}
	return 1
}

// synthWordPiece makes a WordPiece vocabulary of n tokens, spelled as
// llama.cpp's converter spells BERT's: the five control tokens first, a
// word's first piece with the U+2581 that stands for the space before it
// ("▁the", where the original has "the"), a continuation bare ("ing",
// where the original has "##ing"). Every letter, digit and punctuation
// mark is both, so that any lower-case ASCII text encodes; common words
// and letter pairs follow, then made-up words to fill n.
func synthWordPiece(n int) []gguf.KV {
	tokens := []string{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
	types := []int32{3, 3, 3, 3, 3}
	seen := map[string]bool{}
	add := func(p string) {
		if !seen[p] && len(tokens) < n {
			seen[p] = true
			tokens = append(tokens, p)
			types = append(types, 1)
		}
	}
	const letters = "etaoinshrdlcumwfgypbvkjxqz"
	for _, c := range letters + "0123456789.,!?'\"-:;()" {
		add("▁" + string(c))
		add(string(c))
	}
	for _, w := range strings.Fields("the a and to of in was she he it with her his they on for that little one day " +
		"once upon time there girl boy named lily tom ben cat dog sat mat park play friends loved outside happy " +
		"big saw went said wanted is are be had have not but so very") {
		add("▁" + w)
	}
	for _, s := range []string{"ing", "ed", "er", "ly", "s", "es", "tion", "est"} {
		add(s)
	}
	for _, a := range letters {
		for _, b := range letters {
			add(string(a) + string(b))
			add("▁" + string(a) + string(b))
		}
	}
	for i := 0; len(tokens) < n; i++ {
		add(fmt.Sprintf("▁w%d", i))
	}
	return []gguf.KV{
		{Key: "tokenizer.ggml.model", Value: "bert"},
		{Key: "tokenizer.ggml.tokens", Value: tokens},
		{Key: "tokenizer.ggml.token_type", Value: types},
		{Key: "tokenizer.ggml.token_type_count", Value: uint32(2)},
		{Key: "tokenizer.ggml.bos_token_id", Value: uint32(2)},
		{Key: "tokenizer.ggml.cls_token_id", Value: uint32(2)},
		{Key: "tokenizer.ggml.seperator_token_id", Value: uint32(3)},
		{Key: "tokenizer.ggml.unknown_token_id", Value: uint32(1)},
		{Key: "tokenizer.ggml.padding_token_id", Value: uint32(0)},
		{Key: "tokenizer.ggml.mask_token_id", Value: uint32(4)},
		{Key: "tokenizer.ggml.add_bos_token", Value: true},
		{Key: "tokenizer.ggml.add_sep_token", Value: true},
		{Key: "tokenizer.ggml.add_eos_token", Value: false},
	}
}
