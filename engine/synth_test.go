package engine

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"headinfer/engine/gguf"
	"headinfer/vk"
)

// writeSynth writes a small synthetic model into the test's temp dir.
func writeSynth(t testing.TB, s SynthSpec) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.gguf")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := Synth(f, s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSyntheticModelsMatchReference runs every weight type and both
// architectures against the float64 forward pass, over a prompt that spans
// several prefill chunks and then decodes, with the fused projections
// (Q, K and V as one; gate, up and SwiGLU as one; one RoPE pass) and
// without.
func TestSyntheticModelsMatchReference(t *testing.T) {
	for _, arch := range []string{"llama", "qwen2"} {
		for i, typ := range []struct{ typ, mix gguf.Type }{
			{gguf.F32, 0}, {gguf.F16, 0}, {gguf.BF16, 0}, {gguf.Q8_0, 0}, {gguf.Q4_0, 0},
			{gguf.Q4_K, 0}, {gguf.Q5_K, 0}, {gguf.Q6_K, 0}, {gguf.Q4_K, gguf.Q6_K}, {gguf.Q5_K, gguf.Q6_K},
			{gguf.Q4_0, 0}, // tied output: CPU devices read a packed copy of the embeddings
		} {
			separate := i%2 == 1
			tied := i == 10
			name := typ.typ.String()
			if typ.mix != 0 {
				name += "_M"
			}
			if tied {
				name += "_tied"
			}
			t.Run(fmt.Sprintf("%s/%s/separate=%v", arch, name, separate), func(t *testing.T) {
				spec := SynthSpec{Arch: arch, Dim: 128, Layers: 2, Heads: 8, KVHeads: 2, FFN: 96, Vocab: 300,
					Ctx: 512, RopeBase: 10000, Type: typ.typ, Mix: typ.mix, Seed: 7, Tied: tied}
				if typ.typ.BlockSize() > 1 {
					// Whole super-blocks, and rows that CPU devices read
					// packed (whole 256-weight units).
					spec.Dim, spec.FFN = 256, 512
				}
				path := writeSynth(t, spec)
				ref := loadRef(t, path)
				m := loadModel(t, path, Options{CtxSize: 300, Chunk: 5, KVType: "f32", separate: separate})
				if cpu := m.dev.Info().Type == vk.CPU; typ.typ.BlockSize() > 1 && m.w.Blocks[0].Q.Packed != cpu ||
					tied && cpu && (!m.w.Output.Packed || m.w.Output == m.w.Embed) {
					t.Fatalf("on a %v device: Q packed %v, output packed %v", m.dev.Info().Type, m.w.Blocks[0].Q.Packed, m.w.Output.Packed)
				}
				se, err := m.NewSession()
				if err != nil {
					t.Fatal(err)
				}
				defer se.Close()
				prompt := []int32{1, 17, 250, 3, 99, 42, 7, 8, 280, 11, 12, 13}
				var want []float64
				for _, id := range prompt {
					want = ref.forward(id)
				}
				worst, steps := 0.0, 0
				check := func(pos int, logits []float32) {
					if pos > len(prompt) {
						want = ref.forward(se.Tokens()[pos-1])
					}
					scale := 0.0
					for _, w := range want {
						scale = max(scale, math.Abs(w))
					}
					for i, w := range want {
						worst = max(worst, math.Abs(float64(logits[i])-w)/scale)
					}
					steps++
				}
				_, err = se.Generate(context.Background(), prompt, GenerateParams{MaxTokens: 6, Logits: check}, func(int32) bool { return true })
				if err != nil {
					t.Fatal(err)
				}
				if steps != 6 {
					t.Fatalf("checked %d positions, want 6", steps)
				}
				if worst > 1e-5 {
					t.Fatalf("logits differ from the float64 reference by %.3g of the largest logit", worst)
				}
				t.Logf("worst error %.3g of the largest logit", worst)
			})
		}
	}
}

// TestSynthMixture checks where the _M mixtures put Q6_K: the output
// matrix, and attn_v and ffn_down of the layers llama.cpp's use_more_bits
// picks, which for 8 layers are the first (below 8/8), the last (from
// 7·8/8) and those with (layer − 1) % 3 == 2: 0, 3, 6 and 7.
func TestSynthMixture(t *testing.T) {
	spec := SynthSpec{Arch: "llama", Dim: 256, Layers: 8, Heads: 4, KVHeads: 2, FFN: 256, Vocab: 300,
		Ctx: 64, RopeBase: 10000, Type: gguf.Q4_K, Mix: gguf.Q6_K, Seed: 3}
	f, err := gguf.Open(writeSynth(t, spec))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	more := map[int]bool{0: true, 3: true, 6: true, 7: true}
	counts := map[gguf.Type]int{}
	for _, ti := range f.Tensors {
		counts[ti.Type]++
		want := gguf.Q4_K
		var l int
		var kind string
		switch {
		case len(ti.Dims) == 1:
			want = gguf.F32
		case ti.Name == "output.weight":
			want = gguf.Q6_K
		default:
			if n, _ := fmt.Sscanf(ti.Name, "blk.%d.%s", &l, &kind); n == 2 && more[l] &&
				(kind == "attn_v.weight" || kind == "ffn_down.weight") {
				want = gguf.Q6_K
			}
		}
		if ti.Type != want {
			t.Errorf("%s is %v, want %v", ti.Name, ti.Type, want)
		}
	}
	if counts[gguf.Q6_K] != 1+2*len(more) {
		t.Errorf("%d Q6_K tensors, want %d", counts[gguf.Q6_K], 1+2*len(more))
	}
	for i, want := range []bool{true, false, false, true, false, false, true, true} {
		if got := useMoreBits(i, 8); got != want {
			t.Errorf("useMoreBits(%d, 8) = %v, want %v", i, got, want)
		}
	}
}
