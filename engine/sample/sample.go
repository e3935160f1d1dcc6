package sample

import (
	"math"
	"math/rand/v2"
	"slices"
)

// pcgStream is the second PCG seed word: fixed, so that Params.Seed alone
// decides the sequence.
const pcgStream = 0x9E3779B97F4A7C15

// Sampler picks tokens from logits. It keeps its buffers between calls, so
// Sample does not allocate once it has seen the vocabulary size; it is not
// safe for concurrent use.
type Sampler struct {
	p      Params
	rng    *rand.Rand
	lg     []float32 // biased and penalized copy of the logits
	masked []float32 // the logits under a Constraint
	c      []cand    // candidates
	w      []float64 // weights of the final draw
	count  []uint32  // count[id]: occurrences of id in the penalized history
	pen    []int32   // the distinct ids of the penalized history
}

// cand is a token still in the running.
type cand struct {
	logit float32
	id    int32
}

// better orders candidates by logit, then by lower id, so that every choice
// (argmax, top-k cut, top-p order) is deterministic on ties.
func better(a, b cand) bool {
	return a.logit > b.logit || (a.logit == b.logit && a.id < b.id)
}

func byBetter(a, b cand) int {
	switch {
	case better(a, b):
		return -1
	case better(b, a):
		return 1
	}
	return 0
}

// New returns a Sampler for p. It does not validate p (see Params.Validate):
// settings out of range are treated as off, and a negative or NaN
// temperature as greedy.
func New(p Params) *Sampler {
	if !(p.Temperature > 0) || math.IsInf(float64(p.Temperature), 1) {
		p.Temperature = 0
	}
	p.TopK = max(p.TopK, 0)
	if !(p.TopP > 0 && p.TopP < 1) {
		p.TopP = 0
	}
	if !(p.MinP > 0) {
		p.MinP = 0
	}
	p.MinP = min(p.MinP, 1)
	if !(p.RepeatPenalty > 0) || math.IsInf(float64(p.RepeatPenalty), 1) {
		p.RepeatPenalty = 0
	}
	for _, x := range []*float32{&p.PresencePenalty, &p.FrequencyPenalty} {
		if math.IsNaN(float64(*x)) || math.IsInf(float64(*x), 0) {
			*x = 0
		}
	}
	if p.RepeatLastN < -1 {
		p.RepeatLastN = 0
	}
	return &Sampler{p: p, rng: rand.New(rand.NewPCG(p.Seed, pcgStream))}
}

// Sample returns the next token id for logits (one per vocabulary entry),
// given the tokens so far (history, oldest first) for the repetition
// penalty. The logit bias comes first, then the penalty, as in llama.cpp's
// chain. NaN logits count as -Inf. It returns -1 for empty logits.
func (s *Sampler) Sample(logits []float32, history []int32) int32 {
	if len(logits) == 0 {
		return -1
	}
	lg := logits
	if s.p.penalizes() || len(s.p.LogitBias) > 0 {
		s.lg = append(s.lg[:0], logits...)
		for id, b := range s.p.LogitBias {
			if id >= 0 && int(id) < len(s.lg) {
				s.lg[id] += b
			}
		}
		if s.p.penalizes() {
			s.penalize(s.lg, history)
		}
		lg = s.lg
	}
	if s.p.Temperature == 0 || s.p.TopK == 1 {
		return argmax(lg)
	}
	return s.draw(s.filter(lg))
}

// argmax returns the index of the largest value, the lowest on ties,
// ignoring NaN (0 if all are NaN).
func argmax(x []float32) int32 {
	best := -1
	for i, v := range x {
		if v != v {
			continue
		}
		if best < 0 || v > x[best] {
			best = i
		}
	}
	return int32(max(best, 0))
}

// penalize applies the penalties to each distinct token among the last
// RepeatLastN of history, as llama.cpp's penalties sampler does: the
// repetition penalty once (divide a positive logit, multiply a negative
// one), then count × FrequencyPenalty + PresencePenalty subtracted.
func (s *Sampler) penalize(lg []float32, history []int32) {
	n := s.p.RepeatLastN
	if n == 0 {
		n = DefaultRepeatLastN
	}
	if n < 0 || n > len(history) {
		n = len(history)
	}
	if len(s.count) < len(lg) {
		s.count = make([]uint32, len(lg))
	}
	s.pen = s.pen[:0]
	for _, id := range history[len(history)-n:] {
		if id < 0 || int(id) >= len(lg) {
			continue
		}
		if s.count[id] == 0 {
			s.pen = append(s.pen, id)
		}
		s.count[id]++
	}
	rep := s.p.RepeatPenalty
	for _, id := range s.pen {
		if rep != 0 && rep != 1 {
			if lg[id] > 0 {
				lg[id] /= rep
			} else {
				lg[id] *= rep
			}
		}
		lg[id] -= float32(s.count[id])*s.p.FrequencyPenalty + s.p.PresencePenalty
		s.count[id] = 0 // ready for the next call
	}
}

// filter returns the candidates that survive top-k, top-p and min-p.
func (s *Sampler) filter(lg []float32) []cand {
	c := s.c[:0]
	for i, v := range lg {
		if v != v {
			v = float32(math.Inf(-1))
		}
		c = append(c, cand{v, int32(i)})
	}
	s.c = c[:0]
	sorted := false
	if k := s.p.TopK; k > 0 && k < len(c) {
		c = topK(c, k)
		sorted = true
	}
	if s.p.TopP > 0 {
		c = s.topP(c, sorted)
	}
	if s.p.MinP > 0 {
		c = minP(c, sorted, float64(s.p.MinP))
	}
	return c
}

