package kernel

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"

	"headinfer/engine/gguf"
	"headinfer/vk"
)

// A Check runs one kernel on the device with fresh random inputs and
// compares what it wrote with a float64 reference computed on the host:
// what `headinfer check` runs to show that a driver computes the right
// numbers. The kernel tests cover more corners; a Check covers the shapes
// a model uses, on whatever device the user has.
type Check struct {
	Name string
	// Limit is the largest error that passes, in the unit of
	// Outcome.Error (0 for results that must be bit-identical).
	Limit float64
	run   func(cr *checkRun) (got []float32, want, scale []float64)
}

// Outcome is what a Check measured.
type Outcome struct {
	// Error is the largest |got − want| / scale over the outputs, where
	// scale bounds the rounding error the computation may make (for a dot
	// product, the sum of its terms' magnitudes); +Inf when an output is
	// NaN or infinite. For a bitwise check, the number of outputs whose
	// bits differ.
	Error float64
	Limit float64
	Worst string // the output that gave Error
}

// Pass reports whether the error is within the limit.
func (o Outcome) Pass() bool { return o.Error <= o.Limit }

// Run runs the check on d with inputs drawn from r. tamper, when set, may
// change the kernel's output before it is compared: a test of the checker
// plants a fault this way to see it reported.
func (c Check) Run(d *vk.Device, r *rand.Rand, tamper func(name string, got []float32)) (Outcome, error) {
	cr := &checkRun{d: d, r: r}
	defer cr.free()
	got, want, scale := c.run(cr)
	if cr.err != nil {
		return Outcome{}, fmt.Errorf("%s: %w", c.Name, cr.err)
	}
	if tamper != nil {
		tamper(c.Name, got)
	}
	if len(got) != len(want) {
		return Outcome{}, fmt.Errorf("%s: %d outputs, want %d", c.Name, len(got), len(want))
	}
	o := Outcome{Limit: c.Limit}
	if scale == nil { // bitwise
		for i := range want {
			// An output neither run wrote stays NaN in both: not a pass.
			if g := float64(got[i]); math.IsNaN(g) || math.IsInf(g, 0) {
				return Outcome{Error: math.Inf(1), Limit: c.Limit, Worst: fmt.Sprintf("output %d: %v", i, got[i])}, nil
			}
			if math.Float32bits(got[i]) != math.Float32bits(float32(want[i])) {
				if o.Error == 0 {
					o.Worst = fmt.Sprintf("output %d: %v, want %v", i, got[i], float32(want[i]))
				}
				o.Error++
			}
		}
		return o, nil
	}
	for i := range want {
		g := float64(got[i])
		e := math.Abs(g-want[i]) / max(scale[i], 1e-300)
		if math.IsNaN(g) || math.IsInf(g, 0) {
			e = math.Inf(1)
		}
		if e > o.Error || o.Worst == "" {
			o.Error = e
			o.Worst = fmt.Sprintf("output %d: %v, want %.9g", i, got[i], want[i])
		}
	}
	return o, nil
}

// checkRun holds a check's device buffers. Its methods do nothing once one
// has failed, so that a check reads as a straight line and reports the
// first error.
type checkRun struct {
	d    *vk.Device
	r    *rand.Rand
	bufs []*vk.Buffer
	err  error
}

func (cr *checkRun) fail(err error) {
	if cr.err == nil {
		cr.err = err
	}
}

// buffer allocates a device-local buffer holding data.
func (cr *checkRun) buffer(data []byte) vk.Range {
	if cr.err != nil {
		return vk.Range{}
	}
	b, err := cr.d.Alloc(vk.DeviceLocal, uint64(max(len(data), 4)), "check")
	if err != nil {
		cr.fail(err)
		return vk.Range{}
	}
	cr.bufs = append(cr.bufs, b)
	r := b.Range(0, uint64(len(data)))
	cr.fail(cr.d.Write(r, data))
	return r
}

// output allocates n floats filled with NaN bits, so that an output the
// kernel fails to write shows.
func (cr *checkRun) output(n int) vk.Range {
	p := make([]byte, 4*n)
	for i := range p {
		p[i] = 0xff
	}
	return cr.buffer(p)
}

