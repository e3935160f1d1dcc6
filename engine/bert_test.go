package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"

	"headinfer/engine/gguf"
)

// refBert is BERT's forward pass in float64 over a whole input: every
// token's final hidden state (the last layer's output norm). A
// nomic-bert model (no position_embd) rotates q and k neox-style instead,
// gates its feed-forward with SiLU, and has no projection biases.
func refBert(m *refModel, ids []int32) [][]float64 {
	c := m.c
	n, hd := len(ids), c.HeadDim
	w := func(name string) []float64 {
		v, ok := m.w[name]
		if !ok {
			panic("reference: no tensor " + name)
		}
		return v
	}
	norm := func(x []float64, name string) []float64 {
		mean := 0.0
		for _, v := range x {
			mean += v
		}
		mean /= float64(len(x))
		vr := 0.0
		for _, v := range x {
			vr += (v - mean) * (v - mean)
		}
		s := 1 / math.Sqrt(vr/float64(len(x))+c.NormEps)
		g, b := w(name+".weight"), w(name+".bias")
		y := make([]float64, len(x))
		for i, v := range x {
			y[i] = (v-mean)*s*g[i] + b[i]
		}
		return y
	}
	affine := func(name string, x []float64) []float64 {
		y := refMatvec(w(name+".weight"), x)
		for i, b := range m.w[name+".bias"] { // none in nomic-bert
			y[i] += b
		}
		return y
	}
	pos, absolute := m.w["position_embd.weight"]
	rope := func(v []float64, heads, t int) {
		half := c.RopeDim / 2
		for h := range heads {
			for i := range half {
				theta := float64(t) * math.Pow(c.RopeBase, -2*float64(i)/float64(c.RopeDim))
				a, b := v[h*hd+i], v[h*hd+i+half]
				v[h*hd+i], v[h*hd+i+half] = a*math.Cos(theta)-b*math.Sin(theta), a*math.Sin(theta)+b*math.Cos(theta)
			}
		}
	}
	emb, types := w("token_embd.weight"), w("token_types.weight")
	x := make([][]float64, n)
	for t, id := range ids {
		e := make([]float64, c.Dim)
		for i := range e {
			e[i] = emb[int(id)*c.Dim+i] + types[i]
			if absolute {
				e[i] += pos[t*c.Dim+i]
			}
		}
		x[t] = norm(e, "token_embd_norm")
	}
	for l := 0; l < c.Layers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		q, k, v := make([][]float64, n), make([][]float64, n), make([][]float64, n)
		for t := range x {
			q[t], k[t], v[t] = affine(p+"attn_q", x[t]), affine(p+"attn_k", x[t]), affine(p+"attn_v", x[t])
			if !absolute {
				rope(q[t], c.Heads, t)
				rope(k[t], c.KVHeads, t)
			}
		}
		for t := range x {
			att := make([]float64, c.Heads*hd)
			for h := 0; h < c.Heads; h++ {
				kh := h / c.Group()
				scores := make([]float64, n)
				top := math.Inf(-1)
				for j := range n { // every token: both ways
					s := 0.0
					for d := range hd {
						s += q[t][h*hd+d] * k[j][kh*hd+d]
					}
					scores[j] = s / math.Sqrt(float64(hd))
					top = max(top, scores[j])
				}
				sum := 0.0
				for j := range scores {
					scores[j] = math.Exp(scores[j] - top)
					sum += scores[j]
				}
				for j := range n {
					for d := range hd {
						att[h*hd+d] += scores[j] / sum * v[j][kh*hd+d]
					}
				}
			}
			o := affine(p+"attn_output", att)
			for i := range o {
				o[i] += x[t][i]
			}
			h := norm(o, p+"attn_output_norm")
			up := affine(p+"ffn_up", h)
			if _, gated := m.w[p+"ffn_gate.weight"]; gated {
				for i, g := range affine(p+"ffn_gate", h) {
					up[i] *= g / (1 + math.Exp(-g))
				}
			} else {
				for i, u := range up {
					up[i] = 0.5 * u * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(u+0.044715*u*u*u)))
				}
			}
			down := affine(p+"ffn_down", up)
			for i := range down {
				down[i] += h[i]
			}
			x[t] = norm(down, p+"layer_output_norm")
		}
	}
	return x
}

