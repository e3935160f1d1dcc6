package offload

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"headinfer/vk"
	"headinfer/vk/vktest"
)

// TestProgramStreamsInOrder streams blocks of a host buffer through two
// device buffers into an output buffer, the way attention consumes KV
// blocks, and checks that every block arrives intact: a wrong wait or
// signal lets a copy overwrite a buffer before its reader is done (or
// deadlocks, which the timeout catches). Programs of different lengths,
// pipelined and fused, share a clock and run in turns, with fresh host
// data each time, at step lengths that skip trailing blocks: a skipped
// block leaves its part of the output as the fill wrote it.
func TestProgramStreamsInOrder(t *testing.T) {
	d := vktest.Device(t)
	const block = 4096 + 12 // bytes; not a power of two
	alloc := func(kind vk.MemoryKind, size int, label string) *vk.Buffer {
		b, err := d.Alloc(kind, uint64(size), label)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Free)
		return b
	}
	const most = 7
	host := alloc(vk.Upload, most*block, "host blocks")
	bufs := [2]*vk.Buffer{alloc(vk.DeviceLocal, block, "stream 0"), alloc(vk.DeviceLocal, block, "stream 1")}
	out := alloc(vk.DeviceLocal, most*block, "out")
	back := alloc(vk.Readback, most*block, "readback")
	clock, err := NewClock(d)
	if err != nil {
		t.Fatal(err)
	}
	defer clock.Free()

	record := func(blocks int, pipelined bool) *Program {
		p := NewProgram(d, true, pipelined)
		c, err := p.Compute()
		if err != nil {
			t.Fatal(err)
		}
		c.Fill(out.All(), 0xdeadbeef)
		for j := 0; j < blocks; j++ {
			src := host.Range(uint64(j*block), block)
			k, err := p.Stream(j*100, func(c *vk.Commands) { c.Copy(bufs[p.Blocks()%2].All(), src) }, block)
			if err != nil {
				t.Fatal(err)
			}
			if k != j {
				t.Fatalf("block %d got index %d", j, k)
			}
			a, err := p.Attend(j)
			if err != nil {
				t.Fatal(err)
			}
			a.Copy(out.Range(uint64(j*block), block), bufs[j%2].All())
			if j == 2 {
				// A plain compute segment between attention segments.
				if _, err := p.Compute(); err != nil {
					t.Fatal(err)
				}
			}
		}
		c, err = p.Compute()
		if err != nil {
			t.Fatal(err)
		}
		c.Barrier()
		c.Copy(back.All(), out.All())
		if err := p.End(); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Pipelined programs of two lengths and a fused one share the clock.
	progs := []*Program{record(most, true), record(3, true), record(5, false)}
	for _, p := range progs {
		defer p.Free()
	}
	if progs[0].Blocks() != most {
		t.Fatalf("program records %d blocks", progs[0].Blocks())
	}
	r := rand.New(rand.NewPCG(1, 2))
	for run := 0; run < 12; run++ {
		p := progs[run%3]
		// Lengths 1 (block 0 only), 301 (blocks 0–3), 700 (all).
		length := []int{700, 1, 301, 700}[run/3]
		blocks := min(p.Blocks(), (length+99)/100)
		data := host.Bytes()
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		done := make(chan error, 1)
		var st RunStats
		go func() {
			var err error
			st, err = p.Run(clock, length)
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			// A deadlocked queue cannot be released (the semaphores only
			// count up), and freeing its commands would wait forever.
			fmt.Fprintf(os.Stderr, "--- FAIL: TestProgramStreamsInOrder: run %d did not finish: a wait names a value nothing signals first\n", run)
			os.Exit(1)
		}
		n := blocks * block
		if got := back.Bytes()[:n]; !bytes.Equal(got, data[:n]) {
			i := 0
			for got[i] == data[i] {
				i++
			}
			t.Fatalf("run %d: byte %d (block %d) is %#x, want %#x", run, i, i/block, got[i], data[i])
		}
		fill := []byte{0xef, 0xbe, 0xad, 0xde}
		for i := n; i < most*block; i++ {
			if back.Bytes()[i] != fill[i%4] {
				t.Fatalf("run %d, length %d: byte %d of skipped block %d was written", run, length, i, i/block)
			}
		}
		// Device timestamps and the host clock are not compared: on a
		// loaded machine their difference means nothing.
		if st.Wall <= 0 || st.Compute <= 0 || st.CopyWait < 0 {
			t.Errorf("run %d: implausible stats %+v", run, st)
		}
		subs := 1 // one vkQueueSubmit per queue used
		if p.pipelined && d.Info().TransferQueue {
			subs = 2
		}
		if st.Blocks != blocks || st.H2D != uint64(blocks*block) || st.Submissions != subs {
			t.Errorf("run %d, length %d: %d blocks, %d bytes, %d submissions; want %d blocks, %d bytes, %d submissions",
				run, length, st.Blocks, st.H2D, st.Submissions, blocks, blocks*block, subs)
		}
	}
}

