package offload

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"headinfer/engine/gguf"
	"headinfer/engine/kernel"
)

// cpuProblem is one CPU attention input: NTokens query tokens of
// nKV·group heads at positions pos, and nKV KV heads of rows rows each
// whose row 0 is absolute position start.
type cpuProblem struct {
	kv, vt            gguf.Type // K and V types
	hd, group, nKV    int
	nTok, rows, start int
	scale             float32
	window            int         // sliding window, 0 for none
	softCap           float32     // score soft cap, 0 for none
	q                 []float32   // [nTok][nKV·group·hd]
	pos               []uint32    // [nTok]
	k, v              [][]float32 // per KV head: rows·hd values as stored (after f16 rounding)
	kRaw, vRaw        [][]byte    // per KV head: the stored bytes
	qHeads            int
}

// newCPUProblem makes fresh random inputs. The queries sit at the last
// nTok positions of the rows (a decode token's own K/V is in the store when
// it attends), so with nTok > 1 the causal mask inside the range matters.
// qScale sets how peaked the softmax is.
func newCPUProblem(r *rand.Rand, kv gguf.Type, hd, group, nKV, nTok, rows, start int, qScale float32) *cpuProblem {
	return newCPUProblemKV(r, kv, kv, hd, group, nKV, nTok, rows, start, qScale)
}

// newCPUProblemKV is newCPUProblem with K of type kv and V of type vt.
func newCPUProblemKV(r *rand.Rand, kv, vt gguf.Type, hd, group, nKV, nTok, rows, start int, qScale float32) *cpuProblem {
	p := &cpuProblem{kv: kv, vt: vt, hd: hd, group: group, nKV: nKV, nTok: nTok, rows: rows, start: start,
		scale: float32(1 / math.Sqrt(float64(hd))), qHeads: nKV * group}
	p.q = cpuRandFloats(r, nTok*p.qHeads*hd, qScale)
	for t := range nTok {
		p.pos = append(p.pos, uint32(start+rows-nTok+t))
	}
	for range nKV {
		for _, dst := range []struct {
			t    gguf.Type
			vals *[][]float32
			raw  *[][]byte
		}{{kv, &p.k, &p.kRaw}, {vt, &p.v, &p.vRaw}} {
			b, err := gguf.Quantize(dst.t, cpuRandFloats(r, rows*hd, 1))
			if err != nil {
				panic(err)
			}
			seen := make([]float32, rows*hd)
			if err := gguf.Dequantize(dst.t, b, seen); err != nil {
				panic(err)
			}
			*dst.vals = append(*dst.vals, seen)
			*dst.raw = append(*dst.raw, b)
		}
	}
	return p
}

func cpuRandFloats(r *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = (2*r.Float32() - 1) * scale
	}
	return v
}

// heads returns KV heads z0… of the problem restricted to rows [from, to).
func (p *cpuProblem) heads(z0, n, from, to int) []CPUHeadKV {
	kb, vb := p.kv.RowBytes(p.hd), p.vt.RowBytes(p.hd)
	var hs []CPUHeadKV
	for z := z0; z < z0+n; z++ {
		hs = append(hs, CPUHeadKV{K: p.kRaw[z][from*kb : to*kb], V: p.vRaw[z][from*vb : to*vb]})
	}
	return hs
}

// params are the parameters for KV heads z0… over rows [from, to).
func (p *cpuProblem) params(z0, from, to, part int) CPUAttnParams {
	return CPUAttnParams{K: p.kv, V: p.vt, HeadDim: p.hd, Group: p.group, NTokens: p.nTok, QHeads: p.qHeads,
		QHead0: z0 * p.group, KVStart: p.start + from, KVRows: to - from, Part: part, Scale: p.scale,
		Window: p.window, SoftCap: p.softCap}
}

// scores returns, in float64, the scores of query head j of KV head z for
// token t against the visible rows of [from, to), from the first visible
// one on (see visibleFrom).
func (p *cpuProblem) scores(z, j, t, from, to int) []float64 {
	q := p.q[(t*p.qHeads+z*p.group+j)*p.hd:][:p.hd]
	var s []float64
	for c := p.visibleFrom(t, from); c < to && p.start+c <= int(p.pos[t]); c++ {
		var dot float64
		for d := range p.hd {
			dot += float64(q[d]) * float64(p.k[z][c*p.hd+d])
		}
		x := float64(p.scale) * dot
		if p.softCap != 0 {
			x = float64(p.softCap) * math.Tanh(x/float64(p.softCap))
		}
		s = append(s, x)
	}
	return s
}

