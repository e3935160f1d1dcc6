package grammar

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// Mask benchmarks over the Llama-2 vocabulary (32000 tokens) with the
// generic JSON grammar, in three states of an object:
//
//   - Key: after `, ` where a key must start (few tokens allowed);
//   - String: inside a string value (almost every token allowed: the
//     walk visits nearly the whole trie);
//   - Number: inside a number.
//
// and three conditions:
//
//   - Cold: a fresh Matcher, so every transition the walk takes is
//     computed; the first mask of a generation;
//   - Walk: the transitions are known but the mask is not kept, so the
//     trie is walked again: a state seen before whose mask was dropped;
//   - Cached: the state's mask is kept, as when a generation returns to a
//     state (every character inside a string).
//
// Each iteration is one Mask over a logits vector, as a decode step does.
type maskCondition int

const (
	cold maskCondition = iota
	walk
	cached
)

func benchmarkMask(b *testing.B, prefix string, cond maskCondition) {
	_, v := llamaVocab(b)
	benchmarkMaskOf(b, v, prefix, cond)
}

// wideVocab is a vocabulary of Qwen's size (151936 tokens) for the
// benchmarks: Llama-2's 32000 pieces and 119936 more, each two random
// pieces of it joined, as a larger BPE vocabulary's merges join shorter
// tokens. Built once.
var wide struct {
	once sync.Once
	v    *Vocab
}

func wideVocab(v *Vocab) *Vocab {
	wide.once.Do(func() { wide.v = widen(v) })
	return wide.v
}

func widen(v *Vocab) *Vocab {
	pieces := slices.Clone(v.pieces)
	var words []string
	for _, p := range pieces {
		if p != "" {
			words = append(words, p)
		}
	}
	r := rand.New(rand.NewPCG(3, 3))
	seen := map[string]bool{}
	for _, p := range pieces {
		seen[p] = true
	}
	for len(pieces) < 151936 {
		p := words[r.IntN(len(words))] + words[r.IntN(len(words))]
		if !seen[p] {
			seen[p] = true
			pieces = append(pieces, p)
		}
	}
	return NewVocab(pieces, v.eog)
}

func benchmarkMaskWide(b *testing.B, prefix string, cond maskCondition) {
	_, v := llamaVocab(b)
	benchmarkMaskOf(b, wideVocab(v), prefix, cond)
}

func benchmarkMaskOf(b *testing.B, v *Vocab, prefix string, cond maskCondition) {
	g := mustParse(b, JSON)
	start := NewMatcher(g, v)
	if err := start.AcceptString(prefix); err != nil {
		b.Fatal(err)
	}
	allowed := 0
	for _, ok := range start.Allowed() {
		if ok {
			allowed++
		}
	}
	r := rand.New(rand.NewPCG(1, 1))
	raw := make([]float32, v.Size())
	for i := range raw {
		raw[i] = float32(r.NormFloat64())
	}
	logits := make([]float32, v.Size())
	b.ReportMetric(float64(allowed), "allowed")
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		copy(logits, raw)
		m := start
		switch cond {
		case cold:
			m = NewMatcher(g, v)
			_ = m.AcceptString(prefix)
			clear(m.masks)
		case walk:
			clear(m.masks)
		}
		b.StartTimer()
		if err := m.Mask(logits); err != nil {
			b.Fatal(err)
		}
	}
}

const (
	keyPrefix    = `{"name": "Jo", "age": 42, `
	stringPrefix = `{"name": "Jo`
	numberPrefix = `{"name": "Jo", "age": 4`
)

func BenchmarkMaskKeyCold(b *testing.B)      { benchmarkMask(b, keyPrefix, cold) }
func BenchmarkMaskKeyWalk(b *testing.B)      { benchmarkMask(b, keyPrefix, walk) }
func BenchmarkMaskStringCold(b *testing.B)   { benchmarkMask(b, stringPrefix, cold) }
func BenchmarkMaskStringWalk(b *testing.B)   { benchmarkMask(b, stringPrefix, walk) }
func BenchmarkMaskStringCached(b *testing.B) { benchmarkMask(b, stringPrefix, cached) }
func BenchmarkMaskNumberWalk(b *testing.B)   { benchmarkMask(b, numberPrefix, walk) }

// The same over a 152K vocabulary (wideVocab).
func BenchmarkMaskWideKeyCold(b *testing.B)    { benchmarkMaskWide(b, keyPrefix, cold) }
func BenchmarkMaskWideStringCold(b *testing.B) { benchmarkMaskWide(b, stringPrefix, cold) }
func BenchmarkMaskWideStringWalk(b *testing.B) { benchmarkMaskWide(b, stringPrefix, walk) }
func BenchmarkMaskWideNumberWalk(b *testing.B) { benchmarkMaskWide(b, numberPrefix, walk) }
