package engine

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"sort"
	"strings"

	"headinfer/engine/gguf"
)

// SynthSpec is the geometry of a synthetic model: random weights, a real
// file layout and a working SentencePiece tokenizer, so that tests and
// benchmarks can run any geometry without downloading a model.
type SynthSpec struct {
	Arch    string // one of Architectures()
	Dim     int
	Layers  int
	Heads   int
	KVHeads int
	// HeadDim is the size of one head, when it is not Dim/Heads (0: it
	// is). Files of architectures that read it (qwen3) carry it always.
	HeadDim  int
	FFN      int
	Vocab    int
	Ctx      int
	RopeBase float64
	Type     gguf.Type // type of the weight matrices; norms and biases are F32
	// Mix, when nonzero, is the type that llama.cpp's Q4_K_M and Q5_K_M
	// presets give some matrices instead of Type (Q6_K there): the output
	// matrix, and attn_v and ffn_down of the layers useMoreBits picks.
	Mix  gguf.Type
	Seed uint64
	// Tied leaves out output.weight: the output projection is then the
	// token embeddings, as in models that tie them.
	Tied bool
	// Window is the sliding window of the architecture's windowed layers
	// (0: none, or its default).
	Window int
	// RopeScale is a linear RoPE scaling factor (0 or 1: none).
	RopeScale float64
	// Pooling is the pooling_type an embedding model's file names
	// (bert; the zero value is mean).
	Pooling Pooling
}

// SynthTypes are the names `synth --type` takes: one weight type for every
// matrix, or a mixture as llama.cpp's quantizer writes it.
var SynthTypes = []string{"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k", "q4_k_m", "q5_k_m"}

// ParseSynthType reads one of SynthTypes into the Type and Mix of a spec.
func ParseSynthType(name string) (typ, mix gguf.Type, err error) {
	n := strings.ToLower(name)
	switch n {
	case "q4_k_m":
		return gguf.Q4_K, gguf.Q6_K, nil
	case "q5_k_m":
		return gguf.Q5_K, gguf.Q6_K, nil
	}
	for _, t := range gguf.SupportedTypes {
		if n == strings.ToLower(t.String()) {
			return t, 0, nil
		}
	}
	return 0, 0, fmt.Errorf("weight type %q is not supported (use %s)", name, strings.Join(SynthTypes, ", "))
}

// useMoreBits is the rule llama.cpp's quantizer uses to pick the layers
// whose attn_v and ffn_down get more bits in its _M presets: the first and
// last eighth of the n layers, and every third layer between.
func useMoreBits(layer, n int) bool {
	return layer < n/8 || layer >= 7*n/8 || (layer-n/8)%3 == 2
}

