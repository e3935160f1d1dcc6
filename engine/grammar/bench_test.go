package grammar

import (
	"math/rand/v2"
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
