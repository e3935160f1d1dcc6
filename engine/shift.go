package engine

import (
	"fmt"
	"math"

	"headinfer/engine/gguf"
)

// Shift drops the KV of positions [keep, keep+discard) and moves the
// positions after them down by discard, as llama.cpp's context shift
// does, so that a sequence can go on past the end of its context by
// forgetting part of its middle. The values move as they are; each key
// is rotated back by discard positions: RoPE turns a key by an angle
// proportional to its position, so the turned key is the one it would
// have had at its new position, up to rounding.
//
// Rows move wherever they live (resident slots on the device, streamed
// ones in the host store); only the positions after the dropped ones are
// read and written, never the kept prefix. Layers whose slots are rings
// no longer hold the positions to move, so a sliding-window model shifts
// only with full slots (--swa-full).
//
// The moved positions' KV is not what a prefill of their tokens would
// give: their hidden states saw the dropped tokens. Reuse for a later
// prompt therefore stops at keep (see Reusable).
func (se *Session) Shift(keep, discard int) error {
	n := len(se.tokens)
	switch {
	case se.failed != nil:
		return se.failed
	case keep < 0 || discard < 1 || keep+discard > n:
		return fmt.Errorf("context shift: cannot drop %d positions after the first %d of %d", discard, keep, n)
	case se.m.plan.Rings != nil:
		return fmt.Errorf("context shift: the sliding-window layers keep only their latest positions; run with --swa-full to shift the context")
	}
	moved := n - keep - discard
	if moved > 0 {
		g := se.KVLayout()
		buf := g.slotBuf(moved)
		rows := make([]float32, moved*g.HeadDim)
		for l := range g.Layers {
			freqs := se.m.freqs
			if se.m.localFreqs != nil && se.m.Config.Window(l) > 0 {
				freqs = se.m.localFreqs
			}
			for h := range g.KVHeads {
				for _, isV := range []bool{false, true} {
					slot := buf[:g.SlotBytes(moved, isV)]
					if err := se.s.kv.Read(l, h, isV, keep+discard, slot); err != nil {
						return err
					}
					if !isV {
						if err := rotateKeys(g.Type, slot, rows, se.m.Config, freqs, -discard); err != nil {
							return err
						}
					}
					if err := se.s.kv.Write(l, h, isV, keep, slot); err != nil {
						return err
					}
				}
			}
		}
	}
	se.tokens = append(se.tokens[:keep], se.tokens[keep+discard:]...)
	if !se.shifted || keep < se.exact {
		se.exact = keep
	}
	se.shifted = true
	se.stats.Shifts++
	return nil
}

// Reusable is the leading part of Tokens whose KV is what a prefill of
// those tokens gives: all of them, unless the context was shifted (then
// the positions kept in front).
func (se *Session) Reusable() []int32 {
	if se.shifted {
		return se.tokens[:se.exact]
	}
	return se.tokens
}

// rotateKeys turns every key in data (rows of c.HeadDim elements of type
// t) by delta positions of the rope with the given frequencies, in place.
// rows is scratch room for the keys as floats. The turn is computed in
// float64, so the only rounding is to t.
func rotateKeys(t gguf.Type, data []byte, rows []float32, c Config, freqs []float32, delta int) error {
	rows = rows[:len(data)/t.RowBytes(c.HeadDim)*c.HeadDim]
	if err := gguf.Dequantize(t, data, rows); err != nil {
		return err
	}
	half := c.RopeDim / 2
	cos, sin := make([]float64, half), make([]float64, half)
	for i, f := range freqs[:half] {
		th := float64(delta) * float64(f)
		cos[i], sin[i] = math.Cos(th), math.Sin(th)
	}
	for r := 0; r < len(rows); r += c.HeadDim {
		k := rows[r : r+c.HeadDim]
		for i := range half {
			a, b := 2*i, 2*i+1
			if c.RopeNeox {
				a, b = i, i+half
			}
			x0, x1 := float64(k[a]), float64(k[b])
			k[a], k[b] = float32(x0*cos[i]-x1*sin[i]), float32(x0*sin[i]+x1*cos[i])
		}
	}
	out, err := gguf.Quantize(t, rows)
	if err != nil {
		return err
	}
	copy(data, out)
	return nil
}
