package kernel

import (
	"fmt"
	"slices"
	"time"

	"headinfer/engine/gguf"
	"headinfer/vk"
)

// BenchResult is the device time of one kernel operation, measured with
// timestamps around each of several back-to-back runs.
type BenchResult struct {
	Op     string  // what ran, e.g. "matvec Q8_0 4096x4096"
	Iters  int     // timed runs
	NS     float64 // median device time of one run, nanoseconds
	BestNS float64 // fastest run, nanoseconds
	Bytes  uint64  // bytes one run moves, as counted for GBps
	// GBps is Bytes / BestNS: the best run estimates what the kernel can
	// do, where the median also measures whatever else shares the device
	// (on a CPU device, every other process).
	GBps float64
	// Reads is how many times one run reads the weights, for the batched
	// matrix × vectors product (BenchMatVecBatch: once per workgroup's
	// batch of vectors); 0 elsewhere.
	Reads int
}

// String formats the result as one line of a table.
func (r BenchResult) String() string {
	return fmt.Sprintf("%-28s median %9.1f µs  best %9.1f µs  %7.2f GB/s", r.Op, r.NS/1e3, r.BestNS/1e3, r.GBps)
}

func benchResult(op string, iters int, t benchTimes, bytes uint64) BenchResult {
	return BenchResult{Op: op, Iters: iters, NS: t.median, BestNS: t.best, Bytes: bytes, GBps: float64(bytes) / t.best}
}

// benchTimes summarises the per-run device times of a benchmark.
type benchTimes struct{ median, best float64 }

// BenchMatVec times y = W x for a rows × cols matrix of type t: iters runs
// recorded in one command buffer, which is submitted twice so that only
// warm runs are timed. Bytes counts the weights only, the traffic that
// bounds a decode step; x and y are small and stay in cache.
func BenchMatVec(d *vk.Device, t gguf.Type, rows, cols, iters int) (BenchResult, error) {
	return benchMatVec(d, t, rows, cols, iters, mvBench{})
}

// MatVecMaxBatch is the most vectors that BenchMatVecBatch takes, and
// that one workgroup of MatVec.RecordBatch applies each weight it loads
// to on a GPU: a decode step of up to this many sequences reads the
// weights once there. (CPU devices take 4 vectors of quantized types per
// workgroup, 8 of the others; more read the weights once per group.)
const MatVecMaxBatch = mvGPUBatch

// BenchMatVecBatch times MatVec.RecordBatch, Y = W X for n vectors, as a
// batched decode step of n sequences runs each projection. Bytes counts
// the weights once, so GBps stays the weights' rate whatever n: a kernel
// bound by reading the weights takes about as long for n = 8 as for 1.
// Reads tells how often the kernel reads them (more than once where n
// exceeds the vectors of one workgroup on this device).
func BenchMatVecBatch(d *vk.Device, t gguf.Type, rows, cols, n, iters int) (BenchResult, error) {
	if n <= 0 || n > MatVecMaxBatch {
		return BenchResult{}, fmt.Errorf("batched matvec benchmark: %d vectors: want 1 to %d", n, MatVecMaxBatch)
	}
	return benchMatVec(d, t, rows, cols, iters, mvBench{n: n})
}

// BenchMatVecGeometry is BenchMatVec with wg threads and rowsPer rows per
// workgroup instead of the device's defaults, reading the GGUF layout as
// GPUs do: what `bench kernels --geometry` compares to choose them. whole
// reads quantized rows in the shader's whole units instead of the fine
// ones GPUs take (FINE in matvec.glsl), to compare the two. n > 0 times
// the batched product of n vectors (as BenchMatVecBatch) in that shape,
// with a GPU's vectors per workgroup: the rows of a workgroup share each
// vector's x, which a batch loads once per vector.
func BenchMatVecGeometry(d *vk.Device, t gguf.Type, rows, cols, n, iters, wg, rowsPer int, whole bool) (BenchResult, error) {
	info := d.Info()
	if wg <= 0 || rowsPer <= 0 || wg > int(info.MaxWorkgroupInvocations) || wg%int(max(info.SubgroupSize, 1)) != 0 || rowsPer > 64 {
		return BenchResult{}, fmt.Errorf("geometry %dx%d: threads must be a multiple of the subgroup size %d up to %d, rows 1 to 64",
			wg, rowsPer, info.SubgroupSize, info.MaxWorkgroupInvocations)
	}
	if n < 0 || n > MatVecMaxBatch {
		return BenchResult{}, fmt.Errorf("matvec benchmark in shape %dx%d: %d vectors: want 0 (one, unbatched) to %d", wg, rowsPer, n, MatVecMaxBatch)
	}
	return benchMatVec(d, t, rows, cols, iters, mvBench{n: n, wg: wg, rows: rowsPer, whole: whole})
}

