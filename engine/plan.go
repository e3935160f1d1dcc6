package engine

import (
	"fmt"
	"strings"

	"headinfer/bytesize"
	"headinfer/engine/gguf"
	"headinfer/engine/kernel"
	"headinfer/engine/offload"
	"headinfer/vk"
)

// Offload modes (Options.Offload).
const (
	OffloadAuto = "auto" // stream only the KV slots that do not fit the budget
	OffloadNone = "none" // keep the whole KV cache on the device, or fail
	OffloadHead = "head" // stream every slot (for testing and measuring)
)

// Decode attention placements (Options.DecodeAttn): where a decode step
// computes the attention of the streamed heads.
const (
	DecodeAttnAuto = "auto" // the faster of the two by the measured rates
	DecodeAttnGPU  = "gpu"  // copy their KV blocks to the device and attend there
	DecodeAttnCPU  = "cpu"  // attend on the CPU over the host store, where the KV lives
)

// DefaultStreamBlock is the number of KV positions a streamed slot moves
// per copy: large enough that a copy's fixed costs (a submission, a
// semaphore) are small against its bytes, small enough that the double
// buffer stays a few MiB (16 MiB for head dimension 128 in f16).
const DefaultStreamBlock = 16384

// Plan is where the sessions' device memory goes, decided at load from the
// device-memory budget: weights, activations for one chunk, the buffers
// that streamed KV blocks pass through, then as many whole KV slots
// (one per layer and KV head) as still fit; the other slots live in host
// memory and are streamed through the device block by block. It budgets
// Sequences sessions (Options.Parallel) of CtxSize positions each, alike:
// each takes its activations, streaming buffers and resident slots, and
// a batched decode step its activations for one token per sequence; a
// session opened beyond them takes the same again.
type Plan struct {
	Mode        string `json:"mode"`        // OffloadAuto, OffloadNone or OffloadHead
	Sequences   int    `json:"sequences"`   // sessions budgeted; the byte totals below cover them all
	Budget      uint64 `json:"budget"`      // device-local bytes allowed
	BudgetFrom  string `json:"budget_from"` // where Budget came from
	CtxSize     int    `json:"ctx_size"`
	Chunk       int    `json:"chunk"`
	KVType      string `json:"kv_type"`      // "q8_0", or "q8_0/q4_0" for keys and values apart
	KVTypeK     string `json:"kv_type_k"`    // the keys' type
	KVTypeV     string `json:"kv_type_v"`    // the values' type
	StreamBlock int    `json:"stream_block"` // positions per streamed block

	Weights     uint64 `json:"weight_bytes"`     // device bytes of the weights
	Activations uint64 `json:"activation_bytes"` // device bytes of each sequence's chunk activations and attention scratch, and the batched step's
	Streaming   uint64 `json:"streaming_bytes"`  // device bytes of the streaming buffers (0 when nothing streams)
	ResidentKV  uint64 `json:"resident_kv_bytes"`

	SlotBytes     uint64 `json:"slot_bytes"`     // K+V bytes of one slot at CtxSize
	Slots         int    `json:"slots"`          // layers × KV heads
	Resident      int    `json:"resident_slots"` // slots kept on the device, per sequence
	Streamed      int    `json:"streamed_slots"` // slots in host memory, per sequence
	ResidentHeads []int  `json:"resident_heads"` // per layer: KV heads 0 … n−1 are resident, the rest streamed
	HostKV        uint64 `json:"host_kv_bytes"`  // host bytes of the streamed slots
	// HostContexts is, for each KV type, the longest context whose
	// streamed heads (as many as this plan streams) fit the host budget
	// (--host-mem), or with no budget the positions per GiB of host
	// memory; nil when nothing streams.
	HostContexts []HostContext `json:"host_contexts,omitempty"`
	HostBudget   uint64        `json:"host_budget,omitempty"` // --host-mem (0: none)

	// Windows is each layer's sliding window (0: none), nil when no layer
	// has one. Rings is each windowed layer's ring slot size in positions
	// (0: a full slot; see offload.Layout.Rings), nil when there are no
	// rings: they hold a windowed layer's KV in about its window whatever
	// the context, always resident. RingKV is their device bytes (part
	// of ResidentKV), RingsWhy why there are none where windows are.
	Windows  []int  `json:"windows,omitempty"`
	Rings    []int  `json:"ring_positions,omitempty"`
	RingKV   uint64 `json:"ring_kv_bytes,omitempty"`
	RingsWhy string `json:"rings_why,omitempty"`

	ChunkAuto bool   `json:"chunk_auto"`          // the chunk was chosen by the planner (--chunk auto)
	ChunkWhy  string `json:"chunk_why,omitempty"` // why that chunk
	Rates     Rates  `json:"rates"`               // the measured rates it was chosen with (zero: not measured)

	// DecodeAttn is where decode steps attend the streamed heads
	// (DecodeAttnGPU or DecodeAttnCPU; gpu when nothing streams), and
	// DecodeAttnWhy why.
	DecodeAttn    string `json:"decode_attn"`
	DecodeAttnWhy string `json:"decode_attn_why"`

	// Devices is, for a model split over devices, each device's share:
	// its layers and its own plan of them (whose per-layer fields count
	// from its first layer). The fields above then sum the devices' bytes
	// and slots and join their per-layer fields. Nil on one device.
	Devices []DevicePlan `json:"devices,omitempty"`
}

