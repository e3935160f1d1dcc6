package engine

import (
	"fmt"
	"math"
	"testing"

	"headinfer/engine/gguf"
)

// refModel is a float64 forward pass written for clarity, not speed: the
// oracle the engine's logits are checked against.
type refModel struct {
	c Config
	w map[string][]float64 // dequantized tensors by GGUF name
	// KV cache: [layer][position][kvHeads*headDim]
	k, v [][][]float64
	// ctx is the context the engine runs with, which picks LongRoPE's
	// factors.
	ctx int
	// hidden is the last forward's final hidden state, after the output
	// norm.
	hidden []float64
}

// loadRef reads the model file at path into a reference model.
func loadRef(t testing.TB, path string) *refModel {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ref, err := newRefModel(f)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func newRefModel(f *gguf.File) (*refModel, error) {
	c, err := ConfigOf(f)
	if err != nil {
		return nil, err
	}
	m := &refModel{c: c, w: map[string][]float64{}, k: make([][][]float64, c.Layers), v: make([][][]float64, c.Layers)}
	for _, ti := range f.Tensors {
		data := f.Data(&ti)
		out := make([]float32, ti.Elements())
		if err := gguf.Dequantize(ti.Type, data, out); err != nil {
			return nil, fmt.Errorf("%s: %w", ti.Name, err)
		}
		w := make([]float64, len(out))
		for i, x := range out {
			w[i] = float64(x)
		}
		m.w[ti.Name] = w
	}
	// Fused projections (phi3) as the separate ones, by rows.
	qn, kvn := c.Heads*c.HeadDim*c.Dim, c.KVHeads*c.HeadDim*c.Dim
	for l := 0; l < c.Layers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		if qkv, ok := m.w[p+"attn_qkv.weight"]; ok {
			m.w[p+"attn_q.weight"], m.w[p+"attn_k.weight"], m.w[p+"attn_v.weight"] = qkv[:qn], qkv[qn:qn+kvn], qkv[qn+kvn:]
			if _, gate := m.w[p+"ffn_gate.weight"]; !gate { // phi3's gate and up in one
				up := m.w[p+"ffn_up.weight"]
				m.w[p+"ffn_gate.weight"], m.w[p+"ffn_up.weight"] = up[:len(up)/2], up[len(up)/2:]
			}
		}
	}
	m.ctx = c.TrainCtx
	return m, nil
}

// matvec returns W·x for W with rows of len(x) elements.
func refMatvec(w, x []float64) []float64 {
	y := make([]float64, len(w)/len(x))
	for r := range y {
		row := w[r*len(x) : (r+1)*len(x)]
		s := 0.0
		for i, xi := range x {
			s += row[i] * xi
		}
		y[r] = s
	}
	return y
}

func refRMSNorm(x, w []float64, eps float64) []float64 {
	ss := 0.0
	for _, v := range x {
		ss += v * v
	}
	s := 1 / math.Sqrt(ss/float64(len(x))+eps)
	y := make([]float64, len(x))
	for i := range x {
		y[i] = x[i] * s * w[i]
	}
	return y
}

// invFreq returns the rotation frequencies of layer l's rope.
func (m *refModel) invFreq(l int) []float64 {
	c := m.c
	f := make([]float64, c.RopeDim/2)
	if c.LocalRopeBase > 0 && c.Window(l) > 0 {
		for i := range f {
			f[i] = math.Pow(c.LocalRopeBase, -2*float64(i)/float64(c.RopeDim))
		}
		return f
	}
	for i := range f {
		f[i] = math.Pow(c.RopeBase, -2*float64(i)/float64(c.RopeDim)) / c.RopeScale
		if s := c.Llama3; s != nil {
			wavelen := 2 * math.Pi / f[i]
			lowWave := s.OriginalContext / s.LowFreqFactor
			highWave := s.OriginalContext / s.HighFreqFactor
			switch {
			case wavelen < highWave:
			case wavelen > lowWave:
				f[i] /= s.Factor
			default:
				smooth := (s.OriginalContext/wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor)
				f[i] = (1-smooth)*f[i]/s.Factor + smooth*f[i]
			}
		}
		factors := "rope_freqs.weight"
		if _, ok := m.w[factors]; !ok {
			factors = "rope_factors_short.weight"
			if m.ctx > c.RopeOrigCtx {
				factors = "rope_factors_long.weight"
			}
		}
		if ff, ok := m.w[factors]; ok {
			f[i] /= ff[i]
		}
	}
	return f
}

func (m *refModel) rope(x []float64, l, heads, pos int) {
	c := m.c
	freq := m.invFreq(l)
	for h := 0; h < heads; h++ {
		v := x[h*c.HeadDim:]
		for i := 0; i < c.RopeDim/2; i++ {
			a, b := 2*i, 2*i+1
			if c.RopeNeox {
				a, b = i, i+c.RopeDim/2
			}
			th := float64(pos) * freq[i]
			cs, sn := math.Cos(th), math.Sin(th)
			v[a], v[b] = v[a]*cs-v[b]*sn, v[a]*sn+v[b]*cs
		}
	}
}

