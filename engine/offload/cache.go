package offload

import (
	"errors"
	"fmt"
	"math"

	"headinfer/bytesize"
	"headinfer/engine/gguf"
	"headinfer/engine/kernel"
	"headinfer/vk"
)

// AttnBlock is the number of KV positions one attention partial covers.
// Attention is always split at these boundaries and the partials merged in
// order, so the arithmetic does not depend on where KV lives.
const AttnBlock = 256

// Layout is the shape of a sequence's KV cache and where the plan put it.
type Layout struct {
	Geometry
	Heads         int   // query heads (a multiple of KVHeads)
	ResidentHeads []int // per layer: KV heads 0 … n−1 are resident, the rest streamed
	StreamBlock   int   // positions per streamed block, a multiple of AttnBlock
	// Attn is each layer's attention beyond its geometry: sliding window,
	// score soft cap and score scale. Nil gives every layer the Llama
	// attention (LayerAttn's zero value); otherwise it has one entry per
	// layer.
	Attn []LayerAttn
	// Rings is, per layer, the positions of a ring slot, or 0 for a slot
	// of Ctx positions; nil for none. A sliding-window layer needs only
	// its latest positions: its slots can be rings of RingRows(window,
	// chunk) rows, position p in row p mod rows, which keep a long
	// context's windowed layers as small as a short one's. A ring layer
	// is resident (all its KV heads), and attends chunks of at most the
	// chunk it was sized for.
	Rings []int
}

// RingRows is the size of a ring slot for a layer with sliding window w
// that attends chunks of up to chunk tokens: the chunk's rows, the w−1
// before its first query's, and the slack that lets the ring hold whole
// attention blocks (the kernel maps a ring's row blocks to the latest
// position blocks, the newest of which may hold a single position).
func RingRows(w, chunk int) int {
	return (chunk + w + AttnBlock - 2 + AttnBlock - 1) / AttnBlock * AttnBlock
}

// rowsOf is the positions layer l's slots hold.
func (g Layout) rowsOf(l int) int {
	if g.Rings != nil && g.Rings[l] > 0 {
		return g.Rings[l]
	}
	return g.Ctx
}

// ring is layer l's ring size, 0 when its slots are not rings.
func (g Layout) ring(l int) int {
	if g.Rings == nil {
		return 0
	}
	return g.Rings[l]
}

// LayerAttn is what one layer's attention computes besides the geometry.
// The zero value is full causal attention, no cap, scale 1/sqrt(HeadDim).
// Every attention path (device kernels for resident and streamed heads,
// CPU decode attention) applies it alike.
type LayerAttn struct {
	// Window is the sliding window in positions, 0 for none: a query at
	// position t sees positions p with t−Window < p ≤ t, llama.cpp's
	// standard sliding window (kernel.Visible). Streamed blocks wholly
	// before a step's windows are not copied, and rows before them are
	// not read, so such a layer's decode cost does not grow with the
	// context. (Its slots still hold every position; see Cache.)
	Window int
	// SoftCap is the attention logit soft cap c, 0 for none: a score s
	// becomes c·tanh(s/c) after the scale and before the softmax
	// (Gemma 2: 50).
	SoftCap float32
	// Scale multiplies q·k; 0 stands for 1/sqrt(HeadDim). Gemma scales
	// by 1/sqrt(query_pre_attn_scalar) instead.
	Scale float32
}

// Group is the number of query heads per KV head.
func (g Layout) Group() int { return g.Heads / g.KVHeads }

// attnOf is layer l's attention with its scale resolved.
func (g Layout) attnOf(l int) LayerAttn {
	var a LayerAttn
	if g.Attn != nil {
		a = g.Attn[l]
	}
	if a.Scale == 0 {
		a.Scale = scaleOf(g.HeadDim)
	}
	return a
}

