package cli

import (
	"context"
	"sync/atomic"

	"github.com/urfave/cli/v2"

	"headinfer/engine"
)

// windowFlags are the flags of the live view (generate and serve). They
// exist in every build, so that a headless binary given --window can say
// how to get one that has it.
func windowFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "window", Usage: "show the engine at work in a window: KV slot map, device memory, tokens/s, text (Space pauses, Esc ends the run; needs a binary built with `make build-window`)"},
		&cli.IntFlag{Name: "window-frames", Usage: "close the window by itself after this many frames, once the run is over (0 = when closed)"},
		&cli.StringFlag{Name: "window-capture", Usage: "write the window's last frame, read back from the swapchain, to this PNG file"},
		&cli.BoolFlag{Name: "window-validate", Usage: "run the window's Vulkan instance under the Khronos validation layer and fail on any message"},
	}
}

// liveView is what a command tells the window, when it has one. The zero
// value is the headless run: no monitor, text goes nowhere, ctx never
// ends.
type liveView struct {
	// monitor is given to the model's options; nil without a window.
	monitor *engine.Monitor
	// text receives generated text.
	text func(string)
	// ctx ends when the user closes the window.
	ctx context.Context
	// status is set by serve, before it serves, to what describes the
	// queue and the running request; the window reads it every frame.
	status *atomic.Pointer[func() []string]
}

func headless() liveView {
	return liveView{text: func(string) {}, ctx: context.Background(), status: new(atomic.Pointer[func() []string])}
}

// loadModel is the command's loadModel, publishing to the view's
// monitor.
func (lv liveView) loadModel(c *cli.Context, path string, prefillBars bool) (*engine.Model, error) {
	opt, err := modelOptions(c)
	if err != nil {
		return nil, err
	}
	opt.Monitor = lv.monitor
	return loadWithBars(c, path, opt, prefillBars)
}
