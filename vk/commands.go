package vk

/*
#include "vkc.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"time"
	"unsafe"
)

// Commands is a recorded command buffer that can be submitted many times,
// also while an earlier submission is still running. One Commands must not
// be used from several goroutines at once.
type Commands struct {
	d *Device
	q *Queue // the queue family it is recorded for
	c *C.hi_cmds

	pools []C.VkDescriptorPool // pools[npool-1] is the one in use
	npool int

	ts         timestamps
	dispatches int // recorded since Begin or Reset
	barriers   int // recorded since Begin or Reset
	err        error
	ended      bool
	freed      bool
	pending    submission // the latest submission, waited for before reuse
}

// submission is a point on a queue's internal timeline.
type submission struct {
	q   *Queue
	val uint64
}

// NewCommands starts recording for the compute queue.
func (d *Device) NewCommands() (*Commands, error) { return d.newCommands(d.compute) }

// NewTransferCommands starts recording for the transfer queue; such
// commands may hold Copy, Fill, Barrier and Timestamp only.
func (d *Device) NewTransferCommands() (*Commands, error) { return d.newCommands(d.transfer) }

func (d *Device) newCommands(q *Queue) (*Commands, error) {
	if d.dev == nil {
		return nil, errClosed
	}
	c := &Commands{d: d, q: q}
	if err := result(C.hi_cmds_create(d.dev, C.uint32_t(q.family), &c.c), "vkCreateCommandPool"); err != nil {
		return nil, err
	}
	if q.transferOnly {
		c.c.transfer_only = 1
	}
	if err := result(C.hi_cmds_begin(d.dev, c.c), "vkBeginCommandBuffer"); err != nil {
		C.hi_cmds_destroy(d.dev, c.c)
		return nil, err
	}
	if !track(d, &d.cmds, c) {
		C.hi_cmds_destroy(d.dev, c.c)
		return nil, errClosed
	}
	return c, nil
}

// fail keeps the first recording error for End.
func (c *Commands) fail(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("vk: "+format, args...)
	}
}

// recording reports whether commands may be recorded now.
func (c *Commands) recording(op string) bool {
	switch {
	case c.freed:
		c.fail("%s on freed commands", op)
	case c.ended:
		c.fail("%s after End (call Reset to record again)", op)
	}
	return c.err == nil
}

// Dispatch records kernel k over groups workgroups with the given push
// constants and buffer ranges bound at bindings 0..n-1. The descriptor set
// is allocated and written now, so a replay needs no descriptor update.
// Errors are reported by End.
func (c *Commands) Dispatch(k *Kernel, groups [3]uint32, push []byte, bufs ...Range) {
	if !c.recording("Dispatch") {
		return
	}
	if k == nil || k.d != c.d {
		c.fail("Dispatch of a nil kernel or one from another device")
		return
	}
	if c.q.transferOnly {
		c.fail("Dispatch of %s on transfer commands", k.key)
		return
	}
	if len(bufs) != k.spec.Buffers {
		c.fail("Dispatch of %s: %d buffers given, the kernel binds %d", k.key, len(bufs), k.spec.Buffers)
		return
	}
	if len(push) != k.spec.PushBytes {
		c.fail("Dispatch of %s: %d push-constant bytes given, the kernel takes %d", k.key, len(push), k.spec.PushBytes)
		return
	}
	info := &c.d.info
	for i, g := range groups {
		if g > info.MaxWorkgroupCount[i] {
			c.fail("Dispatch of %s: %d workgroups in dimension %d, the device allows %d", k.key, g, i, info.MaxWorkgroupCount[i])
			return
		}
	}
	for i, r := range bufs {
		if err := r.check(c.d); err != nil {
			c.fail("Dispatch of %s: binding %d: %v", k.key, i, err)
			return
		}
		buf, off := r.handle()
		if k.spec.Texels>>uint(i)&1 != 0 {
			if r.Size%16 != 0 || r.Size/16 > info.MaxTexelBufferElements {
				c.fail("Dispatch of %s: binding %d: a texel range of %d bytes of buffer %q must be a multiple of 16 bytes and at most %d texels",
					k.key, i, r.Size, r.Buf.label, info.MaxTexelBufferElements)
				return
			}
			if a := info.MinTexelBufferOffsetAlignment; a > 1 && off%a != 0 {
				c.fail("Dispatch of %s: binding %d: offset %d in buffer %q is not a multiple of minTexelBufferOffsetAlignment (%d)",
					k.key, i, r.Off, r.Buf.label, a)
				return
			}
		} else if r.Size > info.MaxStorageBufferRange {
			c.fail("Dispatch of %s: binding %d: range of %d bytes of buffer %q exceeds maxStorageBufferRange (%d): bind a smaller sub-range",
				k.key, i, r.Size, r.Buf.label, info.MaxStorageBufferRange)
			return
		} else if a := info.MinStorageBufferOffsetAlignment; a > 1 && off%a != 0 {
			c.fail("Dispatch of %s: binding %d: offset %d in buffer %q is not a multiple of minStorageBufferOffsetAlignment (%d)",
				k.key, i, r.Off, r.Buf.label, a)
			return
		}
		c.c.bufs[i] = buf
		c.c.offs[i] = C.uint64_t(off)
		c.c.sizes[i] = C.uint64_t(r.Size)
	}
	if len(push) > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&c.c.push[0])), len(push)), push)
	}
	for attempt := 0; ; attempt++ {
		if c.npool == 0 && k.spec.Buffers > 0 {
			if err := c.nextPool(); err != nil {
				c.fail("Dispatch of %s: %v", k.key, err)
				return
			}
		}
		var pool C.VkDescriptorPool
		if c.npool > 0 {
			pool = c.pools[c.npool-1]
		}
		r := C.hi_dispatch(c.d.dev, c.c, pool, k.c, C.uint32_t(groups[0]), C.uint32_t(groups[1]), C.uint32_t(groups[2]))
		if (r == C.VK_ERROR_OUT_OF_POOL_MEMORY || r == C.VK_ERROR_FRAGMENTED_POOL) && attempt == 0 {
			if err := c.nextPool(); err != nil {
				c.fail("Dispatch of %s: %v", k.key, err)
				return
			}
			continue
		}
		if r != C.VK_SUCCESS {
			c.err = result(r, "vkAllocateDescriptorSets for "+k.key)
			return
		}
		c.dispatches++
		return
	}
}

// Dispatches is the number of kernel dispatches recorded.
func (c *Commands) Dispatches() int { return c.dispatches }

// nextPool moves to the next descriptor pool, creating it if needed. Pools
// grow so that long recordings need few of them.
func (c *Commands) nextPool() error {
	if c.npool < len(c.pools) {
		c.npool++
		return nil
	}
	sets := min(64<<len(c.pools), 4096)
	var p C.VkDescriptorPool
	if err := result(C.hi_dpool_create(c.d.dev, C.uint32_t(sets), C.uint32_t(8*sets), &p), "vkCreateDescriptorPool"); err != nil {
		return err
	}
	c.pools = append(c.pools, p)
	c.npool++
	return nil
}

// Barrier makes all earlier compute and transfer writes visible to all
// later compute and transfer reads and writes.
func (c *Commands) Barrier() {
	if c.recording("Barrier") {
		C.hi_barrier(c.d.dev, c.c)
		c.barriers++
	}
}

// Barriers is the number of barriers recorded: each one waits for all
// earlier work, which a GPU pays for with idle time.
func (c *Commands) Barriers() int { return c.barriers }

// Copy copies src to dst; the sizes must be equal.
func (c *Commands) Copy(dst, src Range) {
	if !c.recording("Copy") {
		return
	}
	if err := dst.check(c.d); err != nil {
		c.fail("Copy destination: %v", err)
		return
	}
	if err := src.check(c.d); err != nil {
		c.fail("Copy source: %v", err)
		return
	}
	if dst.Size != src.Size {
		c.fail("Copy of %d bytes from %q into %d bytes of %q: sizes differ", src.Size, src.Buf.label, dst.Size, dst.Buf.label)
		return
	}
	sb, so := src.handle()
	db, do := dst.handle()
	if sb == db && so < do+dst.Size && do < so+src.Size {
		c.fail("Copy between overlapping ranges of %q", src.Buf.label)
		return
	}
	C.hi_copy(c.d.dev, c.c, sb, C.uint64_t(so), db, C.uint64_t(do), C.uint64_t(src.Size))
}

// Fill sets every 32-bit word of dst to v; offset and size must be
// multiples of 4.
func (c *Commands) Fill(dst Range, v uint32) {
	if !c.recording("Fill") {
		return
	}
	if err := dst.check(c.d); err != nil {
		c.fail("Fill: %v", err)
		return
	}
	b, off := dst.handle()
	if off%4 != 0 || dst.Size%4 != 0 {
		c.fail("Fill of %q: offset %d and size %d must be multiples of 4", dst.Buf.label, dst.Off, dst.Size)
		return
	}
	C.hi_fill(c.d.dev, c.c, b, C.uint64_t(off), C.uint64_t(dst.Size), C.uint32_t(v))
}

// End finishes recording. It reports the first recording error; commands
// that failed to record cannot be submitted.
func (c *Commands) End() error {
	if c.freed {
		return errors.New("vk: End on freed commands")
	}
	if c.ended {
		return c.err
	}
	// Results of every submission are then visible to the host once its
	// wait returns, which mapped buffers and Read rely on.
	C.hi_host_barrier(c.d.dev, c.c)
	r := C.hi_cmds_end(c.d.dev, c.c)
	c.ended = true
	if c.err == nil {
		c.err = result(r, "vkEndCommandBuffer")
	}
	return c.err
}

// Reset discards what was recorded, including descriptor sets and
// timestamps, and starts recording again. It waits for a pending
// submission of these commands to finish first.
func (c *Commands) Reset() error {
	if c.freed {
		return errors.New("vk: Reset on freed commands")
	}
	if err := c.wait(); err != nil {
		return err
	}
	if err := result(C.hi_cmds_reset(c.d.dev, c.c), "vkResetCommandPool"); err != nil {
		return err
	}
	for _, p := range c.pools {
		if err := result(C.hi_dpool_reset(c.d.dev, p), "vkResetDescriptorPool"); err != nil {
			return err
		}
	}
	c.npool = 0
	c.dispatches, c.barriers = 0, 0
	c.ts.reset()
	c.err = nil
	c.ended = false
	return result(C.hi_cmds_begin(c.d.dev, c.c), "vkBeginCommandBuffer")
}

// Free releases the commands after a pending submission finishes.
func (c *Commands) Free() {
	if c == nil || c.freed {
		return
	}
	if c.d.dev == nil { // the device is closed and took everything with it
		c.freed = true
		return
	}
	if c.wait() != nil {
		// Still pending on a failed device: destroying it now could
		// crash the driver. It stays allocated; Close frees it if the
		// device drains, else leaves the device allocated.
		return
	}
	untrack(c.d, &c.d.cmds, c)
	c.freed = true
	for _, p := range c.pools {
		C.hi_dpool_destroy(c.d.dev, p)
	}
	c.pools = nil
	c.ts.free(c.d)
	C.hi_cmds_destroy(c.d.dev, c.c)
	c.c = nil
}

// wait blocks until the latest submission of these commands completes.
func (c *Commands) wait() error {
	if c.pending.q == nil {
		return nil
	}
	err := c.pending.q.waitFor(c.pending.val, time.Time{})
	if err == nil {
		c.pending = submission{}
	}
	return err
}

// ready reports why the commands cannot be submitted to q, or nil.
func (c *Commands) ready(q *Queue) error {
	switch {
	case c.freed:
		return errors.New("vk: submit of freed commands")
	case !c.ended:
		return errors.New("vk: submit of commands still recording: call End first")
	case c.err != nil:
		return fmt.Errorf("vk: submit of commands that failed to record: %w", c.err)
	case c.d != q.d:
		return errors.New("vk: submit of commands to another device's queue")
	case c.q.family != q.family:
		return fmt.Errorf("vk: commands recorded for queue family %d submitted to family %d (use NewTransferCommands for the transfer queue)", c.q.family, q.family)
	}
	return nil
}
