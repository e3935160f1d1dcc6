package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"headinfer/engine/gguf"
	"headinfer/engine/offload"
	"headinfer/engine/sample"
)

// batchCase is one request of a batch test and what it produced.
type batchCase struct {
	prompt []int32
	params GenerateParams
	logits [][]float32
	ids    []int32
	res    Result
}

// batchCases are requests of different lengths, limits and sampling; the
// last shares a long prefix with the first, so that it may reuse the KV
// the first left in its slot.
func batchCases(vocab int) []*batchCase {
	p := offloadPrompt(200, vocab)
	greedy := sample.Params{}
	hot := sample.Params{Temperature: 0.9, TopK: 40, TopP: 0.95, Seed: 11}
	mk := func(prompt []int32, max int, s sample.Params) *batchCase {
		return &batchCase{prompt: prompt, params: GenerateParams{MaxTokens: max, Sampling: s}}
	}
	reuse := append(slices.Clone(p[:70]), p[150:160]...)
	return []*batchCase{
		mk(p[:70], 14, greedy), mk(p[80:85], 20, hot), mk(p[90:190], 9, greedy), mk(p[10:13], 17, greedy), mk(reuse, 11, greedy),
	}
}

// withLogits makes a case keep the logits before each of its tokens.
func (c *batchCase) withLogits() {
	c.logits = nil
	c.params.Logits = func(_ int, l []float32) { c.logits = append(c.logits, slices.Clone(l)) }
}

