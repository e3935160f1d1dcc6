package engine

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"headinfer/engine/gguf"
	"headinfer/vk"
	"headinfer/vk/vktest"
)

// offloadRun is what one generation left behind.
type offloadRun struct {
	logits [][]float32 // before every generated token
	ids    []int32
	plan   Plan
	mem    Memory
	stats  Stats
}

// generateAll prefills prompt and greedily generates n tokens, keeping
// every position's logits. The KV memory is poisoned with NaN first, so a
// row read before it is written shows up in the logits.
func generateAll(t *testing.T, path string, opt Options, prompt []int32, n int) offloadRun {
	t.Helper()
	m, se := poisonedSession(t, path, opt)
	return sessionRun(t, m, se, prompt, n)
}

// sessionRun prefills prompt on se and greedily generates n tokens,
// keeping every position's logits.
func sessionRun(t *testing.T, m *Model, se *Session, prompt []int32, n int) offloadRun {
	t.Helper()
	var r offloadRun
	_, err := se.Generate(context.Background(), prompt, GenerateParams{MaxTokens: n, Logits: func(_ int, l []float32) {
		r.logits = append(r.logits, append([]float32(nil), l...))
	}}, func(id int32) bool {
		r.ids = append(r.ids, id)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	r.plan, r.mem, r.stats = m.Plan(), se.Memory(), se.Stats()
	return r
}

// poisonedSession loads the model at path and opens a session whose KV
// memory is poisoned (poisonSession); the test's cleanup closes both.
func poisonedSession(t *testing.T, path string, opt Options) (*Model, *Session) {
	t.Helper()
	m := loadModel(t, path, opt)
	se, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(se.Close)
	poisonSession(t, se)
	return m, se
}

// poisonSession poisons the KV memory of each device of a session.
func poisonSession(t *testing.T, se *Session) {
	t.Helper()
	parts := se.s.split
	if parts == nil {
		parts = []*state{se.s}
	}
	for _, p := range parts {
		offloadPoison(t, p.m.dev, p.kv)
	}
}

// offloadPoison fills the resident slots, the host store and the streaming
// buffers with f16/f32 NaNs (all bits set).
func offloadPoison(t *testing.T, d *vk.Device, kc kvCache) {
	t.Helper()
	for _, b := range kc.Buffers() {
		nan := make([]byte, b.Size())
		for i := range nan {
			nan[i] = 0xff
		}
		if err := d.Write(b.All(), nan); err != nil {
			t.Fatal(err)
		}
	}
}

// offloadPrompt is n token ids drawn from the vocabulary.
func offloadPrompt(n, vocab int) []int32 {
	r := rand.New(rand.NewPCG(5, 6))
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(3 + r.IntN(vocab-3))
	}
	return ids
}

// TestOffloadBitIdentical checks that streaming KV heads through the
// device, all of them (fused into one command buffer per step) or only
// those that do not fit (pipelined over semaphores), changes no bit of the
// logits: for group sizes 1, 4 and 8, both KV types, over a prompt that
// spans several attention blocks, prefill chunks and streamed blocks, and
// decode steps that cross a block boundary; and for a qwen3 model, whose
// K rows are stored after their norm, with heads wider than dim/heads.
func TestOffloadBitIdentical(t *testing.T) {
	const ctx, chunk, promptLen, gen = 1024, 160, 700, 70
	// Streamed blocks of 256 positions split a slot into up to four
	// blocks; of 1024 or 2048 they carry several heads while the rows fit.
	for _, tc := range []struct {
		arch        string
		kvHeads     int
		kvType      string
		streamBlock int
		headDim     int
	}{{"llama", 8, "f16", 256, 0}, {"llama", 8, "f16", 2048, 0}, {"llama", 2, "f32", 1024, 0}, {"llama", 1, "f16", 256, 0},
		{"qwen3", 2, "f16", 256, 64}, {"llama", 2, "q8_0", 256, 0}, {"llama", 4, "q4_0", 1024, 0}, {"llama", 2, "q8_0/q4_0", 256, 0}} {
		t.Run(fmt.Sprintf("%s/group%d/%s/block%d", tc.arch, 8/tc.kvHeads, strings.ReplaceAll(tc.kvType, "/", "-"), tc.streamBlock), func(t *testing.T) {
			spec := SynthSpec{Arch: tc.arch, Dim: 256, Layers: 2, Heads: 8, KVHeads: tc.kvHeads, HeadDim: tc.headDim, FFN: 64,
				Vocab: 300, Ctx: ctx, RopeBase: 10000, Type: gguf.F16, Seed: 3}
			path := writeSynth(t, spec)
			prompt := offloadPrompt(promptLen, spec.Vocab)
			opt := Options{CtxSize: ctx, Chunk: chunk, KVType: tc.kvType, StreamBlock: tc.streamBlock, DecodeAttn: DecodeAttnGPU}
			if k, v, apart := strings.Cut(tc.kvType, "/"); apart {
				opt.KVType, opt.KVTypeK, opt.KVTypeV = "", k, v
			}
			kvt, err := kvTypesOf(opt, spec.headDim())
			if err != nil {
				t.Fatal(err)
			}

			opt.Offload = OffloadNone
			none := generateAll(t, path, opt, prompt, gen)
			opt.Offload = OffloadHead
			head := generateAll(t, path, opt, prompt, gen)
			// A budget with room for as many slots as fit besides the
			// streaming buffers without room for all.
			slots := 2 * tc.kvHeads
			p := none.plan
			resident := int((uint64(slots)*p.SlotBytes - head.plan.Streaming - 1) / p.SlotBytes)
			opt.Offload, opt.GPUMem = OffloadAuto, p.Weights+p.Activations+head.plan.Streaming+uint64(resident)*p.SlotBytes
			opt.pipeline = true // the semaphore-ordered path of two-queue devices
			auto := generateAll(t, path, opt, prompt, gen)

			if none.plan.Resident != slots || head.plan.Streamed != slots || resident < 1 || auto.plan.Resident != resident || auto.plan.Streamed != slots-resident {
				t.Fatalf("resident/streamed slots: none %d/%d, head %d/%d, auto %d/%d",
					none.plan.Resident, none.plan.Streamed, head.plan.Resident, head.plan.Streamed, auto.plan.Resident, auto.plan.Streamed)
			}
			if len(none.logits) != gen {
				t.Fatalf("%d positions of logits, want %d", len(none.logits), gen)
			}
			for i, l := range none.logits {
				for j, x := range l {
					if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
						t.Fatalf("position %d: logit %d is %v", i, j, x)
					}
				}
			}
			for name, r := range map[string]offloadRun{"head": head, "auto": auto} {
				if d := firstDiff(none.logits, r.logits); d != "" {
					t.Errorf("--offload %s: logits differ from --offload none: %s", name, d)
				}
			}

			// Traffic: the new rows go to the host once; a step copies
			// each streamed slot's streamed blocks (whole, the last one
			// too) up to the one that holds its last position.
			row := kvt.rowBytes(spec.headDim()) // K and V
			sb := min(tc.streamBlock, ctx)
			var reads uint64
			for start := 0; start < promptLen; start += chunk {
				n := min(chunk, promptLen-start)
				reads += uint64(min(ctx, (start+n+sb-1)/sb*sb))
			}
			for pos := promptLen; pos < promptLen+gen-1; pos++ {
				reads += uint64(min(ctx, (pos+1+sb-1)/sb*sb))
			}
			positions := uint64(promptLen + gen - 1)
			for name, r := range map[string]offloadRun{"none": none, "head": head, "auto": auto} {
				streamed := uint64(r.plan.Streamed)
				if want := streamed * positions * row; r.stats.D2HBytes != want {
					t.Errorf("%s: %d bytes written to the host, want %d", name, r.stats.D2HBytes, want)
				}
				if want := streamed * reads * row; r.stats.H2DBytes != want {
					t.Errorf("%s: %d bytes copied to the device, want %d", name, r.stats.H2DBytes, want)
				}
				if r.mem.StreamedSlots != r.plan.Streamed || r.mem.HostKVBytes != r.plan.HostKV || r.mem.DeviceKVBytesPeak != r.plan.DeviceKVBytes() {
					t.Errorf("%s: memory %+v does not match plan %+v", name, r.mem, r.plan)
				}
			}
			// A recording serves every position: one per chunk size
			// (160, the last 60) and one for decode, whatever the
			// positions; each step is one vkQueueSubmit per queue used.
			for name, r := range map[string]offloadRun{"none": none, "head": head, "auto": auto} {
				if r.stats.Recordings != 3 {
					t.Errorf("%s: %d steps recorded over %d positions, want 3", name, r.stats.Recordings, positions)
				}
				perStep := 1
				if r.plan.Streamed > 0 && hasTransferQueue(t) {
					perStep = 2
				}
				if r.stats.Submissions != perStep*r.stats.Steps || r.stats.DecodeSubmissions != perStep*r.stats.DecodeTokens {
					t.Errorf("%s: %d submissions in %d steps (%d in %d decode steps), want %d per step",
						name, r.stats.Submissions, r.stats.Steps, r.stats.DecodeSubmissions, r.stats.DecodeTokens, perStep)
				}
			}
			t.Logf("head: H2D %d B, D2H %d B, copy wait %v", head.stats.H2DBytes, head.stats.D2HBytes, head.stats.CopyWait)
		})
	}
}

