package engine

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"headinfer/bytesize"
	"headinfer/engine/gguf"
	"headinfer/vk"
)

// planTestInput is a Llama-3-8B-like geometry with 1 GiB of weights.
func planTestInput(ctx int, mode string, budget uint64) planInput {
	c := Config{Dim: 4096, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128, FFN: 14336, Vocab: 128256, RopeDim: 128}
	return planInput{c: c, ctx: ctx, chunk: 512, kvType: kvTypes{gguf.F16, gguf.F16}, mode: mode, budget: budget, budgetFrom: "test",
		streamBlock: DefaultStreamBlock, weights: 1 << 30, bindLimit: 4 << 30}
}

func TestPlanPlacesSlots(t *testing.T) {
	const ctx = 8192
	base := planTestInput(ctx, OffloadAuto, 64<<30)
	slot := uint64(2 * ctx * 128 * 2)
	act := activationSizes(base.c, 512, ctx).device()
	stream := uint64(2 * 2 * DefaultStreamBlock * 128 * 2)
	all := 256 * slot

	p, err := makePlan(base)
	if err != nil {
		t.Fatal(err)
	}
	if p.Resident != 256 || p.Streaming != 0 || p.HostKV != 0 || p.ResidentKV != all || p.SlotBytes != slot {
		t.Errorf("auto with room for everything: %+v", p)
	}

	// Room for weights, activations, streaming buffers and 100.5 slots.
	in := base
	in.budget = 1<<30 + act + stream + 100*slot + slot/2
	p, err = makePlan(in)
	if err != nil {
		t.Fatal(err)
	}
	if p.Resident != 100 || p.Streamed != 156 || p.Streaming != stream || p.HostKV != 156*slot || p.DeviceBytes() > in.budget {
		t.Errorf("auto with room for 100 slots: %d resident, %d streamed, streaming %d, device %d of %d",
			p.Resident, p.Streamed, p.Streaming, p.DeviceBytes(), in.budget)
	}
	sum, lo, hi := 0, 1<<30, 0
	for _, n := range p.ResidentHeads {
		sum, lo, hi = sum+n, min(lo, n), max(hi, n)
	}
	if sum != 100 || hi-lo > 1 || len(p.ResidentHeads) != 32 {
		t.Errorf("resident heads per layer %v: want 100 spread evenly", p.ResidentHeads)
	}

	in.mode = OffloadHead
	in.budget = 64 << 30
	if p, err = makePlan(in); err != nil || p.Resident != 0 || p.Streamed != 256 || p.Streaming != stream {
		t.Errorf("head: %+v, %v", p, err)
	}
	in.mode = OffloadNone
	if p, err = makePlan(in); err != nil || p.Resident != 256 || p.Streaming != 0 {
		t.Errorf("none: %+v, %v", p, err)
	}
}

func TestPlanErrorsSayWhatIsNeeded(t *testing.T) {
	const ctx = 8192
	in := planTestInput(ctx, OffloadNone, 2<<30)
	_, err := makePlan(in)
	if err == nil || !strings.Contains(err.Error(), "does not fit") || !strings.Contains(err.Error(), "--offload auto") {
		t.Errorf("none over budget: %v", err)
	}
	for _, mode := range []string{OffloadAuto, OffloadHead} {
		in := planTestInput(ctx, mode, 1<<30) // the weights alone
		act := activationSizes(in.c, 512, ctx).device()
		need := uint64(1<<30) + act + uint64(2*2*DefaultStreamBlock*128*2)
		_, err := makePlan(in)
		if err == nil || !strings.Contains(err.Error(), "needs "+bytesize.Format(need)) || !strings.Contains(err.Error(), "--gpu-mem") {
			t.Errorf("%s with no room: %v (want it to say it needs %s)", mode, err, bytesize.Format(need))
		}
		in.budget = need
		if _, err := makePlan(in); err != nil {
			t.Errorf("%s with exactly enough room: %v", mode, err)
		}
	}
	in = planTestInput(ctx, "most", 64<<30)
	if _, err := makePlan(in); err == nil || !strings.Contains(err.Error(), "auto, none, head") {
		t.Errorf("unknown mode: %v", err)
	}
	in = planTestInput(ctx, OffloadHead, 64<<30)
	in.streamBlock = 1000
	if _, err := makePlan(in); err == nil || !strings.Contains(err.Error(), "multiple of 256") {
		t.Errorf("stream block 1000: %v", err)
	}
	in.streamBlock, in.bindLimit = 1<<20, 128<<20
	if _, err := makePlan(in); err == nil || !strings.Contains(err.Error(), "--stream-block") {
		t.Errorf("stream block larger than a binding: %v", err)
	}
	// A slot too large to bind stays in host memory under auto.
	in = planTestInput(1<<20, OffloadAuto, 1<<50)
	in.bindLimit = 128 << 20
	if p, err := makePlan(in); err != nil || p.Resident != 0 {
		t.Errorf("auto with unbindable slots: %+v, %v", p, err)
	}
	in.mode = OffloadNone
	if _, err := makePlan(in); err == nil || !strings.Contains(err.Error(), "binds at once") {
		t.Errorf("none with unbindable slots: %v", err)
	}
}