// TestBertMatchesReference checks BERT's and nomic-bert's token vectors
// (pooling none) and their pooled embeddings, from Session.Embed and
// Batch.Embed, against the float64 forward pass, with f32 and f16
// weights.
func TestBertMatchesReference(t *testing.T) {
	for _, tc := range []struct {
		arch string
		typ  gguf.Type
	}{{"bert", gguf.F32}, {"bert", gguf.F16}, {"nomic-bert", gguf.F32}, {"nomic-bert", gguf.F16}} {
		typ := tc.typ
		t.Run(tc.arch+"/"+typ.String(), func(t *testing.T) {
			path := writeSynth(t, SynthSpec{Arch: tc.arch, Dim: 128, Layers: 2, Heads: 4, KVHeads: 4, FFN: 200, Vocab: 400,
				Ctx: 64, Type: typ, Seed: 21, RopeBase: 1000})
			// f32 weights with an f32 KV cache: nothing is rounded but
			// the f32 arithmetic; f16 weights with the f16 cache.
			kv := map[gguf.Type]string{gguf.F32: "f32", gguf.F16: "f16"}[typ]
			m := loadModel(t, path, Options{CtxSize: 40, Parallel: 2, KVType: kv})
			ref := loadRef(t, path)
			prompt := []int32{2, 17, 250, 5, 99, 42, 7, 8, 280, 11, 12, 13, 3}
			hidden := refBert(ref, prompt)
			// The vectors are of order 1 (LayerNorm's output). f32: the
			// engine's f32 arithmetic against float64; f16: K and V are
			// rounded to f16 in the cache (and the activations that meet
			// f16 weights, as llama.cpp does), some 1e-3 relative.
			limit := map[gguf.Type]float64{gguf.F32: 1e-5, gguf.F16: 1e-3}[typ]

			se, err := m.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer se.Close()
			b, err := m.NewBatch(2)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			dim := m.Config.Dim
			for _, pool := range []Pooling{PoolNone, PoolMean, PoolCLS, PoolLast} {
				m.Config.Pooling = pool
				got, err := se.Embed(context.Background(), prompt)
				if err != nil {
					t.Fatal(err)
				}
				res, err := b.Embed(context.Background(), prompt)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(res.Embedding, got) {
					t.Errorf("%v pooling: Batch.Embed differs from Session.Embed", pool)
				}
				var want [][]float64
				switch pool {
				case PoolNone:
					want = hidden
				case PoolMean:
					mean := make([]float64, dim)
					for _, h := range hidden {
						for j, v := range h {
							mean[j] += v / float64(len(hidden))
						}
					}
					want = [][]float64{unit(mean)}
				case PoolCLS:
					want = [][]float64{unit(hidden[0])}
				case PoolLast:
					want = [][]float64{unit(hidden[len(hidden)-1])}
				}
				if len(got) != len(want)*dim {
					t.Fatalf("%v pooling: %d values, want %d vectors of %d", pool, len(got), len(want), dim)
				}
				worst := 0.0
				for i, h := range want {
					for j, w := range h {
						worst = max(worst, math.Abs(float64(got[i*dim+j])-w))
					}
				}
				t.Logf("%v pooling: worst error %.3g", pool, worst)
				if worst > limit {
					t.Errorf("%v pooling: the embedding differs from the reference by %.3g (limit %g)", pool, worst, limit)
				}
			}
		})
	}
}

// unit is v scaled to length 1.
func unit(v []float64) []float64 {
	n := 0.0
	for _, x := range v {
		n += x * x
	}
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = x / math.Sqrt(n)
	}
	return out
}

// TestBertAttendsBothWays changes an input's last token: the first
// token's vector must change with it (with causal attention it could
// not). An input longer than the chunk is refused, as is generation.
func TestBertAttendsBothWays(t *testing.T) {
	path := writeSynth(t, SynthSpec{Arch: "bert", Dim: 64, Layers: 1, Heads: 2, KVHeads: 2, FFN: 128, Vocab: 300,
		Ctx: 64, Type: gguf.F32, Seed: 22})
	m := loadModel(t, path, Options{CtxSize: 32, Chunk: 8})
	m.Config.Pooling = PoolNone
	se, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer se.Close()
	a, err := se.Embed(context.Background(), []int32{2, 40, 41, 42, 3})
	if err != nil {
		t.Fatal(err)
	}
	b, err := se.Embed(context.Background(), []int32{2, 40, 41, 43, 3})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(a[:64], b[:64]) {
		t.Error("the first token's vector does not depend on a later token")
	}
	if _, err := se.Embed(context.Background(), make([]int32, 9)); !errors.Is(err, ErrInputTooLong) {
		t.Errorf("9 tokens with a chunk of 8: %v, want ErrInputTooLong", err)
	}
	if err := se.Prefill(context.Background(), []int32{2, 3}, false); !errors.Is(err, ErrNoGeneration) {
		t.Errorf("prefill for generation: %v, want ErrNoGeneration", err)
	}
	if err := m.CanGenerate(); !errors.Is(err, ErrNoGeneration) {
		t.Errorf("CanGenerate: %v", err)
	}
}

// TestBertOffloadBitIdentical embeds an input that spans two streamed KV
// blocks with every head resident and with every head streamed: attention
// both ways must see the same rows, in the same order, either way.
func TestBertOffloadBitIdentical(t *testing.T) {
	path := writeSynth(t, SynthSpec{Arch: "bert", Dim: 64, Layers: 2, Heads: 2, KVHeads: 2, FFN: 96, Vocab: 300,
		Ctx: 512, Type: gguf.F16, Seed: 23})
	prompt := offloadPrompt(300, 300)
	var runs [][]float32
	for _, mode := range []string{OffloadNone, OffloadHead} {
		m := loadModel(t, path, Options{CtxSize: 512, StreamBlock: 256, Offload: mode})
		if p := m.Plan(); (mode == OffloadHead) != (p.Streamed > 0) || p.Chunk != 512 {
			t.Fatalf("%s: %d streamed slots, chunk %d", mode, p.Streamed, p.Chunk)
		}
		m.Config.Pooling = PoolNone
		se, err := m.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		v, err := se.Embed(context.Background(), prompt)
		se.Close()
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, v)
	}
	if !slices.Equal(runs[0], runs[1]) {
		t.Error("streamed heads embed differently from resident ones")
	}
}