// solo runs each case alone in a fresh session.
func soloRuns(t *testing.T, m *Model, cases []*batchCase) {
	t.Helper()
	for _, c := range cases {
		se, err := m.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		c.withLogits()
		c.ids = nil
		c.res.Finish, err = se.Generate(context.Background(), c.prompt, c.params, func(id int32) bool {
			c.ids = append(c.ids, id)
			return true
		})
		se.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// batchRuns runs the cases on b: all but the last at once (more than the
// slots, so that some wait and join running ones), then the first again
// alone, so that its slot holds its prompt, and then the last, which
// shares the first's prompt and can reuse it.
func batchRuns(t *testing.T, b *Batch, cases []*batchCase, logits bool) {
	t.Helper()
	run := func(c *batchCase) error {
		c.ids, c.logits = nil, nil
		c.params.Logits = nil
		if logits {
			c.withLogits()
		}
		var err error
		c.res, err = b.Generate(context.Background(), Request{Prompt: c.prompt, Params: c.params}, func(id int32) bool {
			c.ids = append(c.ids, id)
			return true
		})
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(cases))
	for i, c := range cases[:len(cases)-1] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = run(c)
		}()
	}
	wg.Wait()
	first := slices.Clone(cases[0].ids)
	errs[0] = errors.Join(errs[0], run(cases[0]))
	if !slices.Equal(first, cases[0].ids) {
		t.Errorf("the first request gave %v beside others, %v after them", first, cases[0].ids)
	}
	errs[len(cases)-1] = run(cases[len(cases)-1])
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// TestBatchMatchesSolo checks that a sequence decoded in a batch gets the
// bits it gets alone: the same logits before every token, the same
// tokens, whatever runs beside it, for every weight type and every
// architecture, with the KV cache resident, streamed whole, and split
// (pipelined over semaphores), with the streamed heads' decode attention
// on the device and on the CPU, on a chunk small enough that prompts are
// prefilled in several chunks between decode steps.
func TestBatchMatchesSolo(t *testing.T) {
	type model struct {
		name string
		path func(t *testing.T) string
		opt  Options
	}
	var models []model
	stories := func(t *testing.T) string { return filepath.Join(modelsDir(t), "stories260K.gguf") }
	models = append(models, model{"stories260K", stories, Options{CtxSize: 256, Chunk: 48}},
		model{"stories260K/offload=head", stories, Options{CtxSize: 256, Chunk: 48, Offload: OffloadHead, StreamBlock: 256, DecodeAttn: DecodeAttnGPU}},
		model{"stories260K/offload=head/decode-attn=cpu", stories, Options{CtxSize: 256, Chunk: 48, Offload: OffloadHead, StreamBlock: 256, DecodeAttn: DecodeAttnCPU}})
	for i, typ := range []struct{ typ, mix gguf.Type }{
		{gguf.F32, 0}, {gguf.F16, 0}, {gguf.BF16, 0}, {gguf.Q8_0, 0}, {gguf.Q4_0, 0},
		{gguf.Q4_K, 0}, {gguf.Q5_K, 0}, {gguf.Q6_K, 0}, {gguf.Q4_K, gguf.Q6_K},
	} {
		arch := []string{"llama", "qwen2"}[i%2]
		spec := SynthSpec{Arch: arch, Dim: 128, Layers: 2, Heads: 8, KVHeads: 2, FFN: 96, Vocab: 300,
			Ctx: 256, RopeBase: 10000, Type: typ.typ, Mix: typ.mix, Seed: 9}
		if typ.typ.BlockSize() == 256 {
			spec.Dim, spec.FFN = 256, 512
		}
		name := fmt.Sprintf("%s/%v", arch, typ.typ)
		if typ.mix != 0 {
			name += "_M"
		}
		opt := Options{CtxSize: 256, Chunk: 40, StreamBlock: 256, DecodeAttn: DecodeAttnGPU}
		if i == 8 {
			opt.DecodeAttn, name = DecodeAttnCPU, name+"/decode-attn=cpu"
		}
		switch i % 3 {
		case 1:
			opt.Offload, name = OffloadHead, name+"/offload=head"
		case 2:
			// Some slots resident, the others streamed through the
			// two-queue path.
			opt.Offload, opt.pipeline, name = OffloadAuto, true, name+"/offload=auto"
		}
		models = append(models, model{name, func(t *testing.T) string { return writeSynth(t, spec) }, opt})
	}
	// qwen3: the head norms run before RoPE and before the K rows are
	// stored; heads of 32 make q twice as wide as dim.
	for _, q := range []struct {
		typ  gguf.Type
		name string
		opt  Options
	}{
		{gguf.Q8_0, "offload=auto", Options{Offload: OffloadAuto, pipeline: true, DecodeAttn: DecodeAttnGPU}},
		{gguf.F16, "offload=head/decode-attn=cpu", Options{Offload: OffloadHead, DecodeAttn: DecodeAttnCPU}},
		// Three products: the batch's q, k and v rows lie in three
		// regions, normed and rotated there.
		{gguf.F16, "separate", Options{separate: true}},
	} {
		spec := SynthSpec{Arch: "qwen3", Dim: 128, Layers: 2, Heads: 8, KVHeads: 2, HeadDim: 32, FFN: 96, Vocab: 300,
			Ctx: 256, RopeBase: 1e6, Type: q.typ, Seed: 9}
		opt := q.opt
		opt.CtxSize, opt.Chunk, opt.StreamBlock = 256, 40, 256
		models = append(models, model{fmt.Sprintf("qwen3/%v/%s", q.typ, q.name), func(t *testing.T) string { return writeSynth(t, spec) }, opt})
	}
	// qwen2's q, k and v biases, copied into the three regions.
	qwen2 := SynthSpec{Arch: "qwen2", Dim: 128, Layers: 2, Heads: 8, KVHeads: 2, FFN: 96, Vocab: 300,
		Ctx: 256, RopeBase: 10000, Type: gguf.Q8_0, Seed: 9}
	models = append(models, model{"qwen2/Q8_0/separate", func(t *testing.T) string { return writeSynth(t, qwen2) },
		Options{CtxSize: 256, Chunk: 40, separate: true}})
	// gemma3: five layers of six with a window of 8, whose slots are rings,
	// beside a streamed global layer.
	gemma := SynthSpec{Arch: "gemma3", Dim: 128, Layers: 6, Heads: 8, KVHeads: 2, HeadDim: 32, FFN: 96, Vocab: 300,
		Ctx: 1024, RopeBase: 1e6, Type: gguf.F16, Seed: 9, Tied: true, Window: 8}
	models = append(models, model{"gemma3/rings/offload=head", func(t *testing.T) string { return writeSynth(t, gemma) },
		Options{CtxSize: 1024, Chunk: 40, StreamBlock: 256, Offload: OffloadHead, DecodeAttn: DecodeAttnGPU}})
	// Quantized KV: Q8_0 split between resident and streamed slots; Q8_0
	// keys with Q4_0 values streamed and attended on the CPU; Q4_0 rings.
	quantKV := SynthSpec{Arch: "llama", Dim: 128, Layers: 2, Heads: 4, KVHeads: 2, FFN: 96, Vocab: 300,
		Ctx: 256, RopeBase: 10000, Type: gguf.F16, Seed: 9}
	models = append(models,
		model{"llama/kv=q8_0/offload=auto", func(t *testing.T) string { return writeSynth(t, quantKV) },
			Options{CtxSize: 256, Chunk: 40, StreamBlock: 256, KVType: "q8_0", Offload: OffloadAuto, pipeline: true, DecodeAttn: DecodeAttnGPU}},
		model{"llama/kv=q8_0-q4_0/offload=head/decode-attn=cpu", func(t *testing.T) string { return writeSynth(t, quantKV) },
			Options{CtxSize: 256, Chunk: 40, StreamBlock: 256, KVTypeK: "q8_0", KVTypeV: "q4_0", Offload: OffloadHead, DecodeAttn: DecodeAttnCPU}},
		model{"gemma3/rings/kv=q4_0/offload=head", func(t *testing.T) string { return writeSynth(t, gemma) },
			Options{CtxSize: 1024, Chunk: 40, StreamBlock: 256, KVType: "q4_0", Offload: OffloadHead, DecodeAttn: DecodeAttnGPU}})
	for _, mc := range models {
		t.Run(mc.name, func(t *testing.T) {
			path := mc.path(t)
			opt := mc.opt
			if opt.Offload == OffloadAuto {
				// Room for one resident slot per sequence.
				p := loadModel(t, path, Options{CtxSize: opt.CtxSize, Chunk: opt.Chunk, StreamBlock: opt.StreamBlock, Offload: OffloadHead, Parallel: 3,
					KVType: opt.KVType, KVTypeK: opt.KVTypeK, KVTypeV: opt.KVTypeV}).Plan()
				opt.GPUMem = p.DeviceBytes() + 3*p.SlotBytes
			}
			opt.Parallel = 3
			m := loadModel(t, path, opt)
			if m.Config.SlidingWindow > 0 && m.Plan().Rings == nil {
				t.Fatal("no rings")
			}
			if opt.Offload == OffloadAuto && (m.Plan().Resident == 0 || m.Plan().Streamed == 0) {
				t.Fatalf("plan keeps %d slots resident and streams %d per sequence, want both", m.Plan().Resident, m.Plan().Streamed)
			}
			cases := batchCases(m.Config.Vocab)
			soloRuns(t, m, cases)
			want := make([]batchCase, len(cases))
			for i, c := range cases {
				want[i] = *c
			}
			b, err := m.NewBatch(3)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			var mu sync.Mutex // OnStep runs on the batch's goroutine
			steps := map[int]int{}
			var untimed int // steps reported as taking no time
			b.OnStep = func(n int, took time.Duration) {
				mu.Lock()
				steps[n]++
				if took <= 0 {
					untimed++
				}
				mu.Unlock()
			}
			batchRuns(t, b, cases, true)
			for i, c := range cases {
				if !slices.Equal(c.ids, want[i].ids) || c.res.Finish != want[i].res.Finish {
					t.Errorf("request %d: batch gave %v (%s), alone %v (%s)", i, c.ids, c.res.Finish, want[i].ids, want[i].res.Finish)
				}
				if d := firstDiff(want[i].logits, c.logits); d != "" {
					t.Errorf("request %d: logits differ from its solo run: %s", i, d)
				}
			}
			mu.Lock()
			batched := steps[2] + steps[3]
			mu.Unlock()
			if batched == 0 {
				t.Errorf("no decode step ran more than one sequence: %v", steps)
			}
			if untimed > 0 {
				t.Errorf("%d decode steps reported no time (steps by sequences: %v)", untimed, steps)
			}
			if last := cases[len(cases)-1]; last.res.Cached != 70 {
				t.Errorf("the last request reused %d prompt tokens, want the 70 its slot held", last.res.Cached)
			}
			// Without host logits the device's argmax decides.
			batchRuns(t, b, cases, false)
			for i, c := range cases {
				if !slices.Equal(c.ids, want[i].ids) {
					t.Errorf("request %d without logits: batch gave %v, alone %v", i, c.ids, want[i].ids)
				}
			}
			mu.Lock()
			t.Logf("decode steps by sequences: %v", steps)
			mu.Unlock()
		})
	}
}

// TestBatchStop checks that a caller that stops reading, or whose context
// ends, frees its slot without disturbing the others.
func TestBatchStop(t *testing.T) {
	m := loadModel(t, filepath.Join(modelsDir(t), "stories260K.gguf"), Options{CtxSize: 256, Parallel: 2})
	cases := batchCases(m.Config.Vocab)[:2]
	soloRuns(t, m, cases)
	want := slices.Clone(cases[0].ids)
	b, err := m.NewBatch(2)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var got []int32
	var gotErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, gotErr = b.Generate(context.Background(), Request{Prompt: cases[0].prompt, Params: GenerateParams{MaxTokens: 14}}, func(id int32) bool {
			got = append(got, id)
			return true
		})
	}()
	var stopped Result
	go func() {
		defer wg.Done()
		n := 0
		stopped, _ = b.Generate(ctx, Request{Prompt: cases[1].prompt, Params: GenerateParams{MaxTokens: 1000}}, func(id int32) bool {
			if n++; n == 3 {
				cancel()
			}
			return true
		})
	}()
	wg.Wait()
	if gotErr != nil || !slices.Equal(got, want) {
		t.Fatalf("the request beside a cancelled one gave %v, %v; alone %v", got, gotErr, want)
	}
	if stopped.Tokens >= 1000 || b.Running() != 0 {
		t.Fatalf("cancelled request generated %d tokens; %d still running", stopped.Tokens, b.Running())
	}
	// An emit that returns false stops as well.
	res, err := b.Generate(context.Background(), Request{Prompt: cases[1].prompt, Params: GenerateParams{MaxTokens: 50}}, func(int32) bool { return false })
	if err != nil || res.Finish != FinishStop || b.Running() != 0 {
		t.Fatalf("stopped by emit: %+v, %v, %d running", res, err, b.Running())
	}
	if err := b.Do(context.Background(), 5, func(*Session) error { return nil }); err == nil {
		t.Fatal("Do on a slot that does not exist succeeded")
	}
	if _, err := b.Generate(context.Background(), Request{Prompt: make([]int32, 300), Params: GenerateParams{MaxTokens: 1}}, func(int32) bool { return true }); err == nil {
		t.Fatal("a prompt longer than the context was accepted")
	}
}