// topK moves the k best candidates to the front, best first, and returns
// them. A heap of the k best so far costs O(n log k), far less than sorting
// a 128k vocabulary when k is small.
func topK(c []cand, k int) []cand {
	h := c[:k]
	for i := k/2 - 1; i >= 0; i-- {
		siftWorst(h, i)
	}
	for _, x := range c[k:] {
		if better(x, h[0]) {
			h[0] = x
			siftWorst(h, 0)
		}
	}
	slices.SortFunc(h, byBetter)
	return h
}

// siftWorst restores a heap whose root is its worst element.
func siftWorst(h []cand, i int) {
	for {
		w := i
		if l := 2*i + 1; l < len(h) && better(h[w], h[l]) {
			w = l
		}
		if r := 2*i + 2; r < len(h) && better(h[w], h[r]) {
			w = r
		}
		if w == i {
			return
		}
		h[i], h[w] = h[w], h[i]
		i = w
	}
}

// topP keeps the most likely candidates until their probability adds up to
// at least TopP, the one that crosses included. Unsorted input is not
// sorted: a quickselect on the running mass finds the same set in O(n),
// which matters when TopP keeps thousands of a 128k vocabulary.
func (s *Sampler) topP(c []cand, sorted bool) []cand {
	top := maxLogit(c)
	if math.IsInf(top, 0) {
		return c // infinite logits: the draw handles them
	}
	w := s.w[:0]
	var sum float64
	for _, x := range c {
		e := math.Exp(float64(x.logit) - top)
		w = append(w, e)
		sum += e
	}
	s.w = w[:0]
	need := float64(s.p.TopP) * sum
	if sorted {
		var cum float64
		for i, e := range w {
			if cum += e; cum >= need {
				return c[:i+1]
			}
		}
		return c
	}
	// Invariant: c[:lo] is kept, c[hi:] is dropped, and need is the mass
	// still to collect from c[lo:hi].
	lo, hi := 0, len(c)
	for hi-lo > 16 {
		m := partition(c, w, lo, hi)
		var left float64
		for _, e := range w[lo:m] {
			left += e
		}
		switch {
		case left >= need:
			hi = m
		case left+w[m] >= need:
			return c[:m+1]
		default:
			need -= left + w[m]
			lo = m + 1
		}
	}
	insertionSort(c[lo:hi], w[lo:hi])
	for i := lo; i < hi; i++ {
		if need -= w[i]; need <= 0 {
			return c[:i+1]
		}
	}
	return c[:hi]
}

// partition moves the candidates of c[lo:hi] better than a pivot before it
// and the rest after, keeping w in step, and returns the pivot's index.
func partition(c []cand, w []float64, lo, hi int) int {
	swap := func(i, j int) {
		c[i], c[j] = c[j], c[i]
		w[i], w[j] = w[j], w[i]
	}
	// Median of three, moved to hi-1, guards against sorted input.
	mid, last := lo+(hi-lo)/2, hi-1
	if better(c[mid], c[lo]) {
		swap(mid, lo)
	}
	if better(c[last], c[lo]) {
		swap(last, lo)
	}
	if better(c[mid], c[last]) {
		swap(mid, last)
	}
	pivot := c[last]
	m := lo
	for i := lo; i < last; i++ {
		if better(c[i], pivot) {
			swap(i, m)
			m++
		}
	}
	swap(m, last)
	return m
}

// insertionSort sorts a short c best first, keeping w in step.
func insertionSort(c []cand, w []float64) {
	for i := 1; i < len(c); i++ {
		for j := i; j > 0 && better(c[j], c[j-1]); j-- {
			c[j], c[j-1] = c[j-1], c[j]
			w[j], w[j-1] = w[j-1], w[j]
		}
	}
}

// minP keeps candidates at least MinP times as likely as the best, that is
// with logit ≥ best + ln(MinP).
func minP(c []cand, sorted bool, p float64) []cand {
	cut := maxLogit(c) + math.Log(p)
	if sorted {
		for i, x := range c {
			if float64(x.logit) < cut {
				return c[:i]
			}
		}
		return c
	}
	j := 0
	for _, x := range c {
		if float64(x.logit) >= cut {
			c[j] = x
			j++
		}
	}
	return c[:j]
}

func maxLogit(c []cand) float64 {
	m := float32(math.Inf(-1))
	for _, x := range c {
		m = max(m, x.logit)
	}
	return float64(m)
}

// draw divides the logits by the temperature and draws one candidate in
// proportion to exp(logit/T).
func (s *Sampler) draw(c []cand) int32 {
	top := maxLogit(c)
	if math.IsInf(top, 0) {
		// All -Inf (nothing is possible) or some +Inf (certain): take the best.
		best := c[0]
		for _, x := range c[1:] {
			if better(x, best) {
				best = x
			}
		}
		return best.id
	}
	t := float64(s.p.Temperature)
	w := s.w[:0]
	var sum float64
	for _, x := range c {
		e := math.Exp((float64(x.logit) - top) / t)
		w = append(w, e)
		sum += e
	}
	s.w = w[:0]
	u := s.rng.Float64() * sum
	last := 0
	for i, e := range w {
		if e == 0 {
			continue
		}
		last = i
		if u -= e; u < 0 {
			return c[i].id
		}
	}
	return c[last].id // rounding left u ≥ 0 after the last weight
}
