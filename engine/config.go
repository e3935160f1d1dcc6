package engine

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"headinfer/engine/gguf"
	"headinfer/engine/kernel"
	"headinfer/engine/offload"
)

// Config is a model's geometry and the constants of its forward pass, read
// from GGUF metadata.
type Config struct {
	Arch     string // GGUF general.architecture
	Name     string // general.name
	Dim      int    // embedding length
	Layers   int
	Heads    int // query heads
	KVHeads  int // key/value heads (grouped-query attention when < Heads)
	HeadDim  int
	FFN      int // feed-forward hidden size
	Vocab    int
	TrainCtx int // context length the model was trained for

	RopeDim   int     // rotated dimensions per head (≤ HeadDim)
	RopeBase  float64 // frequency base
	RopeNeox  bool    // rotate (i, i+RopeDim/2) pairs instead of adjacent ones
	RopeScale float64 // linear position scaling factor (1 = none)
	// Llama-3 frequency scaling, when the metadata asks for it.
	Llama3 *kernel.Llama3Scaling
	// RopeOrigCtx is the context the rope was trained for before any
	// extension: LongRoPE models (Phi-3 128K) use their long factors
	// beyond it.
	RopeOrigCtx int

	NormEps float64 // RMSNorm epsilon
	QKVBias bool    // Q/K/V projections carry biases (qwen2)
	// QKNorm: every head of q and of k is RMS-normalised (with per-layer
	// weights of HeadDim) before RoPE (qwen3, gemma3).
	QKNorm bool

	// AttnScale multiplies the attention scores (0: 1/√HeadDim). Gemma
	// sets its own.
	AttnScale float64
	// AttnSoftCap, when > 0, caps the scaled scores s at ±cap as
	// cap·tanh(s/cap) before the softmax (gemma2); FinalSoftCap caps
	// the logits so.
	AttnSoftCap, FinalSoftCap float64
	// EmbedScale, when > 0, multiplies the token embeddings (gemma: √Dim).
	EmbedScale float64
	// SlidingWindow, when > 0, is the positions a windowed layer's query
	// attends: the query at p sees keys at p−W < j ≤ p. SlidingPattern n
	// says which layers are windowed, as llama.cpp counts them: layer l
	// when l mod n < n−1 (gemma2: n = 2, every other layer from the
	// first; gemma3: 6, five of every six), or every layer when n is 0.
	SlidingWindow, SlidingPattern int
	// LocalRopeBase, when > 0, is the RoPE base of the windowed layers,
	// which then rotate without scaling (gemma3: 10000, where the global
	// layers use 1e6 scaled by 8).
	LocalRopeBase float64

	// Pooling is how an embedding is made of a sequence's token vectors
	// (<arch>.pooling_type); NonCausal says the model was trained to
	// attend both ways (<arch>.attention.causal false): its input then
	// runs as one chunk in which every token sees every other
	// (offload.Step.See), and it cannot generate.
	Pooling   Pooling
	NonCausal bool

	// LayerNorm: the norms subtract the mean and add a bias (BERT),
	// with NormEps their epsilon. AbsPos: positions are learned
	// embeddings added to the tokens' (position_embd, at most TrainCtx
	// of them), not a rotation of q and k. TokenTypes is the rows of
	// the segment embeddings (token_types), of which every token gets
	// the first. EmbedOnly: the model has no output projection; it
	// computes embeddings and cannot generate.
	LayerNorm, AbsPos, EmbedOnly bool
	TokenTypes                   int
}

// Window is the sliding window of layer l: 0 when it attends to every
// position before it.
func (c Config) Window(l int) int {
	if c.SlidingWindow <= 0 {
		return 0
	}
	if n := c.SlidingPattern; n == 0 || l%n < n-1 {
		return c.SlidingWindow
	}
	return 0
}

// Scale is the factor of the attention scores.
func (c Config) Scale() float64 {
	if c.AttnScale > 0 {
		return c.AttnScale
	}
	return 1 / math.Sqrt(float64(c.HeadDim))
}

