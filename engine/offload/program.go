package offload

import (
	"errors"
	"fmt"
	"math"
	"time"

	"headinfer/vk"
)

// Program is one forward step recorded as a sequence of command buffers
// ("segments"), recorded once for every KV length up to the context and
// run many times: Run takes the step's KV length and submits the segments
// that length needs, all in one vkQueueSubmit per queue, and waits once.
//
// Compute segments run on the compute queue in recording order. Streamed
// KV reaches the device in blocks: block j is filled by copies from the
// host store into streaming buffer j mod 2 and consumed by attention j. A
// block is needed only when the step's KV length exceeds its first
// position (Stream's from): Run skips the others, so a step at position
// 1000 of a 1M context copies what position 1000 needs, not the context.
// A block of a sliding-window layer is also skipped once the step's KV
// length has moved past its window (StreamSpan's until).
//
// Pipelined (two queues, as on GPUs with a transfer queue), a block's
// copies are a transfer segment and its attention a segment of its own on
// the compute queue. Run numbers the blocks it submits e = 0, 1, … and two
// timeline semaphores order them:
//
//	transfer e  signals copied   = base + e + 1
//	attention e waits   copied   ≥ base + e + 1, signals attended = base + e + 1
//	transfer e  waits   attended ≥ the value of the last attention that read its buffer
//
// so copy → attention → reuse of a buffer is ordered while the copy of
// block e+1 overlaps the attention of block e. Every segment starts with a
// barrier, which orders it after everything earlier on its queue. All
// transfer segments go to the transfer queue in one vkQueueSubmit and all
// compute segments to the compute queue in another (a transfer may wait
// for an attention submitted after it: timeline semaphores allow it). On a
// device whose transfer queue is its compute queue (lavapipe, forced to
// pipeline) the segments go in one vkQueueSubmit in recording order, in
// which every wait names a value that an earlier batch signals.
//
// Fused (one queue, where splitting buys no overlap), a block is one
// compute segment: its copies between barriers, then its attention. Run
// submits the segments it keeps as one batch. The copies and kernels are
// the same in both forms.
//
// A program that streams nothing may instead hand work to the host in the
// middle of a step (Host, Join: decode attention on the CPU over the host
// KV store). Run then submits the step in rounds, one vkQueueSubmit each:
// round i ends its first batch with a signal of attended = base + i + 1,
// for which the host waits while the device goes on with the round's
// second batch; the host runs task i, then submits round i+1, whose
// segments read what the task wrote. The device never waits for the host
// (no host-signalled semaphore): the host's writes happen before the
// vkQueueSubmit that makes them visible.
type Program struct {
	d         *vk.Device
	timed     bool
	pipelined bool
	segs      []*segment // in recording order
	cur       *segment   // the compute segment open for recording
	blocks    int        // streamed blocks recorded
	lastFrom  int        // the from of the block streamed last
	lastUntil int        // the until of the block streamed last
	seq       int        // the sequence that segments recorded now belong to
	ended     bool
	err       error // End's error, which Run repeats

	tasks    []hostTask // in order (Host)
	open     bool       // the last task still waits for its Join
	joinNext bool       // the next segment starts a round (Join)

	// D2H is the bytes one run moves from device to host, as the
	// recording code declared them (the new rows, whatever the length).
	D2H uint64
}

// segment is one command buffer of a program.
type segment struct {
	c        *vk.Commands
	transfer bool
	block    int    // the block a transfer or block segment fills or attends; −1 otherwise
	from     int    // the segment runs only when its sequence's KV length exceeds from
	until    int    // … and is below until
	seq      int    // the sequence (of a batched step) whose KV length that is
	h2d      uint64 // bytes its copies move from the host
	signal   bool   // a host task waits for this segment: it ends its round's first batch
	join     bool   // the first segment of a round, submitted after a host task
}

// hostTask is a host task and the sequence whose KV length it is given.
type hostTask struct {
	fn  func(length int) error
	seq int
}

