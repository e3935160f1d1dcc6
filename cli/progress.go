package cli

import (
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"headinfer/engine"
	"headinfer/progress"
)

// barDelay is how long work runs before its bar shows, so that quick
// loads and prefills leave no trace (a variable for tests).
var barDelay = time.Second

// barFile is the file progress bars may go to (progress.New draws only on
// a terminal): stderr, unless the command was asked for --json or its
// stderr is not a file.
func barFile(c *cli.Context) *os.File {
	f, ok := c.App.ErrWriter.(*os.File)
	if !ok || c.Bool("json") {
		return nil
	}
	return f
}

// engineBars draws the engine's progress reports: the weight upload of a
// load and, when prefill is set, prefills of more than one chunk.
type engineBars struct {
	f       *os.File
	prefill bool
	work    string
	bar     *progress.Bar
}

// report is the engine.Options.Progress callback.
func (b *engineBars) report(p engine.Progress) {
	if p.Work == engine.ProgressPrefill && !b.prefill {
		return
	}
	if p.Work != b.work {
		b.bar.Finish()
		b.work, b.bar = p.Work, nil
		o := progress.Options{Description: "loading weights", Bytes: true, Delay: barDelay}
		if p.Work == engine.ProgressPrefill {
			o = progress.Options{Unit: "tokens", Delay: barDelay}
		}
		b.bar = progress.New(b.f, p.Total, o)
	}
	if p.Work == engine.ProgressPrefill {
		b.bar.Describe(workText(p))
	}
	b.bar.Set(p.Done)
	if p.Done >= p.Total {
		b.done()
	}
}

// workText says where a piece of long work stands, for a bar's
// description.
func workText(p engine.Progress) string {
	if p.Work == engine.ProgressPrefill {
		return fmt.Sprintf("prefill chunk %d/%d", p.Chunk, p.Chunks)
	}
	return fmt.Sprintf("%s %d%%", p.Work, 100*p.Done/max(p.Total, 1))
}

// done fills and ends the bar in progress, if any.
func (b *engineBars) done() {
	b.bar.Finish()
	b.work, b.bar = "", nil
}

// stop ends the bar in progress where it is (the work failed).
func (b *engineBars) stop() {
	b.bar.Stop()
	b.work, b.bar = "", nil
}