// DeviceBytes is the device-local memory the plan places.
func (p Plan) DeviceBytes() uint64 { return p.Weights + p.Activations + p.Streaming + p.ResidentKV }

// DeviceKVBytes is the device memory the KV cache takes: resident slots
// and streaming buffers.
func (p Plan) DeviceKVBytes() uint64 { return p.Streaming + p.ResidentKV }

// StreamBlocks is the number of blocks a streamed slot is visited in at
// full context.
func (p Plan) StreamBlocks() int { return (p.CtxSize + p.StreamBlock - 1) / p.StreamBlock }

// HostContext is how long a context's streamed KV can be in host memory
// with one KV type.
type HostContext struct {
	KVType    string `json:"kv_type"`
	Positions int    `json:"positions"`
}

// hostContexts says what HostContexts holds.
func (p Plan) hostContexts() string {
	var parts []string
	for _, h := range p.HostContexts {
		parts = append(parts, fmt.Sprintf("%s %d", h.KVType, h.Positions))
	}
	if p.HostBudget == 0 {
		return fmt.Sprintf("positions per GiB of host memory for the %d streamed heads: %s", p.Streamed, strings.Join(parts, ", "))
	}
	return fmt.Sprintf("the longest context whose %d streamed heads fit --host-mem %s: %s", p.Streamed, bytesize.Format(p.HostBudget), strings.Join(parts, ", "))
}

// String is the plan as a short report.
func (p Plan) String() string {
	var b strings.Builder
	pct := func(n uint64) string {
		if p.Budget == 0 {
			return ""
		}
		return fmt.Sprintf(" (%4.1f%%)", 100*float64(n)/float64(p.Budget))
	}
	fmt.Fprintf(&b, "device memory budget %s (%s), offload %s, context %d, chunk %d, KV %s\n",
		bytesize.Format(p.Budget), p.BudgetFrom, p.Mode, p.CtxSize, p.Chunk, p.KVType)
	if p.Sequences > 1 {
		fmt.Fprintf(&b, "%d parallel sequences of %d positions each; KV slots are per sequence, bytes cover all\n", p.Sequences, p.CtxSize)
	}
	fmt.Fprintf(&b, "  weights            %10s%s\n", bytesize.Format(p.Weights), pct(p.Weights))
	fmt.Fprintf(&b, "  activations        %10s%s\n", bytesize.Format(p.Activations), pct(p.Activations))
	fmt.Fprintf(&b, "  streaming buffers  %10s%s\n", bytesize.Format(p.Streaming), pct(p.Streaming))
	fmt.Fprintf(&b, "  resident KV        %10s%s\n", bytesize.Format(p.ResidentKV), pct(p.ResidentKV))
	fmt.Fprintf(&b, "  device total       %10s%s\n", bytesize.Format(p.DeviceBytes()), pct(p.DeviceBytes()))
	if rings := p.ringSlots(); rings > 0 {
		fmt.Fprintf(&b, "KV slots: %d (%d rings of the sliding-window layers, %d of %d positions, %s each), %d resident, %d streamed",
			p.Slots, rings, p.Slots-rings, p.CtxSize, bytesize.Format(p.SlotBytes), p.Resident, p.Streamed)
	} else {
		fmt.Fprintf(&b, "KV slots: %d (%s each), %d resident, %d streamed", p.Slots, bytesize.Format(p.SlotBytes), p.Resident, p.Streamed)
	}
	if p.Streamed > 0 {
		fmt.Fprintf(&b, " in blocks of %d positions (%d per slot at full context)", p.StreamBlock, p.StreamBlocks())
	}
	fmt.Fprintf(&b, "\nhost KV store: %s\n", bytesize.Format(p.HostKV))
	if len(p.HostContexts) > 0 {
		b.WriteString(p.hostContexts() + "\n")
	}
	if p.ChunkAuto {
		fmt.Fprintf(&b, "chunk %d (auto): %s\n", p.Chunk, p.ChunkWhy)
	}
	if p.Windows != nil {
		p.writeLayers(&b)
	} else if p.Resident > 0 && p.Streamed > 0 {
		fmt.Fprintf(&b, "resident KV heads per layer: %v\n", p.ResidentHeads)
	}
	if p.DecodeAttn != "" {
		fmt.Fprintf(&b, "decode attention of streamed heads: %s (%s)\n", p.DecodeAttn, p.DecodeAttnWhy)
	}
	p.writeDevices(&b)
	return b.String()
}