// NewProgram starts recording a step, pipelined over two queues or fused
// into compute segments on one. With timed, Run measures how long the
// compute queue waited for copies (timestamps).
func NewProgram(d *vk.Device, timed, pipelined bool) *Program {
	return &Program{d: d, timed: timed, pipelined: pipelined}
}

// Compute returns the compute command buffer to record into now: the open
// one, or a new one when none is open or the open one attends a block
// (a block's segment holds that block's work only, so that Run can skip
// it and, pipelined, so that it can signal that its buffer is free as
// early as possible).
func (p *Program) Compute() (*vk.Commands, error) {
	if p.cur != nil && p.cur.block < 0 {
		return p.cur.c, nil
	}
	s, err := p.newSegment(false, -1, 0, math.MaxInt)
	if err != nil {
		return nil, err
	}
	p.cur = s
	return s.c, nil
}

// Stream records the copies that fill the next streaming block (buffer
// Stream's result mod 2) by calling fill, which records copies only; h2d
// is the bytes those copies move from the host. The block, its copies and
// its attention run only in steps whose KV length exceeds from. It
// returns the block's index in the step.
func (p *Program) Stream(from int, fill func(c *vk.Commands), h2d uint64) (int, error) {
	return p.StreamSpan(from, math.MaxInt, fill, h2d)
}

// StreamSpan is Stream for a block that runs only in steps whose KV length
// lies in (from, until): a block of a sliding-window layer, which steps
// far enough past it no longer see.
func (p *Program) StreamSpan(from, until int, fill func(c *vk.Commands), h2d uint64) (int, error) {
	if from < 0 || until <= from+1 {
		return 0, fmt.Errorf("offload: streamed block for KV lengths (%d, %d)", from, until)
	}
	if len(p.tasks) > 0 {
		return 0, errors.New("offload: a program with host tasks streams no blocks")
	}
	j := p.blocks
	s, err := p.newSegment(p.pipelined, j, from, until)
	if err != nil {
		return 0, err
	}
	if !p.pipelined {
		p.cur = s
		if p.timed {
			s.c.Timestamp("copy")
		}
	}
	fill(s.c)
	if !p.pipelined && p.timed {
		s.c.Timestamp("copied")
	}
	s.h2d = h2d
	p.blocks++
	p.lastFrom, p.lastUntil = from, until
	return j, nil
}

// Attend returns the command buffer of block j's attention, which runs
// once the block's copies are done: pipelined, a new segment; fused, the
// block's segment after a barrier. j must be the block streamed last.
func (p *Program) Attend(j int) (*vk.Commands, error) {
	if j < 0 || j >= p.blocks {
		return nil, fmt.Errorf("offload: attention of block %d, %d streamed", j, p.blocks)
	}
	if j != p.blocks-1 {
		return nil, fmt.Errorf("offload: attention of block %d after block %d was streamed", j, p.blocks-1)
	}
	if !p.pipelined {
		if p.cur == nil || p.cur.block != j {
			return nil, fmt.Errorf("offload: attention of block %d outside its segment", j)
		}
		p.cur.c.Barrier() // the copies are done
		return p.cur.c, nil
	}
	s, err := p.newSegment(false, j, p.lastFrom, p.lastUntil)
	if err != nil {
		return nil, err
	}
	p.cur = s
	return s.c, nil
}

func (p *Program) newSegment(transfer bool, block, from, until int) (*segment, error) {
	if p.ended {
		return nil, errors.New("offload: recording into an ended program")
	}
	var c *vk.Commands
	var err error
	if transfer {
		c, err = p.d.NewTransferCommands()
	} else {
		c, err = p.d.NewCommands()
	}
	if err != nil {
		return nil, err
	}
	if p.timed {
		c.Timestamp("begin")
	}
	if len(p.segs) > 0 {
		// Orders this segment after everything earlier on its queue,
		// including earlier command buffers and submissions.
		c.Barrier()
	}
	s := &segment{c: c, transfer: transfer, block: block, from: from, until: until, seq: p.seq, join: p.joinNext}
	p.joinNext = false
	p.segs = append(p.segs, s)
	return s, nil
}

