package kernel

import (
	"fmt"
	"math"

	"headinfer/vk"
)

// RopeLayout says which dimensions of a head RoPE rotates together.
type RopeLayout int

const (
	// RopeNormal rotates adjacent pairs (2i, 2i+1), as Llama does.
	RopeNormal RopeLayout = iota
	// RopeNeox rotates pairs (i, i + nRot/2), as Qwen2 and GPT-NeoX do.
	RopeNeox
)

// String names the layout as GGUF metadata and logs do.
func (l RopeLayout) String() string {
	switch l {
	case RopeNormal:
		return "normal"
	case RopeNeox:
		return "neox"
	}
	return fmt.Sprintf("RopeLayout(%d)", int(l))
}

// Llama3Scaling is the rope_scaling of Llama 3.1 and later, which stretches
// the low frequencies so that the model reaches beyond the context it was
// first trained on.
type Llama3Scaling struct {
	Factor          float64 // how much the low frequencies are divided by (8)
	LowFreqFactor   float64 // 1
	HighFreqFactor  float64 // 4
	OriginalContext float64 // original_max_position_embeddings (8192)
}

// scale applies the scaling to one frequency as Meta's apply_scaling does:
// wavelengths shorter than OriginalContext/HighFreqFactor keep their
// frequency, those longer than OriginalContext/LowFreqFactor are divided by
// Factor, and the band between is interpolated.
func (s *Llama3Scaling) scale(freq float64) float64 {
	wavelen := 2 * math.Pi / freq
	switch {
	case wavelen < s.OriginalContext/s.HighFreqFactor:
		return freq
	case wavelen > s.OriginalContext/s.LowFreqFactor:
		return freq / s.Factor
	case s.HighFreqFactor == s.LowFreqFactor:
		// An empty band (Meta's code asserts it away): its one boundary
		// wavelength keeps its frequency rather than dividing by zero.
		return freq
	}
	smooth := (s.OriginalContext/wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor)
	return (1-smooth)*freq/s.Factor + smooth*freq
}

// RopeFreqs returns the nRot/2 inverse frequencies base^(−2i/nRot) of
// rotary embedding, with the Llama 3 scaling applied when s is not nil. They
// are computed in float64 and rounded once to float32.
func RopeFreqs(nRot int, base float64, s *Llama3Scaling) []float32 {
	f := make([]float32, max(nRot/2, 0))
	for i := range f {
		freq := math.Pow(base, -float64(2*i)/float64(nRot))
		if s != nil {
			freq = s.scale(freq)
		}
		f[i] = float32(freq)
	}
	return f
}

// Rope applies rotary position embedding in place to a chunk of queries or
// keys laid out [tokens][heads·headDim] in f32. The first nRot dimensions of
// every head are rotated by θ = position · inv_freq[i] (θ rounded to f32,
// cos and sin computed in f32); the others are left as they are.
// Positions are exact up to 2²⁴.
type Rope struct {
	d      *vk.Device
	k      *vk.Kernel
	heads  int
	hdim   int
	nRot   int
	layout RopeLayout
}

// NewRope prepares RoPE for heads heads of headDim values, rotating the
// first nRot (even, at most headDim) of each in the given layout.
func NewRope(d *vk.Device, heads, headDim, nRot int, layout RopeLayout) (*Rope, error) {
	if heads <= 0 || headDim <= 0 || heads > math.MaxInt32/headDim {
		return nil, fmt.Errorf("rope: %d heads of %d out of range", heads, headDim)
	}
	if nRot <= 0 || nRot%2 != 0 || nRot > headDim {
		return nil, fmt.Errorf("rope: %d rotated dimensions: want an even number from 2 to the head size %d", nRot, headDim)
	}
	if layout != RopeNormal && layout != RopeNeox {
		return nil, fmt.Errorf("rope: unknown layout %v", layout)
	}
	k, err := skKernel(d, "rope", 3, 20)
	if err != nil {
		return nil, err
	}
	return &Rope{d: d, k: k, heads: heads, hdim: headDim, nRot: nRot, layout: layout}, nil
}

// Record records the rotation of tokens rows of x in place. positions holds
// one uint32 per token and freqs the nRot/2 f32 values of RopeFreqs; both
// are read when the commands run, so replaying them with new positions
// written to the same buffer rotates for the new positions.
func (r *Rope) Record(c *vk.Commands, x, positions, freqs vk.Range, tokens int) error {
	return r.RecordRows(c, x, positions, freqs, tokens, r.heads*r.hdim)
}

// RecordRows is Record for rows that start stride floats apart (at least
// a row's heads·headDim): the q and k of each sequence of a batched step,
// which lie between the sequences' other values. Every element is rotated
// with the arithmetic of Record.
func (r *Rope) RecordRows(c *vk.Commands, x, positions, freqs vk.Range, tokens, stride int) error {
	info := r.d.Info()
	row := r.heads * r.hdim
	if tokens <= 0 || stride < row || tokens > (math.MaxInt32-row)/stride+1 {
		return fmt.Errorf("rope: %d tokens of %d values %d apart out of range", tokens, row, stride)
	}
	grid, err := skGrid(info, "rope", int(groups(r.heads*r.nRot/2, skWG)), tokens)
	if err != nil {
		return err
	}
	xb, err := skBind(info, "rope", "input", x, 4*(uint64(tokens-1)*uint64(stride)+uint64(row)))
	if err != nil {
		return err
	}
	pb, err := skBind(info, "rope", "positions", positions, 4*uint64(tokens))
	if err != nil {
		return err
	}
	fb, err := skBind(info, "rope", "frequencies", freqs, 4*uint64(r.nRot/2))
	if err != nil {
		return err
	}
	neox := uint32(0)
	if r.layout == RopeNeox {
		neox = 1
	}
	c.Dispatch(r.k, grid, push(uint32(r.heads), uint32(r.hdim), uint32(r.nRot), neox, uint32(stride)), xb, pb, fb)
	return nil
}
