package vk

/*
#include "vkc.h"
*/
import "C"

import (
	"fmt"
	"sort"
	"sync"
	"unsafe"

	"headinfer/bytesize"
)

// MemoryKind says where a buffer lives and whether the host maps it.
type MemoryKind int

// Memory kinds.
const (
	DeviceLocal MemoryKind = iota // weights, activations, KV on the device
	Upload                        // host-visible, coherent, persistently mapped, preferably uncached (write-combined): staging
	Readback                      // host-visible, coherent, preferably host-cached, mapped: results and the host KV store, which the host reads
)

const numKinds = 3

// String gives "device-local", "upload" or "readback".
func (k MemoryKind) String() string {
	switch k {
	case DeviceLocal:
		return "device-local"
	case Upload:
		return "upload"
	case Readback:
		return "readback"
	}
	return fmt.Sprintf("MemoryKind(%d)", int(k))
}

// blockSize is the size of the shared blocks buffers are carved from;
// larger requests get a block of their own.
const blockSize = 256 << 20

// MemoryStats is the allocator's accounting, in bytes requested.
type MemoryStats struct {
	Live, Peak [numKinds]uint64 // by MemoryKind
	Budget     uint64           // device-local budget from VK_EXT_memory_budget, 0 if unknown
}

// allocator sub-allocates buffers from large blocks, one VkBuffer each.
type allocator struct {
	d         *Device
	mu        sync.Mutex
	blockSize uint64
	types     [numKinds]int32 // memory type index per kind
	mapped    [numKinds]bool  // blocks of this kind are mapped (host-visible and coherent)
	blocks    [numKinds][]*block
	live      [numKinds]uint64
	peak      [numKinds]uint64
}

// block is one VkDeviceMemory with one VkBuffer over all of it.
type block struct {
	kind      MemoryKind
	c         C.hi_block
	size      uint64
	used      uint64
	free      []span // sorted by offset, adjacent spans merged
	dedicated bool
}

type span struct{ off, size uint64 }

// Buffer is a range of device memory that kernels bind and copies address.
type Buffer struct {
	d     *Device
	blk   *block
	off   uint64 // in the block
	size  uint64 // requested
	space uint64 // reserved, aligned
	label string
	freed bool
}

// Range is a byte range of a buffer, as bound to a kernel binding or
// named by a copy.
type Range struct {
	Buf       *Buffer
	Off, Size uint64
}

func (a *allocator) init(d *Device) error {
	a.d = d
	a.blockSize = blockSize
	if m := d.info.MaxAllocationSize; m > 0 && m < a.blockSize {
		a.blockSize = m
	}
	var bits C.uint32_t
	if err := result(C.hi_buffer_type_bits(d.dev, &bits), "vkCreateBuffer (probe)"); err != nil {
		return err
	}
	for k := MemoryKind(0); k < numKinds; k++ {
		t := pickType(&d.phys.raw, uint32(bits), k)
		if t < 0 {
			return fmt.Errorf("vk: device %s has no memory type for %s buffers", d.info.Name, k)
		}
		a.types[k] = int32(t)
		f := d.phys.raw.type_flags[t]
		a.mapped[k] = f&C.VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT != 0 && f&C.VK_MEMORY_PROPERTY_HOST_COHERENT_BIT != 0
	}
	return nil
}

// pickType returns the best memory type for kind among those a storage
// buffer may use, or -1.
func pickType(r *C.hi_devinfo, allowed uint32, kind MemoryKind) int {
	flags := make([]uint32, r.type_count)
	for t := range flags {
		flags[t] = uint32(r.type_flags[t])
	}
	return pickTypeOf(flags, allowed, kind)
}

// pickTypeOf is pickType over the property flags of the memory types.
func pickTypeOf(flags []uint32, allowed uint32, kind MemoryKind) int {
	const (
		local    = C.VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT
		visible  = C.VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT
		coherent = C.VK_MEMORY_PROPERTY_HOST_COHERENT_BIT
		cached   = C.VK_MEMORY_PROPERTY_HOST_CACHED_BIT
		unusable = C.VK_MEMORY_PROPERTY_LAZILY_ALLOCATED_BIT | C.VK_MEMORY_PROPERTY_PROTECTED_BIT
	)
	best, bestScore := -1, -1
	for t, f := range flags {
		if allowed&(1<<t) == 0 || f&unusable != 0 {
			continue
		}
		score := 0
		switch kind {
		case DeviceLocal:
			// Host-visible device memory is often a small BAR window:
			// keep it for when nothing else is device-local.
			if f&local != 0 {
				score += 4
			}
			if f&visible == 0 {
				score += 2
			}
		case Upload, Readback:
			// Host access must need no flush or invalidate.
			if f&(visible|coherent) != visible|coherent {
				continue
			}
			if f&local == 0 {
				score += 2
			}
			if kind == Readback && f&cached != 0 {
				score += 4
			}
			if kind == Upload && f&cached == 0 {
				score++
			}
		}
		if score > bestScore {
			best, bestScore = t, score
		}
	}
	return best
}