// floats reads r back as floats.
func (cr *checkRun) floats(r vk.Range) []float32 {
	if cr.err != nil {
		return nil
	}
	b := make([]byte, r.Size)
	cr.fail(cr.d.Read(r, b))
	return bytesF32(b)
}

// checkKernel returns what newKernel makes, or the zero value after recording
// its error (or an earlier one).
func checkKernel[K any](cr *checkRun, newKernel func() (K, error)) K {
	var k K
	if cr.err != nil {
		return k
	}
	k, err := newKernel()
	cr.fail(err)
	return k
}

// exec records fn and runs it to completion.
func (cr *checkRun) exec(fn func(c *vk.Commands) error) {
	if cr.err != nil {
		return
	}
	c, err := cr.d.NewCommands()
	if err != nil {
		cr.fail(err)
		return
	}
	defer c.Free()
	if err := fn(c); err != nil {
		cr.fail(err)
		return
	}
	if err := c.End(); err != nil {
		cr.fail(err)
		return
	}
	cr.fail(cr.d.Run(c))
}

func (cr *checkRun) free() {
	for _, b := range cr.bufs {
		b.Free()
	}
}

// Checks returns the kernel checks for a device: every weight type's
// matrix × vector product (one vector, several, and the fused gate/up),
// in the layout the device reads and, on CPU devices, in the GPU layout
// too; the tiled matrix product of prefill; RMSNorm, RoPE, softmax,
// SwiGLU, the residual add and the copy; attention for decode and for a
// prefill chunk over each KV element type. full adds the largest shapes of
// 7B and 8B models, which take long on a CPU device.
func Checks(info vk.DeviceInfo, full bool) []Check {
	var cs []Check
	for _, t := range gguf.SupportedTypes {
		cols := map[int]int{1: 301, 32: 4128, 256: 2560}[t.BlockSize()]
		layouts := []bool{false}
		if info.Type == vk.CPU && (packingFor(info, t) != nil || t == gguf.F16 || t == gguf.BF16) {
			layouts = append(layouts, true) // also the GGUF layout GPUs read
		}
		for _, gpu := range layouts {
			cs = append(cs, mvCheck(t, 37, cols, 1, gpu), mvCheck(t, 37, cols, 5, gpu),
				gluCheck(t, 37, cols, 3, gpu), batchBitwiseCheck(t, 64, cols, 8, gpu))
		}
		cs = append(cs, mmCheck(t, 70, cols, 33))
		if full {
			// Llama-3-8B: attention, FFN up and down.
			for _, s := range [][2]int{{4096, 4096}, {14336, 4096}, {4096, 14336}} {
				if s[1]%t.BlockSize() == 0 {
					cs = append(cs, mvCheck(t, s[0], s[1], 1, false), mvCheck(t, s[0], s[1], 4, false))
				}
			}
			cs = append(cs, mmCheck(t, 4096, 4096, 512))
		}
	}
	if full {
		// The output matrix of Llama-3-8B in the types files give it.
		for _, t := range []gguf.Type{gguf.Q6_K, gguf.Q8_0, gguf.F16} {
			cs = append(cs, mvCheck(t, 128256, 4096, 1, false))
		}
	}
	norms := [][2]int{{5, 4096}, {3, 37}}
	if full {
		norms = append(norms, [2]int{512, 4096})
	}
	for _, s := range norms {
		cs = append(cs, rmsNormCheck(s[0], s[1]))
	}
	// BERT's norm and its biases (all-MiniLM: 384 wide, 1536 inside).
	cs = append(cs, layerNormCheck(5, 384), layerNormCheck(3, 37), biasCheck(9, 1536, true), biasCheck(7, 385, false))
	// The batched decode step's RoPE (each sequence's q and k heads, its
	// v between them) and argmax (each sequence's logits): Llama-3-8B.
	cs = append(cs, ropeCheck(RopeNormal, 6, 32, 128, 0), ropeCheck(RopeNeox, 6, 28, 128, 0), ropeCheck(RopeNormal, 8, 40, 128, 8*128),
		argmaxCheck(8, 128256), argmaxCheck(3, 1001),
		softmaxCheck(3, 1001), swigluCheck(14336*2+1), addCheck(4096*3+5), copyCheck(1<<20+48))
	for _, kv := range []gguf.Type{gguf.F16, gguf.F32} {
		// Llama-3 geometry: decode over a long range, and a prefill chunk.
		cs = append(cs, attnCheck(kv, 128, 4, 1, 1000, 256), attnCheck(kv, 128, 4, 33, 600, 256))
		if full {
			cs = append(cs, attnCheck(kv, 128, 4, 1, 32768, 256), attnCheck(kv, 128, 4, 512, 4096, 512),
				attnCheck(kv, 64, 1, 7, 300, 64))
		}
	}
	// Quantized KV: the store must give gguf.Quantize's bytes (llama.cpp's),
	// attention must read them as gguf.Dequantize does.
	for _, kv := range []gguf.Type{gguf.Q8_0, gguf.Q4_0} {
		cs = append(cs, kvStoreCheck(kv, 128, 37), attnCheck(kv, 128, 4, 1, 1000, 256), attnCheck(kv, 128, 4, 33, 600, 256))
	}
	// Gemma 2's sliding window and soft cap, with a scale other than
	// 1/sqrt(headDim): a decode step far past the window and a chunk that
	// straddles its edge.
	cs = append(cs, attnFeatureCheck(gguf.F16, 128, 2, 1, 3000, 256, 1000, 50, 0.08),
		attnFeatureCheck(gguf.F16, 128, 2, 33, 600, 256, 300, 5, 0.08))
	return cs
}

