// Package progress draws a progress bar for long work (downloads, weight
// uploads, long prefills, benchmark sweeps) on a terminal, and nothing
// anywhere else: output that goes to a file or a pipe stays as it was.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Options describe what a bar counts.
type Options struct {
	// Description is shown before the bar.
	Description string
	// Bytes counts bytes: sizes and the rate in B/s, with an ETA.
	// Otherwise the bar counts Unit, with the rate in Unit per second.
	Bytes bool
	// Unit names what is counted when not Bytes ("tokens", "runs").
	Unit string
	// Delay keeps the bar hidden until the work has taken this long, so
	// that work that ends quickly leaves no trace.
	Delay time.Duration
}

// Bar is one task's progress. A nil *Bar is valid and draws nothing: New
// returns nil when the output is not a terminal, so that callers need not
// check.
type Bar struct {
	pb    *progressbar.ProgressBar
	gate  *gate
	total int64
}

// New starts a bar over total units drawn on f, or returns nil when f is
// not a terminal (or TERM is "dumb").
func New(f *os.File, total int64, o Options) *Bar {
	if f == nil || !term.IsTerminal(int(f.Fd())) || os.Getenv("TERM") == "dumb" {
		return nil
	}
	return newBar(f, total, o, time.Now)
}

// newBar draws on any writer; now is the clock the delay is measured
// with (tests pass their own).
func newBar(w io.Writer, total int64, o Options, now func() time.Time) *Bar {
	if total <= 0 {
		return nil
	}
	g := &gate{w: w, now: now, from: now().Add(o.Delay)}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(g),
		progressbar.OptionSetDescription(o.Description),
		progressbar.OptionSetWidth(24),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionShowCount(),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(g) }),
	}
	if o.Bytes {
		opts = append(opts, progressbar.OptionShowBytes(true), progressbar.OptionUseIECUnits(true))
	} else {
		opts = append(opts, progressbar.OptionShowIts())
		if o.Unit != "" {
			opts = append(opts, progressbar.OptionSetItsString(o.Unit))
		}
	}
	return &Bar{pb: progressbar.NewOptions64(total, opts...), gate: g, total: total}
}

// Set moves the bar to n units done.
func (b *Bar) Set(n int64) {
	if b == nil {
		return
	}
	b.pb.Set64(min(max(n, 0), b.total))
}

// Describe changes the text before the bar.
func (b *Bar) Describe(s string) {
	if b != nil {
		b.pb.Describe(s)
	}
}

// Clear erases the bar from its line, so that a line of other output can
// be written there; the next Set draws it again below.
func (b *Bar) Clear() {
	if b != nil {
		b.pb.Clear()
	}
}

// Finish fills the bar and ends its line.
func (b *Bar) Finish() {
	if b != nil && !b.pb.IsFinished() {
		b.pb.Finish()
	}
}

// Stop ends the bar where it is (the work failed or was cancelled),
// ending its line if it was drawn.
func (b *Bar) Stop() {
	if b != nil && !b.pb.IsFinished() {
		b.pb.Exit()
	}
}

// gate passes writes through once the delay has passed and drops them
// before. The bar behind it keeps its rate and ETA from the real start.
type gate struct {
	mu   sync.Mutex
	w    io.Writer
	now  func() time.Time
	from time.Time
	open bool
}

func (g *gate) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.open {
		if g.now().Before(g.from) {
			return len(p), nil
		}
		g.open = true
	}
	return g.w.Write(p)
}