// Alloc returns a buffer of size bytes of the given kind. Sizes may exceed
// MaxStorageBufferRange; kernels then bind sub-ranges.
func (d *Device) Alloc(kind MemoryKind, size uint64, label string) (*Buffer, error) {
	if kind < 0 || kind >= numKinds {
		return nil, fmt.Errorf("vk: Alloc %q: unknown memory kind %d", label, int(kind))
	}
	if size == 0 {
		return nil, fmt.Errorf("vk: Alloc %q: size is 0", label)
	}
	if d.dev == nil {
		return nil, errClosed
	}
	return d.mem.alloc(kind, size, label)
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) / a * a }

func (a *allocator) alloc(kind MemoryKind, size uint64, label string) (*Buffer, error) {
	space := alignUp(size, a.d.align)
	if space < size {
		return nil, fmt.Errorf("vk: Alloc %q: size %d overflows", label, size)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var blk *block
	var off uint64
	if space > a.blockSize {
		if m := a.d.info.MaxAllocationSize; m > 0 && space > m {
			return nil, fmt.Errorf("vk: Alloc %q: %s of %s memory exceeds the device's maxMemoryAllocationSize (%s)",
				label, bytesize.Format(size), kind, bytesize.Format(m))
		}
		b, err := a.newBlock(kind, space, true)
		if err != nil {
			return nil, a.oom(kind, size, label, err)
		}
		blk, off = b, 0
	} else {
		for _, b := range a.blocks[kind] {
			if o, ok := b.fit(space); ok {
				blk, off = b, o
				break
			}
		}
		if blk == nil {
			b, err := a.newBlock(kind, a.blockSize, false)
			if err != nil {
				return nil, a.oom(kind, size, label, err)
			}
			blk = b
		}
	}
	if err := blk.take(off, space); err != nil {
		return nil, fmt.Errorf("vk: Alloc %q: %w", label, err)
	}
	a.live[kind] += size
	a.peak[kind] = max(a.peak[kind], a.live[kind])
	return &Buffer{d: a.d, blk: blk, off: off, size: size, space: space, label: label}, nil
}

// oom wraps an allocation failure with what is live.
func (a *allocator) oom(kind MemoryKind, size uint64, label string, err error) error {
	what := "allocation failed"
	if isOutOfMemory(err) {
		what = "out of memory"
	}
	return fmt.Errorf("vk: %s: %s of %s memory for %q (live: device-local %s, upload %s, readback %s): %w",
		what, bytesize.Format(size), kind, label, bytesize.Format(a.live[DeviceLocal]), bytesize.Format(a.live[Upload]), bytesize.Format(a.live[Readback]), err)
}

func (a *allocator) newBlock(kind MemoryKind, size uint64, dedicated bool) (*block, error) {
	b := &block{kind: kind, size: size, dedicated: dedicated, free: []span{{0, size}}}
	mapIt := C.int(0)
	if a.mapped[kind] {
		mapIt = 1
	}
	if err := result(C.hi_block_create(a.d.dev, C.uint64_t(size), C.uint32_t(a.types[kind]), mapIt, &b.c), "vkAllocateMemory"); err != nil {
		return nil, err
	}
	a.blocks[kind] = append(a.blocks[kind], b)
	return b, nil
}

// fit finds the first free span that holds size bytes.
func (b *block) fit(size uint64) (uint64, bool) {
	for _, s := range b.free {
		if s.size >= size {
			return s.off, true
		}
	}
	return 0, false
}

// take removes [off, off+size) from the free span that starts at off
// (at 0 in a new block).
func (b *block) take(off, size uint64) error {
	for i, s := range b.free {
		if s.off == off && s.size >= size {
			if s.size == size {
				b.free = append(b.free[:i], b.free[i+1:]...)
			} else {
				b.free[i] = span{off + size, s.size - size}
			}
			b.used += size
			return nil
		}
	}
	return fmt.Errorf("allocator has no free span of %d bytes at offset %d", size, off)
}

// give returns [off, off+size) to the free list, merging neighbours.
func (b *block) give(off, size uint64) {
	i := sort.Search(len(b.free), func(i int) bool { return b.free[i].off > off })
	b.free = append(b.free, span{})
	copy(b.free[i+1:], b.free[i:])
	b.free[i] = span{off, size}
	if i+1 < len(b.free) && b.free[i].off+b.free[i].size == b.free[i+1].off {
		b.free[i].size += b.free[i+1].size
		b.free = append(b.free[:i+1], b.free[i+2:]...)
	}
	if i > 0 && b.free[i-1].off+b.free[i-1].size == b.free[i].off {
		b.free[i-1].size += b.free[i].size
		b.free = append(b.free[:i], b.free[i+1:]...)
	}
	b.used -= size
}

// Free returns the buffer's memory. The GPU must be done with it.
// Freeing twice does nothing.
func (b *Buffer) Free() {
	if b == nil {
		return
	}
	a := &b.d.mem
	a.mu.Lock()
	defer a.mu.Unlock()
	if b.freed || b.blk == nil || a.d.dev == nil {
		return
	}
	b.freed = true
	blk := b.blk
	blk.give(b.off, b.space)
	a.live[blk.kind] -= b.size
	if blk.used == 0 && (blk.dedicated || a.emptyBlocks(blk.kind) > 1) {
		// One empty shared block per kind stays, so that a loop of
		// alloc and free does not churn driver allocations.
		a.release(blk)
	}
}

func (a *allocator) emptyBlocks(kind MemoryKind) int {
	n := 0
	for _, b := range a.blocks[kind] {
		if b.used == 0 && !b.dedicated {
			n++
		}
	}
	return n
}

func (a *allocator) release(blk *block) {
	bs := a.blocks[blk.kind]
	for i, b := range bs {
		if b == blk {
			a.blocks[blk.kind] = append(bs[:i], bs[i+1:]...)
			break
		}
	}
	C.hi_block_destroy(a.d.dev, &blk.c)
}

func (a *allocator) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k := range a.blocks {
		for _, b := range a.blocks[k] {
			C.hi_block_destroy(a.d.dev, &b.c)
		}
		a.blocks[k] = nil
	}
}

