package engine

import (
	"fmt"
	"math/rand/v2"

	"headinfer/engine/gguf"
)

// FillSynthetic appends n positions of made-up keys and values (uniform
// in [−1, 1), drawn from seed) to the session's KV cache without
// computing them, as if n tokens of id 0 had been prefilled. It exists
// for benchmarks at long contexts on slow devices, where a real prefill
// would take hours (its cost grows with the square of the context): the
// steps that follow cost what they would after a real prefill, but their
// logits mean nothing.
func (se *Session) FillSynthetic(n int, seed uint64) error {
	start := len(se.tokens)
	if n <= 0 || start+n > se.s.ctx {
		return fmt.Errorf("fill: %d positions after %d do not fit the context of %d", n, start, se.s.ctx)
	}
	kc, cfg := se.s.kv, se.m.Config
	r := rand.New(rand.NewPCG(seed, uint64(start)))
	const piece = 1 << 16 // rows generated at once
	vals := make([]float32, min(n, piece)*cfg.HeadDim)
	for l := 0; l < cfg.Layers; l++ {
		// A ring keeps only the latest positions: the others are not
		// written.
		first, step := start, piece
		if r := se.m.plan.Rings; r != nil && r[l] > 0 {
			first, step = max(start, start+n-r[l]), min(piece, r[l])
		}
		for h := 0; h < cfg.KVHeads; h++ {
			for kv := 0; kv < 2; kv++ {
				for row := first; row < start+n; row += step {
					rows := min(step, start+n-row)
					v := vals[:rows*cfg.HeadDim]
					for i := range v {
						v[i] = 2*r.Float32() - 1
					}
					t := se.m.kvType.K
					if kv == 1 {
						t = se.m.kvType.V
					}
					data, err := gguf.Quantize(t, v)
					if err != nil {
						return err
					}
					if err := kc.Write(l, h, kv == 1, row, data); err != nil {
						return err
					}
				}
			}
		}
	}
	se.tokens = append(se.tokens, make([]int32, n)...)
	se.ringsWrote(len(se.tokens))
	se.have = false
	return nil
}