// Host ends the compute segment open now and records a host task: in a
// run, once the device has done everything recorded so far, fn runs on
// the host with the KV length of the step (of the sequence that Sequence
// named last, in a batched step), while the device goes on with what
// is recorded between Host and Join. Everything recorded after Join runs
// after fn has returned and sees what it wrote to mapped memory. Host and
// Join alternate; a program with host tasks streams no blocks.
func (p *Program) Host(fn func(length int) error) error {
	switch {
	case p.ended:
		return errors.New("offload: recording into an ended program")
	case p.open:
		return errors.New("offload: a host task before the previous one's Join")
	case p.blocks > 0:
		return errors.New("offload: a host task in a program that streams blocks")
	case p.cur == nil || p.cur.block >= 0 || p.joinNext:
		return errors.New("offload: a host task with no compute recorded before it")
	}
	p.cur.signal = true
	p.cur = nil
	p.tasks = append(p.tasks, hostTask{fn: fn, seq: p.seq})
	p.open = true
	return nil
}

// Join ends the work that runs beside the last host task: what is
// recorded next is submitted after the task.
func (p *Program) Join() error {
	if !p.open {
		return errors.New("offload: Join without a host task")
	}
	p.open, p.cur, p.joinNext = false, nil, true
	return nil
}

// Sequence says that the blocks streamed from now on belong to sequence i
// of a step that runs several (numbered from 0): RunBatch skips them by
// that sequence's KV length. A program of one sequence never calls it.
func (p *Program) Sequence(i int) error {
	if i < 0 {
		return fmt.Errorf("offload: sequence %d", i)
	}
	p.seq = i
	return nil
}

// Blocks is the number of streamed blocks recorded (a run at full context
// copies them all).
func (p *Program) Blocks() int { return p.blocks }

// End finishes recording.
func (p *Program) End() error {
	if p.ended {
		return errors.New("offload: program ended twice")
	}
	p.ended = true
	p.err = p.end()
	return p.err
}

func (p *Program) end() error {
	var last *segment
	for _, s := range p.segs {
		if !s.transfer {
			last = s
		}
	}
	if last == nil {
		return errors.New("offload: program without compute")
	}
	if last.block >= 0 {
		return errors.New("offload: program ends with attention")
	}
	if p.open || p.joinNext {
		return errors.New("offload: program ends before its last host task's work")
	}
	var err error
	for _, s := range p.segs {
		if p.timed {
			s.c.Timestamp("end")
		}
		if e := s.c.End(); e != nil && err == nil {
			err = e
		}
	}
	return err
}

// Clock is the pair of timeline semaphores that the programs of one
// sequence share, and how far each has counted.
type Clock struct {
	copied, attended *vk.Timeline
	copyBase         uint64 // copied value reached by the previous run
	attnBase         uint64 // attended value reached by the previous run
}

// NewClock creates the semaphores.
func NewClock(d *vk.Device) (*Clock, error) {
	c, err := d.NewTimeline()
	if err != nil {
		return nil, err
	}
	a, err := d.NewTimeline()
	if err != nil {
		c.Free()
		return nil, err
	}
	return &Clock{copied: c, attended: a}, nil
}

// Free destroys the semaphores; nothing may be pending on them.
func (k *Clock) Free() {
	if k != nil {
		k.copied.Free()
		k.attended.Free()
	}
}

