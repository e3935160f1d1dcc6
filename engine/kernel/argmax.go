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
// they must not run concurrently. RecordRows searches several rows at once
// (the logits of a batched step's sequences), each as Record would.
type Argmax struct {
	d       *vk.Device
	first   *vk.Kernel
	final   *vk.Kernel
	maxN    int
	maxRows int
	scratch *vk.Buffer
}

// NewArgmax prepares argmax over up to maxN values in each of up to
// maxRows rows, allocating its scratch buffer (8 bytes per 2048 values of
// a row, per row) in device memory.
func NewArgmax(d *vk.Device, maxN, maxRows int) (*Argmax, error) {
	if maxN <= 0 || maxN > math.MaxInt32 || maxRows <= 0 || maxRows > math.MaxInt32/maxN {
		return nil, fmt.Errorf("argmax: %d rows of %d values out of range", maxRows, maxN)
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
	scratch, err := d.Alloc(vk.DeviceLocal, 8*uint64(groups(maxN, skArgmaxPer))*uint64(maxRows), "argmax partials")
	if err != nil {
		return nil, fmt.Errorf("argmax: %w", err)
	}
	return &Argmax{d: d, first: first, final: final, maxN: maxN, maxRows: maxRows, scratch: scratch}, nil
}

// Record records the search over the first n values of x (f32), writing
// the index as a uint32 to the first 4 bytes of out. It puts a barrier
// between its two passes; like every kernel here, ordering against what
// comes before and after is the caller's.
func (a *Argmax) Record(c *vk.Commands, x, out vk.Range, n int) error {
	return a.RecordRows(c, x, out, n, 1)
}

// RecordRows records the search of each of rows rows of n values, back to
// back in x, writing row r's index as the r-th uint32 of out.
func (a *Argmax) RecordRows(c *vk.Commands, x, out vk.Range, n, rows int) error {
	if n <= 0 || n > a.maxN {
		return fmt.Errorf("argmax: %d values: this Argmax was made for 1 to %d", n, a.maxN)
	}
	if rows <= 0 || rows > a.maxRows {
		return fmt.Errorf("argmax: %d rows: this Argmax was made for 1 to %d", rows, a.maxRows)
	}
	info := a.d.Info()
	parts := int(groups(n, skArgmaxPer))
	grid, err := skGrid(info, "argmax", parts, rows)
	if err != nil {
		return err
	}
	xb, err := skBind(info, "argmax", "input", x, 4*uint64(n)*uint64(rows))
	if err != nil {
		return err
	}
	ob, err := skBind(info, "argmax", "output", out, 4*uint64(rows))
	if err != nil {
		return err
	}
	pb := a.scratch.Range(0, 8*uint64(parts)*uint64(rows))
	c.Dispatch(a.first, grid, push(uint32(n), uint32(skArgmaxPer)), xb, pb)
	c.Barrier()
	c.Dispatch(a.final, [3]uint32{1, uint32(rows), 1}, push(uint32(parts)), pb, ob)
	return nil
}

// Free releases the scratch buffer. The Argmax must not be used after.
func (a *Argmax) Free() {
	if a.scratch != nil {
		a.scratch.Free()
		a.scratch = nil
	}
}