// hasTransferQueue says whether the test device has a transfer queue of
// its own (then a step that streams submits to both queues).
func hasTransferQueue(t *testing.T) bool {
	return vktest.Device(t).Info().TransferQueue
}

// firstDiff describes the first logit whose bits differ, or "".
func firstDiff(a, b [][]float32) string {
	if len(a) != len(b) {
		return fmt.Sprintf("%d positions against %d", len(a), len(b))
	}
	for i := range a {
		for j := range a[i] {
			if math.Float32bits(a[i][j]) != math.Float32bits(b[i][j]) {
				return fmt.Sprintf("position %d, logit %d: %v against %v", i, j, a[i][j], b[i][j])
			}
		}
	}
	return ""
}

// TestOffloadStoriesBitIdentical runs the real stories260K model resident
// and fully streamed, fused and pipelined.
func TestOffloadStoriesBitIdentical(t *testing.T) {
	path := filepath.Join(modelsDir(t), "stories260K.gguf")
	opt := Options{CtxSize: 512, Chunk: 100, StreamBlock: 256, DecodeAttn: DecodeAttnGPU}
	m := loadModel(t, path, opt)
	prompt := m.Tokenizer.Encode("Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine. One day, she saw a big, red ball in the park.", true)
	opt.Offload = OffloadNone
	none := generateAll(t, path, opt, prompt, 300)
	opt.Offload = OffloadHead
	head := generateAll(t, path, opt, prompt, 300)
	opt.pipeline = true
	piped := generateAll(t, path, opt, prompt, 300)
	if d := firstDiff(none.logits, piped.logits); d != "" {
		t.Errorf("--offload head, pipelined: logits differ from --offload none: %s", d)
	}
	if head.plan.Streamed != head.plan.Slots || none.plan.Resident != none.plan.Slots {
		t.Fatalf("plans: none %d resident, head %d streamed of %d slots", none.plan.Resident, head.plan.Streamed, head.plan.Slots)
	}
	if len(none.ids) < 250 {
		t.Fatalf("generated %d tokens only", len(none.ids))
	}
	if d := firstDiff(none.logits, head.logits); d != "" {
		t.Errorf("--offload head: logits differ from --offload none: %s", d)
	}
}