// ringSlots is the number of slots that are rings, per sequence.
func (p Plan) ringSlots() int {
	n := 0
	for l, r := range p.Rings {
		if r > 0 {
			n += p.ResidentHeads[l]
		}
	}
	return n
}

// writeLayers writes a line per run of layers alike: window, slot size
// and placement.
func (p Plan) writeLayers(b *strings.Builder) {
	kvHeads := 0
	if len(p.ResidentHeads) > 0 {
		kvHeads = p.Slots / len(p.ResidentHeads)
	}
	line := func(l int) string {
		w, where := "none", ""
		if p.Windows[l] > 0 {
			w = fmt.Sprint(p.Windows[l])
		}
		switch res := p.ResidentHeads[l]; {
		case p.Rings != nil && p.Rings[l] > 0:
			where = fmt.Sprintf("ring of %d positions, resident", p.Rings[l])
		case res == kvHeads:
			where = fmt.Sprintf("%d positions, resident", p.CtxSize)
		case res == 0:
			where = fmt.Sprintf("%d positions, streamed", p.CtxSize)
		default:
			where = fmt.Sprintf("%d positions, %d of %d KV heads resident, the rest streamed", p.CtxSize, res, kvHeads)
		}
		return fmt.Sprintf("window %-6s %s", w, where)
	}
	fmt.Fprintf(b, "KV per layer:\n")
	for l0 := 0; l0 < len(p.Windows); {
		l1 := l0 + 1
		for l1 < len(p.Windows) && line(l1) == line(l0) {
			l1++
		}
		layers := fmt.Sprintf("layer %d", l0)
		if l1-l0 > 1 {
			layers = fmt.Sprintf("layers %d-%d", l0, l1-1)
		}
		fmt.Fprintf(b, "  %-13s %s\n", layers, line(l0))
		l0 = l1
	}
	if p.RingKV > 0 {
		fmt.Fprintf(b, "ring KV (in resident KV): %s\n", bytesize.Format(p.RingKV))
	}
	if p.RingsWhy != "" {
		fmt.Fprintf(b, "no rings: %s\n", p.RingsWhy)
	}
}

// planInput is what the planner decides from.
type planInput struct {
	c           Config
	ctx, chunk  int
	kvType      kvTypes
	mode        string
	budget      uint64
	budgetFrom  string
	streamBlock int
	weights     uint64
	seqs        int    // parallel sequences (0 counts as 1)
	bindLimit   uint64 // maxStorageBufferRange
	rates       Rates  // measured device rates, for an automatic chunk
	swaFull     bool   // no rings for sliding-window layers (Options.SWAFull)
	// part is the layers planned: all of them, or one device's share of
	// a split model. The plan's per-layer fields count from its first.
	part part
}