// checkWeights returns random rows × cols weights of type t and their
// decoded values, as the matrix tests make them.
func checkWeights(r *rand.Rand, t gguf.Type, rows, cols int) ([]byte, []float32, error) {
	var raw []byte
	if t.BlockSize() == 256 {
		raw = randKBlocks(r, t, rows*cols/256)
	} else {
		var err error
		if raw, err = gguf.Quantize(t, randFloats(r, rows*cols, 1)); err != nil {
			return nil, nil, err
		}
	}
	deq := make([]float32, rows*cols)
	if err := gguf.Dequantize(t, raw, deq); err != nil {
		return nil, nil, err
	}
	return raw, deq, nil
}

// newCheckMatVec prepares the matvec kernel for t: as the device runs it,
// or (gpu) with the geometry and GGUF layout of GPUs.
func newCheckMatVec(cr *checkRun, t gguf.Type, gpu bool) *MatVec {
	if cr.err != nil {
		return nil
	}
	k, err := NewMatVec(cr.d, t)
	if err != nil {
		cr.fail(err)
		return nil
	}
	if gpu {
		wg, rows, batch := mvDefaultGeometry(vk.DeviceInfo{Type: vk.Discrete}, t)
		k.runAsGPU(wg, rows, batch, false)
	}
	return k
}

// mvInputs makes mats matrices of rows × cols weights of type t (back to
// back, in the layout k reads) and n random vectors.
func mvInputs(cr *checkRun, k *MatVec, t gguf.Type, mats, rows, cols, n int) (w, x vk.Range, deq, xs []float32) {
	if cr.err != nil {
		return
	}
	raw, deq, err := checkWeights(cr.r, t, mats*rows, cols)
	if err != nil {
		cr.fail(err)
		return
	}
	mb := rows * t.RowBytes(cols)
	var laid []byte
	for m := 0; m < mats; m++ {
		p, err := k.Layout(raw[m*mb:(m+1)*mb], rows, cols)
		if err != nil {
			cr.fail(err)
			return
		}
		laid = append(laid, p...)
	}
	xs = randFloats(cr.r, n*cols, 1)
	return cr.buffer(laid), cr.buffer(f32Bytes(xs)), deq, xs
}

func layoutName(gpu bool) string {
	if gpu {
		return "/gguf-layout"
	}
	return ""
}

