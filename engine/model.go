package engine

import (
	"cmp"
	"fmt"
	"math"
	"sync"

	"headinfer/engine/gguf"
	"headinfer/engine/kernel"
	"headinfer/engine/tokenizer"
	"headinfer/vk"
)

// Options configure how a model is loaded and run.
type Options struct {
	Device string // device selector: index or name substring ("" = default rule)
	// Devices, when it names two or more devices (selectors as Device
	// takes them; one device may be named twice), splits the model's
	// layers over them in runs: each device holds its layers' weights and
	// plans its own KV cache, and the residual stream crosses to the next
	// device through host memory. Device is then unused.
	Devices []string
	// Split is each device's share of the layers, in proportion (nil:
	// in proportion to the devices' budgets).
	Split []float64
	// GPUMems is each device's budget (nil: GPUMem for every device).
	GPUMems    []uint64
	CtxSize    int    // KV cache positions (0 = the model's training context, at most 4096)
	Chunk      int    // prefill tokens per forward pass (0 = chosen by the planner, see Plan.ChunkWhy)
	KVType     string // KV cache element type of keys and values: "f16" (default), "f32", "q8_0" or "q4_0"
	KVTypeK    string // the keys' type, overriding KVType ("" keeps it)
	KVTypeV    string // the values' type, overriding KVType ("" keeps it)
	Validation bool   // run under the Khronos validation layer
	Log        func(string)
	// Progress, when set, hears how long work advances: the weight
	// upload of Load and the chunks of a prefill of more than one. It is
	// called on the working goroutine and must return quickly.
	Progress func(Progress)
	// Monitor, when set, receives the sessions' events (see Monitor).
	Monitor *Monitor

	// GPUMem is the device-local memory budget in bytes for weights,
	// activations and KV (0 = what the device reports, less a margin).
	GPUMem uint64
	// HostMem bounds the host memory of the streamed KV heads (0: no
	// bound): a plan whose host store would exceed it fails, saying so.
	HostMem uint64
	// Offload is OffloadAuto (""), OffloadNone or OffloadHead.
	Offload string
	// StreamBlock is the positions per streamed KV block, a multiple of
	// 256 (0 = DefaultStreamBlock).
	StreamBlock int
	// DecodeAttn is where decode steps compute the streamed heads'
	// attention: DecodeAttnAuto (""), DecodeAttnGPU or DecodeAttnCPU.
	DecodeAttn string
	// Parallel is the number of sequences the plan budgets for (0 or 1:
	// one), each with CtxSize positions: a Batch of that many, or as many
	// sessions open at once.
	Parallel int
	// SWAFull keeps every position of the sliding-window layers' KV, as
	// llama.cpp's --swa-full does, instead of rings of about the window
	// (Plan.Rings). Rings cost the windowed layers' KV of long contexts
	// nothing, but a prefix can then be reused, or a snapshot restored,
	// only near the end of what a sequence holds.
	SWAFull bool

	// dev, when set, is used instead of opening a device (tests share one);
	// devs likewise for the first of Devices.
	dev  *vk.Device
	devs []*vk.Device
	// pipeline streams KV through separate submissions ordered by
	// semaphores even where the transfer queue is the compute queue
	// (tests, so that the two-queue path runs on any device).
	pipeline bool
	// separate runs Q, K, V, gate and up as separate products and RoPE as
	// two passes even where they could be fused (tests).
	separate bool
}

// Progress reports long work (Options.Progress).
type Progress struct {
	Work        string // ProgressLoad (Done, Total: weight bytes) or ProgressPrefill (prompt tokens)
	Done, Total int64
	// Chunk and Chunks are, for a prefill, the chunks done and in all.
	Chunk, Chunks int
}

// The kinds of work Progress reports.
const (
	ProgressLoad    = "load"
	ProgressPrefill = "prefill"
)