// BenchmarkBatchStep times one decode step of n sequences of stories260K:
// n = 1 is a session's own step, more a batched one.
func BenchmarkBatchStep(b *testing.B) {
	path := filepath.Join(modelsDir(b), "stories260K.gguf")
	if p := os.Getenv("HEADINFER_BENCH_MODEL"); p != "" {
		path = p
	}
	m := loadModel(b, path, Options{CtxSize: 512, Chunk: 32, Parallel: 8, GPUMem: 6 << 30})
	var sessions []*Session
	for range 8 {
		se, err := m.NewSession()
		if err != nil {
			b.Fatal(err)
		}
		defer se.Close()
		if err := se.Prefill(context.Background(), offloadPrompt(16, m.Config.Vocab), false); err != nil {
			b.Fatal(err)
		}
		sessions = append(sessions, se)
	}
	step, err := newBatchStep(m, 8)
	if err != nil {
		b.Fatal(err)
	}
	defer step.free()
	for _, n := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("sequences=%d", n), func(b *testing.B) {
			states := make([]*state, n)
			ids := make([]int32, n)
			starts := make([]int, n)
			for i := range n {
				states[i], ids[i], starts[i] = sessions[i].s, 5, 16
			}
			dispatches, barriers := 0, 0
			for b.Loop() {
				var err error
				if n == 1 {
					d := states[0].dispatches
					err = states[0].run(ids, 16, false, true, false)
					dispatches = states[0].dispatches - d
				} else {
					var st offload.RunStats
					st, err = step.run(states, ids, starts, false, time.Time{})
					dispatches, barriers = st.Dispatches, st.Barriers
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
			b.ReportMetric(float64(dispatches), "dispatches/step")
			if n > 1 {
				b.ReportMetric(float64(barriers), "barriers/step")
			}
		})
	}
}