// rings sizes the ring slots of the sliding-window layers for chunks of
// chunk tokens: nil when no layer gets one (no windows, --swa-full, or
// windows so long that a ring would not be smaller than the context).
func (in planInput) rings(chunk int) []int {
	if in.swaFull {
		return nil
	}
	var rings []int
	for l := in.part.lo; l < in.part.hi; l++ {
		w := in.c.Window(l)
		if w == 0 {
			continue
		}
		if n := offload.RingRows(w, chunk); n < in.ctx {
			if rings == nil {
				rings = make([]int, in.part.layers())
			}
			rings[l-in.part.lo] = n
		}
	}
	return rings
}

// ringBytes is the device memory of rings, for every sequence.
func (in planInput) ringBytes(rings []int) uint64 {
	var n uint64
	for _, r := range rings {
		n += uint64(r) * in.kvType.rowBytes(in.c.HeadDim) * uint64(in.c.KVHeads)
	}
	return uint64(max(in.seqs, 1)) * n
}

// defaultChunk is the prefill chunk when nothing streams or the rates are
// not known.
const defaultChunk = 512

// makePlan places weights, activations, streaming buffers and KV slots in
// the budget. A chunk of 0 is chosen here (autoChunk).
func makePlan(in planInput) (Plan, error) {
	if in.part.hi == 0 {
		in.part = wholeOf(in.c)
	}
	if in.chunk > 0 {
		return placePlan(in)
	}
	chunk, why := autoChunk(in)
	in.chunk = chunk
	p, err := placePlan(in)
	p.ChunkAuto, p.ChunkWhy, p.Rates = true, why, in.rates
	return p, err
}

// autoChunkCap bounds an automatic chunk that the budget would let grow
// further (unless prefill needs more to be compute-bound): 16× the default
// chunk already copies a streamed head's earlier rows 16× less often, and
// a device whose memory is the host's (a CPU driver, an integrated GPU)
// should not lend the activations most of it.
const autoChunkCap = 8192

// autoChunk chooses the prefill chunk. When the KV cache is resident
// nothing streams and the default chunk serves. Otherwise every prefill
// chunk copies the streamed heads' earlier KV once, so fewer, larger
// chunks copy less: the chunk is the largest whose activations fit the
// budget after the weights and the streaming buffers (which leaves less
// room for resident heads, a trade the paper makes too), up to
// autoChunkCap or, if larger, the size from which its attention does more
// arithmetic than the copies take (computeBoundChunk).
func autoChunk(in planInput) (int, string) {
	def := min(defaultChunk, in.ctx)
	fixed := in
	fixed.chunk = def
	if p, err := placePlan(fixed); err != nil || p.Streamed == 0 {
		return def, "the default: the KV cache is resident, nothing streams"
	}
	c := in.c
	kvRow := in.kvType.rowBytes(c.HeadDim)
	elem := float64(kvRow) / float64(2*c.HeadDim) // mean bytes per K or V element
	seqs := uint64(max(in.seqs, 1))
	fixedCost := in.weights + seqs*streamingBytes(in.streamBlock, kvRow) + batchActivationBytes(c, in.seqs)
	fits := func(n int) bool {
		return fixedCost+seqs*activationSizes(c, n, in.ctx).device()+in.ringBytes(in.rings(n)) <= in.budget
	}
	largest := 0
	for lo, hi := 1, in.ctx; lo <= hi; {
		mid := lo + (hi-lo)/2
		if fits(mid) {
			largest, lo = mid, mid+1
		} else {
			hi = mid - 1
		}
	}
	if largest == 0 {
		return def, "the default: no chunk fits the budget"
	}
	need := computeBoundChunk(in.rates, c.Group(), elem)
	if need == 0 {
		return min(def, largest), fmt.Sprintf("the default: the device's rates were not measured (largest chunk that fits: %d)", largest)
	}
	limit := max(autoChunkCap, (need+attnBlock-1)/attnBlock*attnBlock)
	chunk := min(largest, limit, in.ctx)
	why := fmt.Sprintf("the largest chunk whose activations fit after weights and streaming buffers is %d, at most %d; prefill over streamed heads is compute-bound from %d tokens (%.1f GFLOP/s against %.2f GB/s host→device copies, %d query heads per KV head, %.4g-byte KV elements)",
		largest, limit, need, in.rates.FLOPS/1e9, in.rates.CopyBps/1e9, c.Group(), elem)
	if chunk < need && chunk < in.ctx {
		why += "; the budget keeps it below the compute-bound size"
	}
	return chunk, why
}

