package engine

import (
	"encoding/binary"
	"fmt"
	"math"
	"testing"

	"headinfer/engine/gguf"
)

// TestPhi3MatchesReference runs small Phi-3 models, whose Q, K and V and
// gate and up come fused, against the float64 forward pass; and with
// LongRoPE's factors and attention factor, at a context within the
// trained one (short factors) and beyond it (long factors).
func TestPhi3MatchesReference(t *testing.T) {
	spec := SynthSpec{Arch: "phi3", Dim: 128, Layers: 2, Heads: 4, KVHeads: 2, FFN: 96, Vocab: 300, Ctx: 256, RopeBase: 10000, Seed: 9}
	f32s := func(v []float32) []byte {
		b := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
		}
		return b
	}
	longRope := func(kv []gguf.KV, ts []gguf.TensorData) ([]gguf.KV, []gguf.TensorData) {
		half := spec.Dim / spec.Heads / 2
		short, long := make([]float32, half), make([]float32, half)
		for i := range short {
			short[i] = 1 + 0.05*float32(i)
			long[i] = 1 + 3*float32(i)
		}
		kv = append(kv, gguf.KV{Key: "phi3.rope.scaling.attn_factor", Value: float32(1.19)},
			gguf.KV{Key: "phi3.rope.scaling.original_context_length", Value: uint32(64)})
		return kv, append(ts, gguf.TensorData{Name: "rope_factors_short.weight", Dims: []uint64{uint64(half)}, Type: gguf.F32, Data: f32s(short)},
			gguf.TensorData{Name: "rope_factors_long.weight", Dims: []uint64{uint64(half)}, Type: gguf.F32, Data: f32s(long)})
	}
	for _, tc := range []struct {
		typ      gguf.Type
		longRope bool
		ctx      int
		separate bool
	}{
		{gguf.F32, false, 128, false},
		{gguf.Q8_0, false, 128, true},
		{gguf.F16, true, 48, false},
		{gguf.F32, true, 128, false},
	} {
		t.Run(fmt.Sprintf("%v/longrope=%v/ctx%d/separate=%v", tc.typ, tc.longRope, tc.ctx, tc.separate), func(t *testing.T) {
			s := spec
			s.Type = tc.typ
			path := writeSynth(t, s)
			if tc.longRope {
				path = rewriteSynth(t, s, longRope)
			}
			m := loadModel(t, path, Options{CtxSize: tc.ctx, Chunk: 5, KVType: "f32", separate: tc.separate})
			if want := 1 / math.Sqrt(32); tc.longRope != (math.Abs(m.Config.Scale()-1.19*1.19*want) < 1e-6) {
				t.Fatalf("attention scale %v", m.Config.Scale())
			}
			ref := loadRef(t, path)
			ref.ctx = tc.ctx
			checkReference(t, m, ref)
		})
	}
}
