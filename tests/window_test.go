package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"image/color"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The colours of the window's slot map (window/draw.go, and the legend in
// the README): a one-pixel frame around the grid, and one colour per
// placement.
var (
	slotFrame    = color.RGBA{90, 96, 110, 255}
	slotResident = color.RGBA{60, 179, 113, 255}
	slotStreamed = color.RGBA{70, 130, 220, 255}
)

// The window's default size.
const windowW, windowH = 1024, 640

var (
	windowOnce   sync.Once
	windowBinary string
	windowErr    error
)

// buildWindow builds the binary with the window (build tag "window") once.
func buildWindow(t *testing.T) string {
	t.Helper()
	windowOnce.Do(func() {
		windowBinary = filepath.Join(filepath.Dir(binary), "headinfer-window")
		cmd := exec.Command("go", "build", "-tags", "window", "-o", windowBinary, "..")
		out, err := cmd.CombinedOutput()
		if err != nil {
			windowErr = fmt.Errorf("go build -tags window: %v\n%s", err, out)
		}
	})
	if windowErr != nil {
		t.Fatal(windowErr)
	}
	return windowBinary
}

// xvfbRun is the path of xvfb-run; its absence fails the test (make test
// installs it through scripts/deps.sh).
func xvfbRun(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("xvfb-run")
	if err != nil {
		t.Fatal("xvfb-run not found: the window tests need it (scripts/deps.sh installs xvfb)")
	}
	return p
}

// TestHeadlessBinaryLinksNoDisplayLibrary checks that the default build
// has no X11 or GL library in it, and that the same check does see them in
// the windowed build.
func TestHeadlessBinaryLinksNoDisplayLibrary(t *testing.T) {
	display := regexp.MustCompile(`(?im)^\s*(lib(X11|xcb|Xrandr|Xcursor|Xinerama|Xi|Xxf86vm|GL|GLX|EGL|glfw|wayland)[\w-]*\.so[^\s]*)`)
	ldd := func(bin string) []string {
		out, err := exec.Command("ldd", bin).CombinedOutput()
		if err != nil {
			t.Fatalf("ldd %s: %v\n%s", bin, err, out)
		}
		var libs []string
		for _, m := range display.FindAllStringSubmatch(string(out), -1) {
			libs = append(libs, m[1])
		}
		return libs
	}
	if libs := ldd(binary); len(libs) > 0 {
		t.Errorf("the headless binary links display libraries: %v", libs)
	}
	if libs := ldd(buildWindow(t)); !slices.ContainsFunc(libs, func(l string) bool { return strings.HasPrefix(l, "libX11") }) {
		t.Errorf("the windowed binary links no libX11 (found %v): the check above cannot see what it looks for", libs)
	}
}

// TestWindowFlagWithoutWindowBuild checks that the headless binary says
// how to get the window.
func TestWindowFlagWithoutWindowBuild(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	_, stderr, err := run(t, "generate", "-m", model, "-p", "hi", "--window")
	if err == nil || !strings.Contains(stderr, "make build-window") {
		t.Fatalf("generate --window in the headless build: err %v, stderr %q; want an error naming make build-window", err, stderr)
	}
}

// TestWindowWithoutDisplay checks that the windowed binary fails, before
// loading anything, when there is no display.
func TestWindowWithoutDisplay(t *testing.T) {
	bin := buildWindow(t)
	cmd := exec.Command(bin, "generate", "-m", filepath.Join(t.TempDir(), "missing.gguf"), "-p", "hi", "--window")
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "DISPLAY=") || strings.HasPrefix(kv, "WAYLAND_DISPLAY=")
	})
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("no error without a display:\n%s", out)
	}
	// The model does not exist: an error about it would mean it was
	// opened before the display was checked.
	if !strings.Contains(string(out), "DISPLAY") || strings.Contains(string(out), "missing.gguf") {
		t.Fatalf("want an error about the display, before the model is opened; got:\n%s", out)
	}
}

// planResident is the resident KV heads per layer that `plan --json`
// reports for args.
func planResident(t *testing.T, args ...string) (resident []int, kvHeads int) {
	t.Helper()
	stdout, stderr, err := run(t, append([]string{"plan", "--json"}, args...)...)
	if err != nil {
		t.Fatalf("plan: %v\n%s", err, stderr)
	}
	var p struct {
		Slots         int   `json:"slots"`
		ResidentHeads []int `json:"resident_heads"`
	}
	if err := json.Unmarshal([]byte(stdout), &p); err != nil {
		t.Fatalf("plan --json: %v\n%s", err, stdout)
	}
	if len(p.ResidentHeads) == 0 || p.Slots%len(p.ResidentHeads) != 0 {
		t.Fatalf("plan --json: %d slots over %d layers", p.Slots, len(p.ResidentHeads))
	}
	return p.ResidentHeads, p.Slots / len(p.ResidentHeads)
}

