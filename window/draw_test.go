package window

import (
	"image"
	"strings"
	"testing"
	"time"

	"headinfer/engine"
)

// slotColours finds the slot map by its frame and reads the colour at
// the centre of each of its rows × cols cells (as tests/window_test.go
// does on a captured frame).
func slotColours(t *testing.T, img *image.RGBA, rows, cols int) [][]engine.Placement {
	t.Helper()
	b := img.Rect
	x0, y0, x1, y1 := b.Max.X, b.Max.Y, -1, -1
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if img.RGBAAt(x, y) == colSlotFrame {
				x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x), max(y1, y)
			}
		}
	}
	if x1 < 0 {
		t.Fatal("no slot map frame in the image")
	}
	w, h := float64(x1-x0-1), float64(y1-y0-1)
	out := make([][]engine.Placement, rows)
	for r := range rows {
		for c := range cols {
			x := x0 + 1 + int((float64(c)+0.5)*w/float64(cols))
			y := y0 + 1 + int((float64(r)+0.5)*h/float64(rows))
			got := img.RGBAAt(x, y)
			p := -1
			for i, col := range colSlot {
				if col == got {
					p = i
				}
			}
			if p < 0 {
				t.Fatalf("cell (%d, %d) at (%d, %d) has colour %v, no placement's", r, c, x, y, got)
			}
			out[r] = append(out[r], engine.Placement(p))
		}
	}
	return out
}

func TestSlotMapShowsPlacement(t *testing.T) {
	for _, g := range []struct{ layers, heads, w, h int }{
		{5, 4, 1024, 640}, {32, 8, 1024, 640}, {80, 8, 1024, 640}, {22, 4, 800, 500}, {1, 1, 640, 400},
	} {
		lay := &engine.Layout{Layers: g.layers, KVHeads: g.heads, Slots: make([]engine.Placement, g.layers*g.heads)}
		for i := range lay.Slots {
			if (i*7)%3 == 0 {
				lay.Slots[i] = engine.SlotStreamed
			}
		}
		v := newView("test", false)
		now := time.Now()
		v.apply(engine.Event{Kind: engine.EventOpen, Session: 1, Time: now, Layout: lay})
		// A pass that copied KV, so that streamed cells are outlined too.
		v.apply(engine.Event{Kind: engine.EventDecode, Session: 1, Time: now, Tokens: 1, Took: time.Millisecond,
			Totals: engine.Stats{H2DBytes: 1 << 20}})
		if !v.copying(now) {
			t.Fatal("a pass that copied KV just ended, but the view does not show copying")
		}
		img := image.NewRGBA(image.Rect(0, 0, g.w, g.h))
		drawFrame(img, v, now)
		got := slotColours(t, img, g.layers, g.heads)
		for l := range g.layers {
			for h := range g.heads {
				if want := lay.Slots[l*g.heads+h]; got[l][h] != want {
					t.Fatalf("%d × %d at %d × %d: slot (%d, %d) drawn as %d, placed %d", g.layers, g.heads, g.w, g.h, l, h, got[l][h], want)
				}
			}
		}
	}
}

func TestViewRates(t *testing.T) {
	v := newView("test", false)
	t0 := time.Unix(1_000_000, 0)
	v.apply(engine.Event{Kind: engine.EventOpen, Session: 1, Time: t0, Layout: &engine.Layout{}})
	v.apply(engine.Event{Kind: engine.EventPrefill, Session: 1, Time: t0, Tokens: 100, Took: 500 * time.Millisecond,
		Totals: engine.Stats{H2DBytes: 1000}})
	// An event was dropped here: its bytes arrive with the next one.
	v.apply(engine.Event{Kind: engine.EventDecode, Session: 1, Time: t0.Add(2 * time.Second), Tokens: 1, Took: 10 * time.Millisecond,
		Totals: engine.Stats{H2DBytes: 1300}})
	v.apply(engine.Event{Kind: engine.EventDecode, Session: 1, Time: t0.Add(3 * time.Second), Tokens: 1, Took: 30 * time.Millisecond,
		Totals: engine.Stats{H2DBytes: 1400}})
	s := v.rates(t0.Add(10 * time.Second))
	if s.prefillTok != 100 || s.decodeTok != 2 || s.prefillT != 500*time.Millisecond || s.decodeT != 40*time.Millisecond || s.h2d != 1400 {
		t.Fatalf("last minute: %+v", s)
	}
	pre, dec := v.history(t0.Add(10 * time.Second))
	if pre[rateWindow-11] != 100 || dec[rateWindow-9] != 1 || dec[rateWindow-8] != 1 {
		t.Fatalf("history: prefill %v, decode %v", pre, dec)
	}
	// A minute later, it is all gone.
	if s := v.rates(t0.Add(70 * time.Second)); s != (second{}) {
		t.Fatalf("a minute later: %+v", s)
	}
	v.apply(engine.Event{Kind: engine.EventClose, Session: 1})
	if len(v.seqs) != 0 || len(v.order) != 0 {
		t.Fatal("closed session still listed")
	}
}

func TestWrapAndTextBox(t *testing.T) {
	lines := wrap("one two three\nfour fivesixseveneight", 8)
	want := []string{"one two ", "three", "four ", "fivesixs", "eveneigh", "t"}
	if strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Fatalf("wrap: %q, want %q", lines, want)
	}
	var b textBox
	for range 3000 {
		b.add("word ")
	}
	s := b.load()
	if len(s) > textKeep || !strings.HasPrefix(s, "word ") || !strings.HasSuffix(s, "word ") {
		t.Fatalf("kept %d bytes, starting %q", len(s), s[:min(len(s), 12)])
	}
}