// mvBench is what a matrix × vector benchmark varies.
type mvBench struct {
	n        int  // vectors through RecordBatch; 0: one through Record
	wg, rows int  // threads and rows per workgroup; 0: the device's defaults
	whole    bool // with wg: whole units rather than fine ones
}

func benchMatVec(d *vk.Device, t gguf.Type, rows, cols, iters int, o mvBench) (BenchResult, error) {
	n := max(o.n, 1)
	if err := benchShape(t, rows, cols, n); err != nil {
		return BenchResult{}, err
	}
	k, err := NewMatVec(d, t)
	if err != nil {
		return BenchResult{}, err
	}
	op := fmt.Sprintf("matvec %v %dx%d", t, rows, cols)
	if o.wg > 0 {
		k.runAsGPU(o.wg, o.rows, mvGPUBatch, o.whole)
		op += fmt.Sprintf(" %dx%d", o.wg, o.rows)
		if o.whole && t.BlockSize() > 1 {
			op += " whole"
		}
	}
	if o.n > 0 {
		op += fmt.Sprintf(" n=%d", o.n)
	}
	// Bytes counts the GGUF size; the layout the kernel reads (packed on
	// CPU devices) is as large for whole groups of rows and steps.
	wbytes := uint64(rows) * uint64(t.RowBytes(cols))
	lbytes := k.WeightBytes(rows, cols)
	bufs, err := benchAlloc(d, lbytes, 4*uint64(cols)*uint64(n), 4*uint64(rows)*uint64(n))
	if err != nil {
		return BenchResult{}, err
	}
	defer benchFree(bufs)
	w, x, y := bufs[0].Range(0, lbytes), bufs[1].All(), bufs[2].All()
	tm, err := benchTime(d, iters, func(c *vk.Commands) error {
		// Values that decode to ordinary numbers in every type, so that
		// no NaN or denormal slows a CPU device down.
		c.Fill(bufs[0].All(), benchPattern(t))
		c.Fill(x, 0x3f800000) // 1.0
		return nil
	}, func(c *vk.Commands) error {
		if o.n == 0 {
			return k.Record(c, w, rows, cols, x, y, false)
		}
		return k.RecordBatch(c, w, rows, cols, n, x, y, false)
	})
	if err != nil {
		return BenchResult{}, fmt.Errorf("%s: %w", op, err)
	}
	r := benchResult(op, iters, tm, wbytes)
	if o.n > 0 {
		r.Reads = (n + k.batch - 1) / k.batch
	}
	return r, nil
}

// BenchMatMul times Y = X Wᵀ for a rows × cols matrix of type t and n
// tokens. Bytes counts the weights; the rate that matters here is
// FLOPS, 2·rows·cols·n / NS.
func BenchMatMul(d *vk.Device, t gguf.Type, rows, cols, n, iters int) (BenchResult, error) {
	return benchMatMul(d, t, rows, cols, n, iters, false)
}

// benchMatMul is BenchMatMul, with tiled forcing the tiled kernel on
// devices that would run the batched matvec.
func benchMatMul(d *vk.Device, t gguf.Type, rows, cols, n, iters int, tiled bool) (BenchResult, error) {
	if err := benchShape(t, rows, cols, n); err != nil {
		return BenchResult{}, err
	}
	k, err := NewMatMul(d, t)
	if err != nil {
		return BenchResult{}, err
	}
	if tiled {
		k.batched = nil
	}
	wbytes, lbytes := uint64(rows)*uint64(t.RowBytes(cols)), uint64(rows)*uint64(t.RowBytes(cols))
	if k.batched != nil {
		lbytes = k.batched.WeightBytes(rows, cols)
	}
	bufs, err := benchAlloc(d, lbytes, 4*uint64(cols)*uint64(n), 4*uint64(rows)*uint64(n))
	if err != nil {
		return BenchResult{}, err
	}
	defer benchFree(bufs)
	w, x, y := bufs[0].Range(0, lbytes), bufs[1].All(), bufs[2].All()
	op := fmt.Sprintf("matmul %v %dx%d n=%d", t, rows, cols, n)
	if k.batched != nil {
		op += " (batched matvec)"
	}
	tm, err := benchTime(d, iters, func(c *vk.Commands) error {
		c.Fill(bufs[0].All(), benchPattern(t))
		c.Fill(x, 0x3f800000)
		return nil
	}, func(c *vk.Commands) error {
		return k.Record(c, w, rows, cols, n, x, y, false)
	})
	if err != nil {
		return BenchResult{}, fmt.Errorf("%s: %w", op, err)
	}
	return benchResult(op, iters, tm, wbytes), nil
}