// Memory reports live and peak bytes by kind and the device-local budget.
func (d *Device) Memory() MemoryStats {
	a := &d.mem
	a.mu.Lock()
	s := MemoryStats{Live: a.live, Peak: a.peak}
	a.mu.Unlock()
	for _, h := range d.Info().Heaps {
		if h.DeviceLocal {
			s.Budget += h.Budget
		}
	}
	return s
}

// Size is the size requested at Alloc.
func (b *Buffer) Size() uint64 { return b.size }

// Label is the name given at Alloc.
func (b *Buffer) Label() string { return b.label }

// Kind is the memory kind given at Alloc.
func (b *Buffer) Kind() MemoryKind { return b.blk.kind }

// Bytes is the buffer's mapped memory for Upload and Readback buffers, nil
// for DeviceLocal ones. It is valid until Free.
func (b *Buffer) Bytes() []byte {
	if b.blk.kind == DeviceLocal || b.freed {
		return nil
	}
	return b.mappedBytes()
}

// mappedBytes is the buffer's memory when its block is mapped, else nil.
func (b *Buffer) mappedBytes() []byte {
	if b.blk.c.mapped == nil {
		return nil
	}
	return cBytes(unsafe.Add(b.blk.c.mapped, b.off), b.size)
}

// Range is the sub-range [off, off+size) of the buffer.
func (b *Buffer) Range(off, size uint64) Range { return Range{Buf: b, Off: off, Size: size} }

// All is the whole buffer.
func (b *Buffer) All() Range { return Range{Buf: b, Size: b.size} }

// check validates r against its buffer.
func (r Range) check(d *Device) error {
	if r.Buf == nil {
		return fmt.Errorf("nil buffer")
	}
	if r.Buf.freed {
		return fmt.Errorf("buffer %q was freed", r.Buf.label)
	}
	if r.Buf.d != d {
		return fmt.Errorf("buffer %q belongs to another device", r.Buf.label)
	}
	if r.Size == 0 {
		return fmt.Errorf("empty range of buffer %q", r.Buf.label)
	}
	if r.Off > r.Buf.size || r.Size > r.Buf.size-r.Off {
		return fmt.Errorf("range [%d, +%d) is outside buffer %q of %d bytes", r.Off, r.Size, r.Buf.label, r.Buf.size)
	}
	return nil
}

// handle is the VkBuffer and offset in it where the range starts.
func (r Range) handle() (C.VkBuffer, uint64) {
	return r.Buf.blk.c.buf, r.Buf.off + r.Off
}