// checkAttn reports per-layer attention that the kernels cannot do.
func (g Layout) checkAttn() error {
	if g.Attn != nil && len(g.Attn) != g.Layers {
		return fmt.Errorf("offload: attention given for %d layers of %d", len(g.Attn), g.Layers)
	}
	if g.Rings != nil && len(g.Rings) != g.Layers {
		return fmt.Errorf("offload: rings given for %d layers of %d", len(g.Rings), g.Layers)
	}
	for l, n := range g.Rings {
		switch {
		case n == 0:
		case n < 0 || n%AttnBlock != 0 || n >= g.Ctx:
			return fmt.Errorf("offload: layer %d: a ring of %d positions is not a positive multiple of %d below the context of %d", l, n, AttnBlock, g.Ctx)
		case g.attnOf(l).Window == 0:
			return fmt.Errorf("offload: layer %d has a ring but no sliding window", l)
		case g.ResidentHeads[l] != g.KVHeads:
			return fmt.Errorf("offload: layer %d's ring is not resident (%d of %d KV heads)", l, g.ResidentHeads[l], g.KVHeads)
		}
	}
	for l, a := range g.Attn {
		if err := kernel.CheckAttnFeatures(a.Window, a.SoftCap); err != nil {
			return fmt.Errorf("layer %d: %w", l, err)
		}
		if s := float64(a.Scale); math.IsNaN(s) || math.IsInf(s, 0) || s < 0 {
			return fmt.Errorf("layer %d: attention scale %v is not a finite value ≥ 0 (0: 1/sqrt(head dimension))", l, a.Scale)
		}
	}
	return nil
}

// Kernels are the kernels the cache records: the KV store (new rows into
// slots) and attention (partials and their merge), and, when set, the CPU
// attention that decode steps use for the streamed heads instead of
// copying their KV to the device.
type Kernels struct {
	Store *kernel.KVStore // K, and V too unless StoreV is set
	// StoreV is the V store when V's type differs from K's, else nil.
	StoreV *kernel.KVStore
	Attn   *kernel.Attention
	CPU    *CPUAttention // nil: decode attention on the device
}

// Scratch is the attention's device scratch, sized with the activations:
// Parts holds PartsCap blocks of partials of a chunk's query heads and Acc
// their running merge.
type Scratch struct {
	Parts, Acc *vk.Buffer
	PartsCap   int
}

// Cache is a sequence's KV cache as the plan places it. Per layer l, KV
// heads 0 … ResidentHeads[l]−1 are resident: their slots (slot =
// [ctx positions][headDim], or a ring of fewer; see Layout.Rings) lie back
// to back in one device buffer, the K slots and then the V slots. The other heads are streamed: their slots
// live in the host store and pass through the two streaming buffers a
// block of StreamBlock positions at a time.
type Cache struct {
	d       *vk.Device
	lay     Layout
	ops     Kernels
	scratch Scratch
	res     []residentLayer

	host     *Store // nil when nothing is streamed
	stream   [2]streamBuf
	hostBind int // rows of a host slot one KV store dispatch may bind (see hostBindAlign)
	cpu      *cpuDecode

	deviceBytes uint64 // resident slots and streaming buffers
}

// residentLayer is one layer's resident slots.
type residentLayer struct {
	heads     int
	rows      int         // positions per slot: the context, or the ring's
	ring      int         // rows when the slots are rings, else 0
	slotElems int         // elements per slot: rows·headDim
	buf       *vk.Buffer  // K slots, then V slots
	vOff      uint64      // where the V slots start in buf
	split     []headGroup // heads per dispatch, so that a bound range fits the device limit
}

// streamBuf is one streaming buffer: a block of one KV head's K and V.
type streamBuf struct{ k, v *vk.Buffer }

// headGroup is a run of consecutive KV heads bound in one dispatch.
type headGroup struct{ first, n int }

