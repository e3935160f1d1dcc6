package vk_test

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"

	"headinfer/shaders"
	"headinfer/vk"
)

// TestBarrierOrdering chains two dispatches through a buffer; the barrier
// between them is what makes the second see the first's output (the
// synchronization validation layer reports it when missing).
func TestBarrierOrdering(t *testing.T) {
	d := testDevice(t)
	r := vkNewRand(t)
	const n = 4099
	k2, k3 := axpyKernel(t, d, 64, 2), axpyKernel(t, d, 64, 3)
	x := vkRandFloats(r, n)
	xb := vkAlloc(t, d, vk.DeviceLocal, 4*n)
	yb := vkAlloc(t, d, vk.DeviceLocal, 4*n)
	zb := vkAlloc(t, d, vk.DeviceLocal, 4*n)
	vkWrite(t, d, xb.All(), vkF32Bytes(x))
	vkPoison(t, d, yb.All())
	vkPoison(t, d, zb.All())
	c := vkCommands(t, d)
	g := [3]uint32{(n + 63) / 64, 1, 1}
	c.Dispatch(k2, g, vkPush(uint32(n), float32(1)), xb.All(), yb.All())
	c.Barrier()
	c.Dispatch(k3, g, vkPush(uint32(n), float32(-2)), yb.All(), zb.All())
	if err := c.End(); err != nil {
		t.Fatal(err)
	}
	if err := d.Run(c); err != nil {
		t.Fatal(err)
	}
	want := make([]float64, n)
	scale := make([]float64, n)
	for i, v := range x {
		y := float64(float32(float64(v)*2 + 1))
		want[i] = y*3 - 2
		scale[i] = math.Abs(float64(v)*6) + 5
	}
	vkCloseF32(t, vkBytesF32(vkRead(t, d, zb.All())), want, scale)
}

// TestReplay submits one recording several times; each run feeds the
// next through a copy, so the result counts the runs.
func TestReplay(t *testing.T) {
	d := testDevice(t)
	r := vkNewRand(t)
	const n, runs = 300, 5
	k := axpyKernel(t, d, 32, 2)
	x := vkRandFloats(r, n)
	xb := vkAlloc(t, d, vk.DeviceLocal, 4*n)
	yb := vkAlloc(t, d, vk.DeviceLocal, 4*n)
	vkWrite(t, d, xb.All(), vkF32Bytes(x))
	c := vkCommands(t, d)
	c.Dispatch(k, [3]uint32{(n + 31) / 32, 1, 1}, vkPush(uint32(n), float32(0.25)), xb.All(), yb.All())
	c.Barrier()
	c.Copy(xb.All(), yb.All())
	if err := c.End(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < runs-1; i++ {
		if err := d.Run(c); err != nil {
			t.Fatal(err)
		}
	}
	// The last run goes in one batch with a second recording.
	c2 := vkCommands(t, d)
	c2.Barrier() // the previous batch's copy into xb must land first
	c2.Fill(yb.Range(0, 8), 0)
	if err := c2.End(); err != nil {
		t.Fatal(err)
	}
	if err := d.Run(c, c2); err != nil {
		t.Fatal(err)
	}
	want, scale := make([]float64, n), make([]float64, n)
	for i, v := range x {
		w := float64(v)
		for j := 0; j < runs; j++ {
			w = float64(float32(w*2 + 0.25))
		}
		want[i], scale[i] = w, math.Abs(w)*4+1
	}
	vkCloseF32(t, vkBytesF32(vkRead(t, d, xb.All())), want, scale)
	if got := vkRead(t, d, yb.Range(0, 8)); !bytes.Equal(got, make([]byte, 8)) {
		t.Fatalf("Fill in the second recording: %x", got)
	}

	// Reset discards the recording; new commands then run.
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	c.Fill(xb.All(), 0x3f800000) // 1.0f
	if err := c.End(); err != nil {
		t.Fatal(err)
	}
	if err := d.Run(c); err != nil {
		t.Fatal(err)
	}
	for i, v := range vkBytesF32(vkRead(t, d, xb.All())) {
		if v != 1 {
			t.Fatalf("after Reset: element %d is %v, want 1", i, v)
		}
	}
}

// TestCopyFill checks Copy and Fill on the compute and transfer queues,
// including bytes around the ranges that must stay untouched.
func TestCopyFill(t *testing.T) {
	d := testDevice(t)
	r := vkNewRand(t)
	const size = 1 << 16
	src := vkAlloc(t, d, vk.DeviceLocal, size)
	dst := vkAlloc(t, d, vk.DeviceLocal, size)
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	for _, transfer := range []bool{false, true} {
		vkWrite(t, d, src.All(), data)
		vkWrite(t, d, dst.All(), make([]byte, size))
		var c *vk.Commands
		var err error
		q := d.Compute()
		if transfer {
			c, err = d.NewTransferCommands()
			q = d.Transfer()
		} else {
			c, err = d.NewCommands()
		}
		if err != nil {
			t.Fatal(err)
		}
		c.Copy(dst.Range(100, 5000), src.Range(7, 5000))
		c.Fill(dst.Range(8000, 400), 0xdeadbeef)
		c.Barrier()
		c.Copy(dst.Range(20000, 400), dst.Range(8000, 400))
		if err := c.End(); err != nil {
			t.Fatal(err)
		}
		tl, err := d.NewTimeline()
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Submit(c, nil, []vk.Sync{{tl, 1}}); err != nil {
			t.Fatal(err)
		}
		if err := tl.Wait(1, -1); err != nil {
			t.Fatal(err)
		}
		tl.Free()
		c.Free()

		want := make([]byte, size)
		copy(want[100:5100], data[7:5007])
		for i := 8000; i < 8400; i += 4 {
			binary.LittleEndian.PutUint32(want[i:], 0xdeadbeef)
		}
		copy(want[20000:20400], want[8000:8400])
		got := vkRead(t, d, dst.All())
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("transfer queue %v: byte %d is %#x, want %#x", transfer, i, got[i], want[i])
			}
		}
	}
	c := vkCommands(t, d)
	c.Copy(src.Range(0, 100), src.Range(50, 100))
	if c.End() == nil {
		t.Error("overlapping copy accepted")
	}
	tc, err := d.NewTransferCommands()
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Free()
	tc.Dispatch(axpyKernel(t, d, 64, 1), [3]uint32{1, 1, 1}, vkPush(uint32(1), float32(0)), src.All(), dst.All())
	// Without a transfer-only family the transfer commands are compute
	// commands, and a dispatch is fine.
	if err := tc.End(); (err == nil) == d.Info().TransferQueue {
		t.Errorf("dispatch on transfer commands: %v (transfer-only family: %v)", err, d.Info().TransferQueue)
	}
}