// mvCheck: y = W x for n vectors.
func mvCheck(t gguf.Type, rows, cols, n int, gpu bool) Check {
	return Check{Name: fmt.Sprintf("matvec/%v/%dx%d/n=%d%s", t, rows, cols, n, layoutName(gpu)), Limit: 1e-5,
		run: func(cr *checkRun) ([]float32, []float64, []float64) {
			k := newCheckMatVec(cr, t, gpu)
			w, x, deq, xs := mvInputs(cr, k, t, 1, rows, cols, n)
			y := cr.output(n * rows)
			cr.exec(func(c *vk.Commands) error { return k.RecordBatch(c, w, rows, cols, n, x, y, false) })
			if cr.err != nil {
				return nil, nil, nil
			}
			want, mag := mvReference(deq, rows, cols, n, xs, nil)
			return cr.floats(y), want, mag
		}}
}

// gluCheck: y = silu(G x) ⊙ (U x) for n vectors.
func gluCheck(t gguf.Type, rows, cols, n int, gpu bool) Check {
	return Check{Name: fmt.Sprintf("matvec-glu/%v/%dx%d/n=%d%s", t, rows, cols, n, layoutName(gpu)), Limit: 1e-5,
		run: func(cr *checkRun) ([]float32, []float64, []float64) {
			k := newCheckMatVec(cr, t, gpu)
			w, x, deq, xs := mvInputs(cr, k, t, 2, rows, cols, n)
			y := cr.output(n * rows)
			cr.exec(func(c *vk.Commands) error { return k.RecordGLU(c, w, rows, cols, n, x, y) })
			if cr.err != nil {
				return nil, nil, nil
			}
			g, gmag := mvReference(deq[:rows*cols], rows, cols, n, xs, nil)
			u, umag := mvReference(deq[rows*cols:], rows, cols, n, xs, nil)
			want, scale := make([]float64, len(g)), make([]float64, len(g))
			for i := range g {
				silu := g[i] / (1 + math.Exp(-g[i]))
				want[i] = silu * u[i]
				// silu's slope stays within [-0.1, 1.1]: an error e in g
				// moves the product by at most 1.1·e·|u|.
				scale[i] = 1.1*gmag[i]*math.Abs(u[i]) + math.Abs(silu)*umag[i]
			}
			return cr.floats(y), want, scale
		}}
}

// batchBitwiseCheck: n vectors at once give, vector by vector, the bits
// that each gives alone; a batched decode step must not change any
// sequence's result.
func batchBitwiseCheck(t gguf.Type, rows, cols, n int, gpu bool) Check {
	return Check{Name: fmt.Sprintf("matvec-batch-bitwise/%v/%dx%d/n=%d%s", t, rows, cols, n, layoutName(gpu)),
		run: func(cr *checkRun) ([]float32, []float64, []float64) {
			k := newCheckMatVec(cr, t, gpu)
			w, x, _, _ := mvInputs(cr, k, t, 1, rows, cols, n)
			alone, batched := cr.output(n*rows), cr.output(n*rows)
			cr.exec(func(c *vk.Commands) error {
				for i := range n {
					xi := x.Buf.Range(x.Off+uint64(4*i*cols), uint64(4*cols))
					yi := alone.Buf.Range(alone.Off+uint64(4*i*rows), uint64(4*rows))
					if err := k.Record(c, w, rows, cols, xi, yi, false); err != nil {
						return err
					}
				}
				return k.RecordBatch(c, w, rows, cols, n, x, batched, false)
			})
			var want []float64
			for _, v := range cr.floats(alone) {
				want = append(want, float64(v))
			}
			return cr.floats(batched), want, nil
		}}
}

// mmCheck: the prefill product Y = X Wᵀ for n tokens.
func mmCheck(t gguf.Type, rows, cols, n int) Check {
	return Check{Name: fmt.Sprintf("matmul/%v/%dx%d/n=%d", t, rows, cols, n), Limit: 1e-5,
		run: func(cr *checkRun) ([]float32, []float64, []float64) {
			k := checkKernel(cr, func() (*MatMul, error) { return NewMatMul(cr.d, t) })
			if cr.err != nil {
				return nil, nil, nil
			}
			raw, deq, err := checkWeights(cr.r, t, rows, cols)
			if err != nil {
				cr.fail(err)
				return nil, nil, nil
			}
			if k.batched != nil {
				if raw, err = k.batched.Layout(raw, rows, cols); err != nil {
					cr.fail(err)
					return nil, nil, nil
				}
			}
			xs := randFloats(cr.r, n*cols, 1)
			w, x, y := cr.buffer(raw), cr.buffer(f32Bytes(xs)), cr.output(n*rows)
			cr.exec(func(c *vk.Commands) error { return k.Record(c, w, rows, cols, n, x, y, false) })
			want, mag := mvReference(deq, rows, cols, n, xs, nil)
			return cr.floats(y), want, mag
		}}
}