// NewCache allocates the resident slots, the host store and the streaming
// buffers of lay on d.
func NewCache(d *vk.Device, lay Layout, ops Kernels, scratch Scratch) (kc *Cache, err error) {
	switch {
	case lay.Layers < 1 || lay.KVHeads < 1 || lay.HeadDim < 1 || lay.Ctx < 1:
		return nil, fmt.Errorf("offload: KV geometry %+v has an empty dimension", lay.Geometry)
	case kernel.CheckKVType(lay.K, lay.HeadDim) != nil:
		return nil, fmt.Errorf("offload: K: %w", kernel.CheckKVType(lay.K, lay.HeadDim))
	case kernel.CheckKVType(lay.V, lay.HeadDim) != nil:
		return nil, fmt.Errorf("offload: V: %w", kernel.CheckKVType(lay.V, lay.HeadDim))
	case ops.Attn != nil && !attnReads(ops.Attn, lay.K, lay.V):
		k, v := ops.Attn.KVTypes()
		return nil, fmt.Errorf("offload: attention over %v keys and %v values for a cache of %v and %v", k, v, lay.K, lay.V)
	case ops.Store != nil && ops.Store.Type() != lay.K:
		return nil, fmt.Errorf("offload: a KV store of %v for %v keys", ops.Store.Type(), lay.K)
	case ops.StoreV == nil && ops.Store != nil && lay.V != lay.K:
		return nil, fmt.Errorf("offload: no V store for %v values beside %v keys", lay.V, lay.K)
	case ops.StoreV != nil && (lay.K == lay.V || ops.StoreV.Type() != lay.V):
		return nil, fmt.Errorf("offload: a V store of %v for %v values beside %v keys (StoreV is only for values of another type)", ops.StoreV.Type(), lay.V, lay.K)
	case lay.Heads%lay.KVHeads != 0:
		return nil, fmt.Errorf("offload: %d query heads are not a multiple of %d KV heads", lay.Heads, lay.KVHeads)
	case len(lay.ResidentHeads) != lay.Layers:
		return nil, fmt.Errorf("offload: %d per-layer resident head counts for %d layers", len(lay.ResidentHeads), lay.Layers)
	case lay.Attn != nil && len(lay.Attn) != lay.Layers:
		return nil, fmt.Errorf("offload: attention given for %d layers of %d", len(lay.Attn), lay.Layers)
	case lay.StreamBlock < AttnBlock || lay.StreamBlock%AttnBlock != 0:
		return nil, fmt.Errorf("offload: stream block of %d positions is not a positive multiple of %d", lay.StreamBlock, AttnBlock)
	case ops.Store == nil || ops.Attn == nil || scratch.Parts == nil || scratch.Acc == nil || scratch.PartsCap < 1:
		return nil, errors.New("offload: missing kernels or attention scratch")
	}
	if err := lay.checkAttn(); err != nil {
		return nil, err
	}
	kc = &Cache{d: d, lay: lay, ops: ops, scratch: scratch, res: make([]residentLayer, lay.Layers)}
	defer func() {
		if err != nil {
			kc.Free()
		}
	}()
	limit := d.Info().MaxStorageBufferRange
	streamed := false
	for l, heads := range lay.ResidentHeads {
		if heads < 0 || heads > lay.KVHeads {
			return nil, fmt.Errorf("offload: %d resident heads in layer %d of %d KV heads", heads, l, lay.KVHeads)
		}
		streamed = streamed || heads < lay.KVHeads
		r := &kc.res[l]
		r.heads, r.rows, r.ring = heads, lay.rowsOf(l), lay.ring(l)
		r.slotElems = lay.SlotRows(r.rows) * lay.HeadDim
		if heads == 0 {
			continue
		}
		slot := max(lay.bytes(false, r.slotElems), lay.bytes(true, r.slotElems))
		if slot > limit {
			return nil, fmt.Errorf("one KV head of %d positions takes %s, more than the device binds at once (%s): lower --ctx-size",
				r.rows, bytesize.Format(slot), bytesize.Format(limit))
		}
		per := max(1, int(limit/slot))
		for h := 0; h < heads; h += per {
			r.split = append(r.split, headGroup{h, min(per, heads-h)})
		}
		r.vOff = lay.bytes(false, r.slotElems) * uint64(heads)
		size := r.vOff + lay.bytes(true, r.slotElems)*uint64(heads)
		if r.buf, err = d.Alloc(vk.DeviceLocal, size, fmt.Sprintf("KV cache layer %d", l)); err != nil {
			return nil, fmt.Errorf("KV cache of %d positions: %w", r.rows, err)
		}
		kc.deviceBytes += size
	}
	if !streamed {
		return kc, nil
	}
	maxBuf := limit
	if a := d.Info().MaxAllocationSize; a > 0 {
		maxBuf = min(maxBuf, a)
	}
	if kc.host, err = NewStore(d, lay.Geometry, lay.ResidentHeads, maxBuf); err != nil {
		return nil, err
	}
	kc.hostBind = hostBindRows(lay.Ctx, limit, max(lay.RowBytes(false), lay.RowBytes(true)))
	if ops.CPU != nil {
		if kc.cpu, err = newCPUDecode(d, lay, ops.CPU); err != nil {
			return nil, err
		}
	}
	kBlock, vBlock := uint64(lay.StreamBlock)*lay.RowBytes(false), uint64(lay.StreamBlock)*lay.RowBytes(true)
	for i := range kc.stream {
		b := &kc.stream[i]
		if b.k, err = d.Alloc(vk.DeviceLocal, kBlock, "KV streaming K"); err != nil {
			return nil, err
		}
		if b.v, err = d.Alloc(vk.DeviceLocal, vBlock, "KV streaming V"); err != nil {
			return nil, err
		}
		kc.deviceBytes += kBlock + vBlock
	}
	return kc, nil
}