// TestBatchCopiesPrefix checks that a request whose prompt begins with
// what a running sequence holds copies that KV into its own slot instead
// of prefilling it, and still gets the logits of its solo run, with the
// KV resident and streamed (copied from the host store).
func TestBatchCopiesPrefix(t *testing.T) {
	path := filepath.Join(modelsDir(t), "stories260K.gguf")
	for _, opt := range []Options{
		{CtxSize: 512, Parallel: 2},
		{CtxSize: 512, Parallel: 2, Offload: OffloadHead, StreamBlock: 256},
	} {
		t.Run("offload="+opt.Offload, func(t *testing.T) {
			m := loadModel(t, path, opt)
			p := offloadPrompt(120, m.Config.Vocab)
			long := &batchCase{prompt: p[:100], params: GenerateParams{MaxTokens: 300}}
			short := &batchCase{prompt: append(slices.Clone(p[:80]), p[100:120]...), params: GenerateParams{MaxTokens: 10}}
			soloRuns(t, m, []*batchCase{short})
			want := *short

			b, err := m.NewBatch(2)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			first, done := make(chan struct{}), make(chan struct{})
			var longRes Result
			var longErr error
			go func() {
				defer close(done)
				n := 0
				longRes, longErr = b.Generate(context.Background(), Request{Prompt: long.prompt, Params: long.params}, func(int32) bool {
					if n++; n == 1 {
						close(first)
					}
					return true
				})
			}()
			<-first // the long prompt is in its slot, and it runs on
			short.withLogits()
			short.ids = nil
			res, err := b.Generate(context.Background(), Request{Prompt: short.prompt, Params: short.params}, func(id int32) bool {
				short.ids = append(short.ids, id)
				return true
			})
			if err != nil {
				t.Fatal(err)
			}
			if b.Running() != 1 {
				t.Fatalf("the long request ended before the short one: %d running", b.Running())
			}
			<-done
			if longErr != nil {
				t.Fatal(longErr)
			}
			if res.Cached != 80 || res.Slot == longRes.Slot {
				t.Errorf("the short request reused %d tokens in slot %d (the long one ran in %d), want 80 copied", res.Cached, res.Slot, longRes.Slot)
			}
			if !slices.Equal(short.ids, want.ids) {
				t.Errorf("with a copied prefix: %v, alone %v", short.ids, want.ids)
			}
			if d := firstDiff(want.logits, short.logits); d != "" {
				t.Errorf("with a copied prefix, logits differ from the solo run: %s", d)
			}
			// Fresh reuses nothing, though both slots hold the prompt.
			var ids []int32
			res, err = b.Generate(context.Background(), Request{Prompt: short.prompt, Params: short.params, Fresh: true}, func(id int32) bool {
				ids = append(ids, id)
				return true
			})
			if err != nil || res.Cached != 0 || !slices.Equal(ids, want.ids) {
				t.Errorf("fresh request: %v, %d tokens reused, %v; want none reused and %v", err, res.Cached, ids, want.ids)
			}
		})
	}
}