// TestAutoChunkBitIdentical checks that --chunk auto, which gives a
// streaming plan a larger chunk than the resident one's default, changes
// no bit of the logits: every head streamed with the chunk the budget
// allows against every head resident with the default chunk, over a prompt
// that the two split differently, and the decode steps after it.
func TestAutoChunkBitIdentical(t *testing.T) {
	const ctx, promptLen, gen, chunk = 2048, 1700, 8, 1280
	spec := SynthSpec{Arch: "llama", Dim: 256, Layers: 2, Heads: 8, KVHeads: 8, FFN: 64,
		Vocab: 300, Ctx: ctx, RopeBase: 10000, Type: gguf.F16, Seed: 5}
	path := writeSynth(t, spec)
	prompt := offloadPrompt(promptLen, spec.Vocab)
	opt := Options{CtxSize: ctx, StreamBlock: 1024, DecodeAttn: DecodeAttnGPU, Offload: OffloadNone}
	none := generateAll(t, path, opt, prompt, gen)
	c, p := loadModel(t, path, opt).Config, none.plan
	// Room for the weights, the streaming buffers and a chunk of 1280
	// tokens' activations.
	opt.Offload = OffloadHead
	opt.GPUMem = p.Weights + streamingBytes(opt.StreamBlock, uint64(4*c.HeadDim)) + activationSizes(c, chunk, ctx).device()
	head := generateAll(t, path, opt, prompt, gen)
	if !none.plan.ChunkAuto || none.plan.Chunk != defaultChunk || !head.plan.ChunkAuto || head.plan.Chunk != chunk || head.plan.Streamed != head.plan.Slots {
		t.Fatalf("chunks: resident %d (auto %v), streamed %d (auto %v, %d of %d slots streamed: %s); want %d and %d",
			none.plan.Chunk, none.plan.ChunkAuto, head.plan.Chunk, head.plan.ChunkAuto, head.plan.Streamed, head.plan.Slots, head.plan.ChunkWhy, defaultChunk, chunk)
	}
	if d := firstDiff(none.logits, head.logits); d != "" {
		t.Errorf("logits differ between the resident run (chunk %d) and the streamed one (chunk %d): %s", none.plan.Chunk, head.plan.Chunk, d)
	}
}