// visibleFrom is the first row of [from, …) that token t's window reaches.
func (p *cpuProblem) visibleFrom(t, from int) int {
	return max(from, kernel.WindowStart(int(p.pos[t]), p.window)-p.start)
}

// maxScore is the largest of s, −Inf for none.
func maxScore(s []float64) float64 {
	m := math.Inf(-1)
	for _, x := range s {
		m = max(m, x)
	}
	return m
}

// unnormalised returns, for scores s of KV head z's rows from… and a
// shift m, l = Σ exp(s−m), O = Σ exp(s−m)·v and per element Σ exp(s−m)·|v|,
// the magnitude that bounds O's rounding error.
func (p *cpuProblem) unnormalised(z, from int, s []float64, m float64) (l float64, o, mag []float64) {
	o, mag = make([]float64, p.hd), make([]float64, p.hd)
	for i, x := range s {
		w := math.Exp(x - m)
		l += w
		row := p.v[z][(from+i)*p.hd:][:p.hd]
		for d, v := range row {
			o[d] += w * float64(v)
			mag[d] += w * math.Abs(float64(v))
		}
	}
	return l, o, mag
}

// reference is the float64 attention output of query head j of KV head z
// for token t over rows [from, to), and per element the magnitude
// Σ p·|v| / Σ p that bounds its rounding error. No visible row gives 0.
func (p *cpuProblem) reference(z, j, t, from, to int) (want, mag []float64) {
	s := p.scores(z, j, t, from, to)
	l, want, mag := p.unnormalised(z, p.visibleFrom(t, from), s, maxScore(s))
	if l == 0 {
		return want, mag
	}
	for d := range want {
		want[d] /= l
		mag[d] /= l
	}
	return want, mag
}

// poisonedFloats returns n NaNs, so that an entry the kernel fails to
// write shows up.
func poisonedFloats(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(math.NaN())
	}
	return v
}

// cpuRtol is the tolerance of every output element relative to its
// magnitude Σ p·|v| / Σ p: f32 arithmetic in another summation order than
// the float64 reference (the same bound the device kernels meet).
const cpuRtol = 1e-5

// scoreRtol widens cpuRtol for large scores: an f32 score s is off by
// a few units in the last place, an absolute error of about ε·|s| that
// becomes a relative error of exp(s−m) and so of every term of l and O.
// Soft-capped scores sit near the cap (±50 for Gemma 2), where this
// reaches the size of cpuRtol itself.
func scoreRtol(s []float64) float64 {
	const ulps, eps32 = 8, 0x1p-24
	big := 0.0
	for _, x := range s {
		big = max(big, math.Abs(x))
	}
	return cpuRtol + ulps*eps32*big
}

