package engine

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"sync/atomic"
	"time"

	"headinfer/engine/offload"
	"headinfer/vk"
)

// PipelineEnv names the environment variable that, set to 1, makes a
// device without a transfer queue run streamed KV the way two-queue
// devices do: each streamed block's copies and attention as their own
// command buffers ordered by timeline semaphores, instead of fused. The
// arithmetic is the same; benchmarks use it to count the two-queue path's
// submissions and measure its overhead on one queue.
const PipelineEnv = "HEADINFER_PIPELINE"

// attnBlock is the number of KV positions one attention partial covers.
const attnBlock = offload.AttnBlock

// partsBudget bounds the attention partials buffer; blocks beyond it are
// folded into the accumulator in batches.
const partsBudget = 64 << 20

// state is one sequence's device state: activations sized for a chunk, the
// KV cache, and the programs recorded for each shape of step.
type state struct {
	id    uint64 // unique in the process, names the state in batched programs
	m     *Model
	chunk int
	ctx   int

	x, xb, qkv, att, gate, up *vk.Buffer // activations, chunk rows each (see qkvRanges)
	logits                    *vk.Buffer // last token's logits
	ids, pos                  *vk.Buffer // host-written inputs (uint32 per token)
	see                       *vk.Buffer // what each query sees up to, for models that attend both ways (offload.Step.See); else nil
	next                      *vk.Buffer // argmax result, read by the host
	logitsHost                *vk.Buffer // logits copied for host sampling
	hiddenHost                *vk.Buffer // the chunk's final hidden states, for embeddings (allocated on first use)
	freqs                     *vk.Buffer // rope inverse frequencies
	parts, acc                *vk.Buffer // attention partials and accumulator
	kv                        kvCache
	pipelined                 bool                  // streamed blocks as separate segments ordered by semaphores
	cpuAttn                   *offload.CPUAttention // decode attention of the streamed heads, when the plan puts it on the CPU

	bufs  []*vk.Buffer
	progs *programs[stepShape]
	clock *offload.Clock
	// deadline bounds the wait for each step (zero: the device's
	// default); the session sets it from its caller's context.
	deadline time.Time

	// A split model's sequence is a state per part (see split.go), in
	// layer order, which this one runs in turn; its kv is their caches
	// seen as one, its next and logitsHost the last part's. A part's in
	// and out are its hand-off buffers: the residual stream of a step's
	// rows from the previous part and to the next (nil at the ends).
	split   []*state
	in, out *vk.Buffer

	stepTotals
}

// stepTotals are totals over the steps a state ran.
type stepTotals struct {
	h2d, d2h    uint64
	copyWait    time.Duration
	dispatches  int
	submissions int
	commands    int
	recordings  int
	recordTime  time.Duration
	hostWaits   int
	hostTasks   time.Duration
	// deviceTime is the wall time of each part's programs, and handOffs
	// the bytes the host carried between parts (split models).
	deviceTime []time.Duration
	handOffs   uint64
}

// add adds what b counts beyond a (b being later totals of a's state).
func (t *stepTotals) add(a, b stepTotals) {
	t.h2d += b.h2d - a.h2d
	t.d2h += b.d2h - a.d2h
	t.copyWait += b.copyWait - a.copyWait
	t.dispatches += b.dispatches - a.dispatches
	t.submissions += b.submissions - a.submissions
	t.commands += b.commands - a.commands
	t.recordings += b.recordings - a.recordings
	t.recordTime += b.recordTime - a.recordTime
	t.hostWaits += b.hostWaits - a.hostWaits
	t.hostTasks += b.hostTasks - a.hostTasks
}

// stateIDs numbers the states.
var stateIDs atomic.Uint64

// kvCache is the HeadInfer core as the forward pass sees it (implemented
// by offload.Cache): it stores a chunk's new K and V rows of the resident
// heads and records a layer's attention wherever its KV lives.
type kvCache interface {
	Store(c *vk.Commands, l int, k, v, pos vk.Range, n int) error
	Attend(p *offload.Program, l int, st offload.Step) error
	Write(l, h int, isV bool, row int, data []byte) error
	Read(l, h int, isV bool, row int, out []byte) error
	Streams() bool
	DeviceBytes() uint64
	HostBytes() uint64
	Buffers() []*vk.Buffer
	Free()
}

// stepShape identifies a recorded step: tokens in the chunk, whether the
// logits go to the host, and whether it is a decode step (which may
// attend streamed heads on the CPU; a prefill chunk of one token attends
// on the device like every prefill chunk). The KV length is not part of
// it: the positions written per step decide what attention sees.
type stepShape struct {
	tokens int
	logits bool
	decode bool
	hidden bool // every token's final hidden state to the host (embeddings)
}

