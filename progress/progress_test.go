package progress

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// exercise drives a bar through everything a caller does.
func exercise(b *Bar) {
	b.Describe("work")
	for i := int64(0); i <= 100; i += 10 {
		b.Set(i)
	}
	b.Clear()
	b.Set(1000) // past the total: clamped
	b.Finish()
	b.Stop()
}

// TestNotATerminalWritesNothing checks that files and pipes get no bar.
func TestNotATerminalWritesNothing(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, out := range []*os.File{f, w, nil} {
		b := New(out, 100, Options{Description: "x", Bytes: true})
		if b != nil {
			t.Errorf("New(%v) gave a bar on a non-terminal", out)
		}
		exercise(b) // a nil bar must be usable
	}
	w.Close()
	var piped bytes.Buffer
	piped.ReadFrom(r)
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 0 || piped.Len() != 0 {
		t.Errorf("wrote %d bytes to a file and %d to a pipe, want none", st.Size(), piped.Len())
	}
}

// TestDelay checks that a bar shows nothing while the work is younger
// than the delay, and shows once it is older.
func TestDelay(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := start
	now := func() time.Time { return clock }

	var quick bytes.Buffer
	b := newBar(&quick, 100, Options{Description: "upload", Bytes: true, Delay: time.Second}, now)
	clock = start.Add(900 * time.Millisecond)
	exercise(b)
	if quick.Len() != 0 {
		t.Errorf("work shorter than the delay drew %q", quick.String())
	}

	var slow bytes.Buffer
	clock = start
	b = newBar(&slow, 100, Options{Description: "upload", Unit: "tokens", Delay: time.Second}, now)
	b.Set(10)
	if slow.Len() != 0 {
		t.Errorf("drew %q before the delay", slow.String())
	}
	clock = start.Add(2 * time.Second)
	b.Set(50)
	b.Finish()
	out := slow.String()
	if !strings.Contains(out, "upload") || !strings.Contains(out, "100/100") || !strings.HasSuffix(out, "\n") {
		t.Errorf("bar after the delay = %q, want the description, 100/100 and a final newline", out)
	}
}

// TestBytes checks the byte bar shows sizes.
func TestBytes(t *testing.T) {
	var buf bytes.Buffer
	b := newBar(&buf, 3<<20, Options{Description: "model.gguf", Bytes: true}, time.Now)
	b.Set(1 << 20)
	b.Finish()
	if out := buf.String(); !strings.Contains(out, "MiB") || !strings.Contains(out, "model.gguf") {
		t.Errorf("byte bar = %q, want sizes in MiB and the description", out)
	}
	if newBar(&buf, 0, Options{}, time.Now) != nil {
		t.Error("a bar over nothing should be nil")
	}
}