// checkPartial checks the partial of KV heads z0… over rows [from, to),
// written to part part of parts, against the float64 reference: m is the
// maximum score, l = Σ exp(s−m) and O = Σ exp(s−m)·v for that m, and O/l
// is the attention output.
func (p *cpuProblem) checkPartial(t *testing.T, parts []float32, part, z0, n, from, to int) {
	t.Helper()
	E := p.hd + 4
	heads := n * p.group
	worst := 0.0
	for tok := range p.nTok {
		for z := z0; z < z0+n; z++ {
			for j := range p.group {
				e := parts[((part*p.nTok+tok)*heads+(z-z0)*p.group+j)*E:][:E]
				where := fmt.Sprintf("token %d, KV head %d, query head %d", tok, z, j)
				for i, x := range e {
					if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
						t.Fatalf("%s: element %d is %v: not written or overflowed", where, i, x)
					}
				}
				if e[p.hd+2] != 0 || e[p.hd+3] != 0 {
					t.Fatalf("%s: padding is %v, %v, want 0, 0", where, e[p.hd+2], e[p.hd+3])
				}
				s := p.scores(z, j, tok, from, to)
				m, l := float64(e[p.hd]), float64(e[p.hd+1])
				if len(s) == 0 {
					if e[p.hd] != -math.MaxFloat32 || l != 0 {
						t.Fatalf("%s: nothing visible, got m %v, l %v, want -MaxFloat32, 0", where, m, l)
					}
					for d := range p.hd {
						if e[d] != 0 {
							t.Fatalf("%s: nothing visible, O[%d] = %v", where, d, e[d])
						}
					}
					continue
				}
				mRef := maxScore(s)
				rtol := scoreRtol(s)
				if math.Abs(m-mRef) > cpuRtol*max(1, math.Abs(mRef)) {
					t.Fatalf("%s: m = %v, want %v", where, m, mRef)
				}
				// l and O for the kernel's own m: the partial must be
				// consistent with the m it reports.
				lRef, oRef, mag := p.unnormalised(z, p.visibleFrom(tok, from), s, m)
				if err := math.Abs(l - lRef); err > rtol*lRef {
					t.Fatalf("%s: l = %v, want %v", where, l, lRef)
				}
				for d := range p.hd {
					err := math.Abs(float64(e[d])-oRef[d]) / (rtol * mag[d])
					if err > 1 {
						t.Fatalf("%s: O[%d] = %v, want %v (error %.3g× the tolerance)", where, d, e[d], oRef[d], err)
					}
					worst = max(worst, err)
				}
				want, wmag := p.reference(z, j, tok, from, to)
				for d := range p.hd {
					got := float64(e[d]) / l
					if err := math.Abs(got - want[d]); err > rtol*wmag[d] {
						t.Fatalf("%s: O/l [%d] = %v, want %v", where, d, got, want[d])
					}
				}
			}
		}
	}
	t.Logf("worst O error %.3g× the tolerance", worst)
}

func TestCPUAttentionMatchesReference(t *testing.T) {
	r := cpuNewRand(t)
	a := NewCPUAttention(0)
	defer a.Close()
	type tc struct {
		kv             gguf.Type
		hd, group, nKV int
		nTok, rows     int
		qScale         float32
	}
	var cases []tc
	for _, kv := range []gguf.Type{gguf.F16, gguf.F32} {
		for _, hd := range []int{64, 128} {
			for _, g := range []int{1, 4, 8} {
				cases = append(cases, tc{kv, hd, g, 3, 1, 2049, 4}) // decode: three blocks, the last of one row
			}
		}
	}
	cases = append(cases,
		tc{gguf.F16, 128, 4, 2, 1, 1, 4},     // the first token
		tc{gguf.F16, 128, 4, 2, 1, 37, 16},   // peaked softmax, a partial chunk
		tc{gguf.F32, 64, 8, 1, 1, 1023, 1},   // one block short of its size
		tc{gguf.F16, 128, 4, 2, 5, 3001, 4},  // several tokens, causal inside the range
		tc{gguf.F32, 64, 1, 2, 9, 5, 4},      // more tokens than rows: the first see nothing
		tc{gguf.F16, 12, 3, 2, 3, 700, 4},    // head size not a multiple of 8: portable code
		tc{gguf.F32, 4, 2, 1, 1, 100, 4},     // smallest head
		tc{gguf.F16, 256, 2, 1, 1, 1500, 4},  // largest head
		tc{gguf.F16, 128, 8, 8, 1, 4099, 8},  // Llama-3 geometry, 8 KV heads
		tc{gguf.F32, 128, 16, 1, 2, 1100, 4}, // group beyond the device kernel's
	)
	for _, c := range cases {
		for code := cpuBest; code >= CodePortable; code-- {
			if code.forHeadDim(c.hd) != code {
				continue
			}
			name := fmt.Sprintf("%v/hd%d/g%d/kv%d/tok%d/rows%d/%v", c.kv, c.hd, c.group, c.nKV, c.nTok, c.rows, code)
			t.Run(name, func(t *testing.T) {
				p := newCPUProblem(r, c.kv, c.hd, c.group, c.nKV, c.nTok, c.rows, r.IntN(100), c.qScale)
				// Two parts: write part 1 and check part 0 stays poisoned.
				n := kernel.PartsBytes(c.nTok, c.nKV*c.group, c.hd, 2) / 4
				parts := poisonedFloats(n)
				a.code = code
				if err := a.Partial(p.q, p.pos, p.heads(0, c.nKV, 0, c.rows), parts, p.params(0, 0, c.rows, 1)); err != nil {
					t.Fatal(err)
				}
				for i, x := range parts[:n/2] {
					if !math.IsNaN(float64(x)) {
						t.Fatalf("part 0 element %d was written (%v)", i, x)
					}
				}
				p.checkPartial(t, parts, 1, 0, c.nKV, 0, c.rows)
			})
		}
	}
}

