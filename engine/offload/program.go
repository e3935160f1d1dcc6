package offload

import (
	"errors"
	"fmt"
	"time"

	"headinfer/vk"
)

// Program is one forward step recorded as a sequence of command buffers
// ("segments") that is submitted as a whole and waited for once.
//
// Compute segments run on the compute queue in recording order. Streamed
// KV reaches the device in blocks: block j is filled by a transfer segment
// (copies from the host store into streaming buffer j mod 2) and consumed
// by the attention segment j on the compute queue. Two timeline
// semaphores order them:
//
//	transfer j  signals copied   = base + j + 1
//	attention j waits   copied   ≥ base + j + 1, signals attended = base + j + 1
//	transfer j  waits   attended ≥ base + j − 1 (attention j−2 is done with the buffer)
//
// so copy → attention → reuse of a buffer is ordered while the copy of
// block j+1 overlaps the attention of block j. A transfer segment starts
// with a barrier, so "copied ≥ v" also means every earlier transfer is
// done. Segments are submitted in an order in which every wait names a
// value that an earlier submission signals, which keeps a device whose
// transfer queue is its compute queue (lavapipe) from deadlocking; there
// the copies simply run between the compute segments. The host waits only
// for the last compute segment.
//
// Where the transfer queue is the compute queue, splitting a step into
// submissions buys no overlap and costs a submission per block, so a
// program made with pipelined false is fused instead: one command buffer,
// each block's copies recorded in it between barriers, right before the
// attention that reads them. The copies and kernels are the same.
//
// A Program is recorded once per step shape and run many times; the
// semaphore values move on with each run (see Clock).
type Program struct {
	d         *vk.Device
	timed     bool
	pipelined bool
	segs      []*segment // in recording order
	cur       *segment   // the compute segment open for recording
	blocks    int        // streamed blocks recorded
	order     []*segment // submission order, set by End
	ended     bool
	err       error // End's error, which Run repeats

	// H2D and D2H are the bytes one run moves from host to device and
	// from device to host, as the recording code declared them.
	H2D, D2H uint64
}

// segment is one command buffer of a program.
type segment struct {
	c        *vk.Commands
	transfer bool
	block    int // the block a transfer segment fills or an attention segment attends; −1 otherwise
}

// NewProgram starts recording a step, pipelined over two queues or fused
// into one command buffer. With timed, Run measures how long the compute
// queue waited for copies (timestamps).
func NewProgram(d *vk.Device, timed, pipelined bool) *Program {
	return &Program{d: d, timed: timed, pipelined: pipelined}
}

// Compute returns the compute command buffer to record into now: the open
// one, or a new one when none is open or the open one attends a block
// (an attention segment holds attention only, so that it can signal that
// its buffer is free as early as possible).
func (p *Program) Compute() (*vk.Commands, error) {
	if p.cur != nil && (p.cur.block < 0 || !p.pipelined) {
		return p.cur.c, nil
	}
	s, err := p.newSegment(false, -1)
	if err != nil {
		return nil, err
	}
	p.cur = s
	return s.c, nil
}

// Stream records a transfer segment that fills the next streaming block
// (buffer Stream's result mod 2) by calling fill, which records copies
// only; h2d is the bytes those copies move from the host. It returns the
// block's index in the step.
func (p *Program) Stream(fill func(c *vk.Commands), h2d uint64) (int, error) {
	j := p.blocks
	if !p.pipelined {
		c, err := p.Compute()
		if err != nil {
			return 0, err
		}
		c.Barrier() // the attention two blocks back is done with the buffer
		if p.timed {
			c.Timestamp("copy")
		}
		fill(c)
		if p.timed {
			c.Timestamp("copied")
		}
		p.blocks++
		p.H2D += h2d
		return j, nil
	}
	s, err := p.newSegment(true, j)
	if err != nil {
		return 0, err
	}
	fill(s.c)
	p.blocks++
	p.H2D += h2d
	return j, nil
}

// Attend opens the attention segment of block j and returns its command
// buffer, which runs once the block's copies are done; the buffer is
// handed back to the copies when the next segment opens.
func (p *Program) Attend(j int) (*vk.Commands, error) {
	if j < 0 || j >= p.blocks {
		return nil, fmt.Errorf("offload: attention of block %d, %d streamed", j, p.blocks)
	}
	if !p.pipelined {
		c, err := p.Compute()
		if err == nil {
			c.Barrier() // the copies are done
		}
		return c, err
	}
	s, err := p.newSegment(false, j)
	if err != nil {
		return nil, err
	}
	p.cur = s
	return s.c, nil
}

func (p *Program) newSegment(transfer bool, block int) (*segment, error) {
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
		// including earlier submissions.
		c.Barrier()
	}
	s := &segment{c: c, transfer: transfer, block: block}
	p.segs = append(p.segs, s)
	return s, nil
}

// Blocks is the number of streamed blocks one run copies.
func (p *Program) Blocks() int { return p.blocks }

// Dispatches is the number of kernel dispatches one run records.
func (p *Program) Dispatches() int {
	n := 0
	for _, s := range p.segs {
		n += s.c.Dispatches()
	}
	return n
}

