package offload

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
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
		return testBuffer(t, d, kind, size, label)
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
	for _, span := range [][2]int{{-1, 10}, {5, 6}, {5, 2}} {
		if _, err := p.StreamSpan(span[0], span[1], func(*vk.Commands) {}, 0); err == nil {
			t.Errorf("a block for KV lengths (%d, %d) accepted", span[0], span[1])
		}
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
	d := faultyDevice(t, perRun+1)
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

// testBuffer allocates a buffer that the test's cleanup frees.
func testBuffer(t *testing.T, d *vk.Device, kind vk.MemoryKind, size int, label string) *vk.Buffer {
	t.Helper()
	b, err := d.Alloc(kind, uint64(size), label)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Free)
	return b
}

// faultyDevice opens a device of its own, with the validation layer,
// whose submission number n fails; at the test's end it closes it and
// fails on any validation message that closing produced.
func faultyDevice(t *testing.T, n int) *vk.Device {
	t.Helper()
	d, err := vk.Open(vk.Options{Validation: true, FaultSubmit: n})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("closing the failed device: %v", err)
		}
		if msgs := d.ValidationMessages(); len(msgs) > 0 {
			t.Errorf("validation messages at close:\n%s", strings.Join(msgs, "\n"))
		}
	})
	return d
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

