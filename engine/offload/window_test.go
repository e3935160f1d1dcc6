package offload

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"headinfer/engine/gguf"
	"headinfer/engine/kernel"
	"headinfer/vk"
	"headinfer/vk/vktest"
)

// The geometry of the window tests: f16 KV, GQA (two query heads per KV
// head), streamed blocks of one attention block, so that a window spans
// several of them and most are skipped far into the context.
const (
	winHD, winKVHeads, winHeads = 64, 2, 4
	winCtx, winStream           = 1300, AttnBlock
	winChunk                    = 64
)

// winRings are ring slots for winLayers' windowed layers (RingRows of
// their windows for chunks of winChunk: 768 and 512 positions).
var winRings = []int{768, 512, 0}

// winLayers are the layers' attention: a window larger than an attention
// block and not a multiple of it (with which a prefill chunk's KV length
// reaches exactly where a streamed block leaves the window: 256+64+321−1 =
// 640); a window smaller than a block and than a prefill chunk, with a
// tight soft cap and its own scale; no window, with Gemma 2's cap.
var winLayers = []LayerAttn{{Window: 321}, {Window: 40, SoftCap: 5, Scale: 0.3}, {SoftCap: 50}}

// winData is one sequence's inputs at every position: queries [T][Heads·hd]
// and keys and values [T][KVHeads·hd] as the cache stores them (rounded to
// f16), and the float64 reference output of every layer, computed on demand.
type winData struct {
	q, k, v []float32
	ref     map[[2]int][]float64 // (layer, position) → [Heads·hd] output, then as many magnitudes
}

func newWinData(r *rand.Rand, positions int) *winData {
	round := func(x []float32) []float32 {
		b, err := gguf.Quantize(gguf.F16, x)
		if err != nil {
			panic(err)
		}
		out := make([]float32, len(x))
		if err := gguf.Dequantize(gguf.F16, b, out); err != nil {
			panic(err)
		}
		return out
	}
	// Queries large enough that the caps bite.
	return &winData{
		q:   cpuRandFloats(r, positions*winHeads*winHD, 8),
		k:   round(cpuRandFloats(r, positions*winKVHeads*winHD, 1)),
		v:   round(cpuRandFloats(r, positions*winKVHeads*winHD, 1)),
		ref: map[[2]int][]float64{},
	}
}

// reference is layer l's float64 attention output at position t and per
// element the magnitude Σ p·|v| / Σ p that bounds its rounding error.
func (w *winData) reference(l, t int) (want, mag []float64) {
	if r, ok := w.ref[[2]int{l, t}]; ok {
		return r[:winHeads*winHD], r[winHeads*winHD:]
	}
	at := Layout{Geometry: Geometry{HeadDim: winHD}, Attn: winLayers}.attnOf(l)
	r := make([]float64, 2*winHeads*winHD)
	want, mag = r[:winHeads*winHD], r[winHeads*winHD:]
	lo := kernel.WindowStart(t, at.Window)
	s := make([]float64, t+1)
	for h := range winHeads {
		z := h / (winHeads / winKVHeads)
		q := w.q[(t*winHeads+h)*winHD:][:winHD]
		m := math.Inf(-1)
		for c := lo; c <= t; c++ {
			var dot float64
			for d, x := range w.k[(c*winKVHeads+z)*winHD:][:winHD] {
				dot += float64(q[d]) * float64(x)
			}
			x := float64(at.Scale) * dot
			if at.SoftCap != 0 {
				x = float64(at.SoftCap) * math.Tanh(x/float64(at.SoftCap))
			}
			s[c] = x
			m = max(m, x)
		}
		var sum float64
		o, a := want[h*winHD:][:winHD], mag[h*winHD:][:winHD]
		for c := lo; c <= t; c++ {
			e := math.Exp(s[c] - m)
			sum += e
			for d, x := range w.v[(c*winKVHeads+z)*winHD:][:winHD] {
				o[d] += e * float64(x)
				a[d] += e * math.Abs(float64(x))
			}
		}
		for d := range o {
			o[d] /= sum
			a[d] /= sum
		}
	}
	w.ref[[2]int{l, t}] = r
	return want, mag
}

