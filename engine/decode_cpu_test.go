package engine

import (
	"context"
	"fmt"
	"math"
	"testing"

	"headinfer/engine/gguf"
)

// cpuDecodeTol bounds the logits of decode steps whose streamed heads
// attend on the CPU against the float64 reference, relative to the
// largest logit: the tolerance the device path meets with f32 KV. The CPU
// sums in another order than the device, so the bits differ; the error
// stays at f32 rounding.
const cpuDecodeTol = 1e-5

// TestCPUDecodeMatchesReference decodes with the streamed heads'
// attention on the CPU (--decode-attn cpu) and checks every decode step's
// logits against the float64 forward pass, for group sizes 1, 4 and 8 and
// head dimensions 64 and 128, in a budget that keeps some KV heads
// resident and streams the others (layers with both, and for group 8 a
// resident layer beside a streamed one). The KV memory is poisoned first.
// Decode steps copy no KV to the device and wait for the host once per
// layer that streams, plus once at the end; the prefill attends on the
// device, bit for bit as with --decode-attn gpu.
func TestCPUDecodeMatchesReference(t *testing.T) {
	const ctx, chunk, promptLen, steps = 1024, 100, 290, 6
	for _, hd := range []int{64, 128} {
		for _, group := range []int{1, 4, 8} {
			t.Run(fmt.Sprintf("hd%d/group%d", hd, group), func(t *testing.T) {
				const heads = 8
				kvHeads := heads / group
				spec := SynthSpec{Arch: "llama", Dim: heads * hd, Layers: 2, Heads: heads, KVHeads: kvHeads, FFN: 64,
					Vocab: 300, Ctx: ctx, RopeBase: 10000, Type: gguf.F16, Seed: uint64(11 + group)}
				path := writeSynth(t, spec)
				prompt := offloadPrompt(promptLen, spec.Vocab)
				opt := Options{CtxSize: ctx, Chunk: chunk, KVType: "f32", StreamBlock: 256, Offload: OffloadHead, DecodeAttn: DecodeAttnGPU}
				plan := loadModel(t, path, opt).Plan()
				// Room for half the slots besides the streaming buffers (a
				// slot of 1024 positions is twice the streaming buffers).
				slots := spec.Layers * kvHeads
				resident := max(1, slots/2)
				opt.Offload, opt.GPUMem = OffloadAuto, plan.Weights+plan.Activations+plan.Streaming+uint64(resident)*plan.SlotBytes
				gpu := decodeLogits(t, path, opt, prompt, steps)
				opt.DecodeAttn = DecodeAttnCPU
				cpu := decodeLogits(t, path, opt, prompt, steps)

				if p := cpu.plan; p.DecodeAttn != DecodeAttnCPU || p.Resident != resident || p.Streamed != slots-resident {
					t.Fatalf("plan: decode attention %q, %d resident and %d streamed slots; want cpu, %d and %d",
						p.DecodeAttn, p.Resident, p.Streamed, resident, slots-resident)
				}
				if gpu.plan.DecodeAttn != DecodeAttnGPU {
					t.Fatalf("--decode-attn gpu planned %q", gpu.plan.DecodeAttn)
				}
				if d := firstDiff(gpu.logits[:1], cpu.logits[:1]); d != "" {
					t.Errorf("prefill logits differ between the placements: %s", d)
				}
				streamedLayers := 0
				for _, n := range cpu.plan.ResidentHeads {
					if n < kvHeads {
						streamedLayers++
					}
				}
				if cpu.decode.HostWaits != steps*(1+streamedLayers) || cpu.decode.Submissions != cpu.decode.HostWaits {
					t.Errorf("%d decode steps: %d host waits and %d submissions, want %d each",
						steps, cpu.decode.HostWaits, cpu.decode.Submissions, steps*(1+streamedLayers))
				}
				if cpu.decode.H2DBytes != 0 || gpu.decode.H2DBytes == 0 {
					t.Errorf("decode copied %d KV bytes to the device with cpu attention (%d with gpu), want none", cpu.decode.H2DBytes, gpu.decode.H2DBytes)
				}
				if cpu.decode.CPUAttention <= 0 || gpu.decode.CPUAttention != 0 {
					t.Errorf("CPU attention time: cpu %v, gpu %v", cpu.decode.CPUAttention, gpu.decode.CPUAttention)
				}

				ref := loadRef(t, path)
				var want []float64
				for _, id := range prompt {
					want = ref.forward(id)
				}
				worst := map[string]float64{}
				for i := range cpu.logits {
					if i > 0 {
						want = ref.forward(cpu.ids[i-1])
					}
					scale := 0.0
					for _, w := range want {
						scale = max(scale, math.Abs(w))
					}
					for name, r := range map[string]decodeRun{"cpu": cpu, "gpu": gpu} {
						for j, w := range want {
							e := math.Abs(float64(r.logits[i][j])-w) / scale
							if math.IsNaN(e) || e > cpuDecodeTol {
								t.Fatalf("%s, position %d, logit %d: %v, reference %v (error %.3g of the largest logit)",
									name, promptLen+i, j, r.logits[i][j], w, e)
							}
							worst[name] = max(worst[name], e)
						}
					}
				}
				t.Logf("worst error of the largest logit: cpu %.3g, gpu %.3g", worst["cpu"], worst["gpu"])
			})
		}
	}
}