func (m *refModel) addBias(y []float64, name string) {
	if b, ok := m.w[name]; ok {
		for i := range y {
			y[i] += b[i]
		}
	}
}

// headNorm RMS-normalises every head of x in place with the named
// weights, if the model has them.
func (m *refModel) headNorm(x []float64, name string) {
	w, ok := m.w[name]
	if !ok {
		return
	}
	hd := m.c.HeadDim
	for h := 0; h < len(x)/hd; h++ {
		copy(x[h*hd:], refRMSNorm(x[h*hd:(h+1)*hd], w, m.c.NormEps))
	}
}

// forward runs one token at position len(cache) and returns its logits.
func (m *refModel) forward(tok int32) []float64 {
	c := m.c
	pos := len(m.k[0])
	x := append([]float64(nil), m.w["token_embd.weight"][int(tok)*c.Dim:(int(tok)+1)*c.Dim]...)
	if c.EmbedScale > 0 {
		for i := range x {
			x[i] *= c.EmbedScale
		}
	}
	for l := 0; l < c.Layers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		xb := refRMSNorm(x, m.w[p+"attn_norm.weight"], c.NormEps)
		q := refMatvec(m.w[p+"attn_q.weight"], xb)
		k := refMatvec(m.w[p+"attn_k.weight"], xb)
		v := refMatvec(m.w[p+"attn_v.weight"], xb)
		m.addBias(q, p+"attn_q.bias")
		m.addBias(k, p+"attn_k.bias")
		m.addBias(v, p+"attn_v.bias")
		m.headNorm(q, p+"attn_q_norm.weight")
		m.headNorm(k, p+"attn_k_norm.weight")
		m.rope(q, l, c.Heads, pos)
		m.rope(k, l, c.KVHeads, pos)
		m.k[l] = append(m.k[l], k)
		m.v[l] = append(m.v[l], v)

		att := make([]float64, c.Heads*c.HeadDim)
		scale := c.Scale()
		first := 0 // the first position layer l's window sees
		if w := c.Window(l); w > 0 {
			first = max(0, pos-w+1)
		}
		for h := 0; h < c.Heads; h++ {
			g := h / c.Group()
			qh := q[h*c.HeadDim : (h+1)*c.HeadDim]
			s := make([]float64, pos+1)
			mx := math.Inf(-1)
			for t := first; t <= pos; t++ {
				kh := m.k[l][t][g*c.HeadDim:]
				for i, qi := range qh {
					s[t] += qi * kh[i]
				}
				s[t] *= scale
				if cp := c.AttnSoftCap; cp > 0 {
					s[t] = cp * math.Tanh(s[t]/cp)
				}
				mx = max(mx, s[t])
			}
			sum := 0.0
			for t := first; t <= pos; t++ {
				s[t] = math.Exp(s[t] - mx)
				sum += s[t]
			}
			for t := first; t <= pos; t++ {
				vh := m.v[l][t][g*c.HeadDim:]
				for i := 0; i < c.HeadDim; i++ {
					att[h*c.HeadDim+i] += s[t] / sum * vh[i]
				}
			}
		}
		o := refMatvec(m.w[p+"attn_output.weight"], att)
		if w, ok := m.w[p+"post_attention_norm.weight"]; ok {
			o = refRMSNorm(o, w, c.NormEps)
		}
		for i := range x {
			x[i] += o[i]
		}

		xb = refRMSNorm(x, m.w[p+"ffn_norm.weight"], c.NormEps)
		gate := refMatvec(m.w[p+"ffn_gate.weight"], xb)
		up := refMatvec(m.w[p+"ffn_up.weight"], xb)
		gelu := c.Arch == "gemma2" || c.Arch == "gemma3"
		for i, g := range gate {
			if gelu {
				gate[i] = 0.5 * g * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(g+0.044715*g*g*g))) * up[i]
			} else {
				gate[i] = g / (1 + math.Exp(-g)) * up[i]
			}
		}
		d := refMatvec(m.w[p+"ffn_down.weight"], gate)
		if w, ok := m.w[p+"post_ffw_norm.weight"]; ok {
			d = refRMSNorm(d, w, c.NormEps)
		}
		for i := range x {
			x[i] += d[i]
		}
	}
	x = refRMSNorm(x, m.w["output_norm.weight"], c.NormEps)
	m.hidden = x
	out, ok := m.w["output.weight"]
	if !ok {
		out = m.w["token_embd.weight"]
	}
	logits := refMatvec(out, x)
	if cp := c.FinalSoftCap; cp > 0 {
		for i, v := range logits {
			logits[i] = cp * math.Tanh(v/cp)
		}
	}
	return logits
}
