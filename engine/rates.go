package engine

import (
	"encoding/binary"
	"fmt"
	"time"

	"headinfer/engine/gguf"
	"headinfer/engine/kernel"
	"headinfer/engine/offload"
	"headinfer/vk"
)

// Rates are a device's measured speeds that the planner sizes the prefill
// chunk with (zero when not measured).
type Rates struct {
	CopyBps float64 `json:"copy_bytes_per_s"` // host → device copies from the host KV store's kind of memory
	FLOPS   float64 `json:"flops"`            // f16 matrix products, the stand-in for attention's arithmetic
	// KV bytes per second that one decode token's attention reads, on
	// the device (from device memory) and on the CPU (from host memory,
	// offload.MeasureCPUAttention), for the model's geometry.
	DeviceAttnBps float64 `json:"device_attn_bytes_per_s"`
	CPUAttnBps    float64 `json:"cpu_attn_bytes_per_s"`
}

// rateCopyBytes is the size of the copy that measures the link: large
// enough that the submission's fixed cost is small against it.
const rateCopyBytes = 64 << 20

// measureRates times a host → device copy of rateCopyBytes (best of
// three runs), an f16 product of 1024 × 1024 weights with 128 tokens
// (large enough to run at the device's speed, small enough to take
// milliseconds), and one decode token's attention of a model of geometry
// c with KV of type kv on the device and on the CPU.
func measureRates(d *vk.Device, cfg Config, kv gguf.Type) (Rates, error) {
	const dim = 1024
	src, err := d.Alloc(vk.Upload, rateCopyBytes, "rate probe (host)")
	if err != nil {
		return Rates{}, err
	}
	defer src.Free()
	dst, err := d.Alloc(vk.DeviceLocal, rateCopyBytes, "rate probe (device)")
	if err != nil {
		return Rates{}, err
	}
	defer dst.Free()
	c, err := d.NewCommands()
	if err != nil {
		return Rates{}, err
	}
	defer c.Free()
	c.Copy(dst.All(), src.All())
	if err := c.End(); err != nil {
		return Rates{}, err
	}
	best := time.Duration(0)
	for range 3 {
		t0 := time.Now()
		if err := d.Run(c); err != nil {
			return Rates{}, err
		}
		if t := time.Since(t0); best == 0 || t < best {
			best = t
		}
	}
	r := Rates{CopyBps: rateCopyBytes / best.Seconds()}
	const tokens = 128
	mm, err := kernel.BenchMatMul(d, gguf.F16, dim, dim, tokens, 3)
	if err != nil {
		return Rates{}, fmt.Errorf("measuring the device's arithmetic rate: %w", err)
	}
	r.FLOPS = 2 * float64(dim) * float64(dim) * tokens / (mm.BestNS * 1e-9)
	heads, rows := rateAttnShape(cfg, kv)
	if r.DeviceAttnBps, err = measureDeviceAttention(d, cfg, kv, heads, rows); err != nil {
		return Rates{}, fmt.Errorf("measuring the device's decode attention: %w", err)
	}
	cr, err := offload.MeasureCPUAttention(kv, cfg.HeadDim, cfg.Group(), heads, rows, rateCPUTime)
	if err != nil {
		return Rates{}, fmt.Errorf("measuring CPU decode attention: %w", err)
	}
	r.CPUAttnBps = cr.KVBytesPerSec
	return r, nil
}

// rateAttnBytes is the K and V one attention measurement reads: beyond
// the caches of most CPUs, so that both rates are memory rates, and small
// enough to take milliseconds. rateCPUTime is how long the CPU repeats it.
const (
	rateAttnBytes = 64 << 20
	rateCPUTime   = 50 * time.Millisecond
)

// rateAttnShape is the KV heads (at most 8, as a Llama-3 layer has) and
// positions per head of the attention measurements: rateAttnBytes of K
// and V in all.
func rateAttnShape(c Config, kv gguf.Type) (heads, rows int) {
	heads = min(c.KVHeads, 8)
	rowBytes := 2 * kv.RowBytes(c.HeadDim) // K and V
	return heads, max(offload.AttnBlock, rateAttnBytes/(heads*rowBytes))
}

