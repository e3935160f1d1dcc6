package engine

import (
	"fmt"
	"time"

	"headinfer/engine/gguf"
	"headinfer/engine/kernel"
	"headinfer/vk"
)

// Rates are a device's measured speeds that the planner sizes the prefill
// chunk with (zero when not measured).
type Rates struct {
	CopyBps float64 `json:"copy_bytes_per_s"` // host → device copies from the host KV store's kind of memory
	FLOPS   float64 `json:"flops"`            // f16 matrix products, the stand-in for attention's arithmetic
}

// rateCopyBytes is the size of the copy that measures the link: large
// enough that the submission's fixed cost is small against it.
const rateCopyBytes = 64 << 20

// measureRates times a host → device copy of rateCopyBytes (best of
// three runs) and an f16 product of 1024 × 1024 weights with 128 tokens
// (large enough to run at the device's speed, small enough to take
// milliseconds).
func measureRates(d *vk.Device) (Rates, error) {
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
	return r, nil
}

// computeBoundChunk is the smallest prefill chunk whose attention over a
// streamed KV head does at least as much arithmetic per byte copied as the
// device's FLOPS / copy rate: per streamed position a chunk of c queries
// does 4·c·group·headDim FLOPs against 2·headDim·elem bytes of K and V,
// so c ≥ FLOPS·elem / (2·group·CopyBps) (HeadInfer's roofline, in
// shared/research/headinfer.md). 0 when the rates are unknown.
func computeBoundChunk(r Rates, group int, elem uint64) int {
	if r.CopyBps <= 0 || r.FLOPS <= 0 {
		return 0
	}
	return int(r.FLOPS*float64(elem)/(2*float64(group)*r.CopyBps)) + 1
}