// TestPlanDeviceKVIsConstant checks that with every head streamed the
// device KV memory does not depend on the context, and host memory grows
// in proportion.
func TestPlanDeviceKVIsConstant(t *testing.T) {
	var dev, host []uint64
	for _, ctx := range []int{4096, 32768, 131072} {
		p, err := makePlan(planTestInput(ctx, OffloadHead, 64<<30))
		if err != nil {
			t.Fatal(err)
		}
		dev, host = append(dev, p.DeviceKVBytes()), append(host, p.HostKV)
	}
	if dev[0] != dev[1] || dev[1] != dev[2] || dev[0] > 64<<20 {
		t.Errorf("device KV bytes at 4K, 32K, 128K: %v", dev)
	}
	if host[1] != 8*host[0] || host[2] != 32*host[0] {
		t.Errorf("host KV bytes at 4K, 32K, 128K: %v", host)
	}
}

func TestDeviceBudget(t *testing.T) {
	heap := vk.Heap{Size: 2 << 30, DeviceLocal: true}
	info := vk.DeviceInfo{Heaps: []vk.Heap{heap, {Size: 8 << 30}}}
	if b, from := deviceBudget(info, 0); b != 2<<30-(2<<30)/10 || !strings.Contains(from, "heap size") {
		t.Errorf("no memory budget: %d (%s)", b, from)
	}
	info.MemoryBudget = true
	info.Heaps[0].Budget, info.Heaps[0].Usage = 1<<30, 1<<28
	if b, from := deviceBudget(info, 0); b != 3<<28-(3<<28)/10 || !strings.Contains(from, "budget") {
		t.Errorf("memory budget 1 GiB, 256 MiB used: %d (%s)", b, from)
	}
	if b, from := deviceBudget(info, 12345); b != 12345 || from != "--gpu-mem" {
		t.Errorf("--gpu-mem: %d (%s)", b, from)
	}
}

// TestPlanMatchesLoad checks the planner's counts against what loading
// and a session allocate.
func TestPlanMatchesLoad(t *testing.T) {
	path := filepath.Join(modelsDir(t), "stories260K.gguf")
	m := loadModel(t, path, Options{CtxSize: 512, Offload: OffloadHead, StreamBlock: 256})
	if p := m.Plan(); p.Weights != m.WeightBytes() {
		t.Errorf("planned %d bytes of weights, loaded %d", p.Weights, m.WeightBytes())
	}
	se, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer se.Close()
	mem, p := se.Memory(), m.Plan()
	if mem.DeviceKVBytesPeak != p.DeviceKVBytes() || mem.HostKVBytes != p.HostKV || mem.StreamedSlots != p.Slots {
		t.Errorf("memory %+v, plan %+v", mem, p)
	}
	pp, err := PlanModel(path, Options{CtxSize: 512, Offload: OffloadHead, StreamBlock: 256})
	if err != nil {
		t.Fatal(err)
	}
	if pp.DeviceBytes() != p.DeviceBytes() || pp.HostKV != p.HostKV {
		t.Errorf("PlanModel %+v differs from the loaded model's plan %+v", pp, p)
	}
}

