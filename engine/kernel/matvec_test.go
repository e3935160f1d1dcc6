package kernel

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"headinfer/engine/gguf"
	"headinfer/vk"
	"headinfer/vk/vktest"
)

var mvTypes = []gguf.Type{gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0, gguf.Q4_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K}

// mvCols returns the row lengths to test for t: odd, even and multiples of
// 8 for plain float types (each enables a different load width), odd and
// even numbers of blocks for quantized ones.
func mvCols(t gguf.Type) []int {
	switch t.BlockSize() {
	case 1:
		return []int{37, 301, 302, 32, 96, 4128}
	case 256:
		return []int{256, 768, 4352, 512, 2560}
	}
	return []int{32, 96, 4128, 256, 1280}
}

// mvWeights returns random rows × cols weights encoded as t, and their
// decoded values, which the reference uses so that only the kernel's f32
// accumulation differs from it.
func mvWeights(t testing.TB, r *rand.Rand, typ gguf.Type, rows, cols int) ([]byte, []float32) {
	t.Helper()
	raw, deq, err := checkWeights(r, typ, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	return raw, deq
}

// mvAssert fails unless each got[i] is within rtol·mag[i] of want[i]:
// relative to the sum of the magnitudes of the terms, which bounds
// accumulation error also where the terms cancel to near zero.
func mvAssert(t testing.TB, got []float32, want, mag []float64, rtol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d values, want %d", len(got), len(want))
	}
	worst, wi := 0.0, -1
	for i := range want {
		g := float64(got[i])
		if math.IsNaN(g) || math.IsInf(g, 0) {
			t.Fatalf("element %d is %v (want %v): not written or overflowed", i, g, want[i])
		}
		tol := rtol * max(mag[i], 1e-30)
		if r := math.Abs(g-want[i]) / tol; r > worst {
			worst, wi = r, i
		}
	}
	if worst > 1 {
		t.Fatalf("element %d: got %v, want %v (error %.3g× the tolerance %g·Σ|terms| = %g)",
			wi, got[wi], want[wi], worst, rtol, rtol*mag[wi])
	}
}

// mvLayout places an operand inside a larger buffer: off bytes of poison
// before it and some after, so a kernel writing outside its range shows.
type mvLayout struct{ w, x, y uint64 }

var (
	mvAligned    = mvLayout{}
	mvOddOffsets = mvLayout{w: 4, x: 4, y: 12} // F16/BF16 rows 4-byte aligned: pair loads
	mvWordOffset = mvLayout{w: 2, x: 8, y: 4}  // 2-byte aligned weights: scalar loads
)

// mvOperand uploads data at byte offset off of a poisoned buffer with
// slack after it, and returns the buffer and the operand's range.
func mvOperand(t testing.TB, d *vk.Device, data []byte, off uint64) (*vk.Buffer, vk.Range) {
	t.Helper()
	b := poisoned(t, d, int(off)+len(data)+64)
	r := b.Range(off, uint64(len(data)))
	if err := d.Write(r, data); err != nil {
		t.Fatal(err)
	}
	return b, r
}

// mvOutput prepares y: y0 at offset off when accumulating, else nothing
// but poison there.
func mvOutput(t testing.TB, d *vk.Device, n int, y0 []float32, off uint64) (*vk.Buffer, vk.Range) {
	t.Helper()
	if y0 != nil {
		return mvOperand(t, d, f32Bytes(y0), off)
	}
	b := poisoned(t, d, int(off)+4*n+64)
	return b, b.Range(off, 4*uint64(n))
}

// mvReadOutput returns the floats of r and fails if any byte of b outside
// r is no longer poison.
func mvReadOutput(t testing.TB, d *vk.Device, b *vk.Buffer, r vk.Range) []float32 {
	t.Helper()
	all := download(t, d, b)
	for i, v := range all {
		if (uint64(i) < r.Off || uint64(i) >= r.Off+r.Size) && v != 0xff {
			t.Fatalf("byte %d of the output buffer, outside the output range [%d, %d), was overwritten",
				i, r.Off, r.Off+r.Size)
		}
	}
	return bytesF32(all[r.Off : r.Off+r.Size])
}

