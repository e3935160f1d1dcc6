package engine

import (
	"fmt"

	"headinfer/engine/gguf"
	"headinfer/engine/kernel"
	"headinfer/vk"
)

// deviceKV is a KV cache held entirely in device memory: per layer, one K
// and one V buffer, each holding the layer's KV-head slots back to back
// (slot = [ctx positions][headDim]).
type deviceKV struct {
	m         *Model
	ctx       int
	elem      uint64 // bytes per element
	slotElems int    // elements per slot: ctx·headDim
	k, v      []*vk.Buffer
	split     []headGroup // KV heads per dispatch, so that a bound range fits the device limit
}

// headGroup is a run of consecutive KV heads bound in one dispatch.
type headGroup struct{ first, n int }

func newDeviceKV(m *Model, ctx int) (*deviceKV, error) {
	c := m.Config
	kv := &deviceKV{m: m, ctx: ctx, elem: 2, slotElems: ctx * c.HeadDim}
	if m.kvType == gguf.F32 {
		kv.elem = 4
	}
	slot := uint64(kv.slotElems) * kv.elem
	if limit := m.dev.Info().MaxStorageBufferRange; slot > limit {
		return nil, fmt.Errorf("one KV head of %d positions takes %s, more than the device binds at once (%s): lower --ctx-size", ctx, fmtBytes(slot), fmtBytes(limit))
	} else {
		per := max(1, int(limit/slot))
		for h := 0; h < c.KVHeads; h += per {
			kv.split = append(kv.split, headGroup{h, min(per, c.KVHeads-h)})
		}
	}
	for l := 0; l < c.Layers; l++ {
		for _, dst := range []*[]*vk.Buffer{&kv.k, &kv.v} {
			b, err := m.dev.Alloc(vk.DeviceLocal, slot*uint64(c.KVHeads), fmt.Sprintf("KV cache layer %d", l))
			if err != nil {
				kv.free()
				return nil, fmt.Errorf("KV cache of %d positions: %w", ctx, err)
			}
			*dst = append(*dst, b)
		}
	}
	return kv, nil
}

// groups lists the head groups of layer l (the same for every layer).
func (kv *deviceKV) groups(int) []headGroup { return kv.split }

// rangeOf binds rows [row, row+rows) of the slots of head group g in layer l.
func (kv *deviceKV) rangeOf(l int, g headGroup, row, rows int) (k, v vk.Range) {
	hd := kv.m.Config.HeadDim
	off := uint64(g.first*kv.slotElems+row*hd) * kv.elem
	size := uint64((g.n-1)*kv.slotElems+rows*hd) * kv.elem
	return kv.k[l].Range(off, size), kv.v[l].Range(off, size)
}

// store records the write of the chunk's keys and values (n rows of
// KVHeads·headDim f32) into layer l's slots at their positions.
func (kv *deviceKV) store(c *vk.Commands, l int, k, v, pos vk.Range, n int) error {
	cfg := kv.m.Config
	for _, g := range kv.split {
		dk, dv := kv.rangeOf(l, g, 0, kv.ctx)
		slots := kernel.KVSlots{Tokens: n, SrcHeads: cfg.KVHeads, FirstHead: g.first, Heads: g.n,
			SlotStride: kv.slotElems, SlotRows: kv.ctx}
		if err := kv.m.ops.kvStore.Record(c, k, pos, dk, slots); err != nil {
			return err
		}
		if err := kv.m.ops.kvStore.Record(c, v, pos, dv, slots); err != nil {
			return err
		}
	}
	return nil
}

// bytes is the device memory the cache holds.
func (kv *deviceKV) bytes() uint64 {
	var n uint64
	for _, b := range append(kv.k, kv.v...) {
		n += b.Size()
	}
	return n
}

func (kv *deviceKV) free() {
	for _, b := range append(kv.k, kv.v...) {
		b.Free()
	}
	kv.k, kv.v = nil, nil
}

// fmtBytes formats n bytes with a binary unit.
func fmtBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