// checkSlotMap finds the slot map in a captured frame by its frame colour
// and checks the colour at the centre of every cell against the plan:
// KV heads 0 … resident[l]−1 of layer l resident, the others streamed.
func checkSlotMap(t *testing.T, path string, resident []int, kvHeads int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("no capture: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	b := img.Bounds()
	if b.Dx() != windowW || b.Dy() != windowH {
		t.Fatalf("capture is %d × %d, the window %d × %d", b.Dx(), b.Dy(), windowW, windowH)
	}
	at := func(x, y int) color.RGBA { return color.RGBAModel.Convert(img.At(x, y)).(color.RGBA) }
	x0, y0, x1, y1 := b.Max.X, b.Max.Y, -1, -1
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if at(x, y) == slotFrame {
				x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x), max(y1, y)
			}
		}
	}
	if x1 < 0 {
		t.Fatal("the capture has no slot map (no pixel of its frame colour)")
	}
	layers := len(resident)
	w, h := float64(x1-x0-1), float64(y1-y0-1)
	for l := range layers {
		for hd := range kvHeads {
			x := x0 + 1 + int((float64(hd)+0.5)*w/float64(kvHeads))
			y := y0 + 1 + int((float64(l)+0.5)*h/float64(layers))
			want, name := slotStreamed, "streamed"
			if hd < resident[l] {
				want, name = slotResident, "resident"
			}
			if got := at(x, y); got != want {
				t.Errorf("slot (layer %d, KV head %d) at (%d, %d) is %v, want %s %v", l, hd, x, y, got, name, want)
			}
		}
	}
}

// TestWindowGenerate runs generate --window under Xvfb for three plans
// (every head streamed, every head resident, a mix) and checks the
// captured frame against the plan and the generated ids against a run
// without the window.
func TestWindowGenerate(t *testing.T) {
	bin, xvfb := buildWindow(t), xvfbRun(t)
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	for _, tc := range []struct {
		name string
		plan []string
	}{
		{"head", []string{"--offload", "head"}},
		{"none", []string{"--offload", "none"}},
		// Room for the weights, activations and streaming buffers and one
		// or two 64 KiB slots: layer 0 has resident heads, the rest stream.
		// (The automatic chunk would take that room for its activations.)
		{"mixed", []string{"--gpu-mem", "5400KiB", "--chunk", "512"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			common := append([]string{"-m", model, "-c", "2048"}, tc.plan...)
			resident, kvHeads := planResident(t, common...)
			if tc.name == "mixed" {
				if resident[0] == 0 || resident[len(resident)-1] == kvHeads {
					t.Fatalf("the mixed budget gives resident heads %v of %d: not a mix", resident, kvHeads)
				}
			}
			gen := append([]string{"generate", "-p", "Once upon a time", "-n", "24", "--temp", "0", "--json"}, common...)
			stdout, stderr, err := run(t, gen...)
			if err != nil {
				t.Fatalf("generate: %v\n%s", err, stderr)
			}
			var plain generateOutput
			if err := json.Unmarshal([]byte(stdout), &plain); err != nil {
				t.Fatal(err)
			}

			capture := filepath.Join(t.TempDir(), "frame.png")
			args := append([]string{"-a", bin}, gen...)
			args = append(args, "--window", "--window-frames", "3", "--window-capture", capture, "--window-validate")
			cmd := exec.Command(xvfb, args...)
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			if err := cmd.Run(); err != nil {
				t.Fatalf("generate --window under Xvfb: %v\n%s", err, errb.String())
			}
			var windowed generateOutput
			if err := json.Unmarshal(out.Bytes(), &windowed); err != nil {
				t.Fatalf("generate --window --json: %v\n%s", err, out.String())
			}
			if len(plain.IDs) == 0 || !slices.Equal(windowed.IDs, plain.IDs) {
				t.Errorf("ids with the window %v, without %v", windowed.IDs, plain.IDs)
			}
			checkSlotMap(t, capture, resident, kvHeads)
			if t.Failed() {
				t.Logf("stderr:\n%s", errb.String())
			}
		})
	}
}

