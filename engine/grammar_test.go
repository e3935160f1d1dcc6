package engine

import (
	"context"
	"math"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"headinfer/engine/grammar"
	"headinfer/engine/sample"
)

// generateText runs one generation on se and returns its text.
func generateText(t *testing.T, m *Model, se *Session, prompt []int32, p GenerateParams) (string, FinishReason) {
	t.Helper()
	var ids []int32
	fin, err := se.Generate(context.Background(), prompt, p, func(id int32) bool {
		ids = append(ids, id)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return m.Tokenizer.Decode(ids), fin
}

// TestGrammarGreedy: under a grammar, greedy decoding takes the best
// allowed token on the host (not the device's argmax of every token),
// ends when the grammar is complete, and Sampled still sees raw logits.
func TestGrammarGreedy(t *testing.T) {
	m := loadModel(t, filepath.Join(modelsDir(t), "stories260K.gguf"), Options{CtxSize: 256})
	v := grammar.VocabOf(m.Tokenizer)
	g, err := grammar.Parse(`root ::= ("yes" | "no") ", " [0-9]{2} " cats"`)
	if err != nil {
		t.Fatal(err)
	}
	se, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer se.Close()
	prompt := m.Tokenizer.Encode("Once upon a time", true)
	free, _ := generateText(t, m, se, prompt, GenerateParams{MaxTokens: 20})
	if g.Match(free) {
		t.Fatalf("the unconstrained text %q already matches: the test shows nothing", free)
	}
	masked := 0
	p := GenerateParams{MaxTokens: 40, Constraint: grammar.NewMatcher(g, v),
		Sampled: func(_ int32, logits []float32) {
			for _, l := range logits {
				if math.IsInf(float64(l), -1) {
					masked++
				}
			}
		}}
	text, fin := generateText(t, m, se, prompt, p)
	if !g.Match(text) || fin != FinishStop {
		t.Fatalf("greedy under the grammar: %q (%s)", text, fin)
	}
	if masked > 0 {
		t.Errorf("Sampled saw %d masked logits: it should get the raw ones", masked)
	}
	// Greedy is deterministic: the same text again.
	p.Constraint, p.Sampled = grammar.NewMatcher(g, v), nil
	if again, _ := generateText(t, m, se, prompt, p); again != text {
		t.Errorf("greedy again: %q, first %q", again, text)
	}
}

// TestGrammarBatch runs sequences with different grammars in the same
// decode steps: each mask is its own sequence's.
func TestGrammarBatch(t *testing.T) {
	m := loadModel(t, filepath.Join(modelsDir(t), "stories260K.gguf"), Options{CtxSize: 256, Parallel: 3})
	v := grammar.VocabOf(m.Tokenizer)
	b, err := m.NewBatch(3)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var widest atomic.Int32 // the most sequences of one decode step
	b.OnStep = func(n int, _ time.Duration) {
		if int32(n) > widest.Load() {
			widest.Store(int32(n))
		}
	}
	sources := []string{
		`root ::= "[" [0-9] ("," [0-9]){3,6} "]"`,
		`root ::= [a-z]+ (" " [a-z]+){4,8} "."`,
		`root ::= ("yes" | "no"){2,5}`,
	}
	var wg sync.WaitGroup
	stops := make([]atomic.Int32, len(sources))
	for i, src := range sources {
		g, err := grammar.Parse(src)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seed := range uint64(3) {
				var ids []int32
				req := Request{Prompt: m.Tokenizer.Encode("The little dog", true), Params: GenerateParams{
					MaxTokens: 60, Sampling: sample.Params{Temperature: 1, Seed: seed + 1}, Constraint: grammar.NewMatcher(g, v)}}
				res, err := b.Generate(context.Background(), req, func(id int32) bool {
					ids = append(ids, id)
					return true
				})
				if err != nil {
					t.Error(err)
					return
				}
				text := m.Tokenizer.Decode(ids)
				t.Logf("grammar %d seed %d: %q (%s)", i, seed, text, res.Finish)
				if res.Finish == FinishStop {
					stops[i].Add(1)
				}
				if res.Finish == FinishStop && !g.Match(text) {
					t.Errorf("grammar %d seed %d: %q does not match %s", i, seed, text, src)
				}
				if res.Finish == FinishLength && !grammarPrefix(g, v, text) {
					t.Errorf("grammar %d seed %d: cut-off %q is no prefix of %s", i, seed, text, src)
				}
			}
		}()
	}
	wg.Wait()
	if widest.Load() < 2 {
		t.Errorf("no decode step ran two constrained sequences together (widest %d)", widest.Load())
	}
	for i := range stops {
		if stops[i].Load() == 0 {
			t.Errorf("grammar %d never completed: the test checked no whole sentence", i)
		}
	}
}

// grammarPrefix reports whether text can begin a sentence of g.
func grammarPrefix(g *grammar.Grammar, v *grammar.Vocab, text string) bool {
	return grammar.NewMatcher(g, v).AcceptString(text) == nil
}