// placePlan is makePlan for a given chunk. The sliding-window layers'
// rings come first; should they not fit, the windowed layers take full
// slots like the others, which may stream.
func placePlan(in planInput) (Plan, error) {
	p, err := placeSlots(in, in.rings(in.chunk))
	if err == nil || p.Rings == nil {
		return p, err
	}
	in.swaFull = true
	q, err2 := placeSlots(in, nil)
	if err2 != nil {
		return p, err // the first reason is the one to act on
	}
	q.RingsWhy = fmt.Sprintf("rings of the sliding-window layers (%s) do not fit: %v", bytesize.Format(p.RingKV), err)
	return q, nil
}

// placeSlots places the KV slots with the given rings (nil: none).
func placeSlots(in planInput, rings []int) (Plan, error) {
	c := in.c
	kvRow := in.kvType.rowBytes(c.HeadDim)
	seqs := uint64(max(in.seqs, 1))
	p := Plan{
		Mode: in.mode, Sequences: int(seqs), Budget: in.budget, BudgetFrom: in.budgetFrom,
		CtxSize: in.ctx, Chunk: in.chunk, KVType: in.kvType.String(),
		KVTypeK: in.kvType.kName(), KVTypeV: in.kvType.vName(),
		StreamBlock: in.streamBlock,
		Weights:     in.weights,
		Activations: seqs*activationSizes(c, in.chunk, in.ctx).device() + batchActivationBytes(c, in.seqs),
		SlotBytes:   uint64(in.kvType.slotRows(in.ctx)) * kvRow,
		Slots:       in.part.layers() * c.KVHeads,
		Rings:       rings,
		RingKV:      in.ringBytes(rings),
	}
	if c.SlidingWindow > 0 {
		p.Windows = make([]int, in.part.layers())
		for l := range p.Windows {
			p.Windows[l] = c.Window(in.part.lo + l)
		}
	}
	ringSlots := 0 // slots that are rings, always resident
	for _, r := range rings {
		if r > 0 {
			ringSlots += c.KVHeads
		}
	}
	full := p.Slots - ringSlots // slots of CtxSize positions
	if p.Mode == "" {
		p.Mode = OffloadAuto
	}
	switch p.Mode {
	case OffloadAuto, OffloadNone, OffloadHead:
	default:
		return Plan{}, fmt.Errorf("offload mode %q is not one of auto, none, head", p.Mode)
	}
	if in.streamBlock <= 0 || in.streamBlock%attnBlock != 0 {
		return Plan{}, fmt.Errorf("stream block of %d positions is not a positive multiple of %d", in.streamBlock, attnBlock)
	}
	slotBind := uint64(in.kvType.slotRows(in.ctx)) * in.kvType.maxRowBytes(c.HeadDim) // a resident slot's K (or V) is bound whole by the KV store
	streaming := seqs * streamingBytes(in.streamBlock, kvRow)
	if blk := uint64(in.streamBlock) * in.kvType.maxRowBytes(c.HeadDim); p.Mode != OffloadNone && blk > in.bindLimit {
		return Plan{}, fmt.Errorf("a streamed block of %d positions takes %s, more than the device binds at once (%s): lower --stream-block",
			in.streamBlock, bytesize.Format(blk), bytesize.Format(in.bindLimit))
	}
	base := p.Weights + p.Activations + p.RingKV
	all := seqs * uint64(full) * p.SlotBytes // every sequence's
	resident := 0                            // full slots on the device
	switch p.Mode {
	case OffloadNone:
		if slotBind > in.bindLimit {
			return Plan{}, fmt.Errorf("one KV head of %d positions takes %s, more than the device binds at once (%s): lower --ctx-size or use --offload auto",
				in.ctx, bytesize.Format(slotBind), bytesize.Format(in.bindLimit))
		}
		if base+all > in.budget {
			return p, fmt.Errorf("the whole KV cache (%s for %d positions) does not fit: weights %s + activations %s + KV needs %s, the device budget is %s: use --offload auto, a larger --gpu-mem or a smaller --ctx-size",
				bytesize.Format(all+p.RingKV), in.ctx, bytesize.Format(p.Weights), bytesize.Format(p.Activations), bytesize.Format(base+all), bytesize.Format(in.budget))
		}
		resident = full
	case OffloadAuto:
		if full == 0 || slotBind <= in.bindLimit && base+all <= in.budget {
			resident = full
			break
		}
		fallthrough
	case OffloadHead:
		if full == 0 {
			break // every layer is a ring: nothing to stream
		}
		if base+streaming > in.budget {
			ring := ""
			if p.RingKV > 0 {
				ring = fmt.Sprintf(", sliding-window rings %s", bytesize.Format(p.RingKV))
			}
			return p, fmt.Errorf("model needs %s of device memory (weights %s, activations for a chunk of %d %s, streaming buffers %s%s), the device budget is %s: pass a larger --gpu-mem, a smaller --chunk or a smaller quantization",
				bytesize.Format(base+streaming), bytesize.Format(p.Weights), in.chunk, bytesize.Format(p.Activations), bytesize.Format(streaming), ring, bytesize.Format(in.budget))
		}
		p.Streaming = streaming
		if p.Mode == OffloadAuto && slotBind <= in.bindLimit {
			resident = min(full-1, int((in.budget-base-streaming)/(seqs*p.SlotBytes)))
		}
	}
	p.Resident, p.Streamed = resident+ringSlots, full-resident
	p.ResidentKV = seqs*uint64(resident)*p.SlotBytes + p.RingKV
	p.HostKV = seqs * uint64(p.Streamed) * p.SlotBytes
	// Spread the resident slots over the layers of full slots, so that
	// every layer has resident work to do while its first streamed block
	// is copied. Rings are resident.
	p.ResidentHeads = make([]int, in.part.layers())
	var fullLayers []int
	for l := range p.ResidentHeads {
		if rings != nil && rings[l] > 0 {
			p.ResidentHeads[l] = c.KVHeads
		} else {
			fullLayers = append(fullLayers, l)
		}
	}
	for i, l := range fullLayers {
		p.ResidentHeads[l] = resident / len(fullLayers)
		if i < resident%len(fullLayers) {
			p.ResidentHeads[l]++
		}
	}
	return p, nil
}