func newState(m *Model) (s *state, err error) {
	if m.parts != nil {
		return newSplitState(m)
	}
	c, d := m.Config, m.dev
	s = &state{id: stateIDs.Add(1), m: m, chunk: m.plan.Chunk, ctx: m.opt.CtxSize, progs: newPrograms[stepShape](maxPrograms)}
	defer func() {
		if err != nil {
			s.free()
		}
	}()
	alloc := func(kind vk.MemoryKind, size int, label string) *vk.Buffer {
		if err != nil {
			return nil
		}
		var b *vk.Buffer
		b, err = d.Alloc(kind, uint64(size), label)
		s.bufs = append(s.bufs, b)
		return b
	}
	n := s.chunk
	a := activationSizes(c, n, s.ctx)
	s.x = alloc(vk.DeviceLocal, int(a.x), "activations x")
	s.xb = alloc(vk.DeviceLocal, int(a.x), "activations xb")
	s.qkv = alloc(vk.DeviceLocal, int(a.qkv), "activations q, k, v")
	s.att = alloc(vk.DeviceLocal, int(a.att), "activations attention")
	s.gate = alloc(vk.DeviceLocal, int(a.ffn), "activations gate")
	s.up = alloc(vk.DeviceLocal, int(a.ffn), "activations up")
	s.logits = alloc(vk.DeviceLocal, int(a.logits), "logits")
	s.ids = alloc(vk.Upload, int(a.ids), "token ids")
	s.pos = alloc(vk.Upload, int(a.ids), "positions")
	if c.NonCausal {
		s.see = alloc(vk.Upload, int(a.ids), "visible positions")
	}
	if !m.part.first() {
		s.in = alloc(vk.Upload, int(a.x), "residual stream from the previous device")
	}
	if !m.part.last() {
		s.out = alloc(vk.Readback, int(a.x), "residual stream to the next device")
	}
	s.freqs = alloc(vk.Upload, int(s.localFreqsOff())+4*len(m.localFreqs), "rope frequencies")
	s.next = alloc(vk.Readback, 4, "next token")
	s.logitsHost = alloc(vk.Readback, int(a.logits), "logits (host)")
	s.parts = alloc(vk.DeviceLocal, int(a.parts), "attention partials")
	s.acc = alloc(vk.DeviceLocal, int(a.acc), "attention accumulator")
	if err != nil {
		return nil, err
	}
	copy(s.freqs.Bytes(), f32Bytes(m.freqs))
	copy(s.freqs.Bytes()[s.localFreqsOff():], f32Bytes(m.localFreqs))
	geo := kvGeometry(c, m.plan, m.kvType)
	geo.Layers = m.part.layers()
	attn := c.LayerAttn()
	if attn != nil {
		attn = attn[m.part.lo:m.part.hi]
	}
	lay := offload.Layout{Geometry: geo, Heads: c.Heads,
		ResidentHeads: m.plan.ResidentHeads, StreamBlock: m.plan.StreamBlock, Attn: attn, Rings: m.plan.Rings}
	ops := offload.Kernels{Store: m.ops.kvStore, StoreV: m.ops.kvStoreV, Attn: m.ops.attn}
	if m.plan.DecodeAttn == DecodeAttnCPU {
		s.cpuAttn = offload.NewCPUAttention(0)
		ops.CPU = s.cpuAttn
	}
	kc, err := offload.NewCache(d, lay, ops,
		offload.Scratch{Parts: s.parts, Acc: s.acc, PartsCap: a.partsCap})
	if err != nil {
		return nil, err
	}
	s.kv = kc
	// Pipelined over two queues only when there are two: on one queue,
	// segments per block overlap nothing. PipelineEnv forces it, so that
	// the two-queue path can be measured on any device.
	s.pipelined = d.Info().TransferQueue || m.opt.pipeline || os.Getenv(PipelineEnv) == "1"
	if s.clock, err = offload.NewClock(d); err != nil {
		return nil, err
	}
	return s, nil
}

// localFreqsOff is where the windowed layers' rope frequencies follow
// the global ones in s.freqs, at an offset the device can bind.
func (s *state) localFreqsOff() uint64 {
	align := max(s.m.dev.Info().MinStorageBufferOffsetAlignment, 4)
	return (uint64(4*len(s.m.freqs)) + align - 1) / align * align
}

// ropeFreqs is the rope frequencies of layer l.
func (s *state) ropeFreqs(l int) vk.Range {
	if s.m.localFreqs != nil && s.m.Config.Window(l) > 0 {
		return s.freqs.Range(s.localFreqsOff(), uint64(4*len(s.m.localFreqs)))
	}
	return s.freqs.Range(0, uint64(4*len(s.m.freqs)))
}

// qkvRanges places n rows each of q, k and v in s.qkv: back to back where
// the binding alignment allows, so that one token's q, k and v form one
// vector (see Model.qkv), else each at the next aligned offset.
func (s *state) qkvRanges(n int) (q, k, v vk.Range) {
	cfg := s.m.Config
	align := max(s.m.dev.Info().MinStorageBufferOffsetAlignment, 4)
	up := func(o uint64) uint64 { return (o + align - 1) / align * align }
	qb, kb := uint64(4*n*cfg.Heads*cfg.HeadDim), uint64(4*n*cfg.KVHeads*cfg.HeadDim)
	q = s.qkv.Range(0, qb)
	k = s.qkv.Range(up(qb), kb)
	v = s.qkv.Range(up(k.Off+kb), kb)
	return q, k, v
}