// TestBatchSampled checks GenerateParams.Sampled in a batch: it hears
// every token drawn, in order (the emitted ones, then the end-of-
// generation token if that ended the sequence), each with the logits it
// was drawn from, which are the raw logits of the solo run, also for a
// greedy request whose logits would otherwise stay on the device.
func TestBatchSampled(t *testing.T) {
	m := loadModel(t, filepath.Join(modelsDir(t), "stories260K.gguf"), Options{CtxSize: 256, Parallel: 2})
	cases := batchCases(m.Config.Vocab)[:2]
	soloRuns(t, m, cases)
	b, err := m.NewBatch(2)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var wg sync.WaitGroup
	for _, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var drawn, emitted []int32
			var logits [][]float32
			p := c.params
			p.Logits = nil
			p.Sampled = func(id int32, l []float32) {
				drawn = append(drawn, id)
				logits = append(logits, slices.Clone(l))
			}
			res, err := b.Generate(context.Background(), Request{Prompt: c.prompt, Params: p}, func(id int32) bool {
				emitted = append(emitted, id)
				return true
			})
			if err != nil {
				t.Error(err)
				return
			}
			want := slices.Clone(emitted)
			if res.Finish == FinishStop {
				want = append(want, drawn[len(drawn)-1])
				if !m.Tokenizer.IsEOG(want[len(want)-1]) {
					t.Errorf("finished with %v but the last token drawn is not end-of-generation", drawn)
				}
			}
			if !slices.Equal(drawn, want) || !slices.Equal(emitted, c.ids) {
				t.Errorf("drawn %v, emitted %v; alone %v", drawn, emitted, c.ids)
			}
			if len(logits) != len(c.logits) {
				t.Errorf("%d steps' logits, alone %d", len(logits), len(c.logits))
				return
			}
			for i := range logits {
				if !slices.Equal(logits[i], c.logits[i]) {
					t.Errorf("step %d: the logits differ from the solo run's", i)
				}
			}
		}()
	}
	wg.Wait()
}

