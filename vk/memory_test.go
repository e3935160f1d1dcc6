package vk_test

import (
	"bytes"
	"strings"
	"testing"

	"headinfer/vk"
)

// TestAllocAccounting checks live and peak bytes per kind, mapping by
// kind, and that Free gives bytes back.
func TestAllocAccounting(t *testing.T) {
	d := testDevice(t)
	before := d.Memory()
	sizes := [3]uint64{1000, 3 << 20, 12345}
	var bufs []*vk.Buffer
	for k := vk.MemoryKind(0); k < 3; k++ {
		for i := 0; i < 3; i++ {
			b, err := d.Alloc(k, sizes[k], "accounting")
			if err != nil {
				t.Fatal(err)
			}
			bufs = append(bufs, b)
			if b.Size() != sizes[k] {
				t.Fatalf("%v: Size %d, want %d", k, b.Size(), sizes[k])
			}
			if m := b.Bytes(); (k == vk.DeviceLocal) != (m == nil) || (m != nil && uint64(len(m)) != sizes[k]) {
				t.Fatalf("%v: Bytes() has %d bytes (nil %v)", k, len(m), m == nil)
			}
		}
	}
	mid := d.Memory()
	for k := 0; k < 3; k++ {
		if got := mid.Live[k] - before.Live[k]; got != 3*sizes[k] {
			t.Errorf("%v: live grew by %d, want %d", vk.MemoryKind(k), got, 3*sizes[k])
		}
		if mid.Peak[k] < mid.Live[k] {
			t.Errorf("%v: peak %d below live %d", vk.MemoryKind(k), mid.Peak[k], mid.Live[k])
		}
	}
	for _, b := range bufs {
		b.Free()
	}
	bufs[0].Free() // a second Free does nothing
	after := d.Memory()
	for k := 0; k < 3; k++ {
		if after.Live[k] != before.Live[k] {
			t.Errorf("%v: live %d after free, want %d", vk.MemoryKind(k), after.Live[k], before.Live[k])
		}
		if after.Peak[k] != mid.Peak[k] {
			t.Errorf("%v: peak changed on free: %d, was %d", vk.MemoryKind(k), after.Peak[k], mid.Peak[k])
		}
	}
	if d.Info().MemoryBudget && after.Budget == 0 {
		t.Error("device has VK_EXT_memory_budget but the budget is 0")
	}
}

