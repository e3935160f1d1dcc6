package engine

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// nextEvent waits for the monitor's next event, with a deadline far
// beyond any step's time so that it fails only when none comes.
func nextEvent(t *testing.T, o *Monitor) Event {
	t.Helper()
	select {
	case e := <-o.Events():
		return e
	case <-time.After(2 * time.Minute):
		t.Fatal("no event from the session")
		return Event{}
	}
}

// TestMonitorEvents checks what a session publishes: its layout as the
// plan places the slots, one event per forward pass with the session's
// totals, and its close.
func TestMonitorEvents(t *testing.T) {
	o := NewMonitor()
	path := filepath.Join(modelsDir(t), "stories260K.gguf")
	for _, budget := range []struct {
		mode     string
		resident int
	}{{OffloadHead, 0}, {OffloadNone, -1}} {
		t.Run(budget.mode, func(t *testing.T) {
			m := loadModel(t, path, Options{CtxSize: 512, Chunk: 4, Offload: budget.mode, Monitor: o})
			se, err := m.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			open := nextEvent(t, o)
			if open.Kind != EventOpen || open.Layout == nil {
				t.Fatalf("first event %+v, want EventOpen with a layout", open)
			}
			lay := open.Layout
			c := m.Config
			if lay.Layers != c.Layers || lay.KVHeads != c.KVHeads || len(lay.Slots) != c.Layers*c.KVHeads {
				t.Fatalf("layout %d × %d with %d slots, model has %d × %d", lay.Layers, lay.KVHeads, len(lay.Slots), c.Layers, c.KVHeads)
			}
			want := SlotStreamed
			if budget.mode == OffloadNone {
				want = SlotResident
			}
			for i, p := range lay.Slots {
				if p != want {
					t.Fatalf("slot %d placed %d, want %d", i, p, want)
				}
			}

			prompt := []int32{1, 400, 30, 7, 99, 12} // two chunks of 4
			if err := se.Prefill(context.Background(), prompt, false); err != nil {
				t.Fatal(err)
			}
			id, _ := se.Argmax()
			if err := se.Decode(id, false); err != nil {
				t.Fatal(err)
			}
			var got []Event
			for range 3 {
				got = append(got, nextEvent(t, o))
			}
			wantKinds := []EventKind{EventPrefill, EventPrefill, EventDecode}
			wantTokens := []int{4, 2, 1}
			wantPos := []int{4, 6, 7}
			for i, e := range got {
				if e.Kind != wantKinds[i] || e.Tokens != wantTokens[i] || e.Positions != wantPos[i] || e.Session != open.Session {
					t.Fatalf("event %d: kind %d, %d tokens, %d positions, session %d; want kind %d, %d tokens, %d positions, session %d",
						i, e.Kind, e.Tokens, e.Positions, e.Session, wantKinds[i], wantTokens[i], wantPos[i], open.Session)
				}
				if e.Totals.Steps != i+1 {
					t.Fatalf("event %d: totals say %d steps, want %d", i, e.Totals.Steps, i+1)
				}
			}
			last := got[2].Totals
			if budget.mode == OffloadHead && (last.H2DBytes == 0 || got[0].Totals.H2DBytes == 0) {
				t.Fatalf("every slot streams but the events report %d bytes copied", last.H2DBytes)
			}
			if budget.mode == OffloadNone && last.H2DBytes != 0 {
				t.Fatalf("nothing streams but the events report %d bytes copied", last.H2DBytes)
			}
			if st := se.Stats(); !reflect.DeepEqual(st, last) {
				t.Fatalf("last event's totals %+v, session stats %+v", last, st)
			}
			se.Close()
			if e := nextEvent(t, o); e.Kind != EventClose || e.Session != open.Session {
				t.Fatalf("after Close: %+v, want EventClose of session %d", e, open.Session)
			}
		})
	}
	if o.Dropped() != 0 {
		t.Fatalf("%d events dropped with the reader keeping up", o.Dropped())
	}
}

// TestMonitorPause checks that a paused session waits before its next
// forward pass and goes on when resumed, and that publishing to a full
// channel drops instead of waiting.
func TestMonitorPause(t *testing.T) {
	o := NewMonitor()
	m := loadModel(t, filepath.Join(modelsDir(t), "stories260K.gguf"), Options{CtxSize: 256, Monitor: o})
	se, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer se.Close()
	nextEvent(t, o) // open
	if err := se.Prefill(context.Background(), []int32{1, 400}, false); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, o)

	o.SetPaused(true)
	done := make(chan error, 1)
	go func() { done <- se.Decode(7, false) }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		o.mu.Lock()
		held := o.holding
		o.mu.Unlock()
		if held == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the decode never reached the pause gate")
		}
		time.Sleep(time.Millisecond)
	}
	// The decode is at the gate: it has published nothing.
	select {
	case e := <-o.Events():
		t.Fatalf("event %+v while paused", e)
	case err := <-done:
		t.Fatalf("decode returned (%v) while paused", err)
	default:
	}
	o.SetPaused(false)
	if e := nextEvent(t, o); e.Kind != EventDecode || e.Positions != 3 {
		t.Fatalf("after resuming: %+v, want the decode at 3 positions", e)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Release ends the pause for good.
	o.Release()
	o.SetPaused(true)
	if o.Paused() {
		t.Fatal("paused after Release")
	}

	// A full channel drops events, counted, and the step goes on.
	for range MonitorBuffer {
		o.publish(Event{})
	}
	if err := se.Decode(9, false); err != nil {
		t.Fatal(err)
	}
	if o.Dropped() != 1 {
		t.Fatalf("%d events dropped, want 1", o.Dropped())
	}
}
