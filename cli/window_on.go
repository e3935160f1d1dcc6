//go:build window

package cli

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/urfave/cli/v2"

	"headinfer/engine"
	"headinfer/window"
)

// withWindow runs body with the live view when --window is given: the
// window opens first (so that a missing display fails before anything is
// loaded), body runs on another goroutine, and the window's loop keeps
// the main one until the window closes.
func withWindow(c *cli.Context, title string, serve bool, body func(liveView) error) error {
	if !c.Bool("window") {
		if c.IsSet("window-frames") || c.IsSet("window-capture") || c.Bool("window-validate") {
			return errors.New("--window-frames, --window-capture and --window-validate need --window")
		}
		return body(headless())
	}
	if c.Int("window-frames") < 0 {
		return fmt.Errorf("--window-frames must be ≥ 0")
	}
	status := new(atomic.Pointer[func() []string])
	win, err := window.Open(window.Options{
		Title:    title,
		Serve:    serve,
		Frames:   c.Int("window-frames"),
		Capture:  c.String("window-capture"),
		Validate: c.Bool("window-validate"),
		Log:      func(s string) { fmt.Fprintln(c.App.ErrWriter, s) },
		Status: func() []string {
			if f := status.Load(); f != nil {
				return (*f)()
			}
			return nil
		},
	})
	if err != nil {
		return err
	}
	mon := engine.NewMonitor()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lv := liveView{monitor: mon, text: win.Text, ctx: ctx, status: status}
	done := make(chan error, 1)
	go func() {
		err := body(lv)
		win.Done(err)
		done <- err
	}()
	werr := win.Run(mon, func() {
		cancel()
		mon.Release()
	})
	// However the window ended, the run ends too.
	cancel()
	mon.Release()
	return errors.Join(<-done, werr)
}
