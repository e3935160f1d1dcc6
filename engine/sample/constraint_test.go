package sample

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// allowSet is a Constraint that allows a fixed set of tokens and records
// what it accepted.
type allowSet struct {
	allow    map[int32]bool
	accepted []int32
	fail     error
}

func (a *allowSet) Mask(logits []float32) error {
	if a.fail != nil {
		return a.fail
	}
	for i := range logits {
		if !a.allow[int32(i)] {
			logits[i] = float32(math.Inf(-1))
		}
	}
	return nil
}

func (a *allowSet) Accept(id int32) error {
	if !a.allow[id] {
		return errors.New("not allowed")
	}
	a.accepted = append(a.accepted, id)
	return nil
}

func TestSampleConstrained(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	logits := randLogits(r, 1000)
	raw := slices.Clone(logits)
	c := &allowSet{allow: map[int32]bool{7: true, 500: true, 999: true}}
	best := int32(7)
	for id := range c.allow {
		if logits[id] > logits[best] {
			best = id
		}
	}
	// Greedy: the best allowed token, not the argmax of the raw logits.
	id, err := New(Params{}).SampleConstrained(logits, nil, c)
	if err != nil || id != best {
		t.Fatalf("greedy = %d, %v; want %d", id, err, best)
	}
	s := New(Params{Temperature: 1.5, Seed: 9})
	seen := map[int32]int{}
	for range 3000 {
		id, err := s.SampleConstrained(logits, nil, c)
		if err != nil {
			t.Fatal(err)
		}
		seen[id]++
	}
	for id := range seen {
		if !c.allow[id] {
			t.Fatalf("drew %d, which the constraint forbids", id)
		}
	}
	if len(seen) != 3 {
		t.Errorf("drew %v: at temperature 1.5 every allowed token should come up", seen)
	}
	if len(c.accepted) != 3001 {
		t.Errorf("the constraint accepted %d tokens, want 3001", len(c.accepted))
	}
	if !slices.Equal(logits, raw) {
		t.Error("the caller's logits changed")
	}
	c.fail = errors.New("nothing allowed")
	if _, err := s.SampleConstrained(logits, nil, c); !errors.Is(err, c.fail) {
		t.Errorf("Mask's error = %v, want it passed on", err)
	}
}
