package kernel

import (
	"encoding/binary"
	"headinfer/engine/gguf"
	"math"
	"math/rand/v2"

	"github.com/x448/float16"
)

// The float64 references and random inputs that the kernel tests and the
// device self-check (selfcheck.go) share: each kernel's result is compared
// with one of these, computed on the host.

// randFloats returns n values uniform in [-scale, scale).
func randFloats(r *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = (2*r.Float32() - 1) * scale
	}
	return v
}

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func bytesF32(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

// randKBlocks returns n K-quant super-blocks of random bytes, which reach
// every quant, scale and min bit pattern (a quantizer's output need not),
// with the f16 super-block scales set so that weights stay of order 1.
func randKBlocks(r *rand.Rand, typ gguf.Type, n int) []byte {
	bb := typ.BlockBytes()
	raw := make([]byte, n*bb)
	for i := 0; i < len(raw); i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], r.Uint64())
		copy(raw[i:], w[:]) // a Q6_K block is 210 bytes: the last copy may be short
	}
	half := func(v float32) (byte, byte) {
		h := float16.Fromfloat32(v).Bits()
		return byte(h), byte(h >> 8)
	}
	for b := 0; b < n; b++ {
		blk := raw[b*bb : (b+1)*bb]
		if typ == gguf.Q6_K { // |d·scale·(q−32)| ≤ d·128·32
			blk[208], blk[209] = half((0.5 + r.Float32()) / 4096)
			continue
		}
		// |d·sc·q| ≤ d·63·31, dmin·m ≤ dmin·63
		blk[0], blk[1] = half((0.5 + r.Float32()) / 1000)
		blk[2], blk[3] = half((0.5 + r.Float32()) / 60)
	}
	return raw
}

// mvReference returns, for n vectors x (n × cols) and weights w (rows ×
// cols), want[j*rows+m] = y0 + Σ_k w[m][k]·x[j][k] in float64, and mag, the
// same sum over absolute values: the scale of the f32 rounding error.
func mvReference(w []float32, rows, cols, n int, x, y0 []float32) (want, mag []float64) {
	want = make([]float64, n*rows)
	mag = make([]float64, n*rows)
	parallelRows(rows, func(lo, hi int) { mvReferenceRows(w, rows, cols, n, x, y0, want, mag, lo, hi) })
	return want, mag
}

// mvReferenceRows is mvReference for rows [lo, hi).
func mvReferenceRows(w []float32, rows, cols, n int, x, y0 []float32, want, mag []float64, lo, hi int) {
	for j := range n {
		xj := x[j*cols : (j+1)*cols]
		for m := lo; m < hi; m++ {
			wm := w[m*cols : (m+1)*cols]
			var s, a float64
			for k, wv := range wm {
				p := float64(wv) * float64(xj[k])
				s += p
				a += math.Abs(p)
			}
			if y0 != nil {
				s += float64(y0[j*rows+m])
				a += math.Abs(float64(y0[j*rows+m]))
			}
			want[j*rows+m], mag[j*rows+m] = s, a
		}
	}
}

func skRMSNormRef(x, w []float32, dim int, eps float32) []float64 {
	y := make([]float64, len(x))
	for r := 0; r < len(x)/dim; r++ {
		row := x[r*dim : (r+1)*dim]
		ss := 0.0
		for _, v := range row {
			ss += float64(v) * float64(v)
		}
		s := 1 / math.Sqrt(ss/float64(dim)+float64(eps))
		for i, v := range row {
			y[r*dim+i] = float64(v) * s * float64(w[i])
		}
	}
	return y
}

// skRopeRef rotates x ([tokens][heads·headDim]) as the shader does, with θ
// rounded to f32 and everything else in float64.
func skRopeRef(x []float32, pos []uint32, freqs []float32, heads, headDim, nRot int, layout RopeLayout) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	for t, p := range pos {
		for h := range heads {
			base := (t*heads + h) * headDim
			for j := range nRot / 2 {
				a, b := base+2*j, base+2*j+1
				if layout == RopeNeox {
					a, b = base+j, base+j+nRot/2
				}
				theta := float64(float32(float32(p) * freqs[j]))
				c, s := math.Cos(theta), math.Sin(theta)
				x0, x1 := float64(x[a]), float64(x[b])
				y[a] = x0*c - x1*s
				y[b] = x0*s + x1*c
			}
		}
	}
	return y
}

