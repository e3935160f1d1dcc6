package engine

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"headinfer/engine/gguf"
)

// TestSplitModelGenerates loads a model written as three files, as
// llama.cpp's gguf-split writes them, from its first part: it generates
// what the single file generates.
func TestSplitModelGenerates(t *testing.T) {
	path := filepath.Join(modelsDir(t), "stories260K.gguf")
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := gguf.WriteSplit(filepath.Join(t.TempDir(), "stories"), f.KV, f.AllTensorData(), 3)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	generate := func(path string) []int32 {
		m := loadModel(t, path, Options{CtxSize: 128})
		se, err := m.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer se.Close()
		var out []int32
		if _, err := se.Generate(context.Background(), m.Tokenizer.Encode("Once upon a time", true), GenerateParams{MaxTokens: 24},
			func(id int32) bool { out = append(out, id); return true }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	whole, split := generate(path), generate(parts[0])
	if !slices.Equal(whole, split) || len(whole) == 0 {
		t.Errorf("the split model generated %v, the single file %v", split, whole)
	}
}
