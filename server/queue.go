package server

import (
	"context"
	"errors"
	"sync"
)

// queue lets size requests at a time use the model (one per sequence it
// runs) and keeps the others waiting in arrival order, at most limit of
// them. A waiter whose context ends leaves the line at once.
type queue struct {
	mu      sync.Mutex
	size    int
	limit   int
	running int
	closed  bool
	idle    chan struct{} // closed when the last running request leaves after close
	waiting []*waiter
}

type waiter struct {
	ready   chan struct{} // closed when a place is handed over, or on close
	granted bool
	err     error // why the wait ended without the session
}

var (
	errQueueFull = errors.New("queue full")
	errClosed    = errors.New("server closed")
)

func newQueue(size, limit int) *queue { return &queue{size: max(size, 1), limit: limit} }

// acquire waits for a place among the running. It fails at once with errQueueFull when
// limit requests are already waiting, with errClosed once the queue is
// closed, and with ctx's cause when ctx ends first. On success the caller
// must call release.
func (q *queue) acquire(ctx context.Context) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return errClosed
	}
	if q.running < q.size && len(q.waiting) == 0 {
		q.running++
		q.mu.Unlock()
		return nil
	}
	if len(q.waiting) >= q.limit {
		q.mu.Unlock()
		return errQueueFull
	}
	w := &waiter{ready: make(chan struct{})}
	q.waiting = append(q.waiting, w)
	q.mu.Unlock()

	select {
	case <-w.ready:
		return w.err
	case <-ctx.Done():
	}
	q.mu.Lock()
	if w.granted {
		// Handed over as ctx ended: pass it on.
		q.mu.Unlock()
		q.release()
		return context.Cause(ctx)
	}
	if w.err == nil {
		for i, x := range q.waiting {
			if x == w {
				q.waiting = append(q.waiting[:i], q.waiting[i+1:]...)
				break
			}
		}
	}
	q.mu.Unlock()
	return context.Cause(ctx)
}

// release hands the caller's place to the next waiter, if any.
func (q *queue) release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.waiting) == 0 {
		q.running--
		if q.running == 0 && q.idle != nil {
			close(q.idle)
			q.idle = nil
		}
		return
	}
	w := q.waiting[0]
	q.waiting[0] = nil
	q.waiting = q.waiting[1:]
	w.granted = true
	close(w.ready)
}

// close turns away every waiting and later request with errClosed and
// waits until the running ones, if any, have released their places. It
// gives up when ctx ends.
func (q *queue) close(ctx context.Context) error {
	q.mu.Lock()
	q.closed = true
	for _, w := range q.waiting {
		w.err = errClosed
		close(w.ready)
	}
	q.waiting = nil
	if q.running == 0 {
		q.mu.Unlock()
		return nil
	}
	if q.idle == nil {
		q.idle = make(chan struct{})
	}
	idle := q.idle
	q.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// depth returns the number of waiting and of running requests.
// full says whether every place is taken, running and waiting: a request
// now would be refused.
func (q *queue) full() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.running >= q.size && len(q.waiting) >= q.limit
}

func (q *queue) depth() (waiting, running int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.waiting), q.running
}

// admission bounds the requests the server holds at once, from after
// their body is read until they are answered. The queue bounds only the
// requests waiting for the session; rendering the chat template and
// tokenizing (tens of bytes of memory per prompt byte) come before it, so
// without this any number of them would run at once. Its size is the
// queue's: the requests that may run plus those that may wait. Bodies are
// read before it, so that a client that sends its body slowly holds no
// place; the listener's per-address cap, the read timeout and the body
// limit bound what those reads cost.
type admission struct {
	slots chan struct{}
}

func newAdmission(size int) *admission {
	return &admission{slots: make(chan struct{}, max(size, 1))}
}

// enter takes a place without waiting, and reports whether there was one.
// The caller that got one must call leave.
func (a *admission) enter() bool {
	select {
	case a.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (a *admission) leave() { <-a.slots }

// held returns how many places are taken.
func (a *admission) held() int { return len(a.slots) }

// size returns how many requests may be held at once.
func (a *admission) size() int { return cap(a.slots) }