// Model is a loaded model: its configuration, tokenizer and weights on a
// device, and the kernels that run it.
type Model struct {
	Config    Config
	Tokenizer tokenizer.Tokenizer

	dev    *vk.Device
	ownDev bool
	file   *gguf.File
	arch   *architecture
	w      weights
	ops    *ops
	freqs  []float32 // rope inverse frequencies
	// localFreqs are the windowed layers' where they differ (Config.
	// LocalRopeBase), else nil.
	localFreqs []float32
	weights    uint64 // bytes of weights on the device
	loaded     *loader
	opt        Options
	kvType     kvTypes
	plan       Plan
	fim        func() FIM // the fill-in-the-middle tokens, found on first use
	// part is the layers this model runs on dev: all of them, or on a
	// model split over devices (Options.Devices), each of parts runs its
	// share and the model itself none (see split.go).
	part  part
	parts []*Model
}

// ops holds the kernels one model needs, specialised for its geometry.
type ops struct {
	embed        *kernel.Embed
	posEmbed     *kernel.Embed // absolute position embeddings (Config.AbsPos)
	norm         *kernel.RMSNorm
	layerNorm    *kernel.LayerNorm // Config.LayerNorm
	bias         *kernel.Bias      // Config.LayerNorm: BERT's biases and GELU
	headNorm     *kernel.RMSNorm   // rows of HeadDim: q and k heads (Config.QKNorm)
	ropeQ, ropeK *kernel.Rope
	ropeQK       *kernel.Rope // Q and K of one token back to back
	swiglu       *kernel.SwiGLU
	geglu        *kernel.GEGLU
	add          *kernel.Add
	scale        *kernel.Scale
	argmax       *kernel.Argmax
	kvStore      *kernel.KVStore // keys, and values unless kvStoreV is set
	kvStoreV     *kernel.KVStore // values of another type than the keys
	attn         *kernel.Attention
	matvec       map[gguf.Type]*kernel.MatVec
	matmul       map[gguf.Type]*kernel.MatMul
}