// relative returns each |want[i]| raised to at least floor: the scale of
// the error of a result computed from a few roundings.
func relative(want []float64, floor float64) []float64 {
	s := make([]float64, len(want))
	for i, w := range want {
		s[i] = max(math.Abs(w), floor)
	}
	return s
}

func rmsNormCheck(rows, dim int) Check {
	return Check{Name: fmt.Sprintf("rmsnorm/%dx%d", rows, dim), Limit: 1e-5,
		run: func(cr *checkRun) ([]float32, []float64, []float64) {
			const eps = 1e-5
			k := checkKernel(cr, func() (*RMSNorm, error) { return NewRMSNorm(cr.d, dim, eps) })
			if cr.err != nil {
				return nil, nil, nil
			}
			xs, ws := randFloats(cr.r, rows*dim, 3), randFloats(cr.r, dim, 2)
			x, w, y := cr.buffer(f32Bytes(xs)), cr.buffer(f32Bytes(ws)), cr.output(rows*dim)
			cr.exec(func(c *vk.Commands) error { return k.Record(c, x, w, y, rows) })
			want := skRMSNormRef(xs, ws, dim, eps)
			return cr.floats(y), want, relative(want, 1e-30)
		}}
}

// layerNormCheck checks LayerNorm, whose outputs (of order 1, a bias
// added) are compared with an absolute floor of 1: the bias may cancel
// the normalised term.
func layerNormCheck(rows, dim int) Check {
	return Check{Name: fmt.Sprintf("layernorm/%dx%d", rows, dim), Limit: 1e-5,
		run: func(cr *checkRun) ([]float32, []float64, []float64) {
			const eps = 1e-12
			k := checkKernel(cr, func() (*LayerNorm, error) { return NewLayerNorm(cr.d, dim, eps) })
			if cr.err != nil {
				return nil, nil, nil
			}
			xs, ws, bs := randFloats(cr.r, rows*dim, 3), randFloats(cr.r, dim, 2), randFloats(cr.r, dim, 1)
			x, w, b, y := cr.buffer(f32Bytes(xs)), cr.buffer(f32Bytes(ws)), cr.buffer(f32Bytes(bs)), cr.output(rows*dim)
			cr.exec(func(c *vk.Commands) error { return k.Record(c, x, w, b, y, rows) })
			want := skLayerNormRef(xs, ws, bs, dim, eps)
			return cr.floats(y), want, relative(want, 1)
		}}
}

// biasCheck checks a bias added to rows of cols values, and GELU after
// it with gelu.
func biasCheck(rows, cols int, gelu bool) Check {
	name := fmt.Sprintf("bias/%dx%d", rows, cols)
	if gelu {
		name += "/gelu"
	}
	return Check{Name: name, Limit: 1e-5,
		run: func(cr *checkRun) ([]float32, []float64, []float64) {
			k := checkKernel(cr, func() (*Bias, error) { return NewBias(cr.d) })
			if cr.err != nil {
				return nil, nil, nil
			}
			xs, bs := randFloats(cr.r, rows*cols, 6), randFloats(cr.r, cols, 2)
			x, b, y := cr.buffer(f32Bytes(xs)), cr.buffer(f32Bytes(bs)), cr.output(rows*cols)
			cr.exec(func(c *vk.Commands) error { return k.Record(c, x, b, y, rows, cols, gelu) })
			want := make([]float64, len(xs))
			for i := range want {
				v := float64(xs[i] + bs[i%cols]) // the sum rounded to f32, as the shader has it
				if gelu {
					v = skGELURef(v)
				}
				want[i] = v
			}
			return cr.floats(y), want, relative(want, 1)
		}}
}