// streamingBytes is the device memory of the streaming buffers: two
// blocks (double buffering) of K and V for one KV head.
func streamingBytes(streamBlock int, kvRow uint64) uint64 {
	return 2 * uint64(streamBlock) * kvRow
}

// actSizes are the byte sizes of a state's activation buffers.
type actSizes struct {
	x, att, qkv, ffn, logits uint64 // per buffer: x and xb; attention; q, k and v; gate and up
	ids                      uint64 // token ids and positions (host-visible)
	parts, acc               uint64
	partsCap                 int    // attention blocks per partials batch (all query heads)
	argmax                   uint64 // argmax scratch (allocated with the kernels)
}

// activationSizes sizes the activations of a chunk of tokens with a
// context of ctx positions.
func activationSizes(c Config, chunk, ctx int) actSizes {
	n := uint64(chunk)
	per := kernel.PartsBytes(chunk, c.Heads, c.HeadDim, 1)
	capBlocks := max(1, min(kernel.Blocks(ctx, attnBlock), partsBudget/per))
	return actSizes{
		x:        4 * n * uint64(c.Dim),
		att:      4 * n * uint64(c.Heads*c.HeadDim),
		qkv:      4*n*uint64((c.Heads+2*c.KVHeads)*c.HeadDim) + 2*qkvPad,
		ffn:      4 * n * uint64(c.FFN),
		logits:   4 * uint64(c.Vocab),
		ids:      4 * n,
		parts:    uint64(per) * uint64(capBlocks),
		acc:      uint64(per),
		partsCap: capBlocks,
		argmax:   8 * uint64((c.Vocab+2047)/2048),
	}
}

// batchActivationBytes is the device memory of a batched decode step of
// seqs sequences (one token each); nothing below two sequences.
func batchActivationBytes(c Config, seqs int) uint64 {
	if seqs < 2 {
		return 0
	}
	a := activationSizes(c, seqs, 1)
	return 2*a.x + a.att + a.qkv + 2*a.ffn + uint64(seqs)*(a.logits+a.argmax) + 4*uint64(seqs)
}

// device is the device-local part.
func (a actSizes) device() uint64 {
	return 2*a.x + a.att + a.qkv + 2*a.ffn + a.logits + a.parts + a.acc + a.argmax
}

// qkvPad is what aligning k and v within the q, k, v buffer may add to each
// (the largest minStorageBufferOffsetAlignment Vulkan allows).
const qkvPad = 256