// RunStats describe one run of a program.
type RunStats struct {
	Wall time.Duration // from the first submission to the end of the host wait
	// Compute is the time the compute queue spent executing the step's
	// compute work, copies excluded (timestamps); zero when the program is
	// not timed.
	Compute time.Duration
	// CopyWait is the time the compute queue spent on streamed blocks
	// instead of computing, in a timed program that streams. Fused, it is
	// the time the copies themselves took (timestamps around them);
	// pipelined, it is Wall − Compute: waiting for the transfer queue plus
	// the gaps between submissions, an upper bound.
	CopyWait time.Duration

	H2D         uint64 // bytes copied from the host
	Blocks      int    // streamed blocks run
	Dispatches  int    // kernel dispatches run
	Barriers    int    // barriers between them
	Submissions int    // vkQueueSubmit calls
	Commands    int    // command buffers submitted
	HostWaits   int    // waits of the host for the device (host tasks, and the end)
	// HostTasks is the time the host tasks took (Host), which the device
	// spent partly on its own work and partly waiting for them.
	HostTasks time.Duration
}

// Run submits the segments a step with a KV length of length positions
// needs, waits for them, and moves the clock on. The wait lasts at most
// the device's default wait.
func (p *Program) Run(k *Clock, length int) (RunStats, error) {
	return p.RunUntil(k, length, time.Time{})
}

// RunUntil is Run with a deadline for the wait (zero: the device's default
// wait). A step not done by then marks the device failed (vk.Fail): the
// device seems hung, and its semaphores can no longer be trusted.
func (p *Program) RunUntil(k *Clock, length int, deadline time.Time) (RunStats, error) {
	return p.RunBatch(k, []int{length}, deadline)
}

// RunBatch is RunUntil for a step of several sequences: lengths[i] is the
// KV length of sequence i (see Sequence).
func (p *Program) RunBatch(k *Clock, lengths []int, deadline time.Time) (RunStats, error) {
	if !p.ended {
		return RunStats{}, errors.New("offload: run of a program still recording")
	}
	if p.err != nil {
		return RunStats{}, p.err
	}
	for _, n := range lengths {
		if n < 1 {
			return RunStats{}, fmt.Errorf("offload: run of a step over %d positions", n)
		}
	}
	if len(p.tasks) > 0 {
		return p.runRounds(k, lengths, deadline)
	}
	st := RunStats{HostWaits: 1}
	var run []*segment
	for _, s := range p.segs {
		if s.seq >= len(lengths) {
			return RunStats{}, fmt.Errorf("offload: run of a step of %d sequences recorded for more", len(lengths))
		}
		if n := lengths[s.seq]; s.from < n && n < s.until {
			run = append(run, s)
			st.H2D += s.h2d
			st.Dispatches += s.c.Dispatches()
			st.Barriers += s.c.Barriers()
			if s.transfer || (!p.pipelined && s.block >= 0) {
				st.Blocks++
			}
		}
	}
	st.Commands = len(run)
	t0 := time.Now()
	cb, ab := k.copyBase, k.attnBase
	var copied, done uint64 // the run's final values
	var batches struct{ xfer, comp []vk.Batch }
	if !p.pipelined {
		cmds := make([]*vk.Commands, len(run))
		for i, s := range run {
			cmds[i] = s.c
		}
		copied, done = cb, ab+1
		batches.comp = []vk.Batch{{Cmds: cmds, Signal: []vk.Sync{{T: k.attended, Value: done}}}}
	} else {
		// e numbers the blocks run; reader[b] is the attended value of the
		// last attention that read buffer b (0: none in this run).
		e := uint64(0)
		var reader [2]uint64
		var last *segment
		for _, s := range run {
			if !s.transfer {
				last = s
			}
		}
		for _, s := range run {
			var b vk.Batch
			b.Cmds = []*vk.Commands{s.c}
			switch {
			case s.transfer:
				buf := s.block % 2
				if r := reader[buf]; r > 0 {
					b.Wait = []vk.Sync{{T: k.attended, Value: r}}
				} else if ab > 0 {
					// Already reached; it tells the validation layer that
					// the previous run's reads of the buffer are over.
					b.Wait = []vk.Sync{{T: k.attended, Value: ab}}
				}
				b.Signal = []vk.Sync{{T: k.copied, Value: cb + e + 1}}
			case s.block >= 0:
				// The attention of the block whose copies came last.
				b.Wait = []vk.Sync{{T: k.copied, Value: cb + e + 1}}
				b.Signal = []vk.Sync{{T: k.attended, Value: ab + e + 1}}
				reader[s.block%2] = ab + e + 1
				e++
			case s == last:
				b.Signal = []vk.Sync{{T: k.attended, Value: ab + e + 1}}
			}
			if s.transfer {
				batches.xfer = append(batches.xfer, b)
			} else {
				batches.comp = append(batches.comp, b)
			}
		}
		copied, done = cb+e, ab+e+1
	}
	if p.d.Transfer() == p.d.Compute() && len(batches.xfer) > 0 {
		// One queue: one submission in recording order.
		batches.comp = p.ordered(run, batches.xfer, batches.comp)
		batches.xfer = nil
	}
	for _, q := range []struct {
		q  *vk.Queue
		bs []vk.Batch
	}{{p.d.Transfer(), batches.xfer}, {p.d.Compute(), batches.comp}} {
		if len(q.bs) == 0 {
			continue
		}
		if err := q.q.SubmitBatch(q.bs); err != nil {
			if st.Submissions > 0 {
				// The transfer batch went in and waits for attention
				// that will never be submitted: nothing pending signals
				// attended past ab, so the host may release it.
				err = errors.Join(err, k.attended.Signal(done))
			}
			return RunStats{}, p.abandon(k, copied, done, deadline, err)
		}
		st.Submissions++
	}
	k.copyBase, k.attnBase = copied, done
	timeout := time.Duration(-1) // the device's default
	if !deadline.IsZero() {
		timeout = max(time.Until(deadline), 0)
	}
	if err := k.attended.Wait(done, timeout); err != nil {
		if errors.Is(err, vk.ErrTimeout) {
			return RunStats{}, p.d.Hang(fmt.Errorf("offload: a step did not finish in time, the device seems hung: %w", err))
		}
		return RunStats{}, err
	}
	p.times(&st, run, time.Since(t0))
	return st, nil
}