// ropeCheck rotates tokens rows of heads heads; a gap puts that many
// values, which must come out untouched, between one row and the next.
func ropeCheck(layout RopeLayout, tokens, heads, headDim, gap int) Check {
	name := fmt.Sprintf("rope/%v/%dx%dx%d", layout, tokens, heads, headDim)
	if gap > 0 {
		name += fmt.Sprintf("/rows-%d-apart", heads*headDim+gap)
	}
	return Check{Name: name, Limit: 1e-5,
		run: func(cr *checkRun) ([]float32, []float64, []float64) {
			k := checkKernel(cr, func() (*Rope, error) { return NewRope(cr.d, heads, headDim, headDim, layout) })
			if cr.err != nil {
				return nil, nil, nil
			}
			row, stride := heads*headDim, heads*headDim+gap
			freqs := RopeFreqs(headDim, 500000, &Llama3Scaling{Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalContext: 8192})
			xs := randFloats(cr.r, (tokens-1)*stride+row, 1)
			pos := make([]uint32, tokens)
			for i := range pos {
				pos[i] = uint32(cr.r.IntN(1 << 20)) // up to a million positions
			}
			x := cr.buffer(f32Bytes(xs))
			p, f := cr.buffer(skU32Bytes(pos)), cr.buffer(f32Bytes(freqs))
			cr.exec(func(c *vk.Commands) error { return k.RecordRows(c, x, p, f, tokens, stride) })
			want := make([]float64, len(xs))
			for i, v := range xs {
				want[i] = float64(v)
			}
			for t := range tokens {
				rows := make([]float32, row)
				copy(rows, xs[t*stride:])
				copy(want[t*stride:], skRopeRef(rows, pos[t:t+1], freqs, heads, headDim, headDim, layout))
			}
			// 2e-6 absolute: sin and cos of a range-reduced angle.
			return cr.floats(x), want, relative(want, 2e-6/1e-5)
		}}
}

// argmaxCheck searches rows rows of n values each, with ties planted
// across workgroups; the indices must be exact.
func argmaxCheck(rows, n int) Check {
	return Check{Name: fmt.Sprintf("argmax/%dx%d", rows, n), Limit: 0,
		run: func(cr *checkRun) ([]float32, []float64, []float64) {
			k := checkKernel(cr, func() (*Argmax, error) { return NewArgmax(cr.d, n, rows) })
			if cr.err != nil {
				return nil, nil, nil
			}
			defer k.Free()
			xs := randFloats(cr.r, rows*n, 30)
			want := make([]float64, rows)
			for r := range rows {
				x := xs[r*n : (r+1)*n]
				if r%2 == 1 {
					a, b := cr.r.IntN(n), cr.r.IntN(n)
					x[a], x[b] = 31, 31 // the lower index wins
				}
				want[r] = float64(skArgmaxRef(x))
			}
			x, out := cr.buffer(f32Bytes(xs)), cr.output(rows)
			cr.exec(func(c *vk.Commands) error { return k.RecordRows(c, x, out, n, rows) })
			got := cr.floats(out)
			for i, v := range got {
				got[i] = float32(math.Float32bits(v)) // the index, exact below 2²⁴
			}
			return got, want, nil
		}}
}

func softmaxCheck(rows, cols int) Check {
	return Check{Name: fmt.Sprintf("softmax/%dx%d", rows, cols), Limit: 1e-5,
		run: func(cr *checkRun) ([]float32, []float64, []float64) {
			k := checkKernel(cr, func() (*Softmax, error) { return NewSoftmax(cr.d) })
			if cr.err != nil {
				return nil, nil, nil
			}
			xs := randFloats(cr.r, rows*cols, 10)
			for i := range cols {
				xs[i] += 80 // exp(90) overflows f32: only a max-subtracted softmax survives it
			}
			want := softmaxRef(xs, rows, cols)
			x, y := cr.buffer(f32Bytes(xs)), cr.output(rows*cols)
			cr.exec(func(c *vk.Commands) error { return k.Record(c, x, y, rows, cols) })
			return cr.floats(y), want, relative(want, 1e-30)
		}}
}

