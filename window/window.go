//go:build window

// Package window is headinfer's live view of the engine at work: a glfw
// window whose frames, drawn on the CPU from the statistics the engine
// publishes (engine.Monitor), reach the screen through a Vulkan swapchain
// driven by vulkan-go on an instance and device of its own. It is built
// only with the build tag "window"; the headless binary has no X11, GL or
// window code in it.
package window

import (
	"errors"
	"fmt"
	"image"
	"image/png"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-gl/glfw/v3.3/glfw"

	"headinfer/engine"
)

func init() {
	// glfw must be called from the main thread: the main goroutine, which
	// runs init, stays on it.
	runtime.LockOSThread()
}

// Options configure a window.
type Options struct {
	// Title names the run in the window's title and header.
	Title string
	// Serve shows requests and the queue (Status) instead of generated
	// text.
	Serve bool
	// Width and Height are the window's size in pixels (0: 1024 × 640).
	Width, Height int
	// Frames, when positive, closes the window by itself once it has
	// presented that many frames and the run is over (tests, screenshots).
	Frames int
	// Capture, when set, is a PNG file that receives the last frame
	// presented, as read back from the swapchain image.
	Capture string
	// Validate runs the window's Vulkan instance under the Khronos
	// validation layer; any message makes Run fail.
	Validate bool
	// Log, when set, receives a line on what the window cost when it
	// closes.
	Log func(string)
	// Status, for Serve, returns the lines describing the queue and the
	// requests; it is called once per frame from the window's thread.
	Status func() []string
}

// frameInterval paces frames when nothing happens: the engine's events
// are read and a frame drawn at most this often.
const frameInterval = time.Second / 30

// Window is an open window. Open, Run and Close must be called from the
// main goroutine; Text and Done from any.
type Window struct {
	opt  Options
	win  *glfw.Window
	pres *presenter
	text textBox

	done   atomic.Bool
	runErr atomic.Pointer[error]
	mon    *engine.Monitor // set by Run

	// glfwMu orders Done's wake-up call before glfw's termination.
	glfwMu     sync.Mutex
	terminated bool
}

// Open creates the window and its swapchain. It fails, before anything
// else is loaded, when there is no display to open it on.
func Open(opt Options) (w *Window, err error) {
	if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
		return nil, errors.New("--window needs a display, and DISPLAY and WAYLAND_DISPLAY are unset: run it in a desktop session, or under xvfb-run")
	}
	if opt.Width <= 0 || opt.Height <= 0 {
		opt.Width, opt.Height = 1024, 640
	}
	if err := glfw.Init(); err != nil {
		return nil, fmt.Errorf("--window: cannot open the display: %w", err)
	}
	defer func() {
		if err != nil {
			glfw.Terminate()
		}
	}()
	if !glfw.VulkanSupported() {
		return nil, errors.New("--window: glfw found no Vulkan loader")
	}
	glfw.WindowHint(glfw.ClientAPI, glfw.NoAPI)
	glfw.WindowHint(glfw.Resizable, glfw.False)
	win, err := glfw.CreateWindow(opt.Width, opt.Height, "headinfer: "+opt.Title, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("--window: cannot create the window: %w", err)
	}
	pres, err := newPresenter(win, opt.Validate)
	if err != nil {
		win.Destroy()
		return nil, err
	}
	w = &Window{opt: opt, win: win, pres: pres}
	win.SetKeyCallback(w.onKey)
	return w, nil
}

// Device names the Vulkan device that presents the window.
func (w *Window) Device() string { return w.pres.gpuName }

// Text appends generated text to what the window shows. It is meant for
// one writer, the goroutine that generates.
func (w *Window) Text(s string) { w.text.add(s) }

// Done tells the window that the run is over, with its error.
func (w *Window) Done(err error) {
	if w.done.CompareAndSwap(false, true) {
		w.runErr.Store(&err)
		w.glfwMu.Lock()
		if !w.terminated {
			glfw.PostEmptyEvent() // wake the loop
		}
		w.glfwMu.Unlock()
	}
}

func (w *Window) onKey(_ *glfw.Window, key glfw.Key, _ int, action glfw.Action, _ glfw.ModifierKey) {
	if action != glfw.Press {
		return
	}
	switch key {
	case glfw.KeyEscape:
		w.win.SetShouldClose(true)
	case glfw.KeySpace:
		if w.mon != nil {
			w.mon.SetPaused(!w.mon.Paused())
		}
	}
}