// attnReads says whether a reads keys of type k and values of type v.
func attnReads(a *kernel.Attention, k, v gguf.Type) bool {
	ak, av := a.KVTypes()
	return ak == k && av == v
}

// Streams says whether any slot lives in the host store.
func (kc *Cache) Streams() bool { return kc.host != nil }

// DeviceBytes is the device memory of the resident slots and the
// streaming buffers, allocated once for the cache's life.
func (kc *Cache) DeviceBytes() uint64 { return kc.deviceBytes }

// HostBytes is the host memory of the streamed slots.
func (kc *Cache) HostBytes() uint64 {
	if kc.host == nil {
		return 0
	}
	return kc.host.Bytes()
}

// Buffers lists every buffer that holds KV rows: resident slots,
// streaming buffers and host store (tests poison them).
func (kc *Cache) Buffers() []*vk.Buffer {
	var bs []*vk.Buffer
	for _, r := range kc.res {
		if r.buf != nil {
			bs = append(bs, r.buf)
		}
	}
	for _, b := range kc.stream {
		if b.k != nil {
			bs = append(bs, b.k, b.v)
		}
	}
	if kc.host != nil {
		for l := range kc.res {
			for _, r := range kc.host.Runs(l) {
				bs = append(bs, r.K, r.V)
			}
		}
	}
	return bs
}

// rangeOf binds rows [row, row+rows) of the resident slots of head group
// g in layer l.
func (kc *Cache) rangeOf(l int, g headGroup, row, rows int) (k, v vk.Range) {
	lay, hd := kc.lay, kc.lay.HeadDim
	r := &kc.res[l]
	at, elems := g.first*r.slotElems+row*hd, (g.n-1)*r.slotElems+rows*hd
	return r.buf.Range(lay.bytes(false, at), lay.bytes(false, elems)),
		r.buf.Range(r.vOff+lay.bytes(true, at), lay.bytes(true, elems))
}

// hostBindAlign is what hostBind rows are a multiple of when a host slot
// takes several windows: 256 rows of any KV type span a multiple of 256
// bytes, the most any device asks a binding's offset to be a multiple of.
const hostBindAlign = 256

// hostBindRows is how many rows of rowBytes one binding of at most limit
// bytes takes of a host slot of ctx rows: all of them, or whole
// hostBindAlign rows, so that each window after the first starts at an
// offset every device can bind (Q8_0 and Q4_0 rows are 136 and 72 bytes
// at head size 128: not any number of them is aligned).
func hostBindRows(ctx int, limit, rowBytes uint64) int {
	n := int(min(uint64(ctx), limit/rowBytes))
	if n < ctx && n > hostBindAlign {
		n -= n % hostBindAlign
	}
	return n
}

