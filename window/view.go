package window

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"headinfer/engine"
)

// rateWindow is the span over which token rates and traffic are shown.
const rateWindow = 60

// second is what the engine did in one wall-clock second.
type second struct {
	at                    int64 // unix second it covers
	prefillTok, decodeTok int
	prefillT, decodeT     time.Duration // forward-pass wall time
	h2d                   uint64
}

// sequence is one session as the view knows it.
type sequence struct {
	id        uint64
	positions int
	prefilled int // prompt tokens prefilled
	decoded   int // tokens decoded
	last      engine.Event
}

// view is the state the window draws: built from the engine's events and
// from what the command tells it, owned by the drawing goroutine.
type view struct {
	title  string
	serve  bool
	layout *engine.Layout
	memory engine.Memory
	seqs   map[uint64]*sequence
	order  []uint64 // live sessions, oldest first
	secs   [rateWindow]second

	lastCopy  time.Time // end of the last forward pass that copied KV to the device
	lastStep  time.Time
	lastH2D   uint64 // bytes that pass copied
	events    uint64
	dropped   uint64
	paused    bool
	done      bool
	phase     string   // what the command is doing, when no pass runs
	text      string   // generated text (generate)
	status    []string // queue and requests (serve)
	device    string   // the device that presents
	frames    uint64
	frameTime time.Duration // last frame's drawing time
	drawTotal time.Duration // all frames' drawing time
	presTotal time.Duration // all frames' time in present (copy, submit, wait)
	presTime  time.Duration // last frame's
}

func newView(title string, serve bool) *view {
	return &view{title: title, serve: serve, seqs: map[uint64]*sequence{}, phase: "loading the model"}
}

// apply folds one engine event into the view.
func (v *view) apply(e engine.Event) {
	v.events++
	switch e.Kind {
	case engine.EventOpen:
		v.layout = e.Layout
		v.memory = e.Memory
		v.seqs[e.Session] = &sequence{id: e.Session, last: e}
		v.order = append(v.order, e.Session)
		v.phase = "ready"
		return
	case engine.EventClose:
		delete(v.seqs, e.Session)
		for i, id := range v.order {
			if id == e.Session {
				v.order = append(v.order[:i], v.order[i+1:]...)
				break
			}
		}
		return
	}
	s := v.seqs[e.Session]
	if s == nil { // opened before the view read its events
		s = &sequence{id: e.Session, last: e}
		v.seqs[e.Session] = s
		v.order = append(v.order, e.Session)
	}
	// Bytes are taken from the cumulative totals, so that a dropped event
	// moves its bytes to the next one instead of losing them.
	h2d := e.Totals.H2DBytes - s.last.Totals.H2DBytes
	if e.Totals.H2DBytes < s.last.Totals.H2DBytes {
		h2d = 0
	}
	s.last, s.positions = e, e.Positions
	v.memory = e.Memory
	sec := v.second(e.Time)
	if e.Kind == engine.EventPrefill {
		s.prefilled += e.Tokens
		sec.prefillTok += e.Tokens
		sec.prefillT += e.Took
	} else {
		s.decoded += e.Tokens
		sec.decodeTok += e.Tokens
		sec.decodeT += e.Took
	}
	sec.h2d += h2d
	v.lastStep = e.Time
	if h2d > 0 {
		v.lastCopy, v.lastH2D = e.Time, h2d
	}
	v.phase = "running"
}

// second returns the bucket of t's second, recycling a stale one.
func (v *view) second(t time.Time) *second {
	u := t.Unix()
	s := &v.secs[u%rateWindow]
	if s.at != u {
		*s = second{at: u}
	}
	return s
}

// rates sums the last minute before now.
func (v *view) rates(now time.Time) (sum second) {
	u := now.Unix()
	for _, s := range v.secs {
		if s.at > u-rateWindow && s.at <= u {
			sum.prefillTok += s.prefillTok
			sum.decodeTok += s.decodeTok
			sum.prefillT += s.prefillT
			sum.decodeT += s.decodeT
			sum.h2d += s.h2d
		}
	}
	return sum
}

// history is tokens per second for each of the last rateWindow seconds,
// oldest first.
func (v *view) history(now time.Time) (prefill, decode [rateWindow]int) {
	u := now.Unix()
	for i := 0; i < rateWindow; i++ {
		at := u - rateWindow + 1 + int64(i)
		s := v.secs[at%rateWindow]
		if s.at == at {
			prefill[i], decode[i] = s.prefillTok, s.decodeTok
		}
	}
	return
}

// copying reports whether streamed slots were copied to the device so
// recently that the last forward pass is, at display rate, still the
// current one.
func (v *view) copying(now time.Time) bool {
	return !v.done && !v.lastCopy.IsZero() && now.Sub(v.lastCopy) < 250*time.Millisecond
}

// sequenceLines describes the live sessions, one line each.
func (v *view) sequenceLines(now time.Time) []string {
	var out []string
	for _, id := range v.order {
		s := v.seqs[id]
		state := "idle"
		if !s.last.Time.IsZero() && s.last.Kind != engine.EventOpen && now.Sub(s.last.Time) < time.Second {
			state = "running"
		}
		out = append(out, fmt.Sprintf("sequence %d: %s, %d positions in its KV cache; %d prompt tokens prefilled, %d decoded", id, state, s.positions, s.prefilled, s.decoded))
	}
	if len(out) == 0 {
		out = append(out, "no sequence open")
	}
	return out
}

// textBox is generated text handed from the command's goroutine to the
// drawing one without a lock: the writer swaps in a new string, the reader
// loads whatever is current.
type textBox struct{ s atomic.Pointer[string] }

// textKeep is how much of the generated text the window keeps: more than
// a screenful.
const textKeep = 8 << 10

func (b *textBox) add(s string) {
	old := b.load()
	n := old + s
	if len(n) > textKeep {
		cut := len(n) - textKeep
		// Cut at a line or word boundary when one is near.
		if i := strings.IndexAny(n[cut:], "\n "); i >= 0 && i < 64 {
			cut += i + 1
		}
		n = n[cut:]
	}
	b.s.Store(&n)
}

func (b *textBox) load() string {
	if p := b.s.Load(); p != nil {
		return *p
	}
	return ""
}