// BenchCopy times the copy kernel on bytes bytes (rounded down to 16).
// Bytes counts what is read plus what is written, as STREAM's copy does,
// so GBps is comparable with BenchMatVec's weights-read rate.
func BenchCopy(d *vk.Device, bytes, iters int) (BenchResult, error) {
	size := uint64(bytes) &^ 15
	if size == 0 {
		return BenchResult{}, fmt.Errorf("copy benchmark: %d bytes is less than one 16-byte load", bytes)
	}
	k, err := NewCopy(d)
	if err != nil {
		return BenchResult{}, err
	}
	bufs, err := benchAlloc(d, size, size)
	if err != nil {
		return BenchResult{}, err
	}
	defer benchFree(bufs)
	src, dst := bufs[0].All(), bufs[1].All()
	op := fmt.Sprintf("copy %d bytes", size)
	if size%(1<<20) == 0 {
		op = fmt.Sprintf("copy %d MiB", size>>20)
	}
	tm, err := benchTime(d, iters, func(c *vk.Commands) error {
		c.Fill(src, 0x3f800000)
		c.Fill(dst, 0)
		return nil
	}, func(c *vk.Commands) error {
		return k.Record(c, dst, src)
	})
	if err != nil {
		return BenchResult{}, fmt.Errorf("%s: %w", op, err)
	}
	return benchResult(op, iters, tm, 2*size), nil
}

// DispatchCost is the fixed cost of launching work on a device.
type DispatchCost struct {
	Dispatches    int     // tiny dispatches recorded in one command buffer
	PerDispatchUS float64 // device time per dispatch (with a barrier after each), µs
	Submits       int     // submit-and-wait round trips timed
	PerSubmitUS   float64 // host time per submit-and-wait of one tiny dispatch, µs
}

// BenchDispatch measures the fixed costs that bound a decode step made of
// many small kernels: the device time of a dispatch that does almost no
// work, and the host time of a submit followed by a wait.
func BenchDispatch(d *vk.Device, dispatches, submits int) (DispatchCost, error) {
	if dispatches <= 0 || submits <= 0 {
		return DispatchCost{}, fmt.Errorf("dispatch benchmark: counts must be positive, got %d and %d", dispatches, submits)
	}
	k, err := NewCopy(d)
	if err != nil {
		return DispatchCost{}, err
	}
	bufs, err := benchAlloc(d, 16, 16)
	if err != nil {
		return DispatchCost{}, err
	}
	defer benchFree(bufs)
	src, dst := bufs[0].All(), bufs[1].All()

	c, err := d.NewCommands()
	if err != nil {
		return DispatchCost{}, err
	}
	defer c.Free()
	c.Timestamp("start")
	for range dispatches {
		if err := k.Record(c, dst, src); err != nil {
			return DispatchCost{}, err
		}
		c.Barrier()
	}
	c.Timestamp("end")
	if err := c.End(); err != nil {
		return DispatchCost{}, err
	}
	var span float64
	for range 2 { // the first run warms caches and lazily created state
		if err := d.Run(c); err != nil {
			return DispatchCost{}, err
		}
		span, err = benchSpan(c.Timings(), "start", "end")
		if err != nil {
			return DispatchCost{}, err
		}
	}

	one, err := d.NewCommands()
	if err != nil {
		return DispatchCost{}, err
	}
	defer one.Free()
	if err := k.Record(one, dst, src); err != nil {
		return DispatchCost{}, err
	}
	if err := one.End(); err != nil {
		return DispatchCost{}, err
	}
	if err := d.Run(one); err != nil {
		return DispatchCost{}, err
	}
	start := time.Now()
	for range submits {
		if err := d.Run(one); err != nil {
			return DispatchCost{}, err
		}
	}
	host := time.Since(start)
	return DispatchCost{
		Dispatches:    dispatches,
		PerDispatchUS: span / float64(dispatches) / 1e3,
		Submits:       submits,
		PerSubmitUS:   float64(host.Microseconds()) / float64(submits),
	}, nil
}