// winSeq is one sequence: its cache, its step inputs (a chunk's rows of
// Q, K, V and positions, written by the host) and outputs.
type winSeq struct {
	kc           *Cache
	data         *winData
	q, k, v, pos *vk.Buffer
	att, back    []*vk.Buffer // per layer: the attention output and its host copy
	length       int          // positions stored so far
}

// winVariant is one placement of the KV cache and way of running it.
type winVariant struct {
	name      string
	resident  []int // per layer
	rings     []int // per layer, nil for none
	pipelined bool
	cpu       bool // decode attention of the streamed heads on the CPU
}

func newWinSeq(t *testing.T, d *vk.Device, ops Kernels, vr winVariant, data *winData) *winSeq {
	t.Helper()
	buf := func(kind vk.MemoryKind, size int, label string) *vk.Buffer {
		b, err := d.Alloc(kind, uint64(size), label)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Free)
		return b
	}
	const partsCap = 3 // the resident heads' blocks merge in several batches
	scratch := Scratch{
		Parts:    buf(vk.DeviceLocal, kernel.PartsBytes(winChunk, winHeads, winHD, partsCap), "parts"),
		Acc:      buf(vk.DeviceLocal, kernel.PartsBytes(winChunk, winHeads, winHD, 1), "acc"),
		PartsCap: partsCap,
	}
	lay := Layout{Geometry: Geometry{Layers: len(winLayers), KVHeads: winKVHeads, HeadDim: winHD, Ctx: winCtx, K: gguf.F16, V: gguf.F16},
		Heads: winHeads, ResidentHeads: vr.resident, StreamBlock: winStream, Attn: winLayers, Rings: vr.rings}
	kc, err := NewCache(d, lay, ops, scratch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Free)
	// Rows read before they are written show up as NaN.
	for _, b := range kc.Buffers() {
		if err := d.Write(b.All(), bytes.Repeat([]byte{0xff}, int(b.Size()))); err != nil {
			t.Fatal(err)
		}
	}
	s := &winSeq{kc: kc, data: data,
		q:   buf(vk.Upload, 4*winChunk*winHeads*winHD, "Q"),
		k:   buf(vk.Upload, 4*winChunk*winKVHeads*winHD, "K"),
		v:   buf(vk.Upload, 4*winChunk*winKVHeads*winHD, "V"),
		pos: buf(vk.Upload, 4*winChunk, "positions"),
	}
	for range winLayers {
		s.att = append(s.att, buf(vk.DeviceLocal, 4*winChunk*winHeads*winHD, "attention"))
		s.back = append(s.back, buf(vk.Readback, 4*winChunk*winHeads*winHD, "attention (host)"))
	}
	return s
}

// stage writes the inputs of positions length … length+n−1.
func (s *winSeq) stage(n int) {
	p0 := s.length
	copy(s.q.Bytes(), cpuF32Bytes(s.data.q[p0*winHeads*winHD:(p0+n)*winHeads*winHD]))
	copy(s.k.Bytes(), cpuF32Bytes(s.data.k[p0*winKVHeads*winHD:(p0+n)*winKVHeads*winHD]))
	copy(s.v.Bytes(), cpuF32Bytes(s.data.v[p0*winKVHeads*winHD:(p0+n)*winKVHeads*winHD]))
	for i := range n {
		binary.LittleEndian.PutUint32(s.pos.Bytes()[4*i:], uint32(p0+i))
	}
}

