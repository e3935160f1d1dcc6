package engine

import (
	"context"
	"math"
	"slices"
	"testing"

	"headinfer/engine/gguf"
)

// TestEmbeddingsMatchReference checks Session.Embed and Batch.Embed, for
// each pooling, against the float64 forward pass's final hidden states
// pooled and normalised, over a prompt that spans several chunks.
func TestEmbeddingsMatchReference(t *testing.T) {
	path := writeSynth(t, SynthSpec{Arch: "llama", Dim: 128, Layers: 2, Heads: 8, KVHeads: 2, FFN: 96, Vocab: 300,
		Ctx: 512, RopeBase: 10000, Type: gguf.F32, Seed: 11})
	m := loadModel(t, path, Options{CtxSize: 64, Chunk: 5, KVType: "f32", Parallel: 2})
	prompt := []int32{1, 17, 250, 3, 99, 42, 7, 8, 280, 11, 12, 13}
	ref := loadRef(t, path)
	var hidden [][]float64
	for _, id := range prompt {
		ref.forward(id)
		hidden = append(hidden, ref.hidden)
	}
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
	for _, pool := range []Pooling{PoolMean, PoolCLS, PoolLast, PoolNone} {
		if pool == PoolNone {
			m.Config.Pooling = pool
			got, err := se.Embed(context.Background(), prompt)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(prompt)*m.Config.Dim {
				t.Fatalf("none pooling: %d values for %d tokens of %d", len(got), len(prompt), m.Config.Dim)
			}
			worst := 0.0
			for i, h := range hidden {
				for j, w := range h {
					worst = max(worst, math.Abs(float64(got[i*m.Config.Dim+j])-w))
				}
			}
			if worst > 1e-5 {
				t.Errorf("none pooling: the token vectors differ from the reference by %.3g", worst)
			}
			t.Logf("none pooling: worst error %.3g", worst)
			continue
		}
		want := make([]float64, m.Config.Dim)
		switch pool {
		case PoolMean:
			for _, h := range hidden {
				for j, v := range h {
					want[j] += v / float64(len(hidden))
				}
			}
		case PoolCLS:
			copy(want, hidden[0])
		case PoolLast:
			copy(want, hidden[len(hidden)-1])
		}
		var norm float64
		for _, v := range want {
			norm += v * v
		}
		for j := range want {
			want[j] /= math.Sqrt(norm)
		}
		m.Config.Pooling = pool
		got, err := se.Embed(context.Background(), prompt)
		if err != nil {
			t.Fatal(err)
		}
		worst := 0.0
		for j, w := range want {
			worst = max(worst, math.Abs(float64(got[j])-w))
		}
		if worst > 1e-5 {
			t.Errorf("%v pooling: the embedding differs from the reference by %.3g", pool, worst)
		}
		if !slices.Equal(se.Tokens(), prompt) {
			t.Errorf("%v pooling: the session holds %v after Embed, want the prompt", pool, se.Tokens())
		}
		res, err := b.Embed(context.Background(), prompt)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.Embedding, got) {
			t.Errorf("%v pooling: Batch.Embed differs from Session.Embed", pool)
		}
		t.Logf("%v pooling: worst error %.3g", pool, worst)
	}
}

// TestBatchEmbedBesideGeneration runs embeddings while another sequence
// generates: the generation's tokens are those it gives alone, the
// embeddings those of a session alone, and a generation after an
// embedding reuses its KV.
func TestBatchEmbedBesideGeneration(t *testing.T) {
	path := writeSynth(t, SynthSpec{Arch: "llama", Dim: 128, Layers: 2, Heads: 8, KVHeads: 2, FFN: 96, Vocab: 300,
		Ctx: 512, RopeBase: 10000, Type: gguf.F16, Seed: 12})
	m := loadModel(t, path, Options{CtxSize: 96, Chunk: 8, Parallel: 3})
	prompt := []int32{1, 5, 9, 200, 31, 7, 8, 44, 45, 46, 3}
	embedIn := []int32{1, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117}

	se, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var alone []int32
	if _, err := se.Generate(context.Background(), prompt, GenerateParams{MaxTokens: 30}, func(id int32) bool {
		alone = append(alone, id)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	want, err := se.Embed(context.Background(), embedIn)
	if err != nil {
		t.Fatal(err)
	}
	se.Close()

	b, err := m.NewBatch(3)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	gen := make(chan []int32)
	go func() {
		var out []int32
		_, err := b.Generate(context.Background(), Request{Prompt: prompt, Params: GenerateParams{MaxTokens: 30}}, func(id int32) bool {
			out = append(out, id)
			return true
		})
		if err != nil {
			t.Error(err)
		}
		gen <- out
	}()
	var slot int
	for range 3 {
		res, err := b.Embed(context.Background(), embedIn)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.Embedding, want) {
			t.Errorf("an embedding beside a generation differs from a session's alone")
		}
		slot = res.Slot
	}
	if got := <-gen; !slices.Equal(got, alone) {
		t.Errorf("a generation beside embeddings gave %v, alone %v", got, alone)
	}
	// A generation whose prompt extends the embedded text reuses it.
	res, err := b.Generate(context.Background(), Request{Prompt: append(slices.Clone(embedIn), 7, 8), Params: GenerateParams{MaxTokens: 2}},
		func(int32) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	if res.Cached != len(embedIn) {
		t.Errorf("a prompt extending the embedded text reused %d tokens (slot %d, embedded in %d), want %d", res.Cached, res.Slot, slot, len(embedIn))
	}
	if _, err := b.Embed(context.Background(), nil); err == nil {
		t.Error("an empty embedding input was accepted")
	}
	if _, err := b.Embed(context.Background(), make([]int32, 97)); err == nil {
		t.Error("an embedding input longer than the context was accepted")
	}
}
