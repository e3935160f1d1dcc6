package offload

import (
	"bytes"
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
		if st.Wall <= 0 || st.Compute <= 0 || st.Compute > st.Wall+time.Millisecond || st.CopyWait < 0 {
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