// runRounds runs a program with host tasks: one submission per round,
// and between rounds a host wait and a task (see Program). If a submission
// or a task fails, it waits for what was submitted and leaves the clock at
// the last value that work signals, so that the next run starts from it.
func (p *Program) runRounds(k *Clock, lengths []int, deadline time.Time) (RunStats, error) {
	st := RunStats{Commands: len(p.segs)}
	for _, t := range p.tasks {
		if t.seq >= len(lengths) {
			return RunStats{}, fmt.Errorf("offload: run of a step of %d sequences recorded for more", len(lengths))
		}
	}
	// Round i's first batch runs up to the segment task i waits for; its
	// second batch is the work beside the task.
	type round struct {
		before, beside []*vk.Commands
		signalled      bool
	}
	rounds := []round{{}}
	for _, s := range p.segs {
		if s.join {
			rounds = append(rounds, round{})
		}
		r := &rounds[len(rounds)-1]
		if r.signalled {
			r.beside = append(r.beside, s.c)
		} else {
			r.before = append(r.before, s.c)
		}
		r.signalled = r.signalled || s.signal
		st.Dispatches += s.c.Dispatches()
		st.Barriers += s.c.Barriers()
	}
	timeout := func() time.Duration {
		if deadline.IsZero() {
			return -1 // the device's default
		}
		return max(time.Until(deadline), 0)
	}
	wait := func(v uint64) error {
		err := k.attended.Wait(v, timeout())
		if errors.Is(err, vk.ErrTimeout) {
			return p.d.Hang(fmt.Errorf("offload: a step did not finish in time, the device seems hung: %w", err))
		}
		return err
	}
	// settle ends a failed run: the submitted work completes (the device
	// waits for nothing), and the clock goes on from the value it signals.
	settle := func(last uint64, err error) error {
		if werr := p.d.Compute().IdleUntil(deadline); werr != nil {
			return errors.Join(err, fmt.Errorf("offload: after a failed step: %w", werr))
		}
		k.attnBase = last
		return err
	}
	t0 := time.Now()
	ab := k.attnBase
	for i, r := range rounds {
		v := ab + uint64(i) + 1
		bs := []vk.Batch{{Cmds: r.before, Signal: []vk.Sync{{T: k.attended, Value: v}}}}
		if len(r.beside) > 0 {
			bs = append(bs, vk.Batch{Cmds: r.beside})
		}
		if err := p.d.Compute().SubmitBatch(bs); err != nil {
			return RunStats{}, settle(v-1, err)
		}
		st.Submissions++
		st.HostWaits++
		if i == len(rounds)-1 {
			k.attnBase = v
			if err := wait(v); err != nil {
				return RunStats{}, err
			}
			break
		}
		if err := wait(v); err != nil {
			return RunStats{}, err
		}
		th := time.Now()
		t := p.tasks[i]
		err := t.fn(lengths[t.seq])
		st.HostTasks += time.Since(th)
		if err != nil {
			return RunStats{}, settle(v, err)
		}
	}
	p.times(&st, p.segs, time.Since(t0))
	return st, nil
}

