package engine

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"headinfer/engine/sample"
	"headinfer/vk/vktest"
)

// modelsDir finds shared/models beside the module root.
func modelsDir(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for ; dir != filepath.Dir(dir); dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(filepath.Dir(dir), "shared", "models")
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("test models not found at %s", p)
			}
			return p
		}
	}
	t.Fatal("module root not found")
	return ""
}

type reference struct {
	PromptIDs []int32 `json:"prompt_ids"`
	Greedy    []int32 `json:"greedy_ids"`
	Prompt    string  `json:"prompt"`
}

func loadReference(t testing.TB, model string) reference {
	b, err := os.ReadFile(filepath.Join(modelsDir(t), "reference_greedy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		t.Fatal(err)
	}
	var r reference
	if err := json.Unmarshal(all[model], &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func loadModel(t testing.TB, path string, opt Options) *Model {
	t.Helper()
	opt.dev = vktest.Device(t)
	m, err := Load(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestGreedyMatchesLlamaCpp generates from the real test models and
// compares with the ids llama.cpp produced.
func TestGreedyMatchesLlamaCpp(t *testing.T) {
	for _, name := range []string{"stories260K.gguf", "llama-2-tiny-random.gguf"} {
		for _, chunk := range []int{512, 3} {
			t.Run(name, func(t *testing.T) {
				ref := loadReference(t, name)
				m := loadModel(t, filepath.Join(modelsDir(t), name), Options{CtxSize: 512, Chunk: chunk})
				ids := m.Tokenizer.Encode(ref.Prompt, true)
				if !equalIDs(ids, ref.PromptIDs) {
					t.Fatalf("prompt ids %v, want %v", ids, ref.PromptIDs)
				}
				se, err := m.NewSession()
				if err != nil {
					t.Fatal(err)
				}
				defer se.Close()
				var got []int32
				_, err = se.Generate(context.Background(), ids, GenerateParams{MaxTokens: len(ref.Greedy)}, func(id int32) bool {
					got = append(got, id)
					return true
				})
				if err != nil {
					t.Fatal(err)
				}
				if !equalIDs(got, ref.Greedy) {
					t.Fatalf("chunk %d: greedy ids\n got %v\nwant %v", chunk, got, ref.Greedy)
				}
			})
		}
	}
}

// TestLogitsMatchReference compares every position's logits with the
// float64 reference forward pass.
func TestLogitsMatchReference(t *testing.T) {
	path := filepath.Join(modelsDir(t), "stories260K.gguf")
	ref := loadRef(t, path)
	m := loadModel(t, path, Options{CtxSize: 300, Chunk: 7, KVType: "f32"})
	se, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer se.Close()
	prompt := m.Tokenizer.Encode("One day, a little dog", true)
	for _, id := range prompt[:len(prompt)-1] {
		ref.forward(id)
	}
	want := ref.forward(prompt[len(prompt)-1])
	worst := 0.0
	check := func(pos int, logits []float32) {
		if pos > len(prompt) {
			id := se.Tokens()[pos-1]
			want = ref.forward(id)
		}
		scale := 0.0
		for _, w := range want {
			scale = max(scale, math.Abs(w))
		}
		for i, w := range want {
			if d := math.Abs(float64(logits[i])-w) / scale; d > worst {
				worst = d
			}
		}
	}
	_, err = se.Generate(context.Background(), prompt, GenerateParams{MaxTokens: 40, Logits: check}, func(int32) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("worst logit error relative to max |logit|: %.3g", worst)
	if worst > 1e-4 {
		t.Fatalf("logits differ from the float64 reference by %.3g of the largest logit", worst)
	}
	_ = sample.Params{}
}

func equalIDs(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
