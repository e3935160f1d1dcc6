package vk_test

import (
	"testing"
	"time"

	"headinfer/vk"
)

// TestTimelineCrossQueue copies input on the transfer queue and computes
// on the compute queue, ordered only by a timeline semaphore, and waits
// for the result on the host.
func TestTimelineCrossQueue(t *testing.T) {
	d := testDevice(t)
	r := vkNewRand(t)
	const n = 777
	k := axpyKernel(t, d, 64, 2)
	host := vkAlloc(t, d, vk.Upload, 4*n)
	x := vkAlloc(t, d, vk.DeviceLocal, 4*n)
	y := vkAlloc(t, d, vk.DeviceLocal, 4*n)
	out := vkAlloc(t, d, vk.Readback, 4*n)
	vkPoison(t, d, x.All())
	vkPoison(t, d, y.All())
	xs := vkRandFloats(r, n)
	copy(host.Bytes(), vkF32Bytes(xs))

	tl, err := d.NewTimeline()
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Free()

	up, err := d.NewTransferCommands()
	if err != nil {
		t.Fatal(err)
	}
	defer up.Free()
	up.Copy(x.All(), host.All())
	if err := up.End(); err != nil {
		t.Fatal(err)
	}
	c := vkCommands(t, d)
	c.Dispatch(k, [3]uint32{(n + 63) / 64, 1, 1}, vkPush(uint32(n), float32(0.5)), x.All(), y.All())
	c.Barrier()
	c.Copy(out.All(), y.All())
	if err := c.End(); err != nil {
		t.Fatal(err)
	}
	if err := d.Transfer().Submit(up, nil, []vk.Sync{{tl, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := d.Compute().Submit(c, []vk.Sync{{tl, 1}}, []vk.Sync{{tl, 2}}); err != nil {
		t.Fatal(err)
	}
	if err := tl.Wait(2, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if v, err := tl.Value(); err != nil || v != 2 {
		t.Fatalf("Value = %d, %v; want 2", v, err)
	}
	want, scale := axpyRef(xs, 2, 0.5)
	vkCloseF32(t, vkBytesF32(out.Bytes()), want, scale)
}

// TestTimelineHost waits on a host-signalled value and checks a wait that
// cannot be met times out with an error.
func TestTimelineHost(t *testing.T) {
	d := testDevice(t)
	tl, err := d.NewTimeline()
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Free()
	if err := tl.Wait(1, time.Millisecond); err == nil {
		t.Fatal("wait for an unsignalled value succeeded")
	}
	if err := tl.Signal(3); err != nil {
		t.Fatal(err)
	}
	if err := tl.Wait(3, time.Second); err != nil {
		t.Fatal(err)
	}
	// A submission with no commands, queued before the host signals
	// what it waits for.
	// (A fresh gate: the validation layer of SDK 1.3.239 wrongly
	// flags a second host signal of one semaphore.)
	gate, err := d.NewTimeline()
	if err != nil {
		t.Fatal(err)
	}
	defer gate.Free()
	done, err := d.NewTimeline()
	if err != nil {
		t.Fatal(err)
	}
	defer done.Free()
	if err := d.Compute().Submit(nil, []vk.Sync{{gate, 5}}, []vk.Sync{{done, 1}}); err != nil {
		t.Fatal(err)
	}
	if v, _ := done.Value(); v != 0 {
		t.Fatalf("submission finished before its wait was signalled (value %d)", v)
	}
	if err := gate.Signal(5); err != nil {
		t.Fatal(err)
	}
	if err := done.Wait(1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}