// ordered merges the transfer and compute batches of the segments run
// back into recording order, for a device with one queue.
func (p *Program) ordered(run []*segment, xfer, comp []vk.Batch) []vk.Batch {
	out := make([]vk.Batch, 0, len(xfer)+len(comp))
	for _, s := range run {
		if s.transfer {
			out, xfer = append(out, xfer[0]), xfer[1:]
		} else {
			out, comp = append(out, comp[0]), comp[1:]
		}
	}
	return out
}

// abandon ends a run whose submission failed with err. The host may not
// signal a semaphore past a value that a pending submission will still
// signal, so it first waits for what was submitted, which completes: every
// wait names a value an earlier submission signals, or (a transfer batch
// whose compute batch failed) one the host signalled. Then it signals the run's
// final values, so that the clock's next run starts from them, and
// returns err. If the wait fails too, the device is failed and the clock
// is left alone.
func (p *Program) abandon(k *Clock, copied, done uint64, deadline time.Time, err error) error {
	for _, q := range []*vk.Queue{p.d.Compute(), p.d.Transfer()} {
		if werr := q.IdleUntil(deadline); werr != nil {
			return errors.Join(err, fmt.Errorf("offload: after a failed submission: %w", werr))
		}
	}
	for _, s := range []vk.Sync{{T: k.copied, Value: copied}, {T: k.attended, Value: done}} {
		v, verr := s.T.Value()
		if verr == nil && v < s.Value {
			verr = s.T.Signal(s.Value)
		}
		if verr != nil {
			return errors.Join(err, verr)
		}
	}
	k.copyBase, k.attnBase = copied, done
	return err
}

// times reads the compute segments' timestamps.
func (p *Program) times(st *RunStats, run []*segment, wall time.Duration) {
	st.Wall = wall
	if !p.timed {
		return
	}
	var copying time.Duration // fused: time spent in the copies
	for _, s := range run {
		if s.transfer {
			continue
		}
		ts := s.c.Timings()
		if len(ts) < 2 {
			continue
		}
		st.Compute += time.Duration(ts[len(ts)-1].NS - ts[0].NS)
		for i := 1; i < len(ts); i++ {
			if ts[i].Label == "copied" && ts[i-1].Label == "copy" {
				copying += time.Duration(ts[i].NS - ts[i-1].NS)
			}
		}
	}
	switch {
	case st.Blocks == 0:
	case !p.pipelined:
		st.CopyWait = copying
		st.Compute -= copying
	case wall > st.Compute:
		st.CopyWait = wall - st.Compute
	}
}

// Free releases the command buffers once they are no longer pending.
func (p *Program) Free() {
	for _, s := range p.segs {
		s.c.Free()
	}
	p.segs, p.cur = nil, nil
}