func skU32Bytes(v []uint32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], x)
	}
	return b
}

// attnProblem is one attention input: queries of nKV·group heads at
// positions pos, and KV heads of rows rows each, laid out stride elements
// apart, whose row 0 is absolute position start.
type attnProblem struct {
	kv, vt                 gguf.Type // K and V types
	hd, group, nKV         int
	nTok, rows, start      int
	stride                 int
	scale                  float32
	window                 int         // sliding window, 0 for none
	softCap                float32     // score soft cap, 0 for none
	q                      []float32   // [nTok][nKV·group·hd]
	pos                    []uint32    // [nTok]
	k, v                   [][]float32 // per KV head: rows·hd values as the device sees them
	kBytes, vBytes, posBuf []byte
}

// newAttnProblem makes random inputs. The queries are the last nTok
// positions of the range (the chunk's own K/V are in it, so the causal mask
// inside the chunk matters); with nTok > rows the first queries see nothing.
// qScale sets how peaked the softmax is.
func newAttnProblem(r *rand.Rand, kv gguf.Type, hd, group, nKV, nTok, rows, start int, qScale float32) *attnProblem {
	return newAttnProblemKV(r, kv, kv, hd, group, nKV, nTok, rows, start, qScale)
}

// newAttnProblemKV is newAttnProblem with K of type kt and V of type vt.
func newAttnProblemKV(r *rand.Rand, kt, vt gguf.Type, hd, group, nKV, nTok, rows, start int, qScale float32) *attnProblem {
	p := &attnProblem{kv: kt, vt: vt, hd: hd, group: group, nKV: nKV, nTok: nTok, rows: rows, start: start,
		scale: float32(1 / math.Sqrt(float64(hd)))}
	// Pad each slot to a multiple of 64 rows plus a spare 64, like a KV
	// store with capacity beyond the rows in use; 64 rows of any head size
	// keep slot offsets aligned for binding one slot alone.
	p.stride = ((rows+63)/64 + 1) * 64 * hd
	p.q = randFloats(r, nTok*nKV*group*hd, qScale)
	for t := range nTok {
		p.pos = append(p.pos, uint32(start+rows-nTok+t))
	}
	for _, x := range p.pos {
		p.posBuf = binary.LittleEndian.AppendUint32(p.posBuf, x)
	}
	all := func(kv gguf.Type) ([][]float32, []byte) {
		heads := make([][]float32, nKV)
		raw := make([]float32, nKV*p.stride)
		for g := range nKV {
			copy(raw[g*p.stride:], randFloats(r, rows*hd, 1))
		}
		b, err := gguf.Quantize(kv, raw)
		if err != nil {
			panic(err)
		}
		seen := make([]float32, len(raw))
		if err := gguf.Dequantize(kv, b, seen); err != nil {
			panic(err)
		}
		for g := range nKV {
			heads[g] = seen[g*p.stride : g*p.stride+rows*hd]
		}
		return heads, b
	}
	p.k, p.kBytes = all(kt)
	p.v, p.vBytes = all(vt)
	return p
}