// TestCPUAttentionQuant runs Q8_0 and Q4_0 K and V, alone and mixed with
// f16, with every code this CPU runs, against the float64 reference over
// the dequantized values, with and without a window (whose unseen rows are
// poisoned: a NaN scale in every block).
func TestCPUAttentionQuant(t *testing.T) {
	r := cpuNewRand(t)
	a := NewCPUAttention(0)
	defer a.Close()
	cases := []struct {
		kv, vt         gguf.Type
		hd, group, nKV int
		nTok, rows     int
		window         int
		softCap        float32
	}{
		{gguf.Q8_0, gguf.Q8_0, 128, 4, 3, 1, 2049, 0, 0},    // decode: three blocks, the last of one row
		{gguf.Q4_0, gguf.Q4_0, 64, 8, 2, 1, 1500, 0, 0},     // big group
		{gguf.Q8_0, gguf.Q4_0, 128, 4, 2, 3, 1100, 700, 30}, // K and V apart, a window across blocks, a cap
		{gguf.F16, gguf.Q8_0, 32, 1, 2, 1, 300, 0, 0},       // smallest quantized head
		{gguf.Q4_0, gguf.F16, 256, 2, 1, 1, 1030, 100, 0},   // largest head
	}
	for _, c := range cases {
		for code := cpuBest; code >= CodePortable; code-- {
			if code.forHeadDim(c.hd) != code {
				continue
			}
			name := fmt.Sprintf("%v-%v/hd%d/g%d/kv%d/tok%d/rows%d/w%d/%v", c.kv, c.vt, c.hd, c.group, c.nKV, c.nTok, c.rows, c.window, code)
			t.Run(name, func(t *testing.T) {
				p := newCPUProblemKV(r, c.kv, c.vt, c.hd, c.group, c.nKV, c.nTok, c.rows, r.IntN(100), 4)
				p.window, p.softCap = c.window, c.softCap
				p.poisonUnseen()
				parts := poisonedFloats(kernel.PartsBytes(c.nTok, c.nKV*c.group, c.hd, 1) / 4)
				a.code = code
				if err := a.Partial(p.q, p.pos, p.heads(0, c.nKV, 0, c.rows), parts, p.params(0, 0, c.rows, 0)); err != nil {
					t.Fatal(err)
				}
				p.checkPartial(t, parts, 0, 0, c.nKV, 0, c.rows)
			})
		}
	}
}

// poisonUnseen sets the stored K and V rows that no query of p sees
// (before the window of its earliest query) to NaN: reading them, even to
// mask them, would show in the partials, so this checks that the rows
// before the window are skipped.
func (p *cpuProblem) poisonUnseen() {
	lo := min(p.rows, kernel.WindowStart(int(p.pos[0]), p.window)-p.start)
	for z := range p.nKV {
		for _, b := range []struct {
			raw []byte
			rb  int
		}{{p.kRaw[z], p.kv.RowBytes(p.hd)}, {p.vRaw[z], p.vt.RowBytes(p.hd)}} {
			for i := 0; i < lo*b.rb; i++ {
				b.raw[i] = 0xff // NaN in f16 and f32, a NaN scale in Q8_0 and Q4_0
			}
		}
	}
}

