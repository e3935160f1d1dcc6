package check

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"headinfer/engine"
	"headinfer/engine/gguf"
	"headinfer/engine/sample"
	"headinfer/engine/snapshot"
)

// invariant is a property of the whole engine that holds bit for bit: run
// counts the logits whose bits differ between two ways of computing them.
type invariant struct {
	name string
	run  func(opt Options, r *rand.Rand) (diffs int, detail string, err error)
}

// checkModel is the synthetic model the invariants run: Llama geometry
// with grouped-query attention, small enough for a CPU device, in a
// quantized mixture as users run them.
func checkModel(typ, mix gguf.Type) engine.SynthSpec {
	return engine.SynthSpec{Arch: "llama", Dim: 256, Layers: 2, Heads: 8, KVHeads: 2, FFN: 512, Vocab: 512,
		Ctx: 1024, RopeBase: 10000, Type: typ, Mix: mix, Seed: 7}
}

func invariants(full bool) []invariant {
	types := [][2]gguf.Type{{gguf.Q4_K, gguf.Q6_K}}
	if full {
		types = append(types, [2]gguf.Type{gguf.F16, 0}, [2]gguf.Type{gguf.Q8_0, 0})
	}
	var invs []invariant
	for _, t := range types {
		spec := checkModel(t[0], t[1])
		name := t[0].String()
		if t[1] != 0 {
			name += "_M"
		}
		invs = append(invs,
			invariant{"engine/offload-head-equals-none/" + name, func(opt Options, r *rand.Rand) (int, string, error) {
				return offloadInvariant(opt, r, spec)
			}},
			invariant{"engine/batch-equals-solo/" + name, func(opt Options, r *rand.Rand) (int, string, error) {
				return batchInvariant(opt, r, spec)
			}},
			invariant{"engine/snapshot-restore/" + name, func(opt Options, r *rand.Rand) (int, string, error) {
				return snapshotInvariant(opt, r, spec)
			}},
			invariant{"engine/chunk-sizes-agree/" + name, func(opt Options, r *rand.Rand) (int, string, error) {
				return chunkInvariant(opt, r, spec)
			}},
			invariant{"engine/split-equals-one-device/" + name, func(opt Options, r *rand.Rand) (int, string, error) {
				return splitInvariant(opt, r, spec)
			}})
	}
	return invs
}

// withModel writes spec to a temporary file and loads it once per option
// set, handing fn the models.
func withModel(opt Options, spec engine.SynthSpec, opts []engine.Options, fn func(ms []*engine.Model) (int, string, error)) (int, string, error) {
	dir, err := os.MkdirTemp("", "headinfer-check-")
	if err != nil {
		return 0, "", err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "check.gguf")
	f, err := os.Create(path)
	if err != nil {
		return 0, "", err
	}
	if err := engine.Synth(f, spec); err != nil {
		f.Close()
		return 0, "", err
	}
	if err := f.Close(); err != nil {
		return 0, "", err
	}
	var ms []*engine.Model
	defer func() {
		for _, m := range ms {
			m.Close()
		}
	}()
	for _, o := range opts {
		o.Device, o.Validation = opt.Device, opt.Validation
		if o.Devices != nil {
			// The checked device, once per part of the split.
			o.Devices = slices.Repeat([]string{opt.Device}, len(o.Devices))
		}
		m, err := engine.Load(path, o)
		if err != nil {
			return 0, "", err
		}
		ms = append(ms, m)
	}
	diffs, detail, err := fn(ms)
	for _, m := range ms {
		for _, d := range m.Devices() {
			if msgs := d.ValidationMessages(); len(msgs) > 0 && err == nil {
				err = fmt.Errorf("validation layer: %s", msgs[0])
			}
		}
	}
	return diffs, detail, err
}

// prompt is n random token ids past the tokenizer's special ones.
func prompt(r *rand.Rand, n, vocab int) []int32 {
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(3 + r.IntN(vocab-3))
	}
	return ids
}