// Store records the write of the chunk's keys and values (n rows of
// KVHeads·headDim f32 at the positions in pos) into layer l's resident
// slots. The streamed heads' rows are written by Attend.
func (kc *Cache) Store(c *vk.Commands, l int, k, v, pos vk.Range, n int) error {
	if l < 0 || l >= len(kc.res) {
		return fmt.Errorf("offload: store into layer %d of %d", l, len(kc.res))
	}
	lay := kc.lay
	r := &kc.res[l]
	// One token whose k and v lie back to back, all heads resident: its
	// 2·KVHeads rows go to the K and then the V slots in one pass.
	if n == 1 && lay.K == lay.V && k.Buf == v.Buf && v.Off == k.Off+k.Size && r.heads == lay.KVHeads &&
		2*r.vOff <= kc.d.Info().MaxStorageBufferRange {
		slots := kernel.KVSlots{Tokens: 1, SrcHeads: 2 * lay.KVHeads, Heads: 2 * lay.KVHeads,
			SlotStride: r.slotElems, SlotRows: r.rows, Ring: r.ring > 0}
		return kc.ops.Store.Record(c, k.Buf.Range(k.Off, k.Size+v.Size), pos, r.buf.Range(0, 2*r.vOff), slots)
	}
	for _, g := range r.split {
		dk, dv := kc.rangeOf(l, g, 0, r.rows)
		slots := kernel.KVSlots{Tokens: n, SrcHeads: lay.KVHeads, FirstHead: g.first, Heads: g.n,
			SlotStride: r.slotElems, SlotRows: r.rows, Ring: r.ring > 0}
		if err := kc.storeKV(c, k, v, pos, dk, dv, slots); err != nil {
			return err
		}
	}
	return nil
}

// storeKV records the store of the chunk's keys k into the K slots dk and
// of its values v into the V slots dv, laid out alike.
func (kc *Cache) storeKV(c *vk.Commands, k, v, pos, dk, dv vk.Range, slots kernel.KVSlots) error {
	if err := kc.ops.Store.Record(c, k, pos, dk, slots); err != nil {
		return err
	}
	sv := kc.ops.StoreV
	if sv == nil {
		sv = kc.ops.Store
	}
	return sv.Record(c, v, pos, dv, slots)
}

// storeHost records the write of the chunk's new rows of layer l's
// streamed heads straight into their host slots: only the new rows cross
// to the host. A slot larger than one binding is written through windows
// of hostBind rows; the KV store skips tokens outside a window.
func (kc *Cache) storeHost(c *vk.Commands, l int, k, v, pos vk.Range, n int) error {
	lay := kc.lay
	write := func(r Run, first, heads int) error {
		for w0 := 0; w0 < lay.Ctx; w0 += kc.hostBind {
			rows := min(kc.hostBind, lay.Ctx-w0)
			at := (first-r.First)*r.Stride + w0*lay.HeadDim
			elems := (heads-1)*r.Stride + rows*lay.HeadDim
			dk := r.K.Range(lay.bytes(false, at), lay.bytes(false, elems))
			dv := r.V.Range(lay.bytes(true, at), lay.bytes(true, elems))
			slots := kernel.KVSlots{Tokens: n, SrcHeads: lay.KVHeads, FirstHead: first, Heads: heads,
				SlotStride: r.Stride, SlotRows: rows, RowBase: w0}
			if err := kc.storeKV(c, k, v, pos, dk, dv, slots); err != nil {
				return err
			}
		}
		return nil
	}
	for _, r := range kc.host.Runs(l) {
		if kc.hostBind == lay.Ctx {
			// A run's buffer fits one binding: all its heads at once.
			if err := write(r, r.First, r.N); err != nil {
				return err
			}
			continue
		}
		for h := r.First; h < r.First+r.N; h++ {
			if err := write(r, h, 1); err != nil {
				return err
			}
		}
	}
	return nil
}

// Write puts data, whole rows of positions from row on, into the K (or
// V) slot of head h of layer l, wherever it lives. A ring slot takes at
// most its size of positions, wrapping as the positions do.
func (kc *Cache) Write(l, h int, isV bool, row int, data []byte) error {
	return kc.segments(l, h, isV, row, len(data), "write", func(dev vk.Range, host []byte, off int) error {
		seg := data[off : off+max(len(host), int(dev.Size))]
		if host != nil {
			copy(host, seg)
			return nil
		}
		return kc.d.Write(dev, seg)
	})
}

// Free releases the cache's memory; the device must be done with it.
func (kc *Cache) Free() {
	for _, r := range kc.res {
		r.buf.Free()
	}
	kc.res = nil
	if kc.host != nil {
		kc.host.Free()
		kc.host = nil
	}
	for _, b := range kc.stream {
		b.k.Free()
		b.v.Free()
	}
	kc.stream = [2]streamBuf{}
	if kc.cpu != nil {
		kc.cpu.free()
		kc.cpu = nil
	}
}