// TestPlanAutoChunk checks --chunk auto: the default chunk when the KV
// cache is resident or the rates are unknown; over streamed KV the
// largest chunk the budget holds, in whole attention blocks, up to
// autoChunkCap or the compute-bound chunk FLOPS·elem / (2·group·copy
// rate) rounded up to a block if that is larger; never more than the
// context.
func TestPlanAutoChunk(t *testing.T) {
	const ctx = 1 << 20
	in := planTestInput(ctx, OffloadAuto, 64<<30)
	in.chunk = 0
	in.ctx = 8192
	p, err := makePlan(in)
	if err != nil || !p.ChunkAuto || p.Chunk != 512 || p.Streamed != 0 {
		t.Fatalf("resident: chunk %d (auto %v, %d streamed), %v", p.Chunk, p.ChunkAuto, p.Streamed, err)
	}

	in.ctx, in.mode = ctx, OffloadHead
	if p, err = makePlan(in); err != nil || p.Chunk != 512 || !strings.Contains(p.ChunkWhy, "not measured") {
		t.Fatalf("no rates: chunk %d (%s), %v", p.Chunk, p.ChunkWhy, err)
	}

	// 100 TFLOPS against 25 GB/s, group 4, f16: 100e12·2/(2·4·25e9) = 1000
	// tokens, below the cap; the budget holds more than the cap.
	in.rates = Rates{CopyBps: 25e9, FLOPS: 100e12}
	if p, err = makePlan(in); err != nil || p.Chunk != autoChunkCap || !strings.Contains(p.ChunkWhy, "compute-bound from 1001 tokens") {
		t.Fatalf("rates: chunk %d (%s), %v", p.Chunk, p.ChunkWhy, err)
	}
	if !strings.Contains(p.String(), fmt.Sprintf("chunk %d (auto)", autoChunkCap)) {
		t.Errorf("the plan does not say why: %s", p)
	}
	// A slower link needs a larger chunk.
	in.rates.CopyBps = 1e9
	if p, err = makePlan(in); err != nil || p.Chunk != 98*256 { // 25001 rounded up to a block
		t.Fatalf("slow link: chunk %d (%s), %v", p.Chunk, p.ChunkWhy, err)
	}

	// A budget that holds only a smaller chunk's activations caps it.
	stream := streamingBytes(in.streamBlock, uint64(4*in.c.HeadDim))
	in.budget = in.weights + stream + activationSizes(in.c, 3000, ctx).device()
	if p, err = makePlan(in); err != nil || p.Chunk != 3000 || !strings.Contains(p.ChunkWhy, "keeps it below") || !strings.Contains(p.ChunkWhy, "fit after weights and streaming buffers is 3000") {
		t.Fatalf("tight budget: chunk %d (%s), %v", p.Chunk, p.ChunkWhy, err)
	}
	// The fast link again: the budget, not the compute-bound size, sets
	// the chunk.
	in.rates.CopyBps = 25e9
	if p, err = makePlan(in); err != nil || p.Chunk != 3000 || strings.Contains(p.ChunkWhy, "keeps it below") {
		t.Fatalf("tight budget, fast link: chunk %d (%s), %v", p.Chunk, p.ChunkWhy, err)
	}
	if p.DeviceBytes() > in.budget {
		t.Errorf("plan places %d bytes in a budget of %d", p.DeviceBytes(), in.budget)
	}

	// Never more than the context.
	in.budget, in.ctx = 64<<30, 2048
	if p, err = makePlan(in); err != nil || p.Chunk != 2048 {
		t.Fatalf("short context: chunk %d (%s), %v", p.Chunk, p.ChunkWhy, err)
	}
}

// TestPlanDecodeAttn checks where decode attends the streamed heads: the
// device when nothing streams or gpu is asked for, the CPU when asked
// for, and under auto the placement that reads the streamed KV faster by
// the rates (copy then attend on one queue, the slower of the two with a
// transfer queue, against the CPU's rate), the device when the rates are
// unknown.
func TestPlanDecodeAttn(t *testing.T) {
	streamed, resident := Plan{Streamed: 3}, Plan{Resident: 16}
	r := Rates{CopyBps: 10e9, DeviceAttnBps: 10e9, CPUAttnBps: 6e9}
	for _, tc := range []struct {
		mode     string
		p        Plan
		r        Rates
		transfer bool
		want     string
		why      string
	}{
		{DecodeAttnCPU, resident, r, false, DecodeAttnGPU, "nothing is streamed"},
		{DecodeAttnAuto, resident, r, false, DecodeAttnGPU, "nothing is streamed"},
		{DecodeAttnGPU, streamed, r, false, DecodeAttnGPU, "--decode-attn gpu"},
		{DecodeAttnCPU, streamed, r, false, DecodeAttnCPU, "--decode-attn cpu"},
		{DecodeAttnAuto, streamed, Rates{}, false, DecodeAttnGPU, "not measured"},
		// One queue: 10 and 10 GB/s in turn make 5 GB/s, below the CPU's 6.
		{DecodeAttnAuto, streamed, r, false, DecodeAttnCPU, "5.00 GB/s"},
		// A transfer queue overlaps them: 10 GB/s.
		{DecodeAttnAuto, streamed, r, true, DecodeAttnGPU, "10.00 GB/s"},
	} {
		got, why := decodeAttnChoice(tc.mode, tc.p, tc.r, tc.transfer)
		if got != tc.want || !strings.Contains(why, tc.why) {
			t.Errorf("%s with %d streamed, rates %+v, transfer queue %v: %s (%s), want %s (%q)",
				tc.mode, tc.p.Streamed, tc.r, tc.transfer, got, why, tc.want, tc.why)
		}
	}
	if _, err := newPlan(nil, Config{}, part{}, Options{DecodeAttn: "tpu"}, kvTypes{}, vk.DeviceInfo{}, 0, nil); err == nil || !strings.Contains(err.Error(), "tpu") {
		t.Errorf("an unknown placement: %v", err)
	}
}
