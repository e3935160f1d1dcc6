package kernel

import (
	"bytes"
	"fmt"
	"math"
	"testing"
	"time"

	"headinfer/engine/gguf"
	"headinfer/vk"
	"headinfer/vk/vktest"
)

// attnDev holds a problem's inputs on the device.
type attnDev struct {
	q, k, v, pos *vk.Buffer
}

func (p *attnProblem) upload(t testing.TB, d *vk.Device) attnDev {
	return attnDev{q: upload(t, d, f32Bytes(p.q)), k: upload(t, d, p.kBytes), v: upload(t, d, p.vBytes),
		pos: upload(t, d, p.posBuf)}
}

// headRange is KV head g's rows [r0, r1) in buffer b, of type t.
func (p *attnProblem) headRange(b *vk.Buffer, t gguf.Type, g, r0, r1 int) vk.Range {
	return b.Range(KVBytes(t, uint64(g*p.stride+r0*p.hd)), KVBytes(t, uint64((r1-r0)*p.hd)))
}

// oneHead attends KV head g's queries to all its rows in blocks of block
// rows and returns the finalized output [nTok][nKV·group·hd], of which only
// head g's columns are written (the others stay poisoned).
func (p *attnProblem) oneHead(t testing.TB, d *vk.Device, a *Attention, in attnDev, g, block int) []float32 {
	t.Helper()
	nb := Blocks(p.rows, block)
	parts := poisoned(t, d, PartsBytes(p.nTok, p.group, p.hd, nb))
	acc := poisoned(t, d, PartsBytes(p.nTok, p.group, p.hd, 1))
	out := poisoned(t, d, p.nTok*p.nKV*p.group*p.hd*4)
	run(t, d, func(c *vk.Commands) error {
		err := a.RecordPartial(c, in.q.All(), p.headRange(in.k, p.kv, g, 0, p.rows), p.headRange(in.v, p.vt, g, 0, p.rows),
			in.pos.All(), parts.All(), p.params(g, 0, p.rows, block, 0))
		if err != nil {
			return err
		}
		c.Barrier()
		return a.RecordMerge(c, parts.All(), acc.All(), out.All(), MergeParams{NTokens: p.nTok, Heads: p.group,
			NParts: nb, Init: true, Finalize: true, OutHeads: p.nKV * p.group, OutHead0: g * p.group})
	})
	return bytesF32(download(t, d, out))
}

// attnAssert checks got against want within rtol of each element's
// magnitude Σ p·|v| / Σ p (which is at least |want|).
func attnAssert(t testing.TB, got []float32, want, mag []float64, rtol float64) {
	t.Helper()
	worst, wi := 0.0, 0
	for i := range want {
		g := float64(got[i])
		if math.IsNaN(g) || math.IsInf(g, 0) {
			t.Fatalf("element %d is %v (want %v): not written or overflowed", i, g, want[i])
		}
		err := math.Abs(g - want[i])
		if err == 0 {
			continue
		}
		if r := err / (rtol * mag[i]); r > worst || mag[i] == 0 {
			worst, wi = r, i
			if mag[i] == 0 {
				worst = math.Inf(1)
			}
		}
	}
	t.Logf("worst error %.3g× the tolerance", worst)
	if worst > 1 {
		t.Fatalf("element %d: got %v, want %v (error %.3g× the tolerance %g × %g)",
			wi, got[wi], want[wi], worst, rtol, mag[wi])
	}
}

func attnNew(t testing.TB, d *vk.Device, kv gguf.Type, hd, group int, variant attnVariant) *Attention {
	return attnNewKV(t, d, kv, kv, hd, group, variant)
}