// TestBatchSlotPinned runs requests in the slots they ask for: a request
// for a busy slot waits for it while one for any slot starts beside, and
// a slot that does not exist is an error.
func TestBatchSlotPinned(t *testing.T) {
	m := loadModel(t, filepath.Join(modelsDir(t), "stories260K.gguf"), Options{CtxSize: 128, Parallel: 3})
	b, err := m.NewBatch(3)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	prompt := []int32{1, 450, 263, 31}
	slot := func(i int) *int { return &i }
	for _, want := range []int{2, 0, 2, 1} {
		res, err := b.Generate(context.Background(), Request{Prompt: prompt, Params: GenerateParams{MaxTokens: 3}, Slot: slot(want)}, func(int32) bool { return true })
		if err != nil || res.Slot != want {
			t.Fatalf("asked for slot %d: ran in %d (%v)", want, res.Slot, err)
		}
	}
	// Slot 1 busy with a long request; a second request for slot 1 waits
	// while one for any slot runs and ends.
	started := make(chan struct{})
	long := make(chan Result)
	go func() {
		n := 0
		res, _ := b.Generate(context.Background(), Request{Prompt: prompt, Params: GenerateParams{MaxTokens: 60}, Slot: slot(1)}, func(int32) bool {
			if n++; n == 1 {
				close(started)
			}
			return true
		})
		long <- res
	}()
	<-started
	second := make(chan Result)
	go func() {
		res, _ := b.Generate(context.Background(), Request{Prompt: prompt, Params: GenerateParams{MaxTokens: 3}, Slot: slot(1)}, func(int32) bool { return true })
		second <- res
	}()
	res, err := b.Generate(context.Background(), Request{Prompt: prompt, Params: GenerateParams{MaxTokens: 3}}, func(int32) bool { return true })
	if err != nil || res.Slot == 1 {
		t.Errorf("a request for any slot beside a busy slot 1: slot %d (%v)", res.Slot, err)
	}
	if r := <-long; r.Slot != 1 {
		t.Errorf("the long request ran in slot %d", r.Slot)
	}
	if r := <-second; r.Slot != 1 || r.Tokens != 3 {
		t.Errorf("the waiting request for slot 1: %+v", r)
	}
	if _, err := b.Generate(context.Background(), Request{Prompt: prompt, Params: GenerateParams{MaxTokens: 3}, Slot: slot(3)}, func(int32) bool { return true }); err == nil {
		t.Error("slot 3 of 3 was accepted")
	}
}