// mvSpec is one matvec (n == 0) or matmul (n ≥ 1) test case.
type mvSpec struct {
	typ           gguf.Type
	rows, cols, n int
	acc           bool
	lay           mvLayout
	limit         uint64 // nonzero: a small binding limit that forces splitting
	tiled         bool   // matmul: the tiled kernel even where the device would run matvecs
	gpu           bool   // matvec: the GPU geometry and layout even on a CPU device
}

// mvGPUGeometry is the matvec geometry of GPUs (threads, rows and vectors
// per workgroup), tested on any device because it combines several
// subgroups per row through shared memory and batches vectors over the
// GGUF layout.
var mvGPUGeometry = [3]int{128, 3, mvGPUBatch}

func (s mvSpec) String() string {
	str := fmt.Sprintf("%v/%dx%d", s.typ, s.rows, s.cols)
	if s.n > 0 {
		str += fmt.Sprintf("/n=%d", s.n)
	}
	str += fmt.Sprintf("/acc=%v/off=%d,%d,%d", s.acc, s.lay.w, s.lay.x, s.lay.y)
	if s.tiled {
		str += "/tiled"
	}
	if s.gpu {
		str += "/gpu"
	}
	return str
}

// mvSetup applies the spec's overrides to a matvec.
func (s mvSpec) mvSetup(k *MatVec) {
	k.limit = s.limit
	if s.gpu {
		k.runAsGPU(mvGPUGeometry[0], mvGPUGeometry[1], mvGPUGeometry[2], false)
	}
}

// mvCase runs one case against the float64 reference.
func mvCase(t *testing.T, d *vk.Device, s mvSpec) {
	t.Helper()
	r := newRand(t)
	raw, deq := mvWeights(t, r, s.typ, s.rows, s.cols)
	nv := max(s.n, 1)
	x := randFloats(r, nv*s.cols, 1)
	var y0 []float32
	if s.acc {
		y0 = randFloats(r, nv*s.rows, 4)
	}
	want, mag := mvReference(deq, s.rows, s.cols, nv, x, y0)

	_, xr := mvOperand(t, d, f32Bytes(x), s.lay.x)
	yb, yr := mvOutput(t, d, nv*s.rows, y0, s.lay.y)

	if s.n == 0 {
		k, err := NewMatVec(d, s.typ)
		if err != nil {
			t.Fatal(err)
		}
		s.mvSetup(k)
		wr := mvUpload(t, d, k, s, raw)
		run(t, d, func(c *vk.Commands) error { return k.Record(c, wr, s.rows, s.cols, xr, yr, s.acc) })
	} else {
		k, err := NewMatMul(d, s.typ)
		if err != nil {
			t.Fatal(err)
		}
		k.limit = s.limit
		if s.tiled {
			k.batched = nil
		} else if k.batched != nil {
			s.mvSetup(k.batched)
		}
		var wr vk.Range
		if k.batched != nil {
			wr = mvUpload(t, d, k.batched, s, raw)
		} else {
			wr = mvUpload(t, d, nil, s, raw)
		}
		run(t, d, func(c *vk.Commands) error { return k.Record(c, wr, s.rows, s.cols, s.n, xr, yr, s.acc) })
	}
	mvAssert(t, mvReadOutput(t, d, yb, yr), want, mag, 1e-5)
}

// mvUpload places the spec's weights (GGUF layout in raw, one or more
// matrices of s.rows rows back to back) in the layout k reads (GGUF's when
// k is nil), at the spec's weight offset, raised to what the layout needs:
// 4 bytes for F32, a 16-byte texel for packed rows.
func mvUpload(t testing.TB, d *vk.Device, k *MatVec, s mvSpec, raw []byte) vk.Range {
	t.Helper()
	woff := s.lay.w
	if s.typ == gguf.F32 {
		woff = (woff + 3) &^ 3 // F32 weights must be 4-byte aligned
	}
	if k != nil && k.packs(s.cols) {
		woff = (woff + 15) &^ 15
		mb := s.rows * s.typ.RowBytes(s.cols)
		var data []byte
		for m := 0; m < len(raw); m += mb {
			p, err := k.Layout(raw[m:m+mb], s.rows, s.cols)
			if err != nil {
				t.Fatal(err)
			}
			data = append(data, p...)
		}
		raw = data
	}
	_, wr := mvOperand(t, d, raw, woff)
	return wr
}

