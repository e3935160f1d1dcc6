//go:build !window

package cli

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// withWindow runs body headless; --window is an error in this build.
func withWindow(c *cli.Context, _ string, _ bool, body func(liveView) error) error {
	if c.Bool("window") || c.IsSet("window-frames") || c.IsSet("window-capture") || c.Bool("window-validate") {
		return errors.New("this headinfer was built without the window: build it with `make build-window` (or `go build -tags window`), which needs the X11 development packages that scripts/deps.sh installs")
	}
	return body(headless())
}