// record appends to p the step of n tokens of s, as the forward pass
// records a layer: the resident rows stored, then attention.
func (s *winSeq) record(t *testing.T, p *Program, n int, decode bool) {
	t.Helper()
	rowQ, rowKV := uint64(4*winHeads*winHD), uint64(4*winKVHeads*winHD)
	q, k, v, pos := s.q.Range(0, uint64(n)*rowQ), s.k.Range(0, uint64(n)*rowKV), s.v.Range(0, uint64(n)*rowKV), s.pos.Range(0, uint64(4*n))
	for l := range winLayers {
		c, err := p.Compute()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.kc.Store(c, l, k, v, pos, n); err != nil {
			t.Fatal(err)
		}
		c.Barrier()
		att := s.att[l].Range(0, uint64(n)*rowQ)
		if err := s.kc.Attend(p, l, Step{Q: q, K: k, V: v, Att: att, Pos: pos, N: n, Decode: decode}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := p.Compute()
	if err != nil {
		t.Fatal(err)
	}
	c.Barrier()
	for l := range winLayers {
		c.Copy(s.back[l].Range(0, uint64(n)*rowQ), s.att[l].Range(0, uint64(n)*rowQ))
	}
}

// check compares the outputs of the step of n tokens just run with the
// reference and returns them (layer after layer).
func (s *winSeq) check(t *testing.T, n int) []byte {
	t.Helper()
	var all []byte
	for l := range winLayers {
		b := s.back[l].Bytes()[:4*n*winHeads*winHD]
		all = append(all, b...)
		for i := range n {
			want, mag := s.data.reference(l, s.length+i)
			got := make([]float32, winHeads*winHD)
			for j := range got {
				got[j] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*(i*winHeads*winHD+j):]))
			}
			for j, g := range got {
				if err := math.Abs(float64(g) - want[j]); !(err <= 1e-5*mag[j]) {
					t.Fatalf("layer %d, position %d, element %d: got %v, want %v (tolerance %.3g)",
						l, s.length+i, j, g, want[j], 1e-5*mag[j])
				}
			}
		}
	}
	return all
}