func attnNewKV(t testing.TB, d *vk.Device, kt, vt gguf.Type, hd, group int, variant attnVariant) *Attention {
	t.Helper()
	a, err := newAttention(d, kt, vt, hd, group, variant)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// attnVariants are the attn_partial implementations every test runs: both
// work on any device, whichever NewAttention would pick.
var attnVariants = []struct {
	name string
	v    attnVariant
}{{"gpu", attnGPU}, {"cpu", attnCPU}}

func TestAttentionMatchesReference(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	cases := []struct {
		kv                gguf.Type
		hd, group, nKV    int
		nTok, rows, block int
		qScale            float32
		cpu               bool // also run the CPU variant (each specialisation costs seconds to compile on lavapipe)
	}{
		{gguf.F16, 128, 4, 2, 1, 1000, 256, 4, true},   // decode, Llama-3 geometry
		{gguf.F32, 128, 4, 2, 1, 257, 64, 4, false},    // decode
		{gguf.F16, 64, 1, 2, 1, 100, 64, 8, false},     // decode, no GQA
		{gguf.F32, 64, 8, 1, 1, 1, 64, 4, false},       // decode of the first token
		{gguf.F16, 128, 1, 2, 7, 257, 64, 4, true},     // prefill chunk after existing KV
		{gguf.F32, 128, 8, 2, 33, 1000, 256, 4, false}, // prefill, big group (too big for the CPU variant)
		{gguf.F16, 64, 4, 2, 33, 100, 64, 16, true},    // prefill, peaked softmax
		{gguf.F32, 64, 1, 1, 7, 1, 64, 4, true},        // chunk longer than the range: early queries see nothing
		{gguf.F16, 128, 4, 1, 33, 33, 256, 4, true},    // first chunk of a sequence
		{gguf.F32, 64, 4, 2, 100, 257, 64, 4, true},    // several query tiles
		{gguf.F16, 8, 2, 4, 7, 100, 64, 4, true},       // stories260K geometry
		{gguf.F16, 8, 2, 4, 1, 100, 64, 4, true},       // stories260K decode
		{gguf.F32, 4, 1, 2, 7, 100, 64, 2, true},       // head_dim 4
		{gguf.F16, 256, 2, 1, 7, 100, 64, 4, false},    // largest head
		{gguf.F32, 12, 3, 1, 5, 70, 16, 4, true},       // head size not a power of 2
	}
	for _, tc := range cases {
		for _, vr := range attnVariants {
			if vr.v == attnCPU && !tc.cpu {
				continue
			}
			name := fmt.Sprintf("%s/%v/hd%d/g%d/tok%d/kv%d/block%d", vr.name, tc.kv, tc.hd, tc.group, tc.nTok, tc.rows, tc.block)
			t.Run(name, func(t *testing.T) {
				p := newAttnProblem(r, tc.kv, tc.hd, tc.group, tc.nKV, tc.nTok, tc.rows, 10+r.IntN(50), tc.qScale)
				a := attnNew(t, d, tc.kv, tc.hd, tc.group, vr.v)
				in := p.upload(t, d)
				g := tc.nKV - 1 // the last KV head: QHead0 and slot offsets matter
				got := p.headColumns(p.oneHead(t, d, a, in, g, tc.block), g)
				want, mag := p.reference(g)
				attnAssert(t, got, want, mag, 1e-5)
			})
		}
	}
}

// TestAttentionQuantMatchesReference runs Q8_0 and Q4_0 K and V, alone
// and mixed with each other and f16, against the float64 reference over
// the dequantized values (gguf.Dequantize): the kernels dequantize exactly
// as it does, so the f32 tolerance holds.
func TestAttentionQuantMatchesReference(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	cases := []struct {
		kt, vt            gguf.Type
		hd, group, nKV    int
		nTok, rows, block int
		qScale            float32
	}{
		{gguf.Q8_0, gguf.Q8_0, 128, 4, 2, 1, 1000, 256, 4}, // decode, Llama-3 geometry
		{gguf.Q4_0, gguf.Q4_0, 64, 4, 2, 33, 100, 64, 16},  // prefill, peaked softmax
		{gguf.Q8_0, gguf.Q4_0, 64, 2, 3, 1, 257, 64, 4},    // decode, K and V apart
		{gguf.F16, gguf.Q8_0, 32, 1, 2, 7, 300, 64, 4},     // prefill after existing KV
		{gguf.Q4_0, gguf.F16, 128, 1, 2, 1, 70, 64, 8},     // decode
	}
	for _, tc := range cases {
		for _, vr := range attnVariants {
			name := fmt.Sprintf("%s/%v-%v/hd%d/g%d/tok%d/kv%d/block%d", vr.name, tc.kt, tc.vt, tc.hd, tc.group, tc.nTok, tc.rows, tc.block)
			t.Run(name, func(t *testing.T) {
				p := newAttnProblemKV(r, tc.kt, tc.vt, tc.hd, tc.group, tc.nKV, tc.nTok, tc.rows, 10+r.IntN(50), tc.qScale)
				a := attnNewKV(t, d, tc.kt, tc.vt, tc.hd, tc.group, vr.v)
				in := p.upload(t, d)
				g := tc.nKV - 1
				got := p.headColumns(p.oneHead(t, d, a, in, g, tc.block), g)
				want, mag := p.reference(g)
				attnAssert(t, got, want, mag, 1e-5)
			})
		}
	}
}

// Splitting the rows into blocks and merging must give the one-pass result
// up to rounding (the order of the sums differs).
func TestAttentionBlocksMatchOnePass(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	// Geometries of TestAttentionMatchesReference, whose kernels are compiled already.
	for _, vr := range attnVariants {
		for _, c := range []struct {
			kv          gguf.Type
			hd, g, nTok int
		}{{gguf.F32, 64, 4, 33}, {gguf.F16, 128, 4, 1}} {
			nTok := c.nTok
			p := newAttnProblem(r, c.kv, c.hd, c.g, 1, nTok, 1000, 5, 4)
			a := attnNew(t, d, c.kv, c.hd, c.g, vr.v)
			in := p.upload(t, d)
			split := p.oneHead(t, d, a, in, 0, 64)
			whole := p.oneHead(t, d, a, in, 0, p.rows)
			want := make([]float64, len(whole))
			for i, x := range whole {
				want[i] = float64(x)
			}
			_, mag := p.reference(0)
			attnAssert(t, split, want, mag, 1e-5)
			if bytes.Equal(f32Bytes(split), f32Bytes(whole)) {
				t.Logf("%s, %d tokens: split and one-pass results are bit-identical", vr.name, nTok)
			}
		}
	}
}

// The offload path streams a head's blocks in batches and carries the
// accumulator between merges; the resident path does all blocks at once.
// Both must give the same bits.
func TestAttentionBatchesBitIdentical(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	for _, vr := range attnVariants {
		for _, nTok := range []int{1, 7} {
			const block, split = 64, 4 // batch 1: blocks 0..3, batch 2: blocks 4..9
			p := newAttnProblem(r, gguf.F16, 128, 4, 2, nTok, 600, 3, 4)
			a := attnNew(t, d, gguf.F16, 128, 4, vr.v)
			in := p.upload(t, d)
			g := 1
			nb := Blocks(p.rows, block)
			heads, outHeads := p.group, p.nKV*p.group
			outBytes := p.nTok * outHeads * p.hd * 4
			accBytes := PartsBytes(nTok, heads, p.hd, 1)
			merge := func(first, n int, init, fin bool) MergeParams {
				return MergeParams{NTokens: nTok, Heads: heads, PartFirst: first, NParts: n, Init: init, Finalize: fin,
					OutHeads: outHeads, OutHead0: g * p.group}
			}

			// Resident: all blocks, one merge.
			parts := poisoned(t, d, PartsBytes(nTok, heads, p.hd, nb))
			acc1, out1 := poisoned(t, d, accBytes), poisoned(t, d, outBytes)
			// Same parts merged in two dispatches.
			acc2, out2 := poisoned(t, d, accBytes), poisoned(t, d, outBytes)
			// Streamed: two batches of partials, each into its own small parts
			// buffer starting at part 0, merged batch by batch.
			sparts := poisoned(t, d, PartsBytes(nTok, heads, p.hd, nb-split))
			acc3, out3 := poisoned(t, d, accBytes), poisoned(t, d, outBytes)
			run(t, d, func(c *vk.Commands) error {
				all := p.params(g, 0, p.rows, block, 0)
				if err := a.RecordPartial(c, in.q.All(), p.headRange(in.k, p.kv, g, 0, p.rows), p.headRange(in.v, p.vt, g, 0, p.rows),
					in.pos.All(), parts.All(), all); err != nil {
					return err
				}
				c.Barrier()
				if err := a.RecordMerge(c, parts.All(), acc1.All(), out1.All(), merge(0, nb, true, true)); err != nil {
					return err
				}
				if err := a.RecordMerge(c, parts.All(), acc2.All(), vk.Range{}, merge(0, split, true, false)); err != nil {
					return err
				}
				c.Barrier()
				if err := a.RecordMerge(c, parts.All(), acc2.All(), out2.All(), merge(split, nb-split, false, true)); err != nil {
					return err
				}
				// Streamed batch 1 (rows 0..255) then batch 2 (rows 256..599).
				r1 := split * block
				if err := a.RecordPartial(c, in.q.All(), p.headRange(in.k, p.kv, g, 0, r1), p.headRange(in.v, p.vt, g, 0, r1),
					in.pos.All(), sparts.All(), p.params(g, 0, r1, block, 0)); err != nil {
					return err
				}
				c.Barrier()
				if err := a.RecordMerge(c, sparts.All(), acc3.All(), vk.Range{}, merge(0, split, true, false)); err != nil {
					return err
				}
				c.Barrier()
				if err := a.RecordPartial(c, in.q.All(), p.headRange(in.k, p.kv, g, r1, p.rows), p.headRange(in.v, p.vt, g, r1, p.rows),
					in.pos.All(), sparts.All(), p.params(g, r1, p.rows, block, 0)); err != nil {
					return err
				}
				c.Barrier()
				return a.RecordMerge(c, sparts.All(), acc3.All(), out3.All(), merge(0, nb-split, false, true))
			})
			o1, o2, o3 := download(t, d, out1), download(t, d, out2), download(t, d, out3)
			a1, a2, a3 := download(t, d, acc1), download(t, d, acc2), download(t, d, acc3)
			if !bytes.Equal(a1, a2) || !bytes.Equal(o1, o2) {
				t.Fatalf("%s, %d tokens: merging in one dispatch and in two differs", vr.name, nTok)
			}
			if !bytes.Equal(a1, a3) || !bytes.Equal(o1, o3) {
				t.Fatalf("%s, %d tokens: streaming the blocks in two batches differs from the resident pass", vr.name, nTok)
			}
			// A finalize-only merge (NParts 0) of an accumulator holding
			// every block must give the bits of finalizing in the last merge.
			acc4, out4 := poisoned(t, d, accBytes), poisoned(t, d, outBytes)
			run(t, d, func(c *vk.Commands) error {
				if err := a.RecordMerge(c, parts.All(), acc4.All(), vk.Range{}, merge(0, nb, true, false)); err != nil {
					return err
				}
				c.Barrier()
				return a.RecordMerge(c, vk.Range{}, acc4.All(), out4.All(), merge(0, 0, false, true))
			})
			if !bytes.Equal(a1, download(t, d, acc4)) || !bytes.Equal(o1, download(t, d, out4)) {
				t.Fatalf("%s, %d tokens: a finalize-only merge (NParts 0) differs from finalizing in the last merge", vr.name, nTok)
			}
			want, mag := p.reference(g)
			attnAssert(t, p.headColumns(bytesF32(o1), g), want, mag, 1e-5)
		}
	}
}

// One dispatch over several KV heads at a slot stride must give the bits
// of one dispatch per head.
func TestAttentionMultiHeadBitIdentical(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	for _, vr := range attnVariants {
		for _, nTok := range []int{1, 9} {
			p := newAttnProblem(r, gguf.F16, 128, 4, 3, nTok, 300, 0, 4)
			a := attnNew(t, d, gguf.F16, 128, 4, vr.v)
			in := p.upload(t, d)
			const block = 128
			nb := Blocks(p.rows, block)
			heads := p.nKV * p.group
			outBytes := nTok * heads * p.hd * 4

			parts := poisoned(t, d, PartsBytes(nTok, heads, p.hd, nb))
			acc := poisoned(t, d, PartsBytes(nTok, heads, p.hd, 1))
			multi := poisoned(t, d, outBytes)
			run(t, d, func(c *vk.Commands) error {
				ap := p.params(0, 0, p.rows, block, 0)
				ap.KVHeads = p.nKV
				kr := in.k.Range(0, uint64((p.nKV-1)*p.stride+p.rows*p.hd)*2)
				vr := in.v.Range(0, kr.Size)
				if err := a.RecordPartial(c, in.q.All(), kr, vr, in.pos.All(), parts.All(), ap); err != nil {
					return err
				}
				c.Barrier()
				return a.RecordMerge(c, parts.All(), acc.All(), multi.All(), MergeParams{NTokens: nTok, Heads: heads,
					NParts: nb, Init: true, Finalize: true, OutHeads: heads})
			})
			single := poisoned(t, d, outBytes)
			for g := range p.nKV {
				sp := poisoned(t, d, PartsBytes(nTok, p.group, p.hd, nb))
				sa := poisoned(t, d, PartsBytes(nTok, p.group, p.hd, 1))
				run(t, d, func(c *vk.Commands) error {
					err := a.RecordPartial(c, in.q.All(), p.headRange(in.k, p.kv, g, 0, p.rows), p.headRange(in.v, p.vt, g, 0, p.rows),
						in.pos.All(), sp.All(), p.params(g, 0, p.rows, block, 0))
					if err != nil {
						return err
					}
					c.Barrier()
					return a.RecordMerge(c, sp.All(), sa.All(), single.All(), MergeParams{NTokens: nTok, Heads: p.group,
						NParts: nb, Init: true, Finalize: true, OutHeads: heads, OutHead0: g * p.group})
				})
			}
			m, s := download(t, d, multi), download(t, d, single)
			if !bytes.Equal(m, s) {
				t.Fatalf("%s, %d tokens: the multi-head dispatch differs from per-head dispatches", vr.name, nTok)
			}
			for g := range p.nKV {
				want, mag := p.reference(g)
				attnAssert(t, p.headColumns(bytesF32(m), g), want, mag, 1e-5)
			}
		}
	}
}

func TestAttentionRejectsBadArguments(t *testing.T) {
	d := vktest.Device(t)
	for _, c := range []struct {
		kv        gguf.Type
		hd, group int
	}{{gguf.Q4_K, 256, 1}, {gguf.Q8_0, 40, 1}, {gguf.F16, 6, 1}, {gguf.F16, 512, 1}, {gguf.F32, 64, 0}} {
		if _, err := NewAttention(d, c.kv, c.hd, c.group); err == nil {
			t.Errorf("NewAttention(%v, %d, %d) accepted", c.kv, c.hd, c.group)
		}
	}
	if _, err := newAttention(d, gguf.F16, gguf.F16, 128, 8, attnCPU); err == nil {
		t.Errorf("the CPU kernel accepted group 8 × head dimension 128")
	}
	a := attnNew(t, d, gguf.F16, 64, 2, attnAuto)
	small := poisoned(t, d, 256)
	big := poisoned(t, d, 1<<20)
	good := AttnParams{NTokens: 1, QHeads: 2, KVRows: 10, Block: 64, KVHeads: 1, Scale: 0.125}
	bad := []AttnParams{good, good, good, good}
	bad[0].KVRows = 0
	bad[1].QHead0 = 1 // heads 1..2 of a 2-head row
	bad[2].KVHeads, bad[2].SlotStride = 2, 10*64-4
	bad[3].KVRows = 1000 // K range too small
	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	if err := a.RecordPartial(c, big.All(), big.All(), big.All(), big.All(), big.All(), good); err != nil {
		t.Errorf("valid parameters rejected: %v", err)
	}
	for i, p := range bad {
		k := big.All()
		if i == 3 {
			k = small.All()
		}
		if err := a.RecordPartial(c, big.All(), k, k, big.All(), big.All(), p); err == nil {
			t.Errorf("case %d: %+v accepted", i, p)
		}
	}
	if err := a.RecordMerge(c, big.All(), small.All(), big.All(), MergeParams{NTokens: 4, Heads: 2, NParts: 1, OutHeads: 2}); err == nil {
		t.Error("merge into a too small accumulator accepted")
	}
	if err := a.RecordMerge(c, big.All(), big.All(), big.All(), MergeParams{NTokens: 1, Heads: 2, NParts: 1, Finalize: true, OutHeads: 2, OutHead0: 1}); err == nil {
		t.Error("merge finalizing past the output row accepted")
	}
}

// attnBench times one partial dispatch over kv rows in blocks of block and
// the merge of its parts, for nTok queries at the last positions, f16 KV,
// head dimension 128 and group 4 (one KV head of a Llama-3-8B layer), with
// each attn_partial variant.
func attnBench(b *testing.B, nTok, kv, block int) {
	for _, vr := range attnVariants {
		b.Run(vr.name, func(b *testing.B) { attnBenchOne(b, nTok, kv, block, vr.v) })
	}
}

func attnBenchOne(b *testing.B, nTok, kv, block int, variant attnVariant) {
	d := vktest.Device(b)
	const hd, group = 128, 4
	a := attnNew(b, d, gguf.F16, hd, group, variant)
	r := newRand(b)
	p := newAttnProblem(r, gguf.F16, hd, group, 1, nTok, kv, 0, 1)
	in := p.upload(b, d)
	nb := Blocks(kv, block)
	parts := poisoned(b, d, PartsBytes(nTok, group, hd, nb))
	acc := poisoned(b, d, PartsBytes(nTok, group, hd, 1))
	out := poisoned(b, d, nTok*group*hd*4)
	c, err := d.NewCommands()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Free()
	if err := a.RecordPartial(c, in.q.All(), p.headRange(in.k, p.kv, 0, 0, kv), p.headRange(in.v, p.vt, 0, 0, kv),
		in.pos.All(), parts.All(), p.params(0, 0, kv, block, 0)); err != nil {
		b.Fatal(err)
	}
	c.Barrier()
	if err := a.RecordMerge(c, parts.All(), acc.All(), out.All(), MergeParams{NTokens: nTok, Heads: group,
		NParts: nb, Init: true, Finalize: true, OutHeads: group}); err != nil {
		b.Fatal(err)
	}
	if err := c.End(); err != nil {
		b.Fatal(err)
	}
	if err := d.Run(c); err != nil { // warm-up
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if err := d.Run(c); err != nil {
			b.Fatal(err)
		}
	}
	sec := time.Since(start).Seconds() / float64(b.N)
	var pairs float64 // visible (query, kv row) pairs
	for _, x := range p.pos {
		pairs += float64(min(kv, int(x)+1))
	}
	b.ReportMetric(float64(4*hd*group)*pairs/sec/1e9, "GFLOP/s")
	b.ReportMetric(float64(2*kv*hd*2)/sec/1e9, "KV-GB/s")
}

// BenchmarkAttentionDecode: one token against 32K positions.
func BenchmarkAttentionDecode(b *testing.B) { attnBench(b, 1, 32768, 256) }

// BenchmarkAttentionPrefill: a 512-token chunk at the end of 4K positions.
func BenchmarkAttentionPrefill(b *testing.B) { attnBench(b, 512, 4096, 512) }

// poisonUnseen sets the K and V rows of every KV head that no query of p
// sees (those before the window of its earliest query) to NaN, as the
// device and the reference see them: a kernel that reads them, even to mask
// them, turns its output into NaN (0·NaN), so this checks that the rows
// before the window are skipped, not computed.
func (p *attnProblem) poisonUnseen() {
	lo := WindowStart(int(p.pos[0]), p.window) - p.start
	for g := range p.nKV {
		for c := 0; c < min(lo, p.rows); c++ {
			// All ones is NaN in f16 and f32, and a NaN scale in Q8_0 and Q4_0.
			for _, kb := range []struct {
				t gguf.Type
				b []byte
			}{{p.kv, p.kBytes}, {p.vt, p.vBytes}} {
				at := KVBytes(kb.t, uint64(g*p.stride+c*p.hd))
				for x := range uint64(kb.t.RowBytes(p.hd)) {
					kb.b[at+x] = 0xff
				}
			}
			for d := range p.hd {
				p.k[g][c*p.hd+d] = float32(math.NaN())
				p.v[g][c*p.hd+d] = float32(math.NaN())
			}
		}
	}
}

// attnWindowCases are sliding window × soft cap × scale combinations for
// TestAttentionWindowSoftCap: windows smaller and larger than a block and
// not multiples of it, queries within and far beyond the window, prefill
// chunks that straddle the window's edge, GQA and odd sizes.
var attnWindowCases = []struct {
	kv                   gguf.Type
	hd, group, nKV       int
	nTok, rows, start    int
	block, window        int
	softCap, scaleFactor float32 // scale = scaleFactor/sqrt(hd)
	qScale               float32
	cpu                  bool // also run the CPU variant (compiles for seconds)
}{
	{gguf.F16, 128, 4, 2, 1, 1000, 17, 256, 300, 0, 1, 4, true},         // decode, window across blocks
	{gguf.F16, 128, 4, 2, 1, 5000, 100000, 256, 4096, 50, 1, 16, false}, // decode far into the context, Gemma 2's cap
	{gguf.F32, 64, 1, 2, 1, 257, 3, 64, 64, 5, 1, 16, true},             // decode, window of one block, small cap
	{gguf.F16, 128, 4, 2, 1, 1000, 17, 256, 0, 30, 0.7, 16, true},       // cap and scale only
	{gguf.F16, 128, 1, 2, 33, 700, 5, 64, 40, 5, 1.3, 16, true},         // chunk wider than the window
	{gguf.F16, 128, 4, 2, 33, 600, 9, 256, 300, 50, 1, 4, true},         // chunk straddling the window's edge
	{gguf.F32, 64, 4, 2, 100, 257, 0, 64, 513, 20, 1, 8, true},          // window beyond the range: causal only
	{gguf.F16, 8, 2, 4, 7, 100, 11, 64, 1, 0, 1, 4, true},               // window 1: each query sees itself
	{gguf.F32, 12, 3, 1, 5, 70, 2, 16, 3, 2, 0.5, 16, true},             // odd window, odd head size
	{gguf.F16, 64, 2, 2, 20, 3000, 70000, 256, 1000, 50, 1, 16, false},  // prefill far beyond a window of 1000
	{gguf.Q8_0, 64, 2, 2, 1, 1000, 17, 256, 300, 30, 1, 4, true},        // quantized slots, poisoned rows whole blocks
	{gguf.Q4_0, 32, 4, 1, 33, 600, 9, 64, 100, 0, 1, 4, true},
}

func TestAttentionWindowSoftCap(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	for _, tc := range attnWindowCases {
		for _, vr := range attnVariants {
			if vr.v == attnCPU && !tc.cpu {
				continue
			}
			name := fmt.Sprintf("%s/%v/hd%d/g%d/tok%d/kv%d@%d/block%d/window%d/cap%g/scale%g",
				vr.name, tc.kv, tc.hd, tc.group, tc.nTok, tc.rows, tc.start, tc.block, tc.window, tc.softCap, tc.scaleFactor)
			t.Run(name, func(t *testing.T) {
				p := newAttnProblem(r, tc.kv, tc.hd, tc.group, tc.nKV, tc.nTok, tc.rows, tc.start, tc.qScale)
				p.window, p.softCap = tc.window, tc.softCap
				p.scale = tc.scaleFactor / float32(math.Sqrt(float64(tc.hd)))
				p.poisonUnseen()
				a := attnNew(t, d, tc.kv, tc.hd, tc.group, vr.v)
				in := p.upload(t, d)
				g := tc.nKV - 1
				got := p.headColumns(p.oneHead(t, d, a, in, g, tc.block), g)
				want, mag := p.reference(g)
				attnAssert(t, got, want, mag, 1e-5)
			})
		}
	}
}

// The cache skips the blocks before a window: they are neither dispatched
// nor merged. That must give the bits of attending to every block, whose
// partials before the window are the merge's neutral element.
func TestAttentionWindowSkipBitIdentical(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	for _, vr := range attnVariants {
		for _, nTok := range []int{1, 9} {
			const block = 64
			p := newAttnProblem(r, gguf.F16, 128, 4, 1, nTok, 600, 40, 4)
			p.window, p.softCap = 150, 50
			a := attnNew(t, d, gguf.F16, 128, 4, vr.v)
			in := p.upload(t, d)
			nb := Blocks(p.rows, block)
			// The first block any query sees.
			b0 := (WindowStart(int(p.pos[0]), p.window) - p.start) / block
			if b0 < 2 {
				t.Fatalf("the window starts in block %d: nothing to skip", b0)
			}
			accBytes, outBytes := PartsBytes(nTok, p.group, p.hd, 1), nTok*p.group*p.hd*4
			merge := func(n int) MergeParams {
				return MergeParams{NTokens: nTok, Heads: p.group, NParts: n, Init: true, Finalize: true, OutHeads: p.group}
			}
			parts := poisoned(t, d, PartsBytes(nTok, p.group, p.hd, nb))
			acc1, out1 := poisoned(t, d, accBytes), poisoned(t, d, outBytes)
			acc2, out2 := poisoned(t, d, accBytes), poisoned(t, d, outBytes)
			sparts := poisoned(t, d, PartsBytes(nTok, p.group, p.hd, nb-b0))
			run(t, d, func(c *vk.Commands) error {
				if err := a.RecordPartial(c, in.q.All(), p.headRange(in.k, p.kv, 0, 0, p.rows), p.headRange(in.v, p.vt, 0, 0, p.rows),
					in.pos.All(), parts.All(), p.params(0, 0, p.rows, block, 0)); err != nil {
					return err
				}
				r0 := b0 * block
				if err := a.RecordPartial(c, in.q.All(), p.headRange(in.k, p.kv, 0, r0, p.rows), p.headRange(in.v, p.vt, 0, r0, p.rows),
					in.pos.All(), sparts.All(), p.params(0, r0, p.rows, block, 0)); err != nil {
					return err
				}
				c.Barrier()
				if err := a.RecordMerge(c, parts.All(), acc1.All(), out1.All(), merge(nb)); err != nil {
					return err
				}
				return a.RecordMerge(c, sparts.All(), acc2.All(), out2.All(), merge(nb-b0))
			})
			o1, o2 := download(t, d, out1), download(t, d, out2)
			if !bytes.Equal(download(t, d, acc1), download(t, d, acc2)) || !bytes.Equal(o1, o2) {
				t.Fatalf("%s, %d tokens: skipping the blocks before the window changes the result", vr.name, nTok)
			}
			want, mag := p.reference(0)
			attnAssert(t, bytesF32(o1), want, mag, 1e-5)
		}
	}
}

func TestAttentionRejectsBadFeatures(t *testing.T) {
	d := vktest.Device(t)
	a := attnNew(t, d, gguf.F16, 64, 2, attnAuto)
	big := poisoned(t, d, 1<<20)
	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	good := AttnParams{NTokens: 1, QHeads: 2, KVRows: 10, Block: 64, KVHeads: 1, Scale: 0.125, Window: 4, SoftCap: 50}
	if err := a.RecordPartial(c, big.All(), big.All(), big.All(), big.All(), big.All(), good); err != nil {
		t.Errorf("valid parameters rejected: %v", err)
	}
	for _, f := range []func(*AttnParams){
		func(p *AttnParams) { p.Window = -1 },
		func(p *AttnParams) { p.Window = math.MaxUint32 + 1 },
		func(p *AttnParams) { p.SoftCap = -1 },
		func(p *AttnParams) { p.SoftCap = float32(math.Inf(1)) },
		func(p *AttnParams) { p.SoftCap = float32(math.NaN()) },
	} {
		p := good
		f(&p)
		if err := a.RecordPartial(c, big.All(), big.All(), big.All(), big.All(), big.All(), p); err == nil {
			t.Errorf("window %d, soft cap %v accepted", p.Window, p.SoftCap)
		}
	}
}

func TestVisible(t *testing.T) {
	// llama.cpp's standard window of 4 seen from position 10: 7, 8, 9, 10.
	for p := 0; p <= 12; p++ {
		if got, want := Visible(p, 10, 4), p >= 7 && p <= 10; got != want {
			t.Errorf("Visible(%d, 10, 4) = %v", p, got)
		}
		if got, want := Visible(p, 10, 0), p <= 10; got != want {
			t.Errorf("Visible(%d, 10, 0) = %v", p, got)
		}
	}
	for _, c := range []struct{ t, w, want int }{{10, 4, 7}, {3, 4, 0}, {4, 4, 1}, {10, 0, 0}, {10, 1, 10}} {
		if got := WindowStart(c.t, c.w); got != c.want {
			t.Errorf("WindowStart(%d, %d) = %d, want %d", c.t, c.w, got, c.want)
		}
	}
}