// reference computes, in float64, the attention output of KV head g's
// query heads, [nTok][group][hd], and per element the magnitude
// Σ p·|v| / Σ p that bounds its rounding error. A query that sees no row
// gets 0.
func (p *attnProblem) reference(g int) (want, mag []float64) {
	hd := p.hd
	want = make([]float64, p.nTok*p.group*hd)
	mag = make([]float64, len(want))
	s := make([]float64, p.rows)
	for t := range p.nTok {
		for j := range p.group {
			qh := g*p.group + j
			q := p.q[(t*p.nKV*p.group+qh)*hd:][:hd]
			lo := max(0, WindowStart(int(p.pos[t]), p.window)-p.start)
			vis := min(p.rows, int(p.pos[t])-p.start+1)
			if vis <= lo {
				continue
			}
			m := math.Inf(-1)
			for c := lo; c < vis; c++ {
				var dot float64
				for d := range hd {
					dot += float64(q[d]) * float64(p.k[g][c*hd+d])
				}
				s[c] = capRef(float64(p.scale)*dot, p.softCap)
				m = max(m, s[c])
			}
			var l float64
			o := want[(t*p.group+j)*hd:][:hd]
			a := mag[(t*p.group+j)*hd:][:hd]
			for c := lo; c < vis; c++ {
				e := math.Exp(s[c] - m)
				l += e
				for d := range hd {
					x := float64(p.v[g][c*hd+d])
					o[d] += e * x
					a[d] += e * math.Abs(x)
				}
			}
			for d := range hd {
				o[d] /= l
				a[d] /= l
			}
		}
	}
	return want, mag
}

// params returns the partial parameters for KV head g alone over rows
// [r0, r1).
func (p *attnProblem) params(g, r0, r1, block, partBase int) AttnParams {
	return AttnParams{NTokens: p.nTok, QHeads: p.nKV * p.group, QHead0: g * p.group,
		KVStart: p.start + r0, KVRows: r1 - r0, Block: block, PartBase: partBase,
		SlotStride: p.stride, KVHeads: 1, Scale: p.scale, Window: p.window, SoftCap: p.softCap}
}

// capRef soft-caps the score s at c (0: no cap) in float64.
func capRef(s float64, c float32) float64 {
	if c == 0 {
		return s
	}
	return float64(c) * math.Tanh(s/float64(c))
}

// headColumns extracts KV head g's query heads from a full output row set.
func (p *attnProblem) headColumns(out []float32, g int) []float32 {
	w := p.group * p.hd
	cols := make([]float32, 0, p.nTok*w)
	for t := range p.nTok {
		cols = append(cols, out[t*p.nKV*w+g*w:][:w]...)
	}
	return cols
}

// softmaxRef is each row's softmax, in float64.
func softmaxRef(x []float32, rows, cols int) []float64 {
	want := make([]float64, len(x))
	for row := range rows {
		v := x[row*cols : (row+1)*cols]
		m := math.Inf(-1)
		for _, e := range v {
			m = max(m, float64(e))
		}
		s := 0.0
		for _, e := range v {
			s += math.Exp(float64(e) - m)
		}
		for i, e := range v {
			want[row*cols+i] = math.Exp(float64(e)-m) / s
		}
	}
	return want
}

// skLayerNormRef is layer normalisation in float64: the mean, the
// variance about it, then the weight and the bias.
func skLayerNormRef(x, w, b []float32, dim int, eps float32) []float64 {
	y := make([]float64, len(x))
	for r := 0; r < len(x)/dim; r++ {
		row := x[r*dim : (r+1)*dim]
		mean := 0.0
		for _, v := range row {
			mean += float64(v)
		}
		mean /= float64(dim)
		vr := 0.0
		for _, v := range row {
			vr += (float64(v) - mean) * (float64(v) - mean)
		}
		s := 1 / math.Sqrt(vr/float64(dim)+float64(eps))
		for i, v := range row {
			y[r*dim+i] = (float64(v)-mean)*s*float64(w[i]) + float64(b[i])
		}
	}
	return y
}

// skGELURef is GELU in its tanh form, in float64.
func skGELURef(v float64) float64 {
	return 0.5 * v * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(v+0.044715*v*v*v)))
}

// skArgmaxRef is the lowest index of the largest value, NaN below all.
func skArgmaxRef(x []float32) uint32 {
	best := -1
	for i, v := range x {
		if math.IsNaN(float64(v)) {
			continue
		}
		if best < 0 || v > x[best] {
			best = i
		}
	}
	return uint32(max(best, 0))
}