func swigluCheck(n int) Check {
	return Check{Name: fmt.Sprintf("swiglu/%d", n), Limit: 1e-5,
		run: func(cr *checkRun) ([]float32, []float64, []float64) {
			k := checkKernel(cr, func() (*SwiGLU, error) { return NewSwiGLU(cr.d) })
			if cr.err != nil {
				return nil, nil, nil
			}
			gs, us := randFloats(cr.r, n, 12), randFloats(cr.r, n, 3)
			want := make([]float64, n)
			for i := range want {
				g := float64(gs[i])
				want[i] = g / (1 + math.Exp(-g)) * float64(us[i])
			}
			g, u, y := cr.buffer(f32Bytes(gs)), cr.buffer(f32Bytes(us)), cr.output(n)
			cr.exec(func(c *vk.Commands) error { return k.Record(c, g, u, y, n) })
			return cr.floats(y), want, relative(want, 1e-7/1e-5)
		}}
}

func addCheck(n int) Check {
	return Check{Name: fmt.Sprintf("add/%d", n), Limit: 1e-7,
		run: func(cr *checkRun) ([]float32, []float64, []float64) {
			k := checkKernel(cr, func() (*Add, error) { return NewAdd(cr.d) })
			if cr.err != nil {
				return nil, nil, nil
			}
			as, bs := randFloats(cr.r, n, 5), randFloats(cr.r, n, 5)
			want := make([]float64, n)
			for i := range want {
				want[i] = float64(as[i]) + float64(bs[i])
			}
			a, b, y := cr.buffer(f32Bytes(as)), cr.buffer(f32Bytes(bs)), cr.output(n)
			cr.exec(func(c *vk.Commands) error { return k.Record(c, a, b, y, n) })
			// The f32 sum is the correctly rounded exact sum.
			return cr.floats(y), want, relative(want, 1e-30)
		}}
}

func copyCheck(bytes int) Check {
	return Check{Name: fmt.Sprintf("copy/%d", bytes),
		run: func(cr *checkRun) ([]float32, []float64, []float64) {
			k := checkKernel(cr, func() (*Copy, error) { return NewCopy(cr.d) })
			if cr.err != nil {
				return nil, nil, nil
			}
			xs := randFloats(cr.r, bytes/4, 1)
			src, dst := cr.buffer(f32Bytes(xs)), cr.output(bytes/4)
			cr.exec(func(c *vk.Commands) error { return k.Record(c, dst, src) })
			want := make([]float64, len(xs))
			for i, v := range xs {
				want[i] = float64(v)
			}
			return cr.floats(dst), want, nil
		}}
}

// attnCheck attends the queries of one KV head's group (the last of two
// heads, so that head offsets matter) to rows positions in blocks of
// block, then merges the blocks: the decode step when tokens is 1, a
// prefill chunk (with its causal mask) otherwise.
func attnCheck(kv gguf.Type, headDim, group, tokens, rows, block int) Check {
	c := attnFeatureCheck(kv, headDim, group, tokens, rows, block, 0, 0, 0)
	c.Name = fmt.Sprintf("attention/%v/hd%d/group%d/tokens%d/kv%d", kv, headDim, group, tokens, rows)
	return c
}