// Run shows the engine's events from mon until the window is closed (Esc
// or the close button), the run ends with an error, or, with
// Options.Frames, enough frames were shown after the run ended. stop is
// called when the user ends the run; Run returns once the window is gone,
// with the validation messages of its instance as an error, if any.
func (w *Window) Run(mon *engine.Monitor, stop func()) error {
	w.mon = mon
	v := newView(w.opt.Title, w.opt.Serve)
	v.device = w.pres.gpuName
	size := w.pres.size()
	img := image.NewRGBA(image.Rectangle{Max: size})
	var shown uint64
	var lastKey frameKey
	var lastFrame time.Time
	var loopErr error
	events := mon.Events()
	for {
		glfw.WaitEventsTimeout(frameInterval.Seconds())
		if w.win.ShouldClose() {
			stop()
			break
		}
		// Done is read before the events, so that once it is seen every
		// event of the run is in the view.
		done := w.done.Load()
	drain:
		for {
			select {
			case e := <-events:
				v.apply(e)
			default:
				break drain
			}
		}
		if done {
			if err := *w.runErr.Load(); err != nil || w.opt.Serve {
				break // nothing left to watch
			}
			if w.opt.Frames > 0 && shown >= uint64(w.opt.Frames) {
				break
			}
		}
		// A frame that would show what the last one showed is skipped,
		// except once a second (the rate graph moves on): on a device
		// whose presentation runs on the CPU, as lavapipe's does, an idle
		// window then costs the engine nothing.
		now := time.Now()
		key := frameKey{events: v.events, paused: w.mon.Paused(), done: done, copying: v.copying(now), text: len(w.text.load())}
		if w.opt.Status != nil {
			key.status = strings.Join(w.opt.Status(), "\n")
		}
		if key == lastKey && now.Sub(lastFrame) < time.Second && (w.opt.Frames == 0 || shown >= uint64(w.opt.Frames)) {
			continue
		}
		lastKey, lastFrame = key, now
		if err := w.frame(v, img, false); err != nil {
			if errors.Is(err, errOutOfDate) {
				size = w.pres.size()
				img = image.NewRGBA(image.Rectangle{Max: size})
				continue
			}
			loopErr = err
			stop()
			break
		}
		shown++
	}
	if w.opt.Capture != "" && loopErr == nil {
		loopErr = w.capture(v, img)
	}
	if w.opt.Log != nil {
		w.opt.Log(v.summary())
	}
	return errors.Join(loopErr, w.close())
}

// frameKey is what decides whether a new frame would differ from the
// last one.
type frameKey struct {
	events                uint64
	paused, done, copying bool
	text                  int
	status                string
}

// frame draws the view and presents it.
func (w *Window) frame(v *view, img *image.RGBA, capture bool) error {
	_, err := w.drawAndPresent(v, img, capture)
	return err
}

func (w *Window) drawAndPresent(v *view, img *image.RGBA, capture bool) (*image.RGBA, error) {
	now := time.Now()
	v.paused = w.mon.Paused()
	v.done = w.done.Load()
	if v.done {
		v.phase = "done"
	}
	v.text = w.text.load()
	if w.opt.Serve {
		v.status = v.status[:0]
		if v.done {
			v.status = append(v.status, "the server has stopped")
		} else if w.opt.Status != nil {
			v.status = append(v.status, w.opt.Status()...)
		}
		v.status = append(v.status, v.sequenceLines(now)...)
	}
	v.dropped = w.mon.Dropped()
	t0 := time.Now()
	drawFrame(img, v, now)
	v.frameTime = time.Since(t0)
	v.drawTotal += v.frameTime
	v.frames++
	fw, fh := w.win.GetFramebufferSize()
	t1 := time.Now()
	shot, err := w.pres.present(img, capture, fw, fh)
	v.presTime = time.Since(t1)
	v.presTotal += v.presTime
	return shot, err
}

// Summary is one line on what the window cost: frames shown and the time
// spent drawing and presenting them, for the log.
func (v *view) summary() string {
	if v.frames == 0 {
		return "window: no frame shown"
	}
	n := float64(v.frames)
	return fmt.Sprintf("window: %d frames on %s, %.2f ms drawing and %.2f ms presenting each on average",
		v.frames, v.device, v.drawTotal.Seconds()*1e3/n, v.presTotal.Seconds()*1e3/n)
}

// capture presents one more frame, copying it back from the swapchain
// image, and writes it as a PNG.
func (w *Window) capture(v *view, img *image.RGBA) error {
	var shot *image.RGBA
	var err error
	for try := 0; try < 3; try++ {
		if shot, err = w.drawAndPresent(v, img, true); !errors.Is(err, errOutOfDate) {
			break
		}
		img = image.NewRGBA(image.Rectangle{Max: w.pres.size()})
	}
	if err != nil {
		return err
	}
	f, err := os.Create(w.opt.Capture)
	if err != nil {
		return err
	}
	if err := png.Encode(f, shot); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// close destroys the swapchain, the window and the instance, and reports
// validation messages.
func (w *Window) close() error {
	w.pres.close()
	w.win.Destroy()
	w.glfwMu.Lock()
	glfw.Terminate()
	w.terminated = true
	w.glfwMu.Unlock()
	if !w.opt.Validate {
		return nil
	}
	if msgs := validationMessages(); len(msgs) > 0 {
		return fmt.Errorf("window: %d validation messages:\n%s", len(msgs), strings.Join(msgs, "\n"))
	}
	return nil
}
