package grammar

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"headinfer/engine/gguf"
	"headinfer/engine/tokenizer"
)

// modelPath finds shared/models/name above the working directory (the
// checkout is ROOT/main with ROOT/shared, or a worktree beside it).
func modelPath(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		p := filepath.Join(dir, "shared", "models", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("shared/models/%s not found above the working directory", name)
		}
		dir = parent
	}
}

var llama = struct {
	once sync.Once
	tok  tokenizer.Tokenizer
	v    *Vocab
	err  error
}{}

// llamaVocab is the real Llama-2 vocabulary (32000 SentencePiece tokens
// with byte fallback), read once.
func llamaVocab(t testing.TB) (tokenizer.Tokenizer, *Vocab) {
	t.Helper()
	path := modelPath(t, "llama-2-tiny-random.gguf")
	llama.once.Do(func() {
		f, err := gguf.Open(path)
		if err != nil {
			llama.err = err
			return
		}
		defer f.Close()
		llama.tok, llama.err = tokenizer.FromGGUF(f)
		if llama.err == nil {
			llama.v = VocabOf(llama.tok)
		}
	})
	if llama.err != nil {
		t.Fatal(llama.err)
	}
	return llama.tok, llama.v
}

func mustParse(t testing.TB, src string) *Grammar {
	t.Helper()
	g, err := Parse(src)
	if err != nil {
		t.Fatalf("Parse(%q): %v", src, err)
	}
	return g
}