// SynthPresets are the geometries of well-known models.
var SynthPresets = map[string]SynthSpec{
	"llama2-7b":  {Arch: "llama", Dim: 4096, Layers: 32, Heads: 32, KVHeads: 32, FFN: 11008, Vocab: 32000, Ctx: 4096, RopeBase: 10000},
	"llama3-8b":  {Arch: "llama", Dim: 4096, Layers: 32, Heads: 32, KVHeads: 8, FFN: 14336, Vocab: 128256, Ctx: 8192, RopeBase: 500000},
	"mistral-7b": {Arch: "llama", Dim: 4096, Layers: 32, Heads: 32, KVHeads: 8, FFN: 14336, Vocab: 32000, Ctx: 32768, RopeBase: 1e6},
	"qwen2-7b":   {Arch: "qwen2", Dim: 3584, Layers: 28, Heads: 28, KVHeads: 4, FFN: 18944, Vocab: 152064, Ctx: 32768, RopeBase: 1e6},
	"qwen3-8b":   {Arch: "qwen3", Dim: 4096, Layers: 36, Heads: 32, KVHeads: 8, HeadDim: 128, FFN: 12288, Vocab: 151936, Ctx: 40960, RopeBase: 1e6},
	// Qwen3-0.6B: heads of 128 make q twice as wide as the embedding.
	"qwen3-0.6b":  {Arch: "qwen3", Dim: 1024, Layers: 28, Heads: 16, KVHeads: 8, HeadDim: 128, FFN: 3072, Vocab: 151936, Ctx: 40960, RopeBase: 1e6, Tied: true},
	"phi3-mini":   {Arch: "phi3", Dim: 3072, Layers: 32, Heads: 32, KVHeads: 32, FFN: 8192, Vocab: 32064, Ctx: 4096, RopeBase: 10000},
	"phi3-medium": {Arch: "phi3", Dim: 5120, Layers: 40, Heads: 40, KVHeads: 10, FFN: 17920, Vocab: 32064, Ctx: 4096, RopeBase: 10000},
	"gemma2-2b": {Arch: "gemma2", Dim: 2304, Layers: 26, Heads: 8, KVHeads: 4, HeadDim: 256, FFN: 9216, Vocab: 256000, Ctx: 8192,
		RopeBase: 10000, Tied: true, Window: 4096},
	"gemma2-9b": {Arch: "gemma2", Dim: 3584, Layers: 42, Heads: 16, KVHeads: 8, HeadDim: 256, FFN: 14336, Vocab: 256000, Ctx: 8192,
		RopeBase: 10000, Tied: true, Window: 4096},
	"gemma3-1b": {Arch: "gemma3", Dim: 1152, Layers: 26, Heads: 4, KVHeads: 1, HeadDim: 256, FFN: 6912, Vocab: 262144, Ctx: 32768,
		RopeBase: 1e6, Tied: true, Window: 512},
	"gemma3-4b": {Arch: "gemma3", Dim: 2560, Layers: 34, Heads: 8, KVHeads: 4, HeadDim: 256, FFN: 10240, Vocab: 262208, Ctx: 131072,
		RopeBase: 1e6, Tied: true, Window: 1024, RopeScale: 8},
	// Embedding models: BERT-tiny (google/bert_uncased_L-2_H-128_A-2)
	// and all-MiniLM-L6-v2's geometry.
	"bert-tiny": {Arch: "bert", Dim: 128, Layers: 2, Heads: 2, KVHeads: 2, FFN: 512, Vocab: 30522, Ctx: 512},
	"minilm-l6": {Arch: "bert", Dim: 384, Layers: 6, Heads: 12, KVHeads: 12, FFN: 1536, Vocab: 30522, Ctx: 512},
	// nomic-embed-text-v1.5.
	"nomic-embed": {Arch: "nomic-bert", Dim: 768, Layers: 12, Heads: 12, KVHeads: 12, FFN: 3072, Vocab: 30522, Ctx: 2048, RopeBase: 1000},
}

// Validate checks that the geometry makes a loadable model.
func (s SynthSpec) Validate() error {
	if _, ok := architectures[s.Arch]; !ok {
		return fmt.Errorf("synth: architecture %q is not supported (supported: %s)", s.Arch, strings.Join(Architectures(), ", "))
	}
	if s.Dim <= 0 || s.Layers <= 0 || s.Heads <= 0 || s.KVHeads <= 0 || s.FFN <= 0 || s.Ctx <= 0 {
		return fmt.Errorf("synth: every dimension must be positive")
	}
	if s.HeadDim < 0 || s.HeadDim == 0 && s.Dim%s.Heads != 0 || s.Heads%s.KVHeads != 0 || s.headDim()%2 != 0 {
		return fmt.Errorf("synth: dim %d, %d heads of %d and %d kv heads do not divide evenly into even head sizes", s.Dim, s.Heads, s.headDim(), s.KVHeads)
	}
	if s.Vocab < 259+3 {
		return fmt.Errorf("synth: vocab %d is too small (at least 262: 3 control tokens, 256 bytes, and some words)", s.Vocab)
	}
	for _, t := range []gguf.Type{s.Type, s.Mix} {
		if t == s.Mix && t == 0 {
			continue // no mixture (F32 is not a mixture type)
		}
		if !t.Supported() {
			return fmt.Errorf("synth: weight type %v is not supported", t)
		}
		bs := t.BlockSize()
		for _, k := range []int{s.Dim, s.FFN, s.Heads * s.headDim()} {
			if k%bs != 0 {
				return fmt.Errorf("synth: dimension %d is not a multiple of the %v block size %d", k, t, bs)
			}
		}
	}
	return nil
}

// headDim is the size of one head.
func (s SynthSpec) headDim() int {
	if s.HeadDim > 0 {
		return s.HeadDim
	}
	return s.Dim / s.Heads
}