// TestAllocErrors checks requests that cannot be met.
func TestAllocErrors(t *testing.T) {
	d := testDevice(t)
	if _, err := d.Alloc(vk.DeviceLocal, 0, "empty"); err == nil {
		t.Error("Alloc of 0 bytes succeeded")
	}
	_, err := d.Alloc(vk.DeviceLocal, 1<<50, "enormous")
	if err == nil {
		t.Fatal("Alloc of 1 PiB succeeded")
	}
	for _, want := range []string{"device-local", "enormous", "1048576.00 GiB"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestSubAllocation fills many buffers that share blocks with distinct
// patterns, frees some, reallocates, and checks nothing overlaps.
func TestSubAllocation(t *testing.T) {
	d := testDevice(t)
	r := vkNewRand(t)
	type entry struct {
		b    *vk.Buffer
		data []byte
	}
	var live []entry
	fill := func(n int) {
		for i := 0; i < n; i++ {
			size := uint64(1 + r.IntN(300000))
			b := vkAlloc(t, d, vk.DeviceLocal, size)
			data := make([]byte, size)
			for j := range data {
				data[j] = byte(r.Uint32())
			}
			vkWrite(t, d, b.All(), data)
			live = append(live, entry{b, data})
		}
	}
	fill(40)
	for i := 0; i < len(live); i += 2 { // free every other buffer, leaving holes
		live[i].b.Free()
	}
	var kept []entry
	for i := 1; i < len(live); i += 2 {
		kept = append(kept, live[i])
	}
	live = kept
	fill(30)
	for i, e := range live {
		if got := vkRead(t, d, e.b.All()); !bytes.Equal(got, e.data) {
			t.Fatalf("buffer %d of %d bytes was overwritten", i, len(e.data))
		}
	}
}

// TestLargeBuffer uses a buffer larger than maxStorageBufferRange: Write
// and Read at an offset beyond 128 MiB and beyond the binding limit, and
// a kernel bound to sub-ranges there.
func TestLargeBuffer(t *testing.T) {
	d := testDevice(t)
	r := vkNewRand(t)
	limit := d.Info().MaxStorageBufferRange
	size := max(limit, 128<<20) + 32<<20
	big := vkAlloc(t, d, vk.DeviceLocal, size)

	const n = 100003
	xOff := size - 16<<20 // beyond 128 MiB and beyond the binding limit
	yOff := size - 8<<20
	x := vkRandFloats(r, n)
	vkWrite(t, d, big.Range(xOff, 4*n), vkF32Bytes(x))
	vkPoison(t, d, big.Range(yOff, 4*n))
	if got := vkBytesF32(vkRead(t, d, big.Range(xOff, 4*n))); !bytes.Equal(vkF32Bytes(got), vkF32Bytes(x)) {
		t.Fatal("read back differs from what was written")
	}

	k := axpyKernel(t, d, 64, 3)
	c := vkCommands(t, d)
	c.Dispatch(k, [3]uint32{(n + 63) / 64, 1, 1}, vkPush(uint32(n), float32(-1)), big.Range(xOff, 4*n), big.Range(yOff, 4*n))
	if err := c.End(); err != nil {
		t.Fatal(err)
	}
	if err := d.Run(c); err != nil {
		t.Fatal(err)
	}
	want, scale := axpyRef(x, 3, -1)
	vkCloseF32(t, vkBytesF32(vkRead(t, d, big.Range(yOff, 4*n))), want, scale)
}

// TestStagedTransfer forces Write and Read through the staging buffer in
// small chunks, the path device-local memory of a discrete GPU takes.
func TestStagedTransfer(t *testing.T) {
	d := testDevice(t)
	r := vkNewRand(t)
	vk.SetStaging(d, true, 64<<10)
	defer vk.SetStaging(d, false, 0)
	const size = 1<<20 + 100
	b := vkAlloc(t, d, vk.DeviceLocal, size+1000)
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	vkWrite(t, d, b.Range(1000, size), data)
	if got := vkRead(t, d, b.Range(1000, size)); !bytes.Equal(got, data) {
		t.Fatal("staged read back differs from what was written")
	}
	if got := vkRead(t, d, b.Range(1000+70000, 5)); !bytes.Equal(got, data[70000:70005]) {
		t.Fatal("staged read of a small sub-range differs")
	}
	if err := d.Write(b.Range(0, 10), make([]byte, 9)); err == nil {
		t.Error("Write with a length mismatch succeeded")
	}
	if err := d.Read(b.Range(size, 2000), make([]byte, 2000)); err == nil {
		t.Error("Read beyond the buffer succeeded")
	}
}

// TestPickTypeOf checks the memory type choice on a discrete GPU's usual
// types: device-local memory for DeviceLocal, host-cached coherent memory
// for Readback (the host KV store, which the CPU reads), uncached
// coherent memory for Upload, and never a cached type that is not
// coherent (it would need flushes and invalidates).
func TestPickTypeOf(t *testing.T) {
	const (
		local    = 0x1
		visible  = 0x2
		coherent = 0x4
		cached   = 0x8
	)
	types := []uint32{local, visible | coherent, visible | cached, visible | coherent | cached, local | visible | coherent}
	all := uint32(1<<len(types) - 1)
	for _, c := range []struct {
		kind vk.MemoryKind
		want int
	}{{vk.DeviceLocal, 0}, {vk.Upload, 1}, {vk.Readback, 3}} {
		if got := vk.PickTypeOf(types, all, c.kind); got != c.want {
			t.Errorf("%s: type %d, want %d", c.kind, got, c.want)
		}
	}
	// Without a cached coherent type, the host KV store takes uncached
	// coherent memory rather than the non-coherent cached type.
	if got := vk.PickTypeOf(types, all&^(1<<3), vk.Readback); got != 1 {
		t.Errorf("readback without cached coherent memory: type %d, want 1", got)
	}
	if got := vk.PickTypeOf([]uint32{visible | cached}, 1, vk.Readback); got != -1 {
		t.Errorf("only non-coherent host memory: type %d, want none", got)
	}
}