// LayerAttn is every layer's sliding window, score soft cap and score
// scale as the KV cache's attention takes them (offload.Layout.Attn), or
// nil when every layer has Llama attention.
func (c Config) LayerAttn() []offload.LayerAttn {
	if c.SlidingWindow <= 0 && c.AttnSoftCap <= 0 && c.AttnScale <= 0 {
		return nil
	}
	la := make([]offload.LayerAttn, c.Layers)
	for l := range la {
		// A zero scale is the cache's 1/√HeadDim, the value Scale gives.
		la[l] = offload.LayerAttn{Window: c.Window(l), SoftCap: float32(c.AttnSoftCap), Scale: float32(c.AttnScale)}
	}
	return la
}

// Group is the number of query heads that share one KV head.
func (c Config) Group() int { return c.Heads / c.KVHeads }

// An architecture is one model family as its file (llama.go, …)
// registers it under its GGUF name: how it differs from the Llama
// baseline in what the shared kernels do, how its tensors load, and, for
// `synth`, what tensors a layer of it has.
type architecture struct {
	ropeNeox bool // default rope layout
	qkvBias  bool
	qkNorm   bool
	// configure reads the family's own metadata into c, after the keys
	// every family shares (nil: none).
	configure func(f *gguf.File, c *Config) error
	// load binds the family's tensors.
	load func(l *loader, c Config) (weights, error)
	// synthBlock lists layer l's tensors of a synthetic model; synthKV,
	// when set, gives the family's own metadata for one (named arch), and
	// synthEps its norms' epsilon (0: 1e-5).
	synthBlock func(s *synthModel, l int)
	synthKV    func(arch string) []gguf.KV
	synthEps   float64
	// synthSpecials are control tokens the family's real vocabulary has
	// and its loaders look up by text (llama.cpp refuses a phi3 file
	// without <|endoftext|>); a synthetic vocabulary ends with them.
	synthSpecials []string
	// synthFile, when set, lists every tensor of a synthetic model of
	// the family (in s.ts) and returns its metadata beyond the geometry
	// and the general keys, vocabulary included: for families whose file
	// is not the Llama one with other blocks (bert).
	synthFile func(s *synthModel) []gguf.KV
}

// weights is a loaded model's tensors, bound to an architecture's
// structs, and its forward pass over them.
type weights interface {
	// forward records the forward pass of f's rows.
	forward(f *pass)
	// embedding is the token embeddings; output the output projection
	// (the embeddings again when the model ties them).
	embedding() *Tensor
	output() *Tensor
}

var architectures = map[string]*architecture{}

// register adds an architecture; its file calls it from init.
func register(name string, a *architecture) { architectures[name] = a }

