package engine

import (
	"fmt"
	"math/rand/v2"

	"headinfer/bytesize"
	"headinfer/engine/gguf"
	"headinfer/engine/kernel"
	"headinfer/engine/kv"
	"headinfer/vk"
)

// kvCache is a sequence's KV cache as the plan places it. Per layer l,
// KV heads 0 … res[l].heads−1 are resident: their slots (slot =
// [ctx positions][headDim]) lie back to back in one device buffer, the K
// slots and then the V slots. The other heads are streamed: their slots live in the
// host store and pass through the two streaming buffers a block of
// streamBlock positions at a time.
type kvCache struct {
	m         *Model
	ctx       int
	elem      uint64 // bytes per element
	slotElems int    // elements per slot: ctx·headDim
	res       []residentLayer

	host        *kv.Store // nil when nothing is streamed
	stream      [2]streamBuf
	streamBlock int
	hostBind    int // rows of a host slot one KV store dispatch may bind

	deviceBytes uint64 // resident slots and streaming buffers
}

// residentLayer is one layer's resident slots.
type residentLayer struct {
	heads int
	buf   *vk.Buffer  // K slots, then V slots
	vOff  uint64      // where the V slots start in buf
	split []headGroup // heads per dispatch, so that a bound range fits the device limit
}

// streamBuf is one streaming buffer: a block of one KV head's K and V.
type streamBuf struct{ k, v *vk.Buffer }

// headGroup is a run of consecutive KV heads bound in one dispatch.
type headGroup struct{ first, n int }

func newKVCache(m *Model) (kc *kvCache, err error) {
	c, p := m.Config, m.plan
	g := kvGeometry(c, p, m.kvType)
	kc = &kvCache{m: m, ctx: p.CtxSize, elem: g.Elem, slotElems: p.CtxSize * c.HeadDim,
		res: make([]residentLayer, c.Layers), streamBlock: p.StreamBlock}
	defer func() {
		if err != nil {
			kc.free()
		}
	}()
	limit := m.dev.Info().MaxStorageBufferRange
	slot := g.SlotBytes()
	for l, heads := range p.ResidentHeads {
		r := &kc.res[l]
		r.heads = heads
		if heads == 0 {
			continue
		}
		if slot > limit {
			return nil, fmt.Errorf("one KV head of %d positions takes %s, more than the device binds at once (%s): lower --ctx-size",
				kc.ctx, bytesize.Format(slot), bytesize.Format(limit))
		}
		per := max(1, int(limit/slot))
		for h := 0; h < heads; h += per {
			r.split = append(r.split, headGroup{h, min(per, heads-h)})
		}
		r.vOff = slot * uint64(heads)
		if r.buf, err = m.dev.Alloc(vk.DeviceLocal, 2*r.vOff, fmt.Sprintf("KV cache layer %d", l)); err != nil {
			return nil, fmt.Errorf("KV cache of %d positions: %w", kc.ctx, err)
		}
		kc.deviceBytes += 2 * slot * uint64(heads)
	}
	if p.Streamed == 0 {
		return kc, nil
	}
	maxBuf := limit
	if a := m.dev.Info().MaxAllocationSize; a > 0 {
		maxBuf = min(maxBuf, a)
	}
	if kc.host, err = kv.NewStore(m.dev, g, p.ResidentHeads, maxBuf); err != nil {
		return nil, err
	}
	kc.hostBind = int(min(uint64(kc.ctx), limit/g.RowBytes()))
	blockBytes := uint64(kc.streamBlock) * g.RowBytes()
	for i := range kc.stream {
		b := &kc.stream[i]
		if b.k, err = m.dev.Alloc(vk.DeviceLocal, blockBytes, "KV streaming K"); err != nil {
			return nil, err
		}
		if b.v, err = m.dev.Alloc(vk.DeviceLocal, blockBytes, "KV streaming V"); err != nil {
			return nil, err
		}
		kc.deviceBytes += 2 * blockBytes
	}
	return kc, nil
}

// groups lists the resident head groups of layer l.
func (kc *kvCache) groups(l int) []headGroup { return kc.res[l].split }

// resident is the number of resident KV heads of layer l; heads from
// there on are streamed.
func (kc *kvCache) resident(l int) int { return kc.res[l].heads }

// rangeOf binds rows [row, row+rows) of the resident slots of head group
// g in layer l.
func (kc *kvCache) rangeOf(l int, g headGroup, row, rows int) (k, v vk.Range) {
	hd := kc.m.Config.HeadDim
	off := uint64(g.first*kc.slotElems+row*hd) * kc.elem
	size := uint64((g.n-1)*kc.slotElems+rows*hd) * kc.elem
	r := &kc.res[l]
	return r.buf.Range(off, size), r.buf.Range(r.vOff+off, size)
}