func TestMatVec(t *testing.T) {
	d := vktest.Device(t)
	for _, typ := range mvTypes {
		for _, rows := range []int{1, 3, 37, 300} {
			for _, cols := range mvCols(typ) {
				for _, v := range []struct {
					acc bool
					lay mvLayout
				}{{false, mvAligned}, {true, mvOddOffsets}, {false, mvWordOffset}} {
					s := mvSpec{typ: typ, rows: rows, cols: cols, acc: v.acc, lay: v.lay}
					t.Run(s.String(), func(t *testing.T) { mvCase(t, d, s) })
				}
			}
		}
	}
}

// TestMatVecGPU runs the GPU geometry and layout (which a CPU device would
// not choose) with every load width, for one vector and, batched, for
// eleven (a full workgroup of vectors and a partial one).
func TestMatVecGPU(t *testing.T) {
	d := vktest.Device(t)
	for _, typ := range mvTypes {
		for _, cols := range mvCols(typ) {
			for i, lay := range []mvLayout{mvAligned, mvOddOffsets, mvWordOffset} {
				for _, n := range []int{0, 11} {
					s := mvSpec{typ: typ, rows: 37, cols: cols, n: n, acc: i == 1, lay: lay, gpu: true}
					t.Run(s.String(), func(t *testing.T) { mvCase(t, d, s) })
				}
			}
		}
	}
}

// TestMatVecSplit makes the binding limit small so that every type takes
// the path that splits a matrix into several dispatches, including chunks
// whose offsets cannot all be aligned alike.
func TestMatVecSplit(t *testing.T) {
	d := vktest.Device(t)
	for _, typ := range mvTypes {
		long, short := 1000, []int{96, 128} // one or two long rows per chunk, so chunk offsets vary
		switch typ.BlockSize() {
		case 32:
			long = 992
		case 256:
			long, short = 768, []int{256, 512} // x of a longer row would not fit the 4096-byte limit
		}
		for _, shape := range [][2]int{{301, short[0]}, {300, short[1]}, {37, long}} {
			for _, lay := range []mvLayout{mvAligned, mvWordOffset} {
				s := mvSpec{typ: typ, rows: shape[0], cols: shape[1], acc: true, lay: lay, limit: splitLimit(d, typ, shape[1], 4096)}
				t.Run(s.String(), func(t *testing.T) { mvCase(t, d, s) })
			}
		}
	}
}

// splitLimit returns a binding limit that splits a matrix of rows of cols
// weights into several dispatches: limit itself, or for packed rows,
// which split only between whole groups, two and a half groups.
func splitLimit(d *vk.Device, typ gguf.Type, cols int, limit uint64) uint64 {
	if p := packingFor(d.Info(), typ); p != nil && p.fits(cols) {
		return max(limit, 5*p.groupBytes(cols)/2)
	}
	return limit
}

// gluLimit returns a binding limit that splits the gate of a fused
// gate/up product of rows × cols into chunks: room for the gate and about
// a third of it (packed rows: two and a half groups) more.
func gluLimit(d *vk.Device, typ gguf.Type, rows, cols int) uint64 {
	if p := packingFor(d.Info(), typ); p != nil && p.fits(cols) {
		return p.bytes(rows, cols) + 5*p.groupBytes(cols)/2
	}
	return uint64(400 * typ.RowBytes(cols))
}