// measureDeviceAttention times one decode token's attention on d (the
// partials over blocks of offload.AttnBlock positions and their merge, as
// a step records them) over heads KV heads of rows positions in device
// memory, best of three runs, and returns the KV bytes read per second.
func measureDeviceAttention(d *vk.Device, c Config, kv gguf.Type, heads, rows int) (float64, error) {
	a, err := kernel.NewAttention(d, kv, c.HeadDim, c.Group())
	if err != nil {
		return 0, err
	}
	group := c.Group()
	kvBytes := uint64(heads) * uint64(rows) * uint64(kv.RowBytes(c.HeadDim))
	if kvBytes > d.Info().MaxStorageBufferRange {
		rows = int(d.Info().MaxStorageBufferRange / uint64(heads*kv.RowBytes(c.HeadDim)))
		kvBytes = uint64(heads) * uint64(rows) * uint64(kv.RowBytes(c.HeadDim))
	}
	nb := kernel.Blocks(rows, offload.AttnBlock)
	var bufs []*vk.Buffer
	defer func() {
		for _, b := range bufs {
			b.Free()
		}
	}()
	alloc := func(kind vk.MemoryKind, size uint64, label string) *vk.Buffer {
		if err != nil {
			return nil
		}
		var b *vk.Buffer
		if b, err = d.Alloc(kind, size, label); err == nil {
			bufs = append(bufs, b)
		}
		return b
	}
	k := alloc(vk.DeviceLocal, kvBytes, "rate probe K")
	v := alloc(vk.DeviceLocal, kvBytes, "rate probe V")
	q := alloc(vk.DeviceLocal, uint64(4*heads*group*c.HeadDim), "rate probe Q")
	pos := alloc(vk.Upload, 4, "rate probe position")
	parts := alloc(vk.DeviceLocal, uint64(kernel.PartsBytes(1, heads*group, c.HeadDim, nb)), "rate probe partials")
	acc := alloc(vk.DeviceLocal, uint64(kernel.PartsBytes(1, heads*group, c.HeadDim, 1)), "rate probe accumulator")
	out := alloc(vk.DeviceLocal, uint64(4*heads*group*c.HeadDim), "rate probe output")
	if err != nil {
		return 0, err
	}
	binary.LittleEndian.PutUint32(pos.Bytes(), uint32(rows-1))
	// Zero KV and queries: the work does not depend on the values.
	zero, err := d.NewCommands()
	if err != nil {
		return 0, err
	}
	defer zero.Free()
	for _, b := range []*vk.Buffer{k, v, q} {
		zero.Fill(b.All(), 0)
	}
	if err := zero.End(); err != nil {
		return 0, err
	}
	if err := d.Run(zero); err != nil {
		return 0, err
	}
	cmd, err := d.NewCommands()
	if err != nil {
		return 0, err
	}
	defer cmd.Free()
	err = a.RecordPartial(cmd, q.All(), k.All(), v.All(), pos.All(), parts.All(), kernel.AttnParams{
		NTokens: 1, QHeads: heads * group, KVRows: rows, Block: offload.AttnBlock,
		SlotStride: rows * c.HeadDim, KVHeads: heads, Scale: 1,
	})
	if err != nil {
		return 0, err
	}
	cmd.Barrier()
	err = a.RecordMerge(cmd, parts.All(), acc.All(), out.All(), kernel.MergeParams{
		NTokens: 1, Heads: heads * group, NParts: nb, Init: true, Finalize: true, OutHeads: heads * group,
	})
	if err != nil {
		return 0, err
	}
	if err := cmd.End(); err != nil {
		return 0, err
	}
	best := time.Duration(0)
	for range 3 {
		t0 := time.Now()
		if err := d.Run(cmd); err != nil {
			return 0, err
		}
		if t := time.Since(t0); best == 0 || t < best {
			best = t
		}
	}
	return float64(2*kvBytes) / best.Seconds(), nil
}

// computeBoundChunk is the smallest prefill chunk whose attention over a
// streamed KV head does at least as much arithmetic per byte copied as the
// device's FLOPS / copy rate: per streamed position a chunk of c queries
// does 4·c·group·headDim FLOPs against 2·headDim·elem bytes of K and V,
// so c ≥ FLOPS·elem / (2·group·CopyBps) (HeadInfer's roofline, in
// shared/research/headinfer.md). 0 when the rates are unknown.
func computeBoundChunk(r Rates, group int, elem float64) int {
	if r.CopyBps <= 0 || r.FLOPS <= 0 {
		return 0
	}
	return int(r.FLOPS*elem/(2*float64(group)*r.CopyBps)) + 1
}
