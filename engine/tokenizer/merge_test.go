package tokenizer

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestCandidateHeap checks the queue against sorting: pushes and pops in
// any interleaving come out in (prio, left) order.
func TestCandidateHeap(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for range 200 {
		var h candidateHeap
		var pending []candidate
		for range r.IntN(300) {
			if r.IntN(3) > 0 || len(h) == 0 {
				c := candidate{prio: uint32(r.IntN(20)), left: int32(r.IntN(50))}
				h.push(c)
				pending = append(pending, c)
				continue
			}
			slices.SortFunc(pending, func(a, b candidate) int {
				return cmp.Or(cmp.Compare(a.prio, b.prio), cmp.Compare(a.left, b.left))
			})
			got := h.pop()
			if got.prio != pending[0].prio || got.left != pending[0].left {
				t.Fatalf("pop = %+v, want %+v", got, pending[0])
			}
			pending = pending[1:]
		}
	}
}

// TestScorePrio checks that priorities order as the scores do, reversed:
// higher scores merge first.
func TestScorePrio(t *testing.T) {
	scores := []float32{float32(math.Inf(-1)), -1e30, -2.5, -1, -1e-30, 0, 1e-30, 0.5, 1, 3e20, float32(math.Inf(1))}
	for i := 1; i < len(scores); i++ {
		if scorePrio(scores[i]) >= scorePrio(scores[i-1]) {
			t.Errorf("score %g does not merge before %g", scores[i], scores[i-1])
		}
	}
	if scorePrio(float32(math.Copysign(0, -1))) != scorePrio(0) {
		t.Errorf("-0 and 0 do not tie")
	}
}