// poisonBeyondWindows overwrites with NaN every row of a windowed layer
// that no query at position from or later sees: a path that reads such a
// row, even to mask it, would turn its output into NaN.
func (s *winSeq) poisonBeyondWindows(t *testing.T, from int) {
	t.Helper()
	for l, at := range winLayers {
		end, start := kernel.WindowStart(from, at.Window), 0
		if ring := s.kc.Ring(l); ring > 0 {
			start = max(0, from-ring) // a ring holds only the latest positions
		}
		if end <= start {
			continue
		}
		nan := bytes.Repeat([]byte{0xff}, (end-start)*winHD*2)
		for h := range winKVHeads {
			for _, isV := range []bool{false, true} {
				if err := s.kc.Write(l, h, isV, start, nan); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// streamedBytes is what a step of n tokens reaching KV length length
// copies from the host in a cache of resident heads per layer: the
// streamed blocks that the step's length and windows reach.
func streamedBytes(resident []int, length, n int) uint64 {
	var b uint64
	for l, at := range winLayers {
		span := winStream
		if at.Window > 0 {
			span = min(span, windowSpan(at.Window))
		}
		for p0 := 0; p0 < winCtx; p0 += span {
			rows := min(span, winCtx-p0)
			if p0 < length && (at.Window == 0 || length < p0+rows+n+at.Window-1) {
				b += uint64(2*(winKVHeads-resident[l])*rows*winHD) * 2
			}
		}
	}
	return b
}

// TestCacheWindowSoftCap runs a sequence's prefill chunks and decode steps
// through caches whose layers have sliding windows, soft caps and scales:
// all heads resident, all streamed (fused and pipelined), a mix, and
// decode attention on the CPU. Every step's output must match the float64
// reference; the device attention of every placement must give the same
// bits; a step copies only the streamed blocks its windows reach; and the
// rows beyond every window are never read (they are overwritten with NaN
// before the decode steps). Then two sequences decode in one batched step,
// with device and with CPU attention, each giving its own reference.
func TestCacheWindowSoftCap(t *testing.T) {
	d := vktest.Device(t)
	r := cpuNewRand(t)
	store, err := kernel.NewKVStore(d, gguf.F16, winHD)
	if err != nil {
		t.Fatal(err)
	}
	attn, err := kernel.NewAttention(d, gguf.F16, winHD, winHeads/winKVHeads)
	if err != nil {
		t.Fatal(err)
	}
	cpu := NewCPUAttention(2)
	defer cpu.Close()
	// A prompt of whole chunks and an odd tail, then decode steps far
	// past the windows, during which streamed blocks leave each window
	// (at KV lengths 768+256+40 = 1064 and 512+256+321 = 1089).
	const prompt, decode = 16*winChunk + 17, 50
	data := newWinData(r, prompt+decode)

	variants := []winVariant{
		{name: "resident", resident: []int{2, 2, 2}},
		{name: "streamed", resident: []int{0, 0, 0}},
		{name: "streamed/pipelined", resident: []int{0, 0, 0}, pipelined: true},
		{name: "mixed/pipelined", resident: []int{1, 0, 2}, pipelined: true},
		{name: "streamed/cpu", resident: []int{0, 0, 0}, cpu: true},
		{name: "mixed/cpu", resident: []int{1, 0, 1}, cpu: true},
		// The windowed layers as rings, which the prompt wraps.
		{name: "rings", resident: []int{2, 2, 2}, rings: winRings},
		{name: "rings/streamed/cpu", resident: []int{2, 2, 0}, rings: winRings, cpu: true},
	}
	var first [][]byte // the first device variant's outputs, step by step
	for _, vr := range variants {
		t.Run(vr.name, func(t *testing.T) {
			ops := Kernels{Store: store, Attn: attn}
			if vr.cpu {
				ops.CPU = cpu
			}
			s := newWinSeq(t, d, ops, vr, data)
			clock, err := NewClock(d)
			if err != nil {
				t.Fatal(err)
			}
			defer clock.Free()
			progs := map[[2]int]*Program{}
			defer func() {
				for _, p := range progs {
					p.Free()
				}
			}()
			step := 0
			for s.length < prompt+decode {
				n, dec := min(winChunk, prompt-s.length), 0
				if s.length >= prompt {
					n, dec = 1, 1
				}
				if s.length == prompt {
					s.poisonBeyondWindows(t, prompt)
				}
				p := progs[[2]int{n, dec}]
				if p == nil {
					p = NewProgram(d, false, vr.pipelined)
					s.record(t, p, n, dec == 1)
					if err := p.End(); err != nil {
						t.Fatal(err)
					}
					progs[[2]int{n, dec}] = p
				}
				s.stage(n)
				st, err := p.Run(clock, s.length+n)
				if err != nil {
					t.Fatal(err)
				}
				want := streamedBytes(vr.resident, s.length+n, n)
				if vr.cpu && dec == 1 {
					want = 0 // the streamed heads attend where they live
				}
				if st.H2D != want {
					t.Fatalf("step at position %d: %d bytes copied from the host, want %d", s.length, st.H2D, want)
				}
				out := s.check(t, n)
				if !vr.cpu {
					if len(first) <= step {
						first = append(first, out)
					} else if !bytes.Equal(out, first[step]) {
						t.Fatalf("step at position %d: the output differs from %s's", s.length, variants[0].name)
					}
				}
				s.length += n
				step++
			}
		})
	}

	// Two sequences of different lengths decode in one batched step.
	other := newWinData(r, prompt+decode)
	for _, vr := range []winVariant{variants[3], variants[5]} {
		t.Run("batch/"+vr.name, func(t *testing.T) {
			ops := Kernels{Store: store, Attn: attn}
			if vr.cpu {
				ops.CPU = cpu
			}
			seqs := []*winSeq{newWinSeq(t, d, ops, vr, data), newWinSeq(t, d, ops, vr, other)}
			clock, err := NewClock(d)
			if err != nil {
				t.Fatal(err)
			}
			defer clock.Free()
			run := func(p *Program, lengths []int) {
				t.Helper()
				if err := p.End(); err != nil {
					t.Fatal(err)
				}
				defer p.Free()
				if _, err := p.RunBatch(clock, lengths, time.Time{}); err != nil {
					t.Fatal(err)
				}
			}
			// Prefill each alone, the second to fewer positions.
			for i, s := range seqs {
				for s.length < prompt-400*i {
					n := min(winChunk, prompt-400*i-s.length)
					p := NewProgram(d, false, vr.pipelined)
					s.record(t, p, n, false)
					s.stage(n)
					run(p, []int{s.length + n})
					s.check(t, n)
					s.length += n
				}
				s.poisonBeyondWindows(t, s.length)
			}
			p := NewProgram(d, false, vr.pipelined)
			for i, s := range seqs {
				if err := p.Sequence(i); err != nil {
					t.Fatal(err)
				}
				s.record(t, p, 1, true)
			}
			if err := p.End(); err != nil {
				t.Fatal(err)
			}
			defer p.Free()
			for range 5 {
				for _, s := range seqs {
					s.stage(1)
				}
				if _, err := p.RunBatch(clock, []int{seqs[0].length + 1, seqs[1].length + 1}, time.Time{}); err != nil {
					t.Fatal(err)
				}
				for _, s := range seqs {
					s.check(t, 1)
					s.length++
				}
			}
		})
	}
}

func TestCacheRejectsBadAttention(t *testing.T) {
	d := vktest.Device(t)
	store, err := kernel.NewKVStore(d, gguf.F16, winHD)
	if err != nil {
		t.Fatal(err)
	}
	attn, err := kernel.NewAttention(d, gguf.F16, winHD, winHeads/winKVHeads)
	if err != nil {
		t.Fatal(err)
	}
	buf, err := d.Alloc(vk.DeviceLocal, 1<<20, "scratch")
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Free()
	for i, attn1 := range [][]LayerAttn{
		{{}},                // one entry for two layers
		{{}, {Window: -1}},  // negative window
		{{}, {SoftCap: -1}}, // negative cap
		{{SoftCap: float32(math.NaN())}, {}},
		{{}, {Scale: float32(math.Inf(1))}},
		{{Scale: -0.1}, {}},
		{{Window: math.MaxUint32 + 1}, {}},
	} {
		lay := Layout{Geometry: Geometry{Layers: 2, KVHeads: winKVHeads, HeadDim: winHD, Ctx: 512, K: gguf.F16, V: gguf.F16},
			Heads: winHeads, ResidentHeads: []int{2, 2}, StreamBlock: AttnBlock, Attn: attn1}
		kc, err := NewCache(d, lay, Kernels{Store: store, Attn: attn}, Scratch{Parts: buf, Acc: buf, PartsCap: 1})
		if err == nil {
			kc.Free()
			t.Errorf("case %d: layer attention %+v accepted", i, attn1)
		} else {
			t.Logf("case %d: %v", i, err)
		}
	}
	for _, c := range []struct{ resident, rings []int }{
		{[]int{2, 2}, []int{256}},     // one entry for two layers
		{[]int{2, 2}, []int{0, 100}},  // not whole attention blocks
		{[]int{2, 2}, []int{256, 0}},  // a ring on a layer without a window
		{[]int{2, 2}, []int{0, 512}},  // not smaller than the context
		{[]int{2, 1}, []int{0, 256}},  // a ring not resident
		{[]int{2, 2}, []int{0, -256}}, // negative
	} {
		lay := Layout{Geometry: Geometry{Layers: 2, KVHeads: winKVHeads, HeadDim: winHD, Ctx: 512, K: gguf.F16, V: gguf.F16},
			Heads: winHeads, ResidentHeads: c.resident, StreamBlock: AttnBlock, Attn: []LayerAttn{{}, {Window: 16}}, Rings: c.rings}
		kc, err := NewCache(d, lay, Kernels{Store: store, Attn: attn}, Scratch{Parts: buf, Acc: buf, PartsCap: 1})
		if err == nil {
			kc.Free()
			t.Errorf("rings %v with resident heads %v accepted", c.rings, c.resident)
		} else {
			t.Logf("rings %v: %v", c.rings, err)
		}
	}
}