// decodeRun is what decodeLogits left behind.
type decodeRun struct {
	logits [][]float32 // after the prefill, then after each decode step
	ids    []int32     // the tokens decoded (greedy)
	plan   Plan
	decode Stats // the decode steps' share
}

// decodeLogits prefills prompt and decodes n greedy tokens, keeping the
// logits after the prefill and after every step; the KV memory is
// poisoned with NaN first.
func decodeLogits(t *testing.T, path string, opt Options, prompt []int32, n int) decodeRun {
	t.Helper()
	m, se := poisonedSession(t, path, opt)
	r := decodeRun{plan: m.Plan()}
	if err := se.Prefill(context.Background(), prompt, true); err != nil {
		t.Fatal(err)
	}
	r.logits = append(r.logits, append([]float32(nil), se.Logits()...))
	before := se.Stats()
	for range n {
		id, err := se.Argmax()
		if err != nil {
			t.Fatal(err)
		}
		r.ids = append(r.ids, id)
		if err := se.Decode(id, true); err != nil {
			t.Fatal(err)
		}
		r.logits = append(r.logits, append([]float32(nil), se.Logits()...))
	}
	r.decode = se.Stats().Sub(before)
	return r
}

// TestCPUDecodeQuant decodes with quantized KV (Q8_0, and Q8_0 keys with
// Q4_0 values) whose streamed heads attend on the CPU, which reads the
// blocks where they lie, against the same steps attending on the device:
// both dequantize alike, so only the order of the sums differs, and the
// logits agree within cpuDecodeTol of the largest; the prefill (on the
// device either way) is bit for bit the same.
func TestCPUDecodeQuant(t *testing.T) {
	const ctx, chunk, promptLen, steps = 1024, 100, 290, 6
	for _, kv := range [][2]string{{"q8_0", "q8_0"}, {"q8_0", "q4_0"}} {
		t.Run(kv[0]+"-"+kv[1], func(t *testing.T) {
			const heads, hd, group = 8, 64, 4
			spec := SynthSpec{Arch: "llama", Dim: heads * hd, Layers: 2, Heads: heads, KVHeads: heads / group, FFN: 64,
				Vocab: 300, Ctx: ctx, RopeBase: 10000, Type: gguf.F16, Seed: 21}
			path := writeSynth(t, spec)
			prompt := offloadPrompt(promptLen, spec.Vocab)
			opt := Options{CtxSize: ctx, Chunk: chunk, KVTypeK: kv[0], KVTypeV: kv[1], StreamBlock: 256, Offload: OffloadHead, DecodeAttn: DecodeAttnGPU}
			gpu := decodeLogits(t, path, opt, prompt, steps)
			opt.DecodeAttn = DecodeAttnCPU
			cpu := decodeLogits(t, path, opt, prompt, steps)
			if cpu.plan.DecodeAttn != DecodeAttnCPU || cpu.plan.Streamed == 0 || cpu.decode.H2DBytes != 0 || cpu.decode.CPUAttention <= 0 {
				t.Fatalf("cpu run: plan %q with %d streamed slots, %d bytes copied to the device, CPU attention %v",
					cpu.plan.DecodeAttn, cpu.plan.Streamed, cpu.decode.H2DBytes, cpu.decode.CPUAttention)
			}
			if d := firstDiff(gpu.logits[:1], cpu.logits[:1]); d != "" {
				t.Errorf("prefill logits differ between the placements: %s", d)
			}
			worst := 0.0
			for i := range gpu.logits {
				scale := 0.0
				for _, w := range gpu.logits[i] {
					scale = max(scale, math.Abs(float64(w)))
				}
				for j, w := range gpu.logits[i] {
					e := math.Abs(float64(cpu.logits[i][j])-float64(w)) / scale
					if math.IsNaN(e) || e > cpuDecodeTol {
						t.Fatalf("position %d, logit %d: cpu %v, gpu %v (difference %.3g of the largest logit)", promptLen+i, j, cpu.logits[i][j], w, e)
					}
					worst = max(worst, e)
				}
			}
			t.Logf("worst cpu-gpu difference of the largest logit: %.3g", worst)
		})
	}
}
