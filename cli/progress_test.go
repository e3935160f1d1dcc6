//go:build linux

package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"headinfer/engine"
)

// openPTY opens a pseudo-terminal: what is written to tty can be read
// from master.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("no pseudo-terminal: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return master, tty
}

// feed reports a load of 3 MiB in three steps and a prefill of three
// chunks, as the engine does.
func feed(b *engineBars) {
	for i := int64(1); i <= 3; i++ {
		b.report(engine.Progress{Work: engine.ProgressLoad, Done: i << 20, Total: 3 << 20})
	}
	b.done()
	for k := 1; k <= 3; k++ {
		b.report(engine.Progress{Work: engine.ProgressPrefill, Done: int64(100 * k), Total: 300, Chunk: k, Chunks: 3})
	}
}

// TestEngineBars checks that the engine's reports draw bars on a
// terminal, and nothing on a pipe or when prefill bars are off.
func TestEngineBars(t *testing.T) {
	defer func(d time.Duration) { barDelay = d }(barDelay)
	barDelay = 0

	master, tty := openPTY(t)
	defer master.Close()
	feed(&engineBars{f: tty, prefill: true})
	tty.Close()
	var term bytes.Buffer
	io.Copy(&term, master) // ends with EIO once the terminal side is closed
	out := term.String()
	for _, want := range []string{"loading weights", "3.0 MiB", "prefill chunk 3/3", "300/300", "tokens/s"} {
		if !strings.Contains(out, want) {
			t.Errorf("terminal shows %q, want %q in it", out, want)
		}
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	feed(&engineBars{f: w, prefill: true})
	w.Close()
	var piped bytes.Buffer
	io.Copy(&piped, r)
	if piped.Len() != 0 {
		t.Errorf("wrote %q to a pipe", piped.String())
	}

	master, tty = openPTY(t)
	defer master.Close()
	b := &engineBars{f: tty, prefill: false}
	for k := 1; k <= 3; k++ {
		b.report(engine.Progress{Work: engine.ProgressPrefill, Done: int64(100 * k), Total: 300, Chunk: k, Chunks: 3})
	}
	tty.Close()
	term.Reset()
	io.Copy(&term, master)
	if term.Len() != 0 {
		t.Errorf("prefill bars off, yet the terminal shows %q", term.String())
	}
}