// generate runs a greedy generation in a fresh session of m and returns
// the logits before every token.
func generate(m *engine.Model, ids []int32, n int) ([][]float32, error) {
	se, err := m.NewSession()
	if err != nil {
		return nil, err
	}
	defer se.Close()
	var logits [][]float32
	_, err = se.Generate(context.Background(), ids, engine.GenerateParams{MaxTokens: n,
		Logits: func(_ int, l []float32) { logits = append(logits, slices.Clone(l)) }}, func(int32) bool { return true })
	return logits, err
}

// diff counts the logits whose bits differ and describes the first.
func diff(a, b [][]float32) (int, string) {
	if len(a) != len(b) {
		return max(len(a), len(b)), fmt.Sprintf("%d positions of logits against %d", len(a), len(b))
	}
	n, first := 0, ""
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return n + 1, fmt.Sprintf("position %d: %d logits against %d", i, len(a[i]), len(b[i]))
		}
		for j := range a[i] {
			if math.Float32bits(a[i][j]) != math.Float32bits(b[i][j]) {
				if n == 0 {
					first = fmt.Sprintf("position %d, logit %d: %v against %v", i, j, a[i][j], b[i][j])
				}
				n++
			}
		}
	}
	return n, first
}

// offloadInvariant: every KV head streamed through host memory gives the
// logits of every head resident, bit for bit (device attention).
func offloadInvariant(opt Options, r *rand.Rand, spec engine.SynthSpec) (int, string, error) {
	base := engine.Options{CtxSize: spec.Ctx, Chunk: 128, StreamBlock: 256, DecodeAttn: engine.DecodeAttnGPU}
	none, head := base, base
	none.Offload, head.Offload = engine.OffloadNone, engine.OffloadHead
	ids := prompt(r, 300, spec.Vocab)
	return withModel(opt, spec, []engine.Options{none, head}, func(ms []*engine.Model) (int, string, error) {
		if p := ms[1].Plan(); p.Streamed == 0 {
			return 0, "", fmt.Errorf("--offload head streamed no KV head (plan: %d resident)", p.Resident)
		}
		return sameLogits(ms[0], ms[1], ids)
	})
}

// sameLogits generates 8 tokens from ids on a and on b and compares
// their logits.
func sameLogits(a, b *engine.Model, ids []int32) (int, string, error) {
	la, err := generate(a, ids, 8)
	if err != nil {
		return 0, "", err
	}
	lb, err := generate(b, ids, 8)
	if err != nil {
		return 0, "", err
	}
	n, d := diff(la, lb)
	return n, d, nil
}

// splitInvariant: the model's layers split over the device opened twice
// (--devices D,D), each half planning its own KV (every head streamed),
// give the logits of one device, bit for bit.
func splitInvariant(opt Options, r *rand.Rand, spec engine.SynthSpec) (int, string, error) {
	one := engine.Options{CtxSize: spec.Ctx, Chunk: 128, StreamBlock: 256, DecodeAttn: engine.DecodeAttnGPU, Offload: engine.OffloadHead}
	two := one
	two.Devices, two.Split = []string{"", ""}, []float64{1, 1}
	ids := prompt(r, 300, spec.Vocab)
	return withModel(opt, spec, []engine.Options{one, two}, func(ms []*engine.Model) (int, string, error) {
		if p := ms[1].Plan(); len(p.Devices) != 2 || p.Streamed == 0 {
			return 0, "", fmt.Errorf("the split model runs on %d devices and streams %d KV heads, want 2 and some", len(p.Devices), p.Streamed)
		}
		return sameLogits(ms[0], ms[1], ids)
	})
}