// benchTime runs setup once, then the op iters times in one command buffer
// with a timestamp between runs and a barrier after each (as dependent
// kernels in a forward pass have), twice; it returns the median run of the
// second submission.
func benchTime(d *vk.Device, iters int, setup, op func(c *vk.Commands) error) (benchTimes, error) {
	if iters <= 0 {
		return benchTimes{}, fmt.Errorf("iteration count must be positive, got %d", iters)
	}
	c, err := d.NewCommands()
	if err != nil {
		return benchTimes{}, err
	}
	defer c.Free()
	if err := setup(c); err != nil {
		return benchTimes{}, err
	}
	c.Barrier()
	if err := c.End(); err != nil {
		return benchTimes{}, err
	}
	if err := d.Run(c); err != nil {
		return benchTimes{}, err
	}
	if err := c.Reset(); err != nil {
		return benchTimes{}, err
	}
	labels := make([]string, iters+1)
	for i := range labels {
		labels[i] = fmt.Sprint(i)
	}
	c.Timestamp(labels[0])
	for i := range iters {
		if err := op(c); err != nil {
			return benchTimes{}, err
		}
		c.Barrier()
		c.Timestamp(labels[i+1])
	}
	if err := c.End(); err != nil {
		return benchTimes{}, err
	}
	var runs []float64
	for range 2 {
		if err := d.Run(c); err != nil {
			return benchTimes{}, err
		}
		ts := c.Timings()
		if len(ts) != iters+1 {
			return benchTimes{}, fmt.Errorf("device gave %d timestamps, want %d (no timestamp support?)", len(ts), iters+1)
		}
		runs = runs[:0]
		for i := 1; i < len(ts); i++ {
			runs = append(runs, ts[i].NS-ts[i-1].NS)
		}
	}
	slices.Sort(runs)
	return benchTimes{median: runs[len(runs)/2], best: runs[0]}, nil
}

// benchSpan returns the time between two labelled timestamps.
func benchSpan(ts []vk.Timing, from, to string) (float64, error) {
	var a, b float64
	var fa, fb bool
	for _, t := range ts {
		switch t.Label {
		case from:
			a, fa = t.NS, true
		case to:
			b, fb = t.NS, true
		}
	}
	if !fa || !fb {
		return 0, fmt.Errorf("timestamps %q and %q missing (device without timestamp support?)", from, to)
	}
	return b - a, nil
}

// benchShape reports shapes the benchmarks cannot run, before anything is
// allocated for them.
func benchShape(t gguf.Type, rows, cols, n int) error {
	if rows <= 0 || cols <= 0 || n <= 0 {
		return fmt.Errorf("benchmark: %d rows, %d columns, %d tokens: every dimension must be positive", rows, cols, n)
	}
	if bs := t.BlockSize(); cols%bs != 0 {
		return fmt.Errorf("benchmark: %d columns is not a multiple of the %v block size %d", cols, t, bs)
	}
	return nil
}

// benchAlloc allocates device buffers of the given sizes, each rounded up
// to 4 bytes so that it can be filled whole.
func benchAlloc(d *vk.Device, sizes ...uint64) ([]*vk.Buffer, error) {
	var bufs []*vk.Buffer
	for _, s := range sizes {
		b, err := d.Alloc(vk.DeviceLocal, (s+3)&^3, "benchmark")
		if err != nil {
			benchFree(bufs)
			return nil, err
		}
		bufs = append(bufs, b)
	}
	return bufs, nil
}

func benchFree(bufs []*vk.Buffer) {
	for _, b := range bufs {
		b.Free()
	}
}

// benchPattern is a 32-bit fill value whose bytes decode to moderate finite
// numbers in type t wherever a block's scale happens to land.
func benchPattern(t gguf.Type) uint32 {
	switch t {
	case gguf.F32:
		return 0x3f800000 // 1.0
	case gguf.F16:
		return 0x3c003c00 // 1.0, 1.0
	case gguf.BF16:
		return 0x3f803f80 // 1.0, 1.0
	}
	return 0x11111111 // Q8_0, Q4_0: scale 0x1111 ≈ 6.6e-4 and small quants
}