// Synth writes a synthetic model to w.
func Synth(w io.Writer, s SynthSpec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	a, arch := s.Arch, architectures[s.Arch]
	hd := s.headDim()
	kv := []gguf.KV{
		{Key: "general.architecture", Value: a},
		{Key: "general.name", Value: fmt.Sprintf("synthetic %s %dx%d", a, s.Layers, s.Dim)},
		{Key: a + ".embedding_length", Value: uint32(s.Dim)},
		{Key: a + ".block_count", Value: uint32(s.Layers)},
		{Key: a + ".attention.head_count", Value: uint32(s.Heads)},
		{Key: a + ".attention.head_count_kv", Value: uint32(s.KVHeads)},
		{Key: a + ".feed_forward_length", Value: uint32(s.FFN)},
		{Key: a + ".context_length", Value: uint32(s.Ctx)},
	}
	m := &synthModel{SynthSpec: s, arch: arch, headDim: hd}
	if arch.synthFile != nil {
		return writeSynthFile(w, s, append(kv, arch.synthFile(m)...), m.ts)
	}
	kv = append(kv, []gguf.KV{
		{Key: a + ".rope.dimension_count", Value: uint32(hd)},
		{Key: a + ".rope.freq_base", Value: float32(s.RopeBase)},
		{Key: a + ".attention.layer_norm_rms_epsilon", Value: float32(cmp.Or(arch.synthEps, 1e-5))},
	}...)
	if s.Window > 0 {
		kv = append(kv, gguf.KV{Key: a + ".attention.sliding_window", Value: uint32(s.Window)})
	}
	if s.RopeScale > 1 {
		kv = append(kv, gguf.KV{Key: a + ".rope.scaling.type", Value: "linear"},
			gguf.KV{Key: a + ".rope.scaling.factor", Value: float32(s.RopeScale)})
	}
	if arch.synthKV != nil {
		kv = append(kv, arch.synthKV(a)...)
	}
	if arch.qkNorm || s.HeadDim > 0 {
		kv = append(kv, gguf.KV{Key: a + ".attention.key_length", Value: uint32(hd)},
			gguf.KV{Key: a + ".attention.value_length", Value: uint32(hd)})
	}
	kv = append(kv, synthVocab(s.Vocab, arch.synthSpecials)...)

	m.ts = []synthTensor{
		{"token_embd.weight", s.Dim, s.Vocab, s.Type, func(r *rand.Rand, n int) []float32 { return synthMatrix(r, n, 1) }},
	}
	m.vec("output_norm.weight", s.Dim)
	if !s.Tied {
		m.ts = append(m.ts, synthMat(m.mixed(), "output.weight", s.Dim, s.Vocab))
	}
	for l := 0; l < s.Layers; l++ {
		arch.synthBlock(m, l)
	}
	return writeSynthFile(w, s, kv, m.ts)
}

// writeSynthFile writes a synthetic model's metadata and tensors, filling
// each tensor from a generator of its own.
func writeSynthFile(w io.Writer, s SynthSpec, kv []gguf.KV, ts []synthTensor) error {
	infos := make([]gguf.TensorInfo, len(ts))
	for i, t := range ts {
		dims := []uint64{uint64(t.cols)}
		if t.rows > 1 {
			dims = append(dims, uint64(t.rows))
		}
		infos[i] = gguf.TensorInfo{Name: t.name, Dims: dims, Type: t.typ}
	}
	gw, err := gguf.NewWriter(w, kv, infos)
	if err != nil {
		return err
	}
	for i, t := range ts {
		// A generator per tensor: a tensor's values do not depend on the
		// others, so changing one dimension leaves the rest alike.
		r := rand.New(rand.NewPCG(s.Seed, uint64(i)))
		data, err := gguf.Quantize(t.typ, t.fill(r, t.cols*t.rows))
		if err != nil {
			return fmt.Errorf("synth: %s: %w", t.name, err)
		}
		if err := gw.WriteTensor(data); err != nil {
			return err
		}
	}
	return gw.Close()
}

// synthModel is a synthetic model's tensors as they are listed, in file
// order; an architecture's synthBlock adds a layer's.
type synthModel struct {
	SynthSpec
	arch    *architecture
	headDim int
	ts      []synthTensor
}

// synthTensor is one tensor of a synthetic model and how to fill it.
type synthTensor struct {
	name       string
	cols, rows int
	typ        gguf.Type
	fill       func(r *rand.Rand, n int) []float32
}

// synthMatrix draws a matrix uniformly with variance 1/cols, which keeps
// activations of order 1.
func synthMatrix(r *rand.Rand, n int, cols int) []float32 {
	a := float32(math.Sqrt(3 / float64(cols)))
	v := make([]float32, n)
	for i := range v {
		v[i] = (2*r.Float32() - 1) * a
	}
	return v
}

// synthMat is a matrix of type typ.
func synthMat(typ gguf.Type, name string, cols, rows int) synthTensor {
	return synthTensor{name, cols, rows, typ, func(r *rand.Rand, n int) []float32 { return synthMatrix(r, n, cols) }}
}

// mixed is the type of the matrices a _M mixture gives more bits.
func (s *synthModel) mixed() gguf.Type {
	if s.Mix != 0 {
		return s.Mix
	}
	return s.Type
}

// mat adds a matrix of the spec's type.
func (s *synthModel) mat(name string, cols, rows int) {
	s.ts = append(s.ts, synthMat(s.Type, name, cols, rows))
}