// Submissions is the number of command buffers one run submits.
func (p *Program) Submissions() int { return len(p.order) }

// End finishes recording and fixes the submission order: transfers 0 and 1
// first (they wait for nothing in this step, so they start at once), then
// the compute segments in order, each transfer j+2 right after the
// attention segment j that frees its buffer.
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
	if !p.pipelined {
		p.order = []*segment{last}
		return p.endAll()
	}
	xfer := make([]*segment, p.blocks)
	for _, s := range p.segs {
		if s.transfer {
			xfer[s.block] = s
		}
	}
	for j := 0; j < min(2, p.blocks); j++ {
		p.order = append(p.order, xfer[j])
	}
	for _, s := range p.segs {
		if s.transfer {
			continue
		}
		p.order = append(p.order, s)
		if s.block >= 0 && s.block+2 < p.blocks {
			p.order = append(p.order, xfer[s.block+2])
		}
	}
	return p.endAll()
}

// endAll ends the recording of every segment.
func (p *Program) endAll() error {
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
}

// Run submits the program, waits for it, and moves the clock on. The wait
// lasts at most the device's default wait.
func (p *Program) Run(k *Clock) (RunStats, error) { return p.RunUntil(k, time.Time{}) }

// RunUntil is Run with a deadline for the wait (zero: the device's default
// wait). A step not done by then marks the device failed (vk.Fail): the
// device seems hung, and its semaphores can no longer be trusted.
func (p *Program) RunUntil(k *Clock, deadline time.Time) (RunStats, error) {
	if !p.ended {
		return RunStats{}, errors.New("offload: run of a program still recording")
	}
	if p.err != nil {
		return RunStats{}, p.err
	}
	t0 := time.Now()
	if len(p.order) == 1 {
		// No streaming: one submission and its wait, as in the plain case.
		if err := p.d.RunUntil(deadline, p.order[0].c); err != nil {
			return RunStats{}, err
		}
		return p.stats(time.Since(t0)), nil
	}
	cb, ab := k.copyBase, k.attnBase
	copied, done := cb+uint64(p.blocks), ab+uint64(p.blocks)+1
	last := p.order[len(p.order)-1]
	for _, s := range p.order {
		var wait, signal []vk.Sync
		q := p.d.Compute()
		j := uint64(s.block)
		switch {
		case s.transfer:
			q = p.d.Transfer()
			if s.block >= 2 {
				wait = []vk.Sync{{T: k.attended, Value: ab + j - 1}}
			} else if ab > 0 {
				// Already reached; it tells the validation layer that the
				// previous run's reads of the buffers are over.
				wait = []vk.Sync{{T: k.attended, Value: ab}}
			}
			signal = []vk.Sync{{T: k.copied, Value: cb + j + 1}}
		case s.block >= 0:
			wait = []vk.Sync{{T: k.copied, Value: cb + j + 1}}
			signal = []vk.Sync{{T: k.attended, Value: ab + j + 1}}
		case s == last:
			signal = []vk.Sync{{T: k.attended, Value: done}}
		}
		if err := q.Submit(s.c, wait, signal); err != nil {
			return RunStats{}, p.abandon(k, copied, done, deadline, err)
		}
	}
	k.copyBase, k.attnBase = copied, done
	timeout := time.Duration(-1) // the device's default
	if !deadline.IsZero() {
		timeout = max(time.Until(deadline), 0)
	}
	if err := k.attended.Wait(done, timeout); err != nil {
		if errors.Is(err, vk.ErrTimeout) {
			return RunStats{}, p.d.Fail(fmt.Errorf("kv: a step did not finish in time, the device seems hung: %w", err))
		}
		return RunStats{}, err
	}
	return p.stats(time.Since(t0)), nil
}

// abandon ends a run whose submission failed part way with err. The host
// may not signal a semaphore past a value that a pending submission will
// still signal, so it first waits for what was submitted, which completes:
// every wait names a value an earlier submission signals. Then it signals
// the run's final values, so that the clock's next run starts from them,
// and returns err. If the wait fails too, the device is failed and the
// clock is left alone.
func (p *Program) abandon(k *Clock, copied, done uint64, deadline time.Time, err error) error {
	for _, q := range []*vk.Queue{p.d.Compute(), p.d.Transfer()} {
		if werr := q.IdleUntil(deadline); werr != nil {
			return errors.Join(err, fmt.Errorf("kv: after a failed submission: %w", werr))
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

// stats reads the compute segments' timestamps.
func (p *Program) stats(wall time.Duration) RunStats {
	st := RunStats{Wall: wall}
	if !p.timed {
		return st
	}
	var copying time.Duration // fused: time spent in the copies
	for _, s := range p.segs {
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
	case p.blocks == 0:
	case !p.pipelined:
		st.CopyWait = copying
		st.Compute -= copying
	case wall > st.Compute:
		st.CopyWait = wall - st.Compute
	}
	return st
}

// Free releases the command buffers once they are no longer pending.
func (p *Program) Free() {
	for _, s := range p.segs {
		s.c.Free()
	}
	p.segs, p.order, p.cur = nil, nil, nil
}