// attnFeatureCheck is attnCheck with a sliding window, a score soft cap
// and a score scale (0: 1/sqrt(headDim)).
func attnFeatureCheck(kv gguf.Type, headDim, group, tokens, rows, block, window int, softCap, scale float32) Check {
	name := fmt.Sprintf("attention/%v/hd%d/group%d/tokens%d/kv%d/window%d/cap%g/scale%g", kv, headDim, group, tokens, rows, window, softCap, scale)
	return Check{Name: name, Limit: 1e-5,
		run: func(cr *checkRun) ([]float32, []float64, []float64) {
			if cr.err != nil {
				return nil, nil, nil
			}
			const nKV = 2
			p := newAttnProblem(cr.r, kv, headDim, group, nKV, tokens, rows, 17, 4)
			p.window, p.softCap = window, softCap
			if scale != 0 {
				p.scale = scale
			}
			a, err := NewAttention(cr.d, kv, headDim, group)
			if err != nil {
				cr.fail(err)
				return nil, nil, nil
			}
			g := nKV - 1
			q, k, v, pos := cr.buffer(f32Bytes(p.q)), cr.buffer(p.kBytes), cr.buffer(p.vBytes), cr.buffer(p.posBuf)
			head := func(r vk.Range) vk.Range {
				return r.Buf.Range(r.Off+KVBytes(kv, uint64(g*p.stride)), KVBytes(kv, uint64(rows*headDim)))
			}
			nb := Blocks(rows, block)
			parts := cr.output(PartsBytes(tokens, group, headDim, nb) / 4)
			acc := cr.output(PartsBytes(tokens, group, headDim, 1) / 4)
			out := cr.output(tokens * nKV * group * headDim)
			cr.exec(func(c *vk.Commands) error {
				err := a.RecordPartial(c, q, head(k), head(v), pos, parts, p.params(g, 0, rows, block, 0))
				if err != nil {
					return err
				}
				c.Barrier()
				return a.RecordMerge(c, parts, acc, out, MergeParams{NTokens: tokens, Heads: group,
					NParts: nb, Init: true, Finalize: true, OutHeads: nKV * group, OutHead0: g * group})
			})
			if cr.err != nil {
				return nil, nil, nil
			}
			want, mag := p.reference(g)
			return p.headColumns(cr.floats(out), g), want, mag
		}}
}

// kvStoreCheck stores tokens rows of two KV heads of random values, of
// magnitudes from 1e-3 to 1e3, into slots of block type kv and compares
// the slots' bytes with gguf.Quantize of the same rows: bitwise, one
// output per byte (Q8_0 and Q4_0 round the f16 scale and every code, so a
// driver's division or half conversion one ulp off shows here).
func kvStoreCheck(kv gguf.Type, headDim, tokens int) Check {
	return Check{Name: fmt.Sprintf("kv_store/%v/hd%d/tokens%d", kv, headDim, tokens),
		run: func(cr *checkRun) ([]float32, []float64, []float64) {
			const heads = 2
			k := checkKernel(cr, func() (*KVStore, error) { return NewKVStore(cr.d, kv, headDim) })
			if cr.err != nil {
				return nil, nil, nil
			}
			src := randFloats(cr.r, tokens*heads*headDim, 1)
			for row := 0; row < tokens*heads; row++ {
				m := float32(math.Pow(10, 6*cr.r.Float64()-3))
				for i := range headDim {
					src[row*headDim+i] *= m
				}
			}
			pos := make([]byte, 4*tokens)
			for t := range tokens {
				pos[4*t] = byte(t) // tokens < 256
			}
			elems := uint64(heads * tokens * headDim)
			dst := cr.buffer(make([]byte, KVBytes(kv, elems)))
			in := cr.buffer(f32Bytes(src))
			pb := cr.buffer(pos)
			cr.exec(func(c *vk.Commands) error {
				return k.Record(c, in, pb, dst, KVSlots{Tokens: tokens, SrcHeads: heads, Heads: heads,
					SlotRows: tokens, SlotStride: tokens * headDim})
			})
			if cr.err != nil {
				return nil, nil, nil
			}
			got := make([]byte, dst.Size)
			cr.fail(cr.d.Read(dst, got))
			var want []float64
			for h := range heads {
				for t := range tokens {
					row := src[(t*heads+h)*headDim:][:headDim]
					q, err := gguf.Quantize(kv, row)
					if err != nil {
						cr.fail(err)
						return nil, nil, nil
					}
					for _, b := range q {
						want = append(want, float64(b))
					}
				}
			}
			out := make([]float32, len(got))
			for i, b := range got {
				out[i] = float32(b)
			}
			return out, want, nil
		}}
}

// parallelRows runs fn over [0, n) split among the CPUs: the references of
// the largest checks are billions of multiply-adds.
func parallelRows(n int, fn func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), max(n/64, 1))
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := n*w/workers, n*(w+1)/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}
