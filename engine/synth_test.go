package engine

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"headinfer/engine/gguf"
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
		for i, typ := range []gguf.Type{gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0, gguf.Q4_0} {
			separate := i%2 == 1
			t.Run(fmt.Sprintf("%s/%v/separate=%v", arch, typ, separate), func(t *testing.T) {
				spec := SynthSpec{Arch: arch, Dim: 128, Layers: 2, Heads: 8, KVHeads: 2, FFN: 96, Vocab: 300,
					Ctx: 512, RopeBase: 10000, Type: typ, Seed: 7}
				path := writeSynth(t, spec)
				f, err := gguf.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				ref, err := newRefModel(f)
				if err != nil {
					t.Fatal(err)
				}
				m := loadModel(t, path, Options{CtxSize: 300, Chunk: 5, KVType: "f32", separate: separate})
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