// Architectures lists the GGUF architectures this engine runs.
func Architectures() []string {
	names := make([]string, 0, len(architectures))
	for n := range architectures {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ConfigOf reads a model's configuration from its GGUF metadata and checks
// that it is consistent.
func ConfigOf(f *gguf.File) (Config, error) {
	arch, ok := f.String("general.architecture")
	if !ok {
		return Config{}, fmt.Errorf("model has no general.architecture key: not a model file")
	}
	a, ok := architectures[arch]
	if !ok {
		return Config{}, fmt.Errorf("model architecture %q is not supported (supported: %s)", arch, strings.Join(Architectures(), ", "))
	}
	c := Config{Arch: arch, RopeNeox: a.ropeNeox, QKVBias: a.qkvBias, QKNorm: a.qkNorm, RopeBase: 10000, RopeScale: 1, NormEps: 1e-5}
	c.Name, _ = f.String("general.name")

	var err error
	need := func(key string) int {
		v, ok := f.Uint(arch + "." + key)
		if !ok && err == nil {
			err = fmt.Errorf("model metadata lacks %s.%s", arch, key)
		}
		if v > 1<<31 && err == nil {
			err = fmt.Errorf("model metadata %s.%s = %d is out of range", arch, key, v)
		}
		return int(v)
	}
	opt := func(key string, def int) int {
		if _, ok := f.Value(arch + "." + key); !ok {
			return def
		}
		return need(key)
	}
	c.Dim = need("embedding_length")
	c.Layers = need("block_count")
	c.Heads = need("attention.head_count")
	c.KVHeads = opt("attention.head_count_kv", c.Heads)
	c.FFN = need("feed_forward_length")
	c.TrainCtx = opt("context_length", 2048)
	if err != nil {
		return Config{}, err
	}
	if c.Dim <= 0 || c.Layers <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.FFN <= 0 {
		return Config{}, fmt.Errorf("model has an empty dimension (dim %d, layers %d, heads %d, kv heads %d, ffn %d)", c.Dim, c.Layers, c.Heads, c.KVHeads, c.FFN)
	}
	// The head size defaults to dim/heads, but a model may set its own
	// (Qwen3-0.6B: dim 1024, 16 heads of 128): q then has heads·head_dim
	// values, not dim.
	headDim := 0 // no default when heads do not divide dim
	if c.Dim%c.Heads == 0 {
		headDim = c.Dim / c.Heads
	}
	c.HeadDim = opt("attention.key_length", headDim)
	valueDim := opt("attention.value_length", c.HeadDim)
	if err != nil {
		return Config{}, err
	}
	if c.HeadDim <= 0 || c.Heads%c.KVHeads != 0 {
		return Config{}, fmt.Errorf("model geometry is inconsistent: dim %d, %d heads of %d, %d kv heads", c.Dim, c.Heads, c.HeadDim, c.KVHeads)
	}
	if valueDim != c.HeadDim {
		return Config{}, fmt.Errorf("model has keys of %d and values of %d per head: only equal sizes are supported", c.HeadDim, valueDim)
	}
	c.RopeDim = opt("rope.dimension_count", c.HeadDim)
	if err != nil {
		return Config{}, err
	}
	if c.RopeDim > c.HeadDim || c.RopeDim%2 != 0 {
		return Config{}, fmt.Errorf("model rope dimension %d does not fit head dimension %d", c.RopeDim, c.HeadDim)
	}
	if v, ok := f.Float(arch + ".rope.freq_base"); ok {
		c.RopeBase = v
	}
	if v, ok := f.Float(arch + ".attention.layer_norm_rms_epsilon"); ok {
		c.NormEps = v
	}
	switch t, _ := f.String(arch + ".rope.scaling.type"); t {
	case "", "none":
	case "linear":
		if v, ok := f.Float(arch + ".rope.scaling.factor"); ok && v > 0 {
			c.RopeScale = v
		}
	case "llama3":
		s := &kernel.Llama3Scaling{Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalContext: 8192}
		if v, ok := f.Float(arch + ".rope.scaling.factor"); ok {
			s.Factor = v
		}
		if v, ok := f.Float(arch + ".rope.scaling.low_freq_factor"); ok {
			s.LowFreqFactor = v
		}
		if v, ok := f.Float(arch + ".rope.scaling.high_freq_factor"); ok {
			s.HighFreqFactor = v
		}
		if v, ok := f.Uint(arch + ".rope.scaling.original_context_length"); ok {
			s.OriginalContext = float64(v)
		}
		c.Llama3 = s
	default:
		return Config{}, fmt.Errorf("model rope scaling type %q is not supported (supported: none, linear, llama3)", t)
	}

	c.RopeOrigCtx = c.TrainCtx
	if v, ok := f.Uint(arch + ".rope.scaling.original_context_length"); ok && v < 1<<31 {
		c.RopeOrigCtx = int(v)
	}

	if c.Pooling, err = poolingOf(f, arch); err != nil {
		return Config{}, err
	}
	if causal, ok := f.Bool(arch + ".attention.causal"); ok && !causal {
		c.NonCausal = true
	}

	emb, ok := f.Tensor("token_embd.weight")
	if !ok {
		return Config{}, fmt.Errorf("model has no token_embd.weight tensor")
	}
	if len(emb.Dims) != 2 || emb.Dims[0] != uint64(c.Dim) {
		return Config{}, fmt.Errorf("token_embd.weight has shape %v, want [%d, vocab]", emb.Dims, c.Dim)
	}
	c.Vocab = int(emb.Dims[1])
	if a.configure != nil {
		if err := a.configure(f, &c); err != nil {
			return Config{}, err
		}
	}
	if v, ok := f.Uint(arch + ".pooling_type"); ok && v == 0 && c.NonCausal {
		// An embedding model that names no pooling means a vector per
		// token (a generative model's none is read as mean, poolingOf).
		c.Pooling = PoolNone
	}
	return c, nil
}
