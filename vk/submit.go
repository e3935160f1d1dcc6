package vk

/*
#include "vkc.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Queue is a device queue. Submissions to it are serialized by a mutex;
// each also signals the queue's own timeline, which lets Run, Reset and
// Free wait for exactly the work they need.
type Queue struct {
	d            *Device
	c            *C.hi_queue
	family       uint32
	transferOnly bool
	tsBits       uint32 // timestampValidBits of the family

	mu   sync.Mutex
	sem  C.VkSemaphore // internal timeline
	last uint64        // value of the latest submission
}

func newQueue(d *Device, q C.VkQueue, family uint32, transferOnly bool, tsBits uint32) (*Queue, error) {
	x := &Queue{d: d, family: family, transferOnly: transferOnly, tsBits: tsBits}
	if x.c = C.hi_queue_new(q); x.c == nil {
		return nil, errors.New("vk: out of host memory")
	}
	if err := result(C.hi_timeline_create(d.dev, 0, &x.sem), "vkCreateSemaphore"); err != nil {
		C.hi_queue_free(x.c)
		return nil, err
	}
	return x, nil
}

func (q *Queue) free() {
	C.hi_timeline_destroy(q.d.dev, q.sem)
	C.hi_queue_free(q.c)
}

// Sync is a timeline semaphore value to wait for or signal.
type Sync struct {
	T     *Timeline
	Value uint64
}

// Submit queues c (which may be nil, to only wait and signal) after every
// wait value is reached, and signals every signal value when it
// completes. It does not wait.
func (q *Queue) Submit(c *Commands, wait []Sync, signal []Sync) error {
	if c != nil {
		if err := c.ready(q); err != nil {
			return err
		}
		if err := c.hostReset(); err != nil {
			return err
		}
	}
	if len(wait) > C.HI_MAX_SUBMIT || len(signal) >= C.HI_MAX_SUBMIT {
		return fmt.Errorf("vk: submit with %d waits and %d signals, at most %d each", len(wait), len(signal), C.HI_MAX_SUBMIT-1)
	}
	for _, s := range wait {
		if s.T == nil || s.T.d != q.d || s.T.freed {
			return errors.New("vk: submit waits on a nil, freed or foreign timeline")
		}
	}
	for _, s := range signal {
		if s.T == nil || s.T.d != q.d || s.T.freed {
			return errors.New("vk: submit signals a nil, freed or foreign timeline")
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	ncb := 0
	if c != nil {
		q.c.cbs[0] = c.c.cb
		ncb = 1
	}
	for i, s := range wait {
		q.c.wait_sem[i] = s.T.sem
		q.c.wait_val[i] = C.uint64_t(s.Value)
	}
	for i, s := range signal {
		q.c.sig_sem[i] = s.T.sem
		q.c.sig_val[i] = C.uint64_t(s.Value)
	}
	val, err := q.submitLocked(ncb, len(wait), len(signal))
	if err == nil && c != nil {
		c.pending = submission{q, val}
		c.ts.ran = true
	}
	return err
}

// Batch is one submit info of a SubmitBatch: command buffers that run
// in order after every wait value is reached, and signal every signal value
// when they complete.
type Batch struct {
	Cmds         []*Commands
	Wait, Signal []Sync
}

// SubmitBatch queues bs in one vkQueueSubmit, in order. It does not wait.
// A wait may name a value that a later submission (on another queue)
// signals: timeline semaphores allow it, but on one queue the values it
// waits for must be signalled by earlier batches.
func (q *Queue) SubmitBatch(bs []Batch) error {
	if len(bs) == 0 {
		return errors.New("vk: SubmitBatch of no batches")
	}
	var (
		ncb, nwait, nsig []C.uint32_t
		cbs              []C.VkCommandBuffer
		wsem, ssem       []C.VkSemaphore
		wval, sval       []C.uint64_t
	)
	check := func(ss []Sync, what string) error {
		for _, s := range ss {
			if s.T == nil || s.T.d != q.d || s.T.freed {
				return fmt.Errorf("vk: submit %s a nil, freed or foreign timeline", what)
			}
		}
		return nil
	}
	for _, b := range bs {
		for _, c := range b.Cmds {
			if c == nil {
				return errors.New("vk: SubmitBatch of nil commands")
			}
			if err := c.ready(q); err != nil {
				return err
			}
			if err := c.hostReset(); err != nil {
				return err
			}
			cbs = append(cbs, c.c.cb)
		}
		if err := check(b.Wait, "waits on"); err != nil {
			return err
		}
		if err := check(b.Signal, "signals"); err != nil {
			return err
		}
		for _, s := range b.Wait {
			wsem = append(wsem, s.T.sem)
			wval = append(wval, C.uint64_t(s.Value))
		}
		for _, s := range b.Signal {
			ssem = append(ssem, s.T.sem)
			sval = append(sval, C.uint64_t(s.Value))
		}
		ncb = append(ncb, C.uint32_t(len(b.Cmds)))
		nwait = append(nwait, C.uint32_t(len(b.Wait)))
		nsig = append(nsig, C.uint32_t(len(b.Signal)))
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	d := q.d
	if err := d.Failed(); err != nil {
		return err
	}
	if d.injected() {
		return d.Fail(deviceLost("vkQueueSubmit"))
	}
	// The last batch also signals the queue's own timeline: a signal
	// covers every command submitted to the queue before it.
	val := q.last + 1
	ssem = append(ssem, q.sem)
	sval = append(sval, C.uint64_t(val))
	nsig[len(nsig)-1]++
	// Empty slices still need a valid pointer.
	cbs = append(cbs, nil)
	wsem = append(wsem, nil)
	wval = append(wval, 0)
	r := C.hi_submit_batch(d.dev, q.c.q, C.uint32_t(len(bs)), &ncb[0], &cbs[0], &nwait[0], &wsem[0], &wval[0],
		&nsig[0], &ssem[0], &sval[0])
	if err := result(r, "vkQueueSubmit"); err != nil {
		return d.Fail(err)
	}
	q.last = val
	for _, b := range bs {
		for _, c := range b.Cmds {
			c.pending = submission{q, val}
			c.ts.ran = true
		}
	}
	return nil
}

// submitLocked adds the queue's own timeline signal to the prepared
// submission and submits it; q.mu must be held. A failed device refuses
// it, and a submission that fails marks the device failed.
func (q *Queue) submitLocked(ncb, nwait, nsig int) (uint64, error) {
	d := q.d
	if err := d.Failed(); err != nil {
		return 0, err
	}
	val := q.last + 1
	q.c.sig_sem[nsig] = q.sem
	q.c.sig_val[nsig] = C.uint64_t(val)
	if d.injected() {
		return 0, d.Fail(deviceLost("vkQueueSubmit"))
	}
	if err := result(C.hi_submit(d.dev, q.c, C.uint32_t(ncb), C.uint32_t(nwait), C.uint32_t(nsig+1)), "vkQueueSubmit"); err != nil {
		return 0, d.Fail(err)
	}
	q.last = val
	return val, nil
}

// waitFor blocks until the queue's timeline reaches val or deadline passes
// (zero: the device's default wait). Giving up marks the device failed.
// On a device that already hung it does not wait: work that is not done
// by now is reported as the failure. (After a refused submission it does:
// what was submitted before still completes.)
func (q *Queue) waitFor(val uint64, deadline time.Time) error {
	d := q.d
	timeout := d.timeoutUntil(deadline)
	if f := d.Failed(); f != nil && d.hung.Load() {
		if r := C.hi_timeline_wait(d.dev, q.sem, C.uint64_t(val), 0); r == C.VK_SUCCESS {
			return nil
		}
		return f
	}
	r := C.hi_timeline_wait(d.dev, q.sem, C.uint64_t(val), C.uint64_t(timeout))
	return d.waitResult(r, "waiting for the queue", timeout)
}

// Idle waits until everything submitted to the queue so far has completed,
// for at most the device's default wait.
func (q *Queue) Idle() error { return q.IdleUntil(time.Time{}) }

// IdleUntil waits until everything submitted to the queue so far has
// completed or deadline passes (zero: the device's default wait); giving
// up marks the device failed.
func (q *Queue) IdleUntil(deadline time.Time) error {
	q.mu.Lock()
	v := q.last
	q.mu.Unlock()
	return q.waitFor(v, deadline)
}

// Run submits cs, in order, to the compute queue as one batch and waits
// for them to complete, for at most the device's default wait.
func (d *Device) Run(cs ...*Commands) error { return d.RunUntil(time.Time{}, cs...) }

// RunUntil is Run with a deadline for the wait (zero: the device's default
// wait). Work not done by then marks the device failed.
func (d *Device) RunUntil(deadline time.Time, cs ...*Commands) error {
	q := d.compute
	if len(cs) > C.HI_MAX_SUBMIT {
		return fmt.Errorf("vk: Run of %d command buffers, at most %d", len(cs), C.HI_MAX_SUBMIT)
	}
	for _, c := range cs {
		if c == nil {
			return errors.New("vk: Run of nil commands")
		}
		if err := c.ready(q); err != nil {
			return err
		}
	}
	q.mu.Lock()
	for i, c := range cs {
		q.c.cbs[i] = c.c.cb
	}
	val, err := q.submitLocked(len(cs), 0, 0)
	if err == nil {
		for _, c := range cs {
			c.pending = submission{q, val}
			c.ts.ran = true
		}
	}
	q.mu.Unlock()
	if err != nil {
		return err
	}
	return q.waitFor(val, deadline)
}

// Timeline is a timeline semaphore: a 64-bit counter that submissions
// signal and wait on, and the host can wait on.
type Timeline struct {
	d     *Device
	sem   C.VkSemaphore
	freed bool
}

// NewTimeline creates a timeline semaphore with value 0.
func (d *Device) NewTimeline() (*Timeline, error) {
	if d.dev == nil {
		return nil, errClosed
	}
	t := &Timeline{d: d}
	if err := result(C.hi_timeline_create(d.dev, 0, &t.sem), "vkCreateSemaphore"); err != nil {
		return nil, err
	}
	if !track(d, &d.timelines, t) {
		C.hi_timeline_destroy(d.dev, t.sem)
		return nil, errClosed
	}
	return t, nil
}

// Value is the current counter value.
func (t *Timeline) Value() (uint64, error) {
	var v C.uint64_t
	err := result(C.hi_timeline_value(t.d.dev, t.sem, &v), "vkGetSemaphoreCounterValue")
	return uint64(v), err
}

// Wait blocks until the counter reaches v or timeout passes; a negative
// timeout is the device's default wait. A timeout is returned as an error
// (ErrTimeout) and leaves the device as it is: only the caller knows
// whether the value was due. A lost device marks the device failed.
func (t *Timeline) Wait(v uint64, timeout time.Duration) error {
	if timeout < 0 {
		timeout = t.d.waitTimeout
	}
	r := C.hi_timeline_wait(t.d.dev, t.sem, C.uint64_t(v), C.uint64_t(timeout))
	switch r {
	case C.VK_TIMEOUT:
		cur, _ := t.Value()
		return fmt.Errorf("%w: timeline wait for value %d timed out after %v (value is %d)", ErrTimeout, v, timeout, cur)
	case C.VK_ERROR_DEVICE_LOST:
		return t.d.Fail(result(r, "vkWaitSemaphores"))
	}
	return result(r, "vkWaitSemaphores")
}

// ErrTimeout is matched by the error of a Timeline.Wait that timed out.
var ErrTimeout = errors.New("vk: wait timed out")

// Signal sets the counter to v from the host; v must exceed the current
// value.
func (t *Timeline) Signal(v uint64) error {
	return result(C.hi_timeline_signal(t.d.dev, t.sem, C.uint64_t(v)), "vkSignalSemaphore")
}

// Free destroys the semaphore; no pending submission may use it.
func (t *Timeline) Free() {
	if t == nil || t.freed {
		return
	}
	t.freed = true
	if t.d.dev == nil {
		return
	}
	untrack(t.d, &t.d.timelines, t)
	C.hi_timeline_destroy(t.d.dev, t.sem)
}