// Load opens a GGUF model, checks it, and uploads its weights to a Vulkan
// device.
func Load(path string, opt Options) (m *Model, err error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	c, err := ConfigOf(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	kvType, err := kvTypesOf(opt, c.HeadDim)
	if err != nil {
		return nil, err
	}
	opt = opt.resolve(c)
	if c.AbsPos && opt.CtxSize > c.TrainCtx {
		return nil, fmt.Errorf("%s: a context of %d positions is more than the %d the model has position embeddings for: pass --ctx-size %d or less", path, opt.CtxSize, c.TrainCtx, c.TrainCtx)
	}
	if err := opt.checkDevices(); err != nil {
		return nil, err
	}
	if opt.splitting() {
		return loadSplit(path, f, c, tok, kvType, opt)
	}

	m = &Model{Config: c, Tokenizer: tok, file: f, opt: opt, kvType: kvType, dev: opt.dev, part: wholeOf(c)}
	m.fim = sync.OnceValue(m.findFIM)
	if m.dev == nil {
		m.dev, err = vk.Open(vk.Options{Select: opt.Device, Validation: opt.Validation, Log: opt.Log,
			InlineCPU: inlineCPU(f, c)})
		if err != nil {
			return nil, err
		}
		m.ownDev = true
	}
	loaded := m // m is nil by the time an error return runs the defer
	defer func() {
		if err != nil {
			loaded.Close()
		}
	}()
	// Planned before the upload, so that a model that cannot fit fails
	// at once, saying how much it needs.
	rates := func() (Rates, error) { return measureRates(m.dev, c, kvType.K) }
	if m.plan, err = newPlan(f, c, m.part, opt, kvType, m.dev.Info(), opt.GPUMem, rates); err != nil {
		return nil, err
	}
	if m.freqs, err = ropeFreqs(f, c, opt.CtxSize); err != nil {
		return nil, err
	}
	if c.LocalRopeBase > 0 {
		m.localFreqs = kernel.RopeFreqs(c.RopeDim, c.LocalRopeBase, nil)
	}
	m.loaded = &loader{f: f, d: m.dev}
	if report := opt.Progress; report != nil {
		total := int64(weightBytes(f, m.part))
		m.loaded.progress = func(done uint64) { report(Progress{Work: ProgressLoad, Done: int64(done), Total: total}) }
	}
	m.arch = architectures[c.Arch]
	if m.w, err = m.arch.load(m.loaded, c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.weights = m.loaded.bytes
	if m.ops, err = newOps(m.dev, c, m.w, kvType); err != nil {
		return nil, err
	}
	return m, nil
}

// inlineCPU says whether a CPU device should run this model's kernels on
// the submitting thread: when reading its weights (at the few GB/s of a
// CPU) takes less time than waking a thread pool for each of a decode
// step's dispatches (about 11 a layer, 40 µs each on lavapipe: some
// 250 KiB of weights per dispatch).
func inlineCPU(f *gguf.File, c Config) bool {
	return weightBytes(f, wholeOf(c)) < uint64(11*c.Layers+5)*256<<10
}

// resolve fills in the defaults that depend on the model.
func (opt Options) resolve(c Config) Options {
	if opt.CtxSize <= 0 {
		opt.CtxSize = min(c.TrainCtx, 4096)
	}
	if opt.Chunk > 0 {
		opt.Chunk = min(opt.Chunk, opt.CtxSize)
	}
	if c.NonCausal && opt.Chunk == 0 {
		// Attending both ways, an input is one step: any input that
		// fits the context fits the chunk.
		opt.Chunk = opt.CtxSize
	}
	return opt
}

// Plan is where the model's sessions put their device memory.
func (m *Model) Plan() Plan { return m.plan }

// ropeFreqs computes the rope's inverse frequencies on the host, folding in
// linear scaling and the per-dimension factors of a rope_freqs tensor, or
// of LongRoPE's (Phi-3 128K): its short factors up to the context it was
// trained for, its long ones beyond, chosen by the context ctx.
func ropeFreqs(f *gguf.File, c Config, ctx int) ([]float32, error) {
	freqs := kernel.RopeFreqs(c.RopeDim, c.RopeBase, c.Llama3)
	for i := range freqs {
		freqs[i] = float32(float64(freqs[i]) / c.RopeScale)
	}
	name := "rope_freqs.weight"
	if _, ok := f.Tensor(name); !ok {
		name = "rope_factors_short.weight"
		if ctx > c.RopeOrigCtx {
			name = "rope_factors_long.weight"
		}
	}
	if _, ok := f.Tensor(name); !ok {
		return freqs, nil
	}
	ti, data, err := f.TensorData(name)
	if err != nil {
		return nil, err
	}
	if ti.Elements() != uint64(len(freqs)) {
		return nil, fmt.Errorf("%s has %d elements, want %d", name, ti.Elements(), len(freqs))
	}
	factors := make([]float32, len(freqs))
	if err := gguf.Dequantize(ti.Type, data, factors); err != nil {
		return nil, err
	}
	for i := range freqs {
		if !(factors[i] > 0) || math.IsInf(float64(factors[i]), 0) {
			return nil, fmt.Errorf("%s[%d] is %v: rope factors must be positive", name, i, factors[i])
		}
		freqs[i] /= factors[i]
	}
	return freqs, nil
}

// ropeFactorTensor says whether a tensor holds rope factors, which the
// host folds into the frequencies rather than the device reading them.
func ropeFactorTensor(name string) bool {
	return name == "rope_freqs.weight" || name == "rope_factors_short.weight" || name == "rope_factors_long.weight"
}

func newOps(d *vk.Device, c Config, w weights, kvType kvTypes) (*ops, error) {
	o := &ops{matvec: map[gguf.Type]*kernel.MatVec{}, matmul: map[gguf.Type]*kernel.MatMul{}}
	var err error
	try := func(e error) {
		if err == nil && e != nil {
			err = e
		}
	}
	var e error
	o.embed, e = kernel.NewEmbed(d, w.embedding().Type, c.Dim, c.Vocab)
	try(e)
	o.norm, e = kernel.NewRMSNorm(d, c.Dim, float32(c.NormEps))
	try(e)
	if c.QKNorm {
		o.headNorm, e = kernel.NewRMSNorm(d, c.HeadDim, float32(c.NormEps))
		try(e)
	}
	if c.LayerNorm {
		o.layerNorm, e = kernel.NewLayerNorm(d, c.Dim, float32(c.NormEps))
		try(e)
		o.bias, e = kernel.NewBias(d)
		try(e)
	}
	if p, ok := w.(interface{ positions() *Tensor }); ok && c.AbsPos {
		o.posEmbed, e = kernel.NewEmbed(d, p.positions().Type, c.Dim, c.TrainCtx)
		try(e)
	}
	layout := kernel.RopeNormal
	if c.RopeNeox {
		layout = kernel.RopeNeox
	}
	o.ropeQ, e = kernel.NewRope(d, c.Heads, c.HeadDim, c.RopeDim, layout)
	try(e)
	o.ropeK, e = kernel.NewRope(d, c.KVHeads, c.HeadDim, c.RopeDim, layout)
	try(e)
	o.ropeQK, e = kernel.NewRope(d, c.Heads+c.KVHeads, c.HeadDim, c.RopeDim, layout)
	try(e)
	o.swiglu, e = kernel.NewSwiGLU(d)
	try(e)
	o.geglu, e = kernel.NewGEGLU(d)
	try(e)
	o.add, e = kernel.NewAdd(d)
	try(e)
	o.scale, e = kernel.NewScale(d)
	try(e)
	o.argmax, e = kernel.NewArgmax(d, c.Vocab, 1)
	try(e)
	o.kvStore, e = kernel.NewKVStore(d, kvType.K, c.HeadDim)
	try(e)
	if kvType.V != kvType.K {
		o.kvStoreV, e = kernel.NewKVStore(d, kvType.V, c.HeadDim)
		try(e)
	}
	o.attn, e = kernel.NewAttentionKV(d, kvType.K, kvType.V, c.HeadDim, c.Group())
	try(e)
	// The blocks' matrices and the output projection; the embeddings are
	// read by the embedding kernel only.
	for _, m := range append(tensorsOf(w), w.output()) {
		if m == nil {
			continue // no output projection
		}
		if t := m.Type; m.Rows > 1 && o.matvec[t] == nil {
			o.matvec[t], e = kernel.NewMatVec(d, t)
			try(e)
			o.matmul[t], e = kernel.NewMatMul(d, t)
			try(e)
		}
	}
	if err != nil {
		return nil, err
	}
	return o, nil
}

// Device is the Vulkan device the model runs on: the first of a split
// model's (see Devices).
func (m *Model) Device() *vk.Device { return m.dev }

// Devices is the Vulkan devices the model runs on, in layer order: one,
// or a split model's.
func (m *Model) Devices() []*vk.Device {
	if m.parts == nil {
		return []*vk.Device{m.dev}
	}
	ds := make([]*vk.Device, len(m.parts))
	for i, p := range m.parts {
		ds[i] = p.dev
	}
	return ds
}

// WeightBytes is the size of the weights on the device.
func (m *Model) WeightBytes() uint64 { return m.weights }

// DecodeBytes is the weight bytes one decode step reads: all but the token
// embeddings, of which it reads one row (unless the output projection
// shares them).
func (m *Model) DecodeBytes() uint64 {
	if m.parts != nil {
		var n uint64
		for _, p := range m.parts {
			n += p.DecodeBytes()
		}
		return n
	}
	e := m.w.embedding()
	if e.Buf == nil || m.w.output() == e || m.w.output() == nil {
		return m.weights
	}
	return m.weights - e.Size + e.Size/uint64(e.Rows)
}

// Close frees the model's device memory and, if it opened it, the device.
func (m *Model) Close() error {
	var err error
	for _, p := range m.parts {
		err = cmp.Or(err, p.Close())
	}
	if m.ops != nil && m.ops.argmax != nil {
		m.ops.argmax.Free()
	}
	if m.loaded != nil {
		m.loaded.free()
	}
	if m.ownDev && m.dev != nil {
		err = cmp.Or(err, m.dev.Close())
		m.dev = nil
	}
	if m.file != nil {
		m.file.Close()
		m.file = nil
	}
	return err
}

// ChatTemplate is the model's Jinja chat template (tokenizer.chat_template),
// or "" when it has none.
func (m *Model) ChatTemplate() string {
	s, _ := m.file.String("tokenizer.chat_template")
	return s
}