// TestProgramRejectsMisuse checks the recording errors.
func TestProgramRejectsMisuse(t *testing.T) {
	d := vktest.Device(t)
	p := NewProgram(d, false, true)
	defer p.Free()
	if _, err := p.Attend(0); err == nil || !strings.Contains(err.Error(), "block 0") {
		t.Errorf("attention of a block never streamed: %v", err)
	}
	j, err := p.Stream(0, func(*vk.Commands) {}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Attend(j); err != nil {
		t.Fatal(err)
	}
	if err := p.End(); err == nil || !strings.Contains(err.Error(), "ends with attention") {
		t.Errorf("program ending with attention: %v", err)
	}
	if _, err := p.Run(nil, 1); err == nil {
		t.Errorf("run of a program that failed to end succeeded")
	}
	q := NewProgram(d, false, true)
	defer q.Free()
	if _, err := q.Run(nil, 1); err == nil {
		t.Errorf("run of a program still recording succeeded")
	}
}

// TestProgramSubmitFailure makes a submission in the middle of a
// pipelined run fail (vk's fault injection) and checks that Run reports
// it as a device failure without breaking Vulkan's rules on the way out:
// it must not host-signal a semaphore past values that its earlier,
// still pending submissions will signal (the validation layer reports
// that), and everything it submitted must be done when it returns, so
// that freeing the commands and the semaphores is legal.
func TestProgramSubmitFailure(t *testing.T) {
	if !vktest.Validation() {
		t.Skip("needs the validation layer to see what Run does wrong")
	}
	const block, blocks = 4096, 5
	// Submissions of one run: one per queue. The second run's first one
	// fails.
	perRun := 1
	if vktest.Device(t).Info().TransferQueue {
		perRun = 2
	}
	d, err := vk.Open(vk.Options{Validation: true, FaultSubmit: perRun + 1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := d.Close(); err != nil {
			t.Errorf("closing the failed device: %v", err)
		}
		if msgs := d.ValidationMessages(); len(msgs) > 0 {
			t.Errorf("validation messages at close:\n%s", strings.Join(msgs, "\n"))
		}
	}()
	clock, err := NewClock(d)
	if err != nil {
		t.Fatal(err)
	}
	p, bufs := recordCopies(t, d, blocks, block)
	if st, err := p.Run(clock, 1); err != nil || st.Submissions != perRun {
		t.Fatalf("first run: %d submissions, the test counts %d: %v", st.Submissions, perRun, err)
	}
	// A run is one vkQueueSubmit per queue, so the failed submission is
	// the run's first on its queue and nothing of the run can still be
	// pending behind it. (An earlier version held the queue on a timeline
	// the test signalled from the host while Run waited; the validation
	// layer of Debian 12 then blocks that signal inside its own state
	// tracking until its 10 s timeout, and reports a false error.)
	_, err = p.Run(clock, 1)
	if !errors.Is(err, vk.ErrDeviceFailed) || !strings.Contains(err.Error(), "DEVICE_LOST") {
		t.Fatalf("run whose submission fails: %v, want a device failure", err)
	}
	if d.Failed() == nil {
		t.Error("the device is not marked failed")
	}
	if _, err := p.Run(clock, 1); !errors.Is(err, vk.ErrDeviceFailed) {
		t.Errorf("run on the failed device: %v", err)
	}
	// Freeing what the failed run submitted is legal only if it is done.
	p.Free()
	clock.Free()
	for _, b := range bufs {
		b.Free()
	}
	if msgs := d.ValidationMessages(); len(msgs) > 0 {
		t.Errorf("%d validation messages:\n%s", len(msgs), strings.Join(msgs, "\n"))
	}
}

// recordCopies records a pipelined program on d that streams blocks
// blocks of size bytes from a host buffer through two streaming buffers
// into an output buffer, and returns it with the buffers it uses.
func recordCopies(t *testing.T, d *vk.Device, blocks, size int) (*Program, []*vk.Buffer) {
	t.Helper()
	var all []*vk.Buffer
	alloc := func(kind vk.MemoryKind, size int, label string) *vk.Buffer {
		b, err := d.Alloc(kind, uint64(size), label)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b)
		return b
	}
	host := alloc(vk.Upload, blocks*size, "host blocks")
	bufs := [2]*vk.Buffer{alloc(vk.DeviceLocal, size, "stream 0"), alloc(vk.DeviceLocal, size, "stream 1")}
	out := alloc(vk.DeviceLocal, blocks*size, "out")
	p := NewProgram(d, false, true)
	c, err := p.Compute()
	if err != nil {
		t.Fatal(err)
	}
	c.Fill(out.All(), 0)
	for j := 0; j < blocks; j++ {
		src := host.Range(uint64(j*size), uint64(size))
		if _, err := p.Stream(0, func(c *vk.Commands) { c.Copy(bufs[j%2].All(), src) }, uint64(size)); err != nil {
			t.Fatal(err)
		}
		a, err := p.Attend(j)
		if err != nil {
			t.Fatal(err)
		}
		a.Copy(out.Range(uint64(j*size), uint64(size)), bufs[j%2].All())
	}
	if _, err := p.Compute(); err != nil {
		t.Fatal(err)
	}
	if err := p.End(); err != nil {
		t.Fatal(err)
	}
	return p, all
}

// TestProgramRunDeadline holds the compute queue on a semaphore nothing
// signals, so that a pipelined step cannot finish, and checks that
// RunUntil gives up at its deadline and marks the device failed instead
// of waiting forever. Signalling the semaphore afterwards lets the work
// drain so that the device closes.
func TestProgramRunDeadline(t *testing.T) {
	d, err := vk.Open(vk.Options{Validation: vktest.Validation()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := d.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if msgs := d.ValidationMessages(); len(msgs) > 0 {
			t.Errorf("validation messages:\n%s", strings.Join(msgs, "\n"))
		}
	}()
	// Close frees these once the device is idle.
	clock, err := NewClock(d)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := recordCopies(t, d, 3, 1024)
	gate, err := d.NewTimeline()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Compute().Submit(nil, []vk.Sync{{T: gate, Value: 1}}, nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := p.RunUntil(clock, 1, time.Now().Add(100*time.Millisecond))
		done <- err
	}()
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		gate.Signal(1)
		t.Fatalf("RunUntil with a deadline 100 ms away had not returned after a minute: %v", <-done)
	}
	if !errors.Is(err, vk.ErrDeviceFailed) || !strings.Contains(err.Error(), "hung") {
		t.Errorf("a step past its deadline: %v, want a hung device", err)
	}
	// The device counts as hung: a wait for its queue only checks instead
	// of waiting out the default wait (an hour), so that the cleanup after
	// a timed-out step cannot hang.
	idle := make(chan error, 1)
	go func() { idle <- d.Compute().Idle() }()
	select {
	case err := <-idle:
		if err == nil {
			t.Error("the queue reports idle while the gate holds it")
		}
	case <-time.After(time.Minute):
		gate.Signal(1)
		t.Fatal("a wait on the hung device's queue had not returned after a minute")
	}
	if err := gate.Signal(1); err != nil {
		t.Fatal(err)
	}
	// On a hung device Idle only checks (and Close leaves a device with
	// work pending): poll until the released work is done.
	for limit := time.Now().Add(time.Minute); d.Compute().Idle() != nil; time.Sleep(time.Millisecond) {
		if time.Now().After(limit) {
			t.Fatal("the released work was not done within a minute")
		}
	}
}