// store records the write of the chunk's keys and values (n rows of
// KVHeads·headDim f32) into layer l's resident slots at their positions.
func (kc *kvCache) store(c *vk.Commands, l int, k, v, pos vk.Range, n int) error {
	cfg := kc.m.Config
	r := &kc.res[l]
	// One token whose k and v lie back to back, all heads resident: its
	// 2·KVHeads rows go to the K and then the V slots in one pass.
	if src, ok := adjacent(k, v); ok && n == 1 && r.heads == cfg.KVHeads &&
		2*r.vOff <= kc.m.dev.Info().MaxStorageBufferRange {
		slots := kernel.KVSlots{Tokens: 1, SrcHeads: 2 * cfg.KVHeads, Heads: 2 * cfg.KVHeads,
			SlotStride: kc.slotElems, SlotRows: kc.ctx}
		return kc.m.ops.kvStore.Record(c, src, pos, r.buf.Range(0, 2*r.vOff), slots)
	}
	for _, g := range r.split {
		dk, dv := kc.rangeOf(l, g, 0, kc.ctx)
		slots := kernel.KVSlots{Tokens: n, SrcHeads: cfg.KVHeads, FirstHead: g.first, Heads: g.n,
			SlotStride: kc.slotElems, SlotRows: kc.ctx}
		if err := kc.storeKV(c, k, v, pos, dk, dv, slots); err != nil {
			return err
		}
	}
	return nil
}

// storeKV records the store of the chunk's keys k into the K slots dk and
// of its values v into the V slots dv, laid out alike.
func (kc *kvCache) storeKV(c *vk.Commands, k, v, pos, dk, dv vk.Range, slots kernel.KVSlots) error {
	if err := kc.m.ops.kvStore.Record(c, k, pos, dk, slots); err != nil {
		return err
	}
	return kc.m.ops.kvStore.Record(c, v, pos, dv, slots)
}

// storeHost records the write of the chunk's new rows of layer l's
// streamed heads straight into their host slots: only the new rows cross
// to the host. A slot larger than one binding is written through windows
// of hostBind rows; the KV store skips tokens outside a window.
func (kc *kvCache) storeHost(c *vk.Commands, l int, k, v, pos vk.Range, n int) error {
	if kc.host == nil {
		return nil
	}
	cfg := kc.m.Config
	row := uint64(cfg.HeadDim) * kc.elem
	write := func(r kv.Run, first, heads int) error {
		base := uint64((first-r.First)*r.Stride) * kc.elem
		for w0 := 0; w0 < kc.ctx; w0 += kc.hostBind {
			rows := min(kc.hostBind, kc.ctx-w0)
			off := base + uint64(w0)*row
			size := uint64((heads-1)*r.Stride)*kc.elem + uint64(rows)*row
			slots := kernel.KVSlots{Tokens: n, SrcHeads: cfg.KVHeads, FirstHead: first, Heads: heads,
				SlotStride: r.Stride, SlotRows: rows, RowBase: w0}
			if err := kc.storeKV(c, k, v, pos, r.K.Range(off, size), r.V.Range(off, size), slots); err != nil {
				return err
			}
		}
		return nil
	}
	for _, r := range kc.host.Runs(l) {
		if kc.hostBind == kc.ctx {
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

// hostBytes is the host memory of the streamed slots.
func (kc *kvCache) hostBytes() uint64 {
	if kc.host == nil {
		return 0
	}
	return kc.host.Bytes()
}

func (kc *kvCache) free() {
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
}

// FillSynthetic appends n positions of made-up keys and values (uniform
// in [−1, 1), drawn from seed) to the session's KV cache without
// computing them, as if n tokens of id 0 had been prefilled. It exists
// for benchmarks at long contexts on slow devices, where a real prefill
// would take hours (its cost grows with the square of the context): the
// steps that follow cost what they would after a real prefill, but their
// logits mean nothing.
func (se *Session) FillSynthetic(n int, seed uint64) error {
	start := len(se.tokens)
	if n <= 0 || start+n > se.s.ctx {
		return fmt.Errorf("fill: %d positions after %d do not fit the context of %d", n, start, se.s.ctx)
	}
	kc, cfg := se.s.kv, se.m.Config
	r := rand.New(rand.NewPCG(seed, uint64(start)))
	const piece = 1 << 16 // rows generated at once
	vals := make([]float32, min(n, piece)*cfg.HeadDim)
	for l := 0; l < cfg.Layers; l++ {
		for h := 0; h < cfg.KVHeads; h++ {
			for kv := 0; kv < 2; kv++ {
				for row := start; row < start+n; row += piece {
					rows := min(piece, start+n-row)
					v := vals[:rows*cfg.HeadDim]
					for i := range v {
						v[i] = 2*r.Float32() - 1
					}
					data, err := gguf.Quantize(se.m.kvType, v)
					if err != nil {
						return err
					}
					if err := kc.write(l, h, kv == 1, row, data); err != nil {
						return err
					}
				}
			}
		}
	}
	se.tokens = append(se.tokens, make([]int32, n)...)
	se.have = false
	return nil
}

// write puts data, whole rows from position row on, into the K (or V)
// slot of head h of layer l, wherever it lives.
func (kc *kvCache) write(l, h int, isV bool, row int, data []byte) error {
	rowBytes := uint64(kc.m.Config.HeadDim) * kc.elem
	if h < kc.res[l].heads {
		r := &kc.res[l]
		off := uint64(h*kc.slotElems)*kc.elem + uint64(row)*rowBytes
		if isV {
			off += r.vOff
		}
		return kc.m.dev.Write(r.buf.Range(off, uint64(len(data))), data)
	}
	k, v := kc.host.Slot(l, h, row, len(data)/int(rowBytes))
	if isV {
		k = v
	}
	copy(k.Buf.Bytes()[k.Off:k.Off+k.Size], data)
	return nil
}