// Sliding windows × soft caps × scales, with every code this CPU runs:
// windows smaller and larger than a task's CPUBlockRows and the SIMD
// chunk, not multiples of them, queries within and far beyond the window,
// several tokens whose windows start in different rows, GQA.
func TestCPUAttentionWindowSoftCap(t *testing.T) {
	r := cpuNewRand(t)
	a := NewCPUAttention(0)
	defer a.Close()
	for _, c := range []struct {
		kv                gguf.Type
		hd, group, nKV    int
		nTok, rows, start int
		window            int
		softCap, scaleF   float32 // scale = scaleF/sqrt(hd)
		qScale            float32
	}{
		{gguf.F16, 128, 4, 2, 1, 5000, 100000, 4096, 50, 1, 16},  // Gemma 2: decode far past the window
		{gguf.F16, 128, 4, 2, 1, 3000, 0, 1000, 0, 1, 4},         // window across tasks, no cap
		{gguf.F32, 64, 2, 2, 1, 700, 9, 33, 5, 1.7, 16},          // window of about one SIMD chunk
		{gguf.F16, 128, 8, 1, 1, 2049, 0, 0, 30, 0.6, 16},        // cap and scale only
		{gguf.F16, 128, 4, 2, 5, 3001, 40, 1500, 50, 1, 16},      // several tokens
		{gguf.F32, 64, 1, 2, 40, 300, 5, 17, 3, 1, 8},            // tokens straddling the window's edge
		{gguf.F16, 64, 2, 1, 3, 100, 0, 1, 0, 1, 4},              // window 1
		{gguf.F16, 12, 3, 2, 3, 700, 4, 513, 20, 0.5, 16},        // odd head size: portable code
		{gguf.F32, 128, 4, 1, 2, 1100, 1 << 20, 5000, 50, 1, 16}, // window beyond the rows
	} {
		for code := cpuBest; code >= CodePortable; code-- {
			if code.forHeadDim(c.hd) != code {
				continue
			}
			name := fmt.Sprintf("%v/hd%d/g%d/tok%d/rows%d@%d/window%d/cap%g/scale%g/%v",
				c.kv, c.hd, c.group, c.nTok, c.rows, c.start, c.window, c.softCap, c.scaleF, code)
			t.Run(name, func(t *testing.T) {
				p := newCPUProblem(r, c.kv, c.hd, c.group, c.nKV, c.nTok, c.rows, c.start, c.qScale)
				p.window, p.softCap = c.window, c.softCap
				p.scale = c.scaleF / float32(math.Sqrt(float64(c.hd)))
				p.poisonUnseen()
				parts := poisonedFloats(kernel.PartsBytes(c.nTok, c.nKV*c.group, c.hd, 1) / 4)
				a.code = code
				if err := a.Partial(p.q, p.pos, p.heads(0, c.nKV, 0, c.rows), parts, p.params(0, 0, c.rows, 0)); err != nil {
					t.Fatal(err)
				}
				p.checkPartial(t, parts, 0, 0, c.nKV, 0, c.rows)
			})
		}
	}
}

// A subset of positions [from, to) of a subset of the heads: the partial
// of exactly those rows, in entries numbered from the first head passed.
func TestCPUAttentionSubsets(t *testing.T) {
	r := cpuNewRand(t)
	a := NewCPUAttention(0)
	defer a.Close()
	for _, kv := range []gguf.Type{gguf.F16, gguf.F32} {
		for _, nTok := range []int{1, 4} {
			p := newCPUProblem(r, kv, 128, 4, 4, nTok, 3333, 7, 4)
			for _, span := range [][2]int{{0, 1000}, {1000, 3333}, {517, 2901}, {3330, 3333}, {1024, 2048}} {
				from, to := span[0], span[1]
				parts := poisonedFloats(kernel.PartsBytes(nTok, 2*p.group, p.hd, 1) / 4)
				if err := a.Partial(p.q, p.pos, p.heads(1, 2, from, to), parts, p.params(1, from, to, 0)); err != nil {
					t.Fatal(err)
				}
				p.checkPartial(t, parts, 0, 1, 2, from, to)
			}
		}
	}
}