// run computes the forward pass of ids at positions start, start+1, …
// (len(ids) ≤ chunk; one generated token when decode) and leaves the last
// token's argmax in s.next (and its logits in s.logitsHost when
// withLogits, every token's final hidden state in s.hiddenHost when
// hidden).
func (s *state) run(ids []int32, start int, withLogits, decode, hidden bool) error {
	if s.split != nil {
		return s.runParts(ids, start, withLogits, decode, hidden)
	}
	n := len(ids)
	if n == 0 || n > s.chunk {
		return fmt.Errorf("engine: %d tokens in one step (chunk is %d)", n, s.chunk)
	}
	if start+n > s.ctx {
		return fmt.Errorf("context is full: %d positions needed, --ctx-size is %d", start+n, s.ctx)
	}
	if s.see != nil && start != 0 {
		// Earlier tokens would not see these: a model that attends both
		// ways takes its whole input in one step.
		return fmt.Errorf("the model attends both ways: its input must come in one chunk from position 0, not from %d", start)
	}
	idb, posb := s.ids.Bytes(), s.pos.Bytes()
	for i, id := range ids {
		if id < 0 || int(id) >= s.m.Config.Vocab {
			return fmt.Errorf("token id %d is outside the vocabulary (0..%d)", id, s.m.Config.Vocab-1)
		}
		binary.LittleEndian.PutUint32(idb[4*i:], uint32(id))
		binary.LittleEndian.PutUint32(posb[4*i:], uint32(start+i))
		if s.see != nil {
			binary.LittleEndian.PutUint32(s.see.Bytes()[4*i:], uint32(start+n-1))
		}
	}
	shape := stepShape{tokens: n, logits: withLogits, decode: decode && n == 1, hidden: hidden}
	p, err := s.programFor(shape)
	if err != nil {
		return err
	}
	st, err := p.RunUntil(s.clock, start+n, s.deadline)
	if err != nil {
		return err
	}
	s.h2d += st.H2D
	s.d2h += p.D2H
	s.dispatches += st.Dispatches
	s.submissions += st.Submissions
	s.commands += st.Commands
	s.copyWait += st.CopyWait
	s.hostWaits += st.HostWaits
	s.hostTasks += st.HostTasks
	return nil
}

// maxPrograms bounds the recorded step shapes kept. A step's recording
// does not depend on its position, so a session needs a handful (decode,
// with and without logits, and the prefill chunk sizes); the least
// recently used goes first when a new shape needs room.
const maxPrograms = 8

// programFor returns the program of shape, recording it on first use.
func (s *state) programFor(shape stepShape) (*offload.Program, error) {
	t0 := time.Now()
	p, fresh, err := s.progs.get(shape, func() (*offload.Program, error) { return s.program(shape) })
	if fresh {
		s.recordings++
		s.recordTime += time.Since(t0)
	}
	return p, err
}

// program records the step of one shape.
func (s *state) program(shape stepShape) (*offload.Program, error) {
	if shape.hidden && s.hiddenHost == nil {
		b, err := s.m.dev.Alloc(vk.Readback, uint64(4*s.chunk*s.m.Config.Dim), "hidden states (host)")
		if err != nil {
			return nil, err
		}
		s.hiddenHost = b
		s.bufs = append(s.bufs, b)
	}
	p := offload.NewProgram(s.m.dev, s.kv.Streams(), s.pipelined)
	if err := s.record(p, shape); err != nil {
		p.End()
		p.Free()
		return nil, err
	}
	if shape.logits {
		c, err := p.Compute()
		if err != nil {
			p.Free()
			return nil, err
		}
		c.Barrier()
		c.Copy(s.logitsHost.All(), s.logits.All())
	}
	if err := p.End(); err != nil {
		p.Free()
		return nil, err
	}
	return p, nil
}

// argmax is the greedy next token of the last step.
func (s *state) argmax() int32 { return int32(binary.LittleEndian.Uint32(s.next.Bytes())) }

// logitsInto copies the last step's logits (when it asked for them).
func (s *state) logitsInto(dst []float32) []float32 {
	b := s.logitsHost.Bytes()
	dst = dst[:0]
	for i := 0; i < s.m.Config.Vocab; i++ {
		dst = append(dst, math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
	}
	return dst
}

func (s *state) free() {
	for _, p := range s.split {
		p.free()
	}
	s.split = nil
	if s.progs == nil {
		return
	}
	s.progs.free()
	s.clock.Free()
	s.clock = nil
	if s.kv != nil {
		s.kv.Free()
	}
	if s.cpuAttn != nil {
		s.cpuAttn.Close()
	}
	for _, b := range s.bufs {
		if b != nil {
			b.Free()
		}
	}
	s.bufs = nil
}

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}