// TestProgramHostTasks runs a program that hands work to the host
// between rounds: each host task reads a value the device wrote to mapped
// memory just before it and writes the next, which the device copies on
// after the task: the chain only comes out right if every wait, signal
// and submission is in its place. The work recorded beside each task
// runs too. A failing task ends the run with its error, and the clock
// stays usable for the next run.
func TestProgramHostTasks(t *testing.T) {
	d := vktest.Device(t)
	const rounds = 3
	alloc := func(kind vk.MemoryKind, size int, label string) *vk.Buffer {
		return testBuffer(t, d, kind, size, label)
	}
	fromDev := alloc(vk.Readback, 4*rounds, "written by the device")
	fromHost := alloc(vk.Upload, 4*rounds, "written by the host")
	beside := alloc(vk.Readback, 4*rounds, "work beside the tasks")
	out := alloc(vk.Readback, 4, "out")
	u32 := func(b *vk.Buffer, i int) uint32 { return binary.LittleEndian.Uint32(b.Bytes()[4*i:]) }
	clock, err := NewClock(d)
	if err != nil {
		t.Fatal(err)
	}
	defer clock.Free()

	var ran []int
	failAt := -1
	p := NewProgram(d, true, false)
	defer p.Free()
	if err := p.Host(func(int) error { return nil }); err == nil {
		t.Fatal("a host task with nothing before it: no error")
	}
	if err := p.Join(); err == nil {
		t.Fatal("Join without a host task: no error")
	}
	for i := range rounds {
		c, err := p.Compute()
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			c.Fill(fromDev.Range(0, 4), 7)
		} else {
			c.Copy(fromDev.Range(uint64(4*i), 4), fromHost.Range(uint64(4*(i-1)), 4))
		}
		if err := p.Host(func(length int) error {
			ran = append(ran, i)
			if i == failAt {
				return errors.New("task failed")
			}
			binary.LittleEndian.PutUint32(fromHost.Bytes()[4*i:], 3*u32(fromDev, i)+uint32(length))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := p.Host(func(int) error { return nil }); err == nil {
			t.Fatal("a second host task before Join: no error")
		}
		if _, err := p.Stream(0, func(*vk.Commands) {}, 0); err == nil {
			t.Fatal("a streamed block in a program with host tasks: no error")
		}
		if i != 1 { // round 1 has nothing beside its task
			b, err := p.Compute()
			if err != nil {
				t.Fatal(err)
			}
			b.Fill(beside.Range(uint64(4*i), 4), uint32(100+i))
		}
		if err := p.Join(); err != nil {
			t.Fatal(err)
		}
	}
	c, err := p.Compute()
	if err != nil {
		t.Fatal(err)
	}
	c.Copy(out.All(), fromHost.Range(4*(rounds-1), 4))
	if err := p.End(); err != nil {
		t.Fatal(err)
	}

	for run, length := range []int{5, 1000, 9} {
		for _, b := range []*vk.Buffer{fromDev, fromHost, beside, out} {
			for i := range b.Bytes() {
				b.Bytes()[i] = 0xee
			}
		}
		ran = ran[:0]
		failAt = -1
		if run == 1 {
			failAt = 1
		}
		st, err := p.Run(clock, length)
		if run == 1 {
			if err == nil || !strings.Contains(err.Error(), "task failed") || !slices.Equal(ran, []int{0, 1}) {
				t.Fatalf("run with a failing task: error %v, tasks run %v", err, ran)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		want := uint32(7)
		for range rounds {
			want = 3*want + uint32(length)
		}
		if got := u32(out, 0); got != want || !slices.Equal(ran, []int{0, 1, 2}) {
			t.Fatalf("length %d: out %d, want %d; tasks run %v", length, got, want, ran)
		}
		if u32(beside, 0) != 100 || u32(beside, 2) != 102 {
			t.Fatalf("work beside the tasks: %d, %d", u32(beside, 0), u32(beside, 2))
		}
		// Two command buffers in rounds 0 and 2, one in round 1 and the last.
		if st.Submissions != rounds+1 || st.HostWaits != rounds+1 || st.Commands != 2*rounds {
			t.Fatalf("%d submissions, %d host waits, %d command buffers; want %d, %d, %d",
				st.Submissions, st.HostWaits, st.Commands, rounds+1, rounds+1, 2*rounds)
		}
	}

	q := NewProgram(d, false, false)
	defer q.Free()
	if _, err := q.Compute(); err != nil {
		t.Fatal(err)
	}
	if err := q.Host(func(int) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := q.End(); err == nil {
		t.Fatal("a program ending before its host task's Join: no error")
	}
}

// TestProgramHostSubmitFailure fails the second submission of a run with
// a host task (the round after the task): Run reports the device failure
// after the first round has completed, so that its command buffers and
// the clock can be freed without the validation layer objecting.
func TestProgramHostSubmitFailure(t *testing.T) {
	if !vktest.Validation() {
		t.Skip("needs the validation layer to see what Run does wrong")
	}
	d := faultyDevice(t, 2)
	clock, err := NewClock(d)
	if err != nil {
		t.Fatal(err)
	}
	buf, err := d.Alloc(vk.Readback, 4096, "out")
	if err != nil {
		t.Fatal(err)
	}
	p := NewProgram(d, false, false)
	c, err := p.Compute()
	if err != nil {
		t.Fatal(err)
	}
	c.Fill(buf.Range(0, 2048), 1)
	tasks := 0
	if err := p.Host(func(int) error { tasks++; return nil }); err != nil {
		t.Fatal(err)
	}
	if c, err = p.Compute(); err != nil {
		t.Fatal(err)
	}
	c.Fill(buf.Range(2048, 2048), 2)
	if err := p.Join(); err != nil {
		t.Fatal(err)
	}
	if c, err = p.Compute(); err != nil {
		t.Fatal(err)
	}
	c.Fill(buf.Range(0, 2048), 3)
	if err := p.End(); err != nil {
		t.Fatal(err)
	}
	_, err = p.Run(clock, 1)
	if !errors.Is(err, vk.ErrDeviceFailed) || tasks != 1 {
		t.Fatalf("run whose second submission fails: %v after %d host tasks, want a device failure after 1", err, tasks)
	}
	if got := binary.LittleEndian.Uint32(buf.Bytes()[2048:]); got != 2 {
		t.Errorf("the first round's work beside the task left %d, want 2", got)
	}
	p.Free()
	clock.Free()
	buf.Free()
	if msgs := d.ValidationMessages(); len(msgs) > 0 {
		t.Errorf("%d validation messages:\n%s", len(msgs), strings.Join(msgs, "\n"))
	}
}