// TestHalfStorage reads f16 data through 16-bit storage, which Open must
// have enabled.
func TestHalfStorage(t *testing.T) {
	d := testDevice(t)
	k, err := d.Kernel(vk.KernelSpec{Name: "vk_test_half", SPIRV: shaders.MustSPIRV("vk_test_half"), Buffers: 2, PushBytes: 4})
	if err != nil {
		t.Fatal(err)
	}
	vals := []uint16{0x3c00, 0xc000, 0x3555, 0x0001, 0x7bff, 0x8000, 0x3800}
	want := []float32{1, -2, 0.33325195, 5.9604645e-08, 65504, 0, 0.5}
	h := make([]byte, 2*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint16(h[2*i:], v)
	}
	hb := vkAlloc(t, d, vk.DeviceLocal, uint64(len(h)))
	yb := vkAlloc(t, d, vk.DeviceLocal, uint64(4*len(vals)))
	vkWrite(t, d, hb.All(), h)
	vkPoison(t, d, yb.All())
	c := vkCommands(t, d)
	c.Dispatch(k, [3]uint32{1, 1, 1}, vkPush(uint32(len(vals))), hb.All(), yb.All())
	if err := c.End(); err != nil {
		t.Fatal(err)
	}
	if err := d.Run(c); err != nil {
		t.Fatal(err)
	}
	got := vkBytesF32(vkRead(t, d, yb.All()))
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("f16 %#04x read as %v, want %v", vals[i], got[i], want[i])
		}
	}
}

// TestTimestamps records more timestamps than one query pool holds.
func TestTimestamps(t *testing.T) {
	d := testDevice(t)
	k := axpyKernel(t, d, 64, 1)
	const n = 1 << 16
	xb := vkAlloc(t, d, vk.DeviceLocal, 4*n)
	yb := vkAlloc(t, d, vk.DeviceLocal, 4*n)
	c := vkCommands(t, d)
	const stamps = 70
	for i := 0; i < stamps; i++ {
		c.Timestamp(string(rune('A' + i%26)))
		c.Dispatch(k, [3]uint32{n / 64, 1, 1}, vkPush(uint32(n), float32(0)), xb.All(), yb.All())
		c.Barrier()
	}
	if err := c.End(); err != nil {
		t.Fatal(err)
	}
	if c.Timings() != nil {
		t.Fatal("timings before the commands ran")
	}
	for run := 0; run < 2; run++ {
		if err := d.Run(c); err != nil {
			t.Fatal(err)
		}
		tm := c.Timings()
		if d.Info().TimestampPeriod == 0 {
			if tm != nil {
				t.Fatal("timings from a device without timestamps")
			}
			return
		}
		if len(tm) != stamps {
			t.Fatalf("%d timings, want %d", len(tm), stamps)
		}
		if tm[0].NS != 0 || tm[0].Label != "A" || tm[27].Label != "B" {
			t.Fatalf("first timings %+v", tm[:2])
		}
		for i := 1; i < stamps; i++ {
			if tm[i].NS < tm[i-1].NS {
				t.Fatalf("timestamp %d (%v ns) before %d (%v ns)", i, tm[i].NS, i-1, tm[i-1].NS)
			}
		}
		if tm[stamps-1].NS <= 0 {
			t.Fatalf("no time passed over %d dispatches", stamps)
		}
	}
}