// TestWindowServe runs serve --window under Xvfb, answers a request, stops
// it with SIGINT as a user would, and checks that it exits cleanly with
// the capture of its last frame.
func TestWindowServe(t *testing.T) {
	bin, xvfb := buildWindow(t), xvfbRun(t)
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	dir := t.TempDir()
	capture, pidFile := filepath.Join(dir, "serve.png"), filepath.Join(dir, "pid")
	// The shell writes its pid and becomes the server, so that SIGINT
	// reaches the server and not Xvfb.
	cmd := exec.Command(xvfb, "-a", "sh", "-c", `echo $$ > "$0"; exec "$@"`, pidFile,
		bin, "serve", "--port", "0", "-m", model, "-c", "512", "--offload", "head",
		"--window", "--window-capture", capture, "--window-validate")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	log := &lockedBuffer{}
	addr := make(chan string, 1)
	exit := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			log.add(sc.Text())
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
		exit <- cmd.Wait()
	}()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("server log:\n%s", log.String())
		}
	}()
	var url string
	select {
	case a := <-addr:
		url = "http://" + a
	case err := <-exit:
		t.Fatalf("serve --window exited: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("serve --window did not say where it listens")
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not become ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
	body := `{"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}`
	resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("completion: status %d", resp.StatusCode)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exit:
		if err != nil {
			t.Fatalf("serve --window after SIGINT: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("serve --window did not stop on SIGINT")
	}
	if l := log.String(); strings.Contains(l, "panic") || !strings.Contains(l, "shutting down") {
		t.Fatalf("want a clean shutdown in the log")
	}
	resident, kvHeads := planResident(t, "-m", model, "-c", "512", "--offload", "head")
	checkSlotMap(t, capture, resident, kvHeads)
}

// TestWindowKeys presses Space (pause) and then Esc in the window of a long
// generate under Xvfb (xdotool): paused at the gate or not, the run must
// end cleanly, with the text generated so far and far fewer tokens than
// asked for. (That a pause holds the forward passes is TestMonitorPause's
// in the engine.)
func TestWindowKeys(t *testing.T) {
	bin, xvfb := buildWindow(t), xvfbRun(t)
	xdotool, err := exec.LookPath("xdotool")
	if err != nil {
		t.Fatal("xdotool not found: the window key test needs it (scripts/deps.sh installs it)")
	}
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	envFile := filepath.Join(t.TempDir(), "display")
	// The shell tells the test which display and X authority the binary
	// uses, so that xdotool can reach its window.
	cmd := exec.Command(xvfb, "-a", "sh", "-c", `echo "$DISPLAY" "$XAUTHORITY" > "$0.tmp" && mv "$0.tmp" "$0"; exec "$@"`, envFile,
		bin, "generate", "-m", model, "-c", "2048", "-n", "2000", "--temp", "0", "-p", "Once upon a time",
		"--window", "--window-validate")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out := &lockedBuffer{}
	first := make(chan struct{})
	exit := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		once := sync.Once{}
		for {
			n, err := stdout.Read(buf)
			if n > 0 {
				out.add(string(buf[:n]))
				once.Do(func() { close(first) })
			}
			if err != nil {
				break
			}
		}
		exit <- cmd.Wait()
	}()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("stderr:\n%s", errb.String())
		}
	}()
	select {
	case <-first: // generating: the window is up and the model loaded
	case err := <-exit:
		t.Fatalf("generate --window exited before generating: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("no text from generate --window")
	}
	b, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Fields(string(b))
	if len(env) != 2 {
		t.Fatalf("display and X authority: %q", b)
	}
	xdo := func(args ...string) string {
		c := exec.Command(xdotool, args...)
		c.Env = append(os.Environ(), "DISPLAY="+env[0], "XAUTHORITY="+env[1])
		o, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("xdotool %v: %v\n%s", args, err, o)
		}
		return strings.TrimSpace(string(o))
	}
	ids := strings.Fields(xdo("search", "--name", "headinfer: generate"))
	if len(ids) == 0 {
		t.Fatal("xdotool found no window")
	}
	xdo("key", "--window", ids[0], "space")
	// Only the press: the window may be gone before a release could
	// reach it.
	xdo("keydown", "--window", ids[0], "Escape")
	select {
	case err := <-exit:
		if err != nil {
			t.Fatalf("after Space and Esc: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("generate --window did not end on Esc")
	}
	m := regexp.MustCompile(`decode: (\d+) tokens`).FindStringSubmatch(errb.String())
	if m == nil {
		t.Fatalf("no summary line after Esc")
	}
	if n, _ := strconv.Atoi(m[1]); n >= 1999 {
		t.Fatalf("decoded %d tokens: Esc did not end the run", n)
	}
	if out.String() == "" {
		t.Fatal("no text printed")
	}
}
