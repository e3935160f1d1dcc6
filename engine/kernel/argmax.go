package kernel

import (
	"fmt"
	"math"

	"headinfer/vk"
)

// skArgmaxPer is how many values one workgroup of the first pass reduces:
// 8 per invocation, so that 128256 logits leave 63 partials.
const skArgmaxPer = 8 * skWG

// Argmax finds the index of the largest of n f32 values on the device, for
// greedy decoding without reading the logits back. Among equal maxima it
// returns the lowest index; NaN counts as smaller than every number, so
// an all-NaN input gives 0. The result is exact and deterministic.
//
// It runs in two passes: workgroups reduce slices of the values to partial
// results in a scratch buffer that the Argmax owns, and one workgroup
// reduces those. Commands recorded from one Argmax share the scratch, so
// they must not run concurrently.
type Argmax struct {
	d       *vk.Device
	first   *vk.Kernel
	final   *vk.Kernel
	maxN    int
	scratch *vk.Buffer
}

// NewArgmax prepares argmax over up to maxN values, allocating its
// scratch buffer (8 bytes per 2048 values) in device memory.
func NewArgmax(d *vk.Device, maxN int) (*Argmax, error) {
	if maxN <= 0 || maxN > math.MaxInt32 {
		return nil, fmt.Errorf("argmax: %d values out of range", maxN)
	}
	if err := skNeed(d, "argmax", true, false); err != nil {
		return nil, err
	}
	first, err := skKernel(d, "argmax", 2, 8)
	if err != nil {
		return nil, err
	}
	final, err := skKernel(d, "argmax_final", 2, 4)
	if err != nil {
		return nil, err
	}
	scratch, err := d.Alloc(vk.DeviceLocal, 8*uint64(groups(maxN, skArgmaxPer)), "argmax partials")
	if err != nil {
		return nil, fmt.Errorf("argmax: %w", err)
	}
	return &Argmax{d: d, first: first, final: final, maxN: maxN, scratch: scratch}, nil
}

// Record records the search over the first n values of x (f32), writing
// the index as a uint32 to the first 4 bytes of out. It puts a barrier
// between its two passes; like every kernel here, ordering against what
// comes before and after is the caller's.
func (a *Argmax) Record(c *vk.Commands, x, out vk.Range, n int) error {
	if n <= 0 || n > a.maxN {
		return fmt.Errorf("argmax: %d values: this Argmax was made for 1 to %d", n, a.maxN)
	}
	info := a.d.Info()
	parts := int(groups(n, skArgmaxPer))
	grid, err := skGrid(info, "argmax", parts, 1)
	if err != nil {
		return err
	}
	xb, err := skBind(info, "argmax", "input", x, 4*uint64(n))
	if err != nil {
		return err
	}
	ob, err := skBind(info, "argmax", "output", out, 4)
	if err != nil {
		return err
	}
	pb := a.scratch.Range(0, 8*uint64(parts))
	c.Dispatch(a.first, grid, push(uint32(n), uint32(skArgmaxPer)), xb, pb)
	c.Barrier()
	c.Dispatch(a.final, [3]uint32{1, 1, 1}, push(uint32(parts)), pb, ob)
	return nil
}

// Free releases the scratch buffer. The Argmax must not be used after.
func (a *Argmax) Free() {
	if a.scratch != nil {
		a.scratch.Free()
		a.scratch = nil
	}
}