// The result must not depend on the number of threads (blocks are fixed
// by CPUBlockRows, so the arithmetic is the same) nor on the rounds the
// blocks are done in, and a call's result must not depend on the previous
// call's leftovers in the reused buffers.
func TestCPUAttentionThreadsBitIdentical(t *testing.T) {
	r := cpuNewRand(t)
	p := newCPUProblem(r, gguf.F16, 128, 4, 3, 1, 5000, 0, 4)
	n := kernel.PartsBytes(1, 3*p.group, p.hd, 1) / 4
	var ref []float32
	for _, threads := range []int{1, 2, 3, 7} {
		a := NewCPUAttention(threads)
		small := newCPUProblem(r, gguf.F32, 64, 8, 2, 3, 100, 0, 4)
		if err := a.Partial(small.q, small.pos, small.heads(0, 2, 0, 100), poisonedFloats(kernel.PartsBytes(3, 16, 64, 1)/4),
			small.params(0, 0, 100, 0)); err != nil {
			t.Fatal(err)
		}
		parts := poisonedFloats(n)
		err := a.Partial(p.q, p.pos, p.heads(0, 3, 0, p.rows), parts, p.params(0, 0, p.rows, 0))
		a.Close()
		if err != nil {
			t.Fatal(err)
		}
		if ref == nil {
			ref = parts
			p.checkPartial(t, parts, 0, 0, 3, 0, p.rows)
			continue
		}
		if !bytes.Equal(cpuF32Bytes(parts), cpuF32Bytes(ref)) {
			t.Fatalf("%d threads give other bits than 1 thread", threads)
		}
	}
	// With little room for the tasks' partials the blocks are done and
	// folded in rounds (5 blocks per head: rounds of 1 and of 2): the same bits.
	entry := p.group * (p.hd + 4)
	for _, perRound := range []int{1, 2} {
		a := NewCPUAttention(2)
		a.blockFloats = perRound * 3 * entry
		parts := poisonedFloats(n)
		err := a.Partial(p.q, p.pos, p.heads(0, 3, 0, p.rows), parts, p.params(0, 0, p.rows, 0))
		a.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(cpuF32Bytes(parts), cpuF32Bytes(ref)) {
			t.Fatalf("rounds of %d blocks per head give other bits than one round", perRound)
		}
	}
}

func TestCPUAttentionRejectsBadInput(t *testing.T) {
	r := cpuNewRand(t)
	a := NewCPUAttention(2)
	p := newCPUProblem(r, gguf.F16, 64, 4, 2, 1, 10, 0, 1)
	good := p.params(0, 0, 10, 0)
	parts := make([]float32, kernel.PartsBytes(1, 8, 64, 1)/4)
	if err := a.Partial(p.q, p.pos, p.heads(0, 2, 0, 10), parts, good); err != nil {
		t.Fatalf("valid call: %v", err)
	}
	bad := []struct {
		name  string
		edit  func(*CPUAttnParams)
		heads []CPUHeadKV
		parts []float32
		q     []float32
		pos   []uint32
	}{
		{name: "q4_k K", edit: func(c *CPUAttnParams) { c.K = gguf.Q4_K }},
		{name: "q8_0 V of a head dim 36", edit: func(c *CPUAttnParams) { c.V, c.HeadDim = gguf.Q8_0, 36 }},
		{name: "head dim 66", edit: func(c *CPUAttnParams) { c.HeadDim = 66 }},
		{name: "head dim 512", edit: func(c *CPUAttnParams) { c.HeadDim = 512 }},
		{name: "group 0", edit: func(c *CPUAttnParams) { c.Group = 0 }},
		{name: "no rows", edit: func(c *CPUAttnParams) { c.KVRows = 0 }},
		{name: "a prefill chunk", edit: func(c *CPUAttnParams) { c.NTokens = 512 }},
		{name: "tokens that overflow", edit: func(c *CPUAttnParams) { c.NTokens = math.MaxInt / 2 }},
		{name: "part that overflows", edit: func(c *CPUAttnParams) { c.Part = math.MaxInt / 2 }},
		{name: "query heads that overflow", edit: func(c *CPUAttnParams) { c.QHeads = math.MaxInt / 2 }},
		{name: "first query head that overflows", edit: func(c *CPUAttnParams) { c.QHead0 = math.MaxInt }},
		{name: "no tokens", edit: func(c *CPUAttnParams) { c.NTokens = 0 }},
		{name: "negative start", edit: func(c *CPUAttnParams) { c.KVStart = -1 }},
		{name: "query heads beyond the row", edit: func(c *CPUAttnParams) { c.QHead0 = 1 }},
		{name: "NaN scale", edit: func(c *CPUAttnParams) { c.Scale = float32(math.NaN()) }},
		{name: "negative window", edit: func(c *CPUAttnParams) { c.Window = -1 }},
		{name: "window beyond 32 bits", edit: func(c *CPUAttnParams) { c.Window = math.MaxUint32 + 1 }},
		{name: "negative soft cap", edit: func(c *CPUAttnParams) { c.SoftCap = -50 }},
		{name: "infinite soft cap", edit: func(c *CPUAttnParams) { c.SoftCap = float32(math.Inf(1)) }},
		{name: "positions beyond 32 bits", edit: func(c *CPUAttnParams) { c.KVStart = math.MaxUint32 }},
		{name: "more rows than K holds", edit: func(c *CPUAttnParams) { c.KVRows = 11 }},
		{name: "part beyond parts", edit: func(c *CPUAttnParams) { c.Part = 1 }},
		{name: "no heads", heads: []CPUHeadKV{}},
		{name: "short V", heads: []CPUHeadKV{{K: p.kRaw[0], V: p.vRaw[0][:100]}, {K: p.kRaw[1], V: p.vRaw[1]}}},
		{name: "short parts", parts: parts[:len(parts)-1]},
		{name: "short q", q: p.q[:len(p.q)-1]},
		{name: "no positions", pos: []uint32{}},
	}
	for _, b := range bad {
		c := good
		if b.edit != nil {
			b.edit(&c)
		}
		heads, ps, q, pos := p.heads(0, 2, 0, 10), parts, p.q, p.pos
		if b.heads != nil {
			heads = b.heads
		}
		if b.parts != nil {
			ps = b.parts
		}
		if b.q != nil {
			q = b.q
		}
		if b.pos != nil {
			pos = b.pos
		}
		if err := a.Partial(q, pos, heads, ps, c); err == nil {
			t.Errorf("%s: no error", b.name)
		} else {
			t.Logf("%s: %v", b.name, err)
		}
	}
	a.Close()
	if err := a.Partial(p.q, p.pos, p.heads(0, 2, 0, 10), parts, good); err == nil {
		t.Errorf("call after Close: no error")
	}
}

