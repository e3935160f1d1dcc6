package vk

/*
#include "vkc.h"
*/
import "C"

// Timing is one timestamp of a completed submission.
type Timing struct {
	Label string
	NS    float64 // since the first timestamp of the commands
}

// timestampsPerPool is the size of each query pool; a Commands adds pools
// as it records more timestamps.
const timestampsPerPool = 64

// timestamps are the query pools and labels of one Commands.
type timestamps struct {
	pools  []C.VkQueryPool
	labels []string
	ran    bool // submitted since the last reset, so results will exist
}

func (t *timestamps) reset() {
	t.labels = t.labels[:0]
	t.ran = false
}

func (t *timestamps) free(d *Device) {
	for _, p := range t.pools {
		C.hi_qpool_destroy(d.dev, p)
	}
	t.pools = nil
}

// Timestamp records the time at which all earlier commands have completed.
// It does nothing when the queue cannot write timestamps (or, for a
// transfer-only queue, when the device cannot reset queries from the
// host). When replays overlap, Timings reports one of them.
func (c *Commands) Timestamp(label string) {
	if !c.recording("Timestamp") || c.q.tsBits == 0 || (c.q.transferOnly && c.d.phys.raw.host_query_reset == 0) {
		return
	}
	t := &c.ts
	i := len(t.labels)
	if i/timestampsPerPool == len(t.pools) {
		var p C.VkQueryPool
		if err := result(C.hi_qpool_create(c.d.dev, timestampsPerPool, &p), "vkCreateQueryPool"); err != nil {
			c.err = err
			return
		}
		t.pools = append(t.pools, p)
	}
	C.hi_timestamp(c.d.dev, c.c, t.pools[i/timestampsPerPool], C.uint32_t(i%timestampsPerPool))
	t.labels = append(t.labels, label)
}

// Timings waits for the latest submission and returns its timestamps in
// recording order; nil when none were recorded or the commands never ran.
func (c *Commands) Timings() []Timing {
	t := &c.ts
	if c.freed || !t.ran || len(t.labels) == 0 || c.wait() != nil {
		return nil
	}
	raw := make([]C.uint64_t, len(t.labels))
	for p := 0; p*timestampsPerPool < len(raw); p++ {
		n := min(timestampsPerPool, len(raw)-p*timestampsPerPool)
		if C.hi_qpool_results(c.d.dev, t.pools[p], C.uint32_t(n), &raw[p*timestampsPerPool]) != C.VK_SUCCESS {
			return nil
		}
	}
	mask := ^uint64(0)
	if b := c.q.tsBits; b < 64 {
		mask = 1<<b - 1
	}
	period := float64(c.d.phys.raw.timestamp_period)
	out := make([]Timing, len(raw))
	t0 := uint64(raw[0]) & mask
	for i, v := range raw {
		// Masked subtraction survives a counter wrap between stamps.
		out[i] = Timing{Label: t.labels[i], NS: float64((uint64(v)-t0)&mask) * period}
	}
	return out
}

// hostReset resets the query pools of transfer-only commands before a
// submission, since such queues cannot reset queries themselves. The
// previous submission must be complete.
func (c *Commands) hostReset() error {
	if !c.q.transferOnly || len(c.ts.labels) == 0 {
		return nil
	}
	if err := c.wait(); err != nil {
		return err
	}
	for p, pool := range c.ts.pools {
		n := min(timestampsPerPool, len(c.ts.labels)-p*timestampsPerPool)
		if n <= 0 {
			break
		}
		C.hi_qpool_host_reset(c.d.dev, pool, C.uint32_t(n))
	}
	return nil
}