// batchInvariant: sequences decoded together in one batch get the logits
// each gets alone.
func batchInvariant(opt Options, r *rand.Rand, spec engine.SynthSpec) (int, string, error) {
	const seqs = 3
	var prompts [][]int32
	for i := range seqs {
		prompts = append(prompts, prompt(r, 20+37*i, spec.Vocab))
	}
	o := engine.Options{CtxSize: 256, Chunk: 64, Parallel: seqs}
	return withModel(opt, spec, []engine.Options{o}, func(ms []*engine.Model) (int, string, error) {
		m := ms[0]
		alone := make([][][]float32, seqs)
		for i, p := range prompts {
			var err error
			if alone[i], err = generate(m, p, 12); err != nil {
				return 0, "", err
			}
		}
		b, err := m.NewBatch(seqs)
		if err != nil {
			return 0, "", err
		}
		defer b.Close()
		together := make([][][]float32, seqs)
		errs := make([]error, seqs)
		var wg sync.WaitGroup
		for i, p := range prompts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				params := engine.GenerateParams{MaxTokens: 12, Sampling: sample.Params{},
					Logits: func(_ int, l []float32) { together[i] = append(together[i], slices.Clone(l)) }}
				_, errs[i] = b.Generate(context.Background(), engine.Request{Prompt: p, Params: params, Fresh: true},
					func(int32) bool { return true })
			}()
		}
		wg.Wait()
		total, first := 0, ""
		for i := range seqs {
			if errs[i] != nil {
				return 0, "", errs[i]
			}
			n, d := diff(alone[i], together[i])
			if n > 0 && first == "" {
				first = fmt.Sprintf("sequence %d: %s", i, d)
			}
			total += n
		}
		return total, first, nil
	})
}

// snapshotInvariant: a session restored from a snapshot of another's KV
// computes the next logits the other computes.
func snapshotInvariant(opt Options, r *rand.Rand, spec engine.SynthSpec) (int, string, error) {
	ids := prompt(r, 200, spec.Vocab)
	next := prompt(r, 4, spec.Vocab)
	o := engine.Options{CtxSize: 512, Chunk: 64}
	return withModel(opt, spec, []engine.Options{o}, func(ms []*engine.Model) (int, string, error) {
		m := ms[0]
		decode := func(se *engine.Session) ([][]float32, error) {
			var ls [][]float32
			for _, id := range next {
				if err := se.Decode(id, true); err != nil {
					return nil, err
				}
				ls = append(ls, slices.Clone(se.Logits()))
			}
			return ls, nil
		}
		a, err := m.NewSession()
		if err != nil {
			return 0, "", err
		}
		defer a.Close()
		if err := a.Prefill(context.Background(), ids, false); err != nil {
			return 0, "", err
		}
		var snap bytes.Buffer
		if err := snapshot.Write(&snap, a, m.Identity(), len(ids), snapshot.Options{}); err != nil {
			return 0, "", err
		}
		want, err := decode(a)
		if err != nil {
			return 0, "", err
		}
		b, err := m.NewSession()
		if err != nil {
			return 0, "", err
		}
		defer b.Close()
		sr, err := snapshot.NewReader(&snap, b, m.Identity())
		if err != nil {
			return 0, "", err
		}
		defer sr.Close()
		if err := sr.Import(b); err != nil {
			return 0, "", err
		}
		got, err := decode(b)
		if err != nil {
			return 0, "", err
		}
		n, d := diff(want, got)
		return n, d, nil
	})
}

// chunkInvariant: prefilling a prompt in chunks of different sizes leaves
// the same KV and logits.
func chunkInvariant(opt Options, r *rand.Rand, spec engine.SynthSpec) (int, string, error) {
	ids := prompt(r, 333, spec.Vocab)
	chunks := []int{333, 37}
	if opt.Full {
		chunks = append(chunks, 128)
	}
	var opts []engine.Options
	for _, chunk := range chunks {
		opts = append(opts, engine.Options{CtxSize: 512, Chunk: chunk})
	}
	return withModel(opt, spec, opts, func(ms []*engine.Model) (int, string, error) {
		want, err := generate(ms[0], ids, 6)
		if err != nil {
			return 0, "", err
		}
		for _, m := range ms[1:] {
			got, err := generate(m, ids, 6)
			if err != nil {
				return 0, "", err
			}
			if n, d := diff(want, got); n > 0 {
				return n, fmt.Sprintf("chunk %d against %d: %s", m.Plan().Chunk, ms[0].Plan().Chunk, d), nil
			}
		}
		return 0, "", nil
	})
}