// matMore adds a matrix that a _M mixture gives more bits in layer l.
func (s *synthModel) matMore(l int, name string, cols, rows int) {
	typ := s.Type
	if useMoreBits(l, s.Layers) {
		typ = s.mixed()
	}
	s.ts = append(s.ts, synthMat(typ, name, cols, rows))
}

// vec adds an F32 vector of values near 1 (a norm's weights, a bias).
func (s *synthModel) vec(name string, n int) {
	s.ts = append(s.ts, synthTensor{name, n, 1, gguf.F32, func(r *rand.Rand, n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = 0.8 + 0.4*r.Float32()
		}
		return v
	}})
}

// bias adds an F32 vector of small values on both sides of 0 (a
// projection's or a LayerNorm's bias).
func (s *synthModel) bias(name string, n int) {
	s.ts = append(s.ts, synthTensor{name, n, 1, gguf.F32, func(r *rand.Rand, n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = 0.4*r.Float32() - 0.2
		}
		return v
	}})
}

// attention adds layer l's attention projections (attnWeights).
func (s *synthModel) attention(p string, l int) {
	qdim, kvdim := s.Heads*s.headDim, s.KVHeads*s.headDim
	s.mat(p+"attn_q.weight", s.Dim, qdim)
	s.mat(p+"attn_k.weight", s.Dim, kvdim)
	s.matMore(l, p+"attn_v.weight", s.Dim, kvdim)
	s.mat(p+"attn_output.weight", qdim, s.Dim)
}

// attentionExtras adds the attention biases and heads' norms of a layer
// where the architecture has them. (They come last in a layer: each
// tensor's random values depend on its place in the file, and models
// written before stay the same.)
func (s *synthModel) attentionExtras(p string) {
	qdim, kvdim := s.Heads*s.headDim, s.KVHeads*s.headDim
	if s.arch.qkvBias {
		s.vec(p+"attn_q.bias", qdim)
		s.vec(p+"attn_k.bias", kvdim)
		s.vec(p+"attn_v.bias", kvdim)
	}
	if s.arch.qkNorm {
		s.vec(p+"attn_q_norm.weight", s.headDim)
		s.vec(p+"attn_k_norm.weight", s.headDim)
	}
}

// synthVocab makes a SentencePiece vocabulary of n tokens: <unk>, <s>,
// </s>, the 256 byte tokens, then English-like pieces, so that any text
// encodes (through byte fallback where needed), and last the control
// tokens specials.
func synthVocab(n int, specials []string) []gguf.KV {
	tokens := []string{"<unk>", "<s>", "</s>"}
	types := []int32{2, 3, 3}
	for b := 0; b < 256; b++ {
		tokens = append(tokens, fmt.Sprintf("<0x%02X>", b))
		types = append(types, 6)
	}
	seen := map[string]bool{}
	var pieces []string
	add := func(p string) {
		if !seen[p] && len(pieces) < n-len(tokens)-len(specials) {
			seen[p] = true
			pieces = append(pieces, p)
		}
	}
	letters := "etaoinshrdlcumwfgypbvkjxqz"
	for _, c := range letters + strings.ToUpper(letters) + "0123456789.,!?'\"-:;()" {
		add(string(c))
		add("▁" + string(c))
	}
	for _, a := range letters {
		for _, b := range letters {
			add(string(a) + string(b))
			add("▁" + string(a) + string(b))
		}
	}
	for i := 0; len(pieces) < n-len(tokens)-len(specials); i++ {
		add(fmt.Sprintf("▁w%d", i))
	}
	// Longer pieces score higher so that merges prefer them.
	sort.SliceStable(pieces, func(i, j int) bool { return len(pieces[i]) < len(pieces[j]) })
	scores := make([]float32, len(tokens), n)
	for i, p := range pieces {
		tokens = append(tokens, p)
		types = append(types, 1)
		scores = append(scores, -float32(len(pieces)-i))
	}
	for _, sp := range specials {
		tokens = append(tokens, sp)
		types = append(types, 3)
		scores = append(scores, 0)
	}
	return []gguf.KV{
		{Key: "tokenizer.ggml.model", Value: "llama"},
		{Key: "tokenizer.ggml.tokens", Value: tokens},
		{Key: "tokenizer.ggml.scores", Value: scores},
		{Key: "tokenizer.ggml.token_type", Value: types},
		{Key: "tokenizer.ggml.bos_token_id", Value: uint32(1)},
		{Key: "tokenizer.ggml.eos_token_id", Value: uint32(2)},
		{Key: "tokenizer.ggml.unknown_token_id", Value: uint32(0)},
	}
}
