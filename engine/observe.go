package engine

import (
	"sync"
	"sync/atomic"
	"time"
)

// Monitor lets a live view follow the engine without touching its
// buffers. The sessions of a model loaded with Options.Monitor publish to
// it, as plain values, an Event when they open, after every forward pass
// and when they close, and they wait at its pause gate before each
// forward pass.
//
// Publishing never waits: an event that finds the channel full is
// dropped and counted. Every event carries the session's cumulative
// Stats, so a reader that misses events loses resolution, not counts.
type Monitor struct {
	events  chan Event
	dropped atomic.Uint64
	ids     atomic.Uint64

	mu       sync.Mutex
	paused   bool
	resume   chan struct{} // closed when the pause ends
	released bool          // no pause may start any more
	holding  int           // sessions waiting at the gate (tests)
}

// MonitorBuffer is the number of events a Monitor holds for a reader that
// is behind; a reader drawing at display rate empties it every frame.
const MonitorBuffer = 4096

// NewMonitor returns a Monitor whose events nobody has read yet.
func NewMonitor() *Monitor {
	return &Monitor{events: make(chan Event, MonitorBuffer)}
}

// Events is the channel the sessions publish to. It is never closed.
func (o *Monitor) Events() <-chan Event { return o.events }

// Dropped is the number of events that found the channel full.
func (o *Monitor) Dropped() uint64 { return o.dropped.Load() }

// SetPaused pauses or resumes every session of the model: a paused
// session finishes the forward pass it is running and waits before the
// next one. It does nothing after Release.
func (o *Monitor) SetPaused(paused bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case paused && !o.paused && !o.released:
		o.paused, o.resume = true, make(chan struct{})
	case !paused && o.paused:
		o.paused = false
		close(o.resume)
	}
}

// Paused reports whether the sessions are paused.
func (o *Monitor) Paused() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.paused
}

// Release ends any pause for good, so that a run being stopped is not
// left waiting at the gate.
func (o *Monitor) Release() {
	o.SetPaused(false)
	o.mu.Lock()
	o.released = true
	o.mu.Unlock()
}

// hold waits while the sessions are paused and returns how long it
// waited. A nil Monitor never pauses.
func (o *Monitor) hold() time.Duration {
	if o == nil {
		return 0
	}
	o.mu.Lock()
	ch := o.resume
	paused := o.paused
	o.mu.Unlock()
	if !paused {
		return 0
	}
	t0 := time.Now()
	o.mu.Lock()
	o.holding++
	o.mu.Unlock()
	<-ch
	o.mu.Lock()
	o.holding--
	o.mu.Unlock()
	return time.Since(t0)
}

// publish sends e unless the channel is full.
func (o *Monitor) publish(e Event) {
	select {
	case o.events <- e:
	default:
		o.dropped.Add(1)
	}
}

// EventKind says what an Event reports.
type EventKind uint8

// Event kinds.
const (
	EventOpen    EventKind = iota // a session was opened: Layout is set
	EventPrefill                  // a prefill forward pass (one chunk) ended
	EventDecode                   // a decode forward pass ended
	EventClose                    // the session was closed
)

// Placement is where a KV slot (one layer's K and V of one KV head)
// lives and is attended.
type Placement uint8

// Slot placements.
const (
	SlotResident Placement = iota // on the device, attended there
	SlotStreamed                  // in host memory, streamed to the device block by block
)

// Layout is what a session's KV cache and device memory look like: fixed
// for the session's life.
type Layout struct {
	Layers, KVHeads int
	// Slots is the placement of every slot, layer by layer: slot (l, h)
	// is Slots[l*KVHeads+h].
	Slots []Placement
	Plan  Plan
}

// Event is one thing a session did, as plain values.
type Event struct {
	Kind    EventKind
	Session uint64    // the session's number, from 1, unique per Monitor
	Time    time.Time // when it happened (a forward pass: when it ended)
	// Tokens is the forward pass's tokens; Took its wall time.
	Tokens int
	Took   time.Duration
	// Positions is the number of positions the session's KV cache holds
	// after the event; a streamed slot is copied up to there.
	Positions int
	// Totals are the session's stats after the event.
	Totals Stats
	Memory Memory
	Layout *Layout // EventOpen only; shared, never changed
}

// layoutOf is the session's KV layout as the plan places it.
func layoutOf(m *Model) *Layout {
	c, p := m.Config, m.plan
	lay := &Layout{Layers: c.Layers, KVHeads: c.KVHeads, Slots: make([]Placement, c.Layers*c.KVHeads), Plan: p}
	lay.Plan.ResidentHeads = append([]int(nil), p.ResidentHeads...)
	for l := 0; l < c.Layers; l++ {
		for h := 0; h < c.KVHeads; h++ {
			if l >= len(p.ResidentHeads) || h >= p.ResidentHeads[l] {
				lay.Slots[l*c.KVHeads+h] = SlotStreamed
			}
		}
	}
	return lay
}

// observeOpen numbers a new session and announces it.
func (se *Session) observeOpen() {
	o := se.m.opt.Monitor
	if o == nil {
		return
	}
	se.observeID = o.ids.Add(1)
	o.publish(Event{Kind: EventOpen, Session: se.observeID, Time: time.Now(),
		Totals: se.Stats(), Memory: se.Memory(), Layout: layoutOf(se.m)})
}

// observe announces a forward pass of n tokens that started at t0, or
// the session's close.
func (se *Session) observe(kind EventKind, n int, t0 time.Time) {
	o := se.m.opt.Monitor
	if o == nil {
		return
	}
	now := time.Now()
	e := Event{Kind: kind, Session: se.observeID, Time: now, Tokens: n, Positions: len(se.tokens)}
	if kind != EventClose {
		e.Took = now.Sub(t0)
		e.Totals, e.Memory = se.Stats(), se.Memory()
	}
	o.publish(e)
}