// Once its buffers have grown, a call allocates nothing.
func TestCPUAttentionNoAllocations(t *testing.T) {
	r := cpuNewRand(t)
	a := NewCPUAttention(0)
	defer a.Close()
	p := newCPUProblem(r, gguf.F16, 128, 4, 2, 1, 3000, 0, 4)
	parts := make([]float32, kernel.PartsBytes(1, 8, 128, 1)/4)
	heads := p.heads(0, 2, 0, p.rows)
	prm := p.params(0, 0, p.rows, 0)
	allocs := testing.AllocsPerRun(20, func() {
		if err := a.Partial(p.q, p.pos, heads, parts, prm); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per call", allocs)
	}
}

func TestFloatsOf(t *testing.T) {
	b := make([]byte, 12)
	binary.LittleEndian.PutUint32(b[4:], math.Float32bits(1.5))
	f, err := FloatsOf(b)
	if err != nil || len(f) != 3 || f[1] != 1.5 {
		t.Fatalf("FloatsOf: %v, %v", f, err)
	}
	if _, err := FloatsOf(b[1:9]); err == nil {
		t.Fatalf("misaligned bytes: no error")
	}
}

func cpuNewRand(t testing.TB) *rand.Rand {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

func cpuF32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// MeasureCPUAttention reports rates of the geometry it ran (no timing is
// asserted: only that the figures are finite, positive and consistent).
func TestMeasureCPUAttention(t *testing.T) {
	for _, kv := range []gguf.Type{gguf.F16, gguf.F32} {
		r, err := MeasureCPUAttention(kv, 128, 4, 2, 3000, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%v: %+v", kv, r)
		if !(r.KVBytesPerSec > 0) || math.IsInf(r.KVBytesPerSec, 0) || r.Threads < 1 || r.Code != cpuBest.forHeadDim(128) {
			t.Fatalf("%v: implausible rate %+v", kv, r)
		}
		// flops per KV byte: 4·HD·group per position over 2·HD·elem bytes.
		want := float64(2*4) / float64(kv.BlockBytes())
		if got := r.FLOPPerSec / r.KVBytesPerSec; math.Abs(got-want) > 1e-9*want {
			t.Fatalf("%v: %v flops per byte, want %v", kv, got, want)
		}
	}
	if _, err := MeasureCPUAttention(gguf.F16, 128, 4, 0, 100, 0); err == nil {
		t.Fatalf("no KV heads: no error")
	}
	if _, err := MeasureCPUAttention(gguf.Q4_K, 128, 4, 1, 100, 0); err == nil {
		t.Fatalf("Q4_K KV: no error")
	}
	if _, err := MeasureCPUAttention(gguf.Q8_0, 128, 4, 1, 100, 0); err != nil {
		t.Fatalf("Q8_0 KV: %v", err)
	}
}