// TestMatVecLarge runs weight matrices bigger than the device's largest
// storage-buffer binding (136 MB of F32 against lavapipe's 128 MiB), in
// F32 and in Q6_K at a 2-byte-aligned offset, whose 210-byte blocks leave
// every later chunk's rows at another alignment.
func TestMatVecLarge(t *testing.T) {
	d := vktest.Device(t)
	for _, c := range []struct {
		typ gguf.Type
		lay mvLayout
	}{{gguf.F32, mvLayout{y: 8}}, {gguf.Q6_K, mvWordOffset}} {
		cols := 4096
		rows := int(d.Info().MaxStorageBufferRange/uint64(c.typ.RowBytes(cols))) + 37
		s := mvSpec{typ: c.typ, rows: rows, cols: cols, lay: c.lay}
		t.Run(s.String(), func(t *testing.T) { mvCase(t, d, s) })
	}
}

func TestMatVecErrors(t *testing.T) {
	d := vktest.Device(t)
	if _, err := NewMatVec(d, gguf.Type(11)); err == nil {
		t.Error("NewMatVec accepted Q3_K, which has no kernel")
	}
	k, err := NewMatVec(d, gguf.Q8_0)
	if err != nil {
		t.Fatal(err)
	}
	w := poisoned(t, d, 4*34)
	x := poisoned(t, d, 4*64)
	y := poisoned(t, d, 4*4)
	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	for _, tc := range []struct {
		name       string
		w          vk.Range
		rows, cols int
		x, y       vk.Range
	}{
		{"cols not a block multiple", w.All(), 4, 48, x.All(), y.All()},
		{"zero rows", w.All(), 0, 32, x.All(), y.All()},
		{"weights too short", w.All(), 4, 64, x.All(), y.All()},
		{"x too short", w.All(), 2, 64, x.Range(0, 128), y.All()},
		{"y too short", w.All(), 4, 32, x.All(), y.Range(0, 12)},
		{"odd weight offset", w.Range(1, 34), 1, 32, x.All(), y.All()},
		{"no buffer", vk.Range{}, 1, 32, x.All(), y.All()},
	} {
		if err := k.Record(c, tc.w, tc.rows, tc.cols, tc.x, tc.y, false); err == nil {
			t.Errorf("%s: Record returned no error", tc.name)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
}

// TestMatVecGLU checks the fused gate/up product and its activation,
// silu(G x)·(U x), for one and several vectors, with every load width,
// the GPU geometry, and bindings small enough to split G into chunks.
func TestMatVecGLU(t *testing.T) {
	d := vktest.Device(t)
	for _, typ := range mvTypes {
		cols := mvCols(typ)
		for i, c := range []struct {
			rows, cols, n int
			lay           mvLayout
			gpu           bool
			limit         uint64
		}{
			{37, cols[0], 1, mvAligned, false, 0},
			{300, cols[1], 5, mvOddOffsets, false, 0},
			{3, cols[2], 1, mvWordOffset, true, 0},
			{64, cols[len(cols)-1], 3, mvAligned, true, 0},
			{300, cols[1], 2, mvAligned, false, gluLimit(d, typ, 300, cols[1])},
		} {
			name := fmt.Sprintf("%v/%dx%d/n=%d/%d", typ, c.rows, c.cols, c.n, i)
			t.Run(name, func(t *testing.T) {
				s := mvSpec{typ: typ, rows: c.rows, cols: c.cols, n: c.n, lay: c.lay, gpu: c.gpu, limit: c.limit}
				gluCase(t, d, s)
			})
		}
	}
}

func gluCase(t *testing.T, d *vk.Device, s mvSpec) {
	r := newRand(t)
	raw, deq := mvWeights(t, r, s.typ, 2*s.rows, s.cols)
	x := randFloats(r, s.n*s.cols, 1)
	g, gmag := mvReference(deq[:s.rows*s.cols], s.rows, s.cols, s.n, x, nil)
	u, umag := mvReference(deq[s.rows*s.cols:], s.rows, s.cols, s.n, x, nil)

	_, xr := mvOperand(t, d, f32Bytes(x), s.lay.x)
	yb, yr := mvOutput(t, d, s.n*s.rows, nil, s.lay.y)
	k, err := NewMatVec(d, s.typ)
	if err != nil {
		t.Fatal(err)
	}
	s.mvSetup(k)
	wr := mvUpload(t, d, k, s, raw)
	if !k.CanGLU(s.rows, s.cols) {
		t.Fatalf("CanGLU(%d, %d) is false", s.rows, s.cols)
	}
	run(t, d, func(c *vk.Commands) error { return k.RecordGLU(c, wr, s.rows, s.cols, s.n, xr, yr) })
	got := mvReadOutput(t, d, yb, yr)
	for i := range got {
		silu := g[i] / (1 + math.Exp(-g[i]))
		want := silu * u[i]
		// silu's slope stays within [-0.1, 1.1]: an error e in g moves
		// the product by at most 1.1·e·|u|.
		tol := 1e-5 * (1.1*gmag[i]*math.Abs(u[i]) + math.Abs(silu)*umag[i] + 1e-30)
		if e := math.Abs(float64(got[i]) - want); !(e <= tol) {
			t.Fatalf("element %d: got %v, want %v (error %.3g, tolerance %.3g)", i, got[i], want, e, tol)
		}
	}
}

// TestMatVecBatchBitwise checks that RecordBatch of n vectors gives, for
// each vector, bitwise what Record gives for that vector alone (and
// RecordGLU of n vectors what RecordGLU of one does), for every type, in
// the layout the device reads and in the GPU one: a batched product must
// not change any sequence's result.
func TestMatVecBatchBitwise(t *testing.T) {
	d := vktest.Device(t)
	for _, typ := range mvTypes {
		for _, gpu := range []bool{false, true} {
			for _, glu := range []bool{false, true} {
				cs := mvCols(typ)
				for _, cols := range []int{cs[1], cs[len(cs)-1]} { // quantized: GGUF and packed layouts on CPU devices
					name := fmt.Sprintf("%v/%d/gpu=%v/glu=%v", typ, cols, gpu, glu)
					t.Run(name, func(t *testing.T) { batchBitwiseCase(t, d, typ, 37, cols, gpu, glu) })
				}
			}
		}
	}
}

func batchBitwiseCase(t *testing.T, d *vk.Device, typ gguf.Type, rows, cols int, gpu, glu bool) {
	r := newRand(t)
	mats := 1
	if glu {
		mats = 2
	}
	raw, _ := mvWeights(t, r, typ, mats*rows, cols)
	s := mvSpec{typ: typ, rows: rows, cols: cols, lay: mvAligned, gpu: gpu}
	k, err := NewMatVec(d, typ)
	if err != nil {
		t.Fatal(err)
	}
	s.mvSetup(k)
	wr := mvUpload(t, d, k, s, raw)
	const most = 11 // a full workgroup of vectors on GPUs, and a partial one
	x := randFloats(r, most*cols, 1)
	_, xr := mvOperand(t, d, f32Bytes(x), 0)
	record := func(c *vk.Commands, n int, xv, yv vk.Range) error {
		if glu {
			return k.RecordGLU(c, wr, rows, cols, n, xv, yv)
		}
		return k.RecordBatch(c, wr, rows, cols, n, xv, yv, false)
	}
	// Each vector alone.
	alone := make([][]float32, most)
	for i := range most {
		yb, yr := mvOutput(t, d, rows, nil, 0)
		xi := xr.Buf.Range(xr.Off+uint64(4*i*cols), uint64(4*cols))
		run(t, d, func(c *vk.Commands) error { return record(c, 1, xi, yr) })
		alone[i] = mvReadOutput(t, d, yb, yr)
	}
	for _, n := range []int{1, 3, 8, most} {
		yb, yr := mvOutput(t, d, n*rows, nil, 0)
		run(t, d, func(c *vk.Commands) error { return record(c, n, xr.Buf.Range(xr.Off, uint64(4*n*cols)), yr) })
		got := mvReadOutput(t, d, yb, yr)
		for i := range n {
			for m := range rows {
				g, w := got[i*rows+m], alone[i][m]
				if math.Float32bits(g) != math.Float32bits(w) {
					t.Fatalf("n=%d: vector %d row %d: batched %v (%#x), alone %v (%#x)",
						n, i, m, g, math.Float32bits(g), w, math.Float32bits(w))
				}
			}
		}
	}
}