// weightBytes is the device memory the model's weights will take on the
// device that runs part pt: every tensor of its layers that the forward
// pass reads (all but the host-side rope factors).
func weightBytes(f *gguf.File, pt part) uint64 {
	var n uint64
	for i := range f.Tensors {
		ti := &f.Tensors[i]
		if ropeFactorTensor(ti.Name) || !pt.keeps(ti.Name) {
			continue
		}
		n += uint64(len(f.Data(ti)))
	}
	return n
}

// deviceBudget is the device-local memory to plan with: opt.GPUMem when
// set, else what VK_EXT_memory_budget says this process may still use, or
// the device-local heap size, less a margin for the driver and other
// processes.
func deviceBudget(info vk.DeviceInfo, gpuMem uint64) (uint64, string) {
	if gpuMem > 0 {
		return gpuMem, "--gpu-mem"
	}
	var size, avail uint64
	for _, h := range info.Heaps {
		if !h.DeviceLocal {
			continue
		}
		size += h.Size
		if info.MemoryBudget && h.Budget > h.Usage {
			avail += h.Budget - h.Usage
		}
	}
	from := "device-local heap size less 10%"
	if info.MemoryBudget && avail > 0 {
		size, from = avail, "device memory budget less 10%"
	}
	margin := min(max(size/10, 64<<20), size/2)
	return size - margin, from
}

// newPlan plans part pt of file f with options opt (CtxSize and Chunk
// resolved) on a device described by info, with the budget gpuMem (0:
// what the device has).
// rates, when not nil, measures the device's rates for an automatic chunk
// and an automatic decode attention placement; it is called only when the
// plan streams KV and one of them is automatic.
func newPlan(f *gguf.File, c Config, pt part, opt Options, kvType kvTypes, info vk.DeviceInfo, gpuMem uint64, rates func() (Rates, error)) (Plan, error) {
	budget, from := deviceBudget(info, gpuMem)
	sb := opt.StreamBlock
	if sb == 0 {
		sb = DefaultStreamBlock
	}
	mode := strings.ToLower(opt.DecodeAttn)
	switch mode {
	case "":
		mode = DecodeAttnAuto
	case DecodeAttnAuto, DecodeAttnGPU, DecodeAttnCPU:
	default:
		return Plan{}, fmt.Errorf("decode attention %q is not one of auto, gpu, cpu", opt.DecodeAttn)
	}
	in := planInput{
		c: c, ctx: opt.CtxSize, chunk: opt.Chunk, kvType: kvType, mode: opt.Offload,
		budget: budget, budgetFrom: from, streamBlock: sb,
		weights: weightBytes(f, pt), seqs: opt.Parallel, bindLimit: info.MaxStorageBufferRange,
		swaFull: opt.SWAFull, part: pt,
	}
	p, err := makePlan(in)
	if err != nil {
		return p, err
	}
	if p.Streamed > 0 && (p.ChunkAuto || mode == DecodeAttnAuto) && rates != nil {
		if in.rates, err = rates(); err != nil {
			return Plan{}, err
		}
		if p.ChunkAuto {
			if p, err = makePlan(in); err != nil {
				return p, err
			}
		}
		p.Rates = in.rates
	}
	p.DecodeAttn, p.DecodeAttnWhy = decodeAttnChoice(mode, p, in.rates, info.TransferQueue)
	p.HostBudget = opt.HostMem
	if p.Streamed > 0 {
		seqs := uint64(max(in.seqs, 1))
		budget := p.HostBudget
		if budget == 0 {
			budget = 1 << 30
		}
		for _, name := range []string{"f16", "q8_0", "q4_0"} {
			t, _ := kvTypeOf(name)
			if kernel.CheckKVType(t, c.HeadDim) != nil {
				continue
			}
			perPos := seqs * uint64(p.Streamed) * kvTypes{t, t}.rowBytes(c.HeadDim)
			p.HostContexts = append(p.HostContexts, HostContext{KVType: name, Positions: int(budget / perPos)})
		}
	}
	if opt.HostMem > 0 && p.HostKV > opt.HostMem {
		return p, fmt.Errorf("the streamed KV heads need %s of host memory (%s KV, %d positions), --host-mem allows %s: use a smaller KV type, a smaller --ctx-size or a larger --host-mem (%s)",
			bytesize.Format(p.HostKV), p.KVType, p.CtxSize, bytesize.Format(opt.HostMem), p.hostContexts())
	}
	return p, nil
}

// decodeAttnChoice places the decode attention of the streamed heads. A
// decode step over S positions reads every streamed head's S rows of K
// and V once, wherever it attends them: on the device it copies them
// over the link and then attends them (one after the other on a device
// without a transfer queue, overlapped with one), on the CPU it reads
// them where they lie. Auto picks the placement that moves those bytes
// faster by the measured rates.
func decodeAttnChoice(mode string, p Plan, r Rates, transferQueue bool) (string, string) {
	switch {
	case p.Streamed == 0:
		return DecodeAttnGPU, "nothing is streamed: every KV head is on the device"
	case mode == DecodeAttnGPU:
		return DecodeAttnGPU, "--decode-attn gpu: streamed blocks are copied to the device and attended there"
	case mode == DecodeAttnCPU:
		return DecodeAttnCPU, "--decode-attn cpu: the CPU attends the streamed heads over the host store"
	case r.CopyBps <= 0 || r.DeviceAttnBps <= 0 || r.CPUAttnBps <= 0:
		return DecodeAttnGPU, "the rates were not measured"
	}
	gpu := 1/r.CopyBps + 1/r.DeviceAttnBps
	how := "one queue copies and attends in turn"
	if transferQueue {
		gpu = max(1/r.CopyBps, 1/r.DeviceAttnBps)
		how = "copies overlap attention on a transfer queue"
	}
	cpu := 1 / r.CPUAttnBps
	why := fmt.Sprintf("streamed KV crosses the link at %.2f GB/s and the device attends it at %.2f GB/s (%s: %.2f GB/s); the CPU attends it in host memory at %.2f GB/s",
		r.CopyBps/1e9, r.DeviceAttnBps/1e9, how, 1/gpu/1e9, r.CPUAttnBps/1e9)
	if cpu < gpu {
		return DecodeAttnCPU, why
	}
	return DecodeAttnGPU, why
}

// PlanModel plans the memory of a model without loading it: it reads the
// file's metadata and the device's properties only.
func PlanModel(path string, opt Options) (Plan, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return Plan{}, err
	}
	defer f.Close()
	c, err := ConfigOf(f)
	if err != nil {
		return Plan{}, fmt.Errorf("%s: %w", path, err)
	}
	kvType, err := kvTypesOf(opt, c.HeadDim)
	if err != nil {
		return Plan{}, err
	}
	opt = opt.resolve(c)
	if err := opt.checkDevices(); err != nil {
		return Plan{}, err
	}
	devs, err := vk.Devices()
	if err != nil {
		return Plan{}, err
	}
	sels := opt.Devices
	if !opt.splitting() {
		sels = []string{opt.Device}
	}
	infos := make([]vk.DeviceInfo, len(sels))
	for j, sel := range sels {
		i, err := vk.Choose(devs, sel)
		if err != nil {
			return Plan{}, err
		}
		infos[j] = devs[i]
	}
	// An automatic chunk over streamed KV needs the device's rates: only
	// then is the device opened.
	rates := func(j int) func() (Rates, error) {
		return func() (Rates, error) {
			d, err := vk.Open(vk.Options{Select: sels[j], Log: opt.Log})
			if err != nil {
				return Rates{}, err
			}
			defer d.Close()
			return measureRates(d, c, kvType.K)
		}
	}
	if !opt.splitting() {
		return newPlan(f, c, wholeOf(c), opt, kvType, infos[0], opt.GPUMem, rates(0))
	}
	parts, plans, err := planSplit(f, c, opt, kvType, infos, rates)
	if err != nil {
		return Plan{}, err
	}
	names := make([]string, len(infos))
	for i, info := range infos {
		names[i] = info.Name
	}
	return mergePlans(c, parts, plans, names), nil
}

// kvGeometry is the shape of the host store for a plan.
func kvGeometry(c Config, p Plan, kvType kvTypes) offload.Geometry {
	return offload.Geometry{Layers: c.Layers, KVHeads: c.KVHeads, HeadDim: c.HeadDim, Ctx: p.CtxSize, K: kvType.K, V: kvType.V}
}
