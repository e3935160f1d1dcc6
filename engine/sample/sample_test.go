package sample

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestGreedy(t *testing.T) {
	s := New(Params{})
	nan := float32(math.NaN())
	cases := []struct {
		logits []float32
		want   int32
	}{
		{[]float32{0.1, 3, -2, 2.9}, 1},
		{[]float32{1, 5, 5, 2}, 1}, // ties → lowest id
		{[]float32{nan, -1, nan, -0.5}, 3},
		{[]float32{-5}, 0},
		{[]float32{float32(math.Inf(-1)), float32(math.Inf(-1))}, 0},
	}
	for _, c := range cases {
		if got := s.Sample(c.logits, nil); got != c.want {
			t.Errorf("Sample(%v) = %d, want %d", c.logits, got, c.want)
		}
	}
	if got := s.Sample(nil, nil); got != -1 {
		t.Errorf("Sample(nil) = %d, want -1", got)
	}
	// top-k 1 is greedy whatever the temperature.
	r := rand.New(rand.NewPCG(1, 1))
	lg := randLogits(r, 1000)
	k1 := New(Params{Temperature: 1.5, TopK: 1, Seed: 5})
	for range 20 {
		if got, want := k1.Sample(lg, nil), argmaxRef(lg); got != want {
			t.Fatalf("top-k 1 gave %d, argmax is %d", got, want)
		}
	}
}

func argmaxRef(x []float32) int32 {
	b := 0
	for i := range x {
		if x[i] > x[b] {
			b = i
		}
	}
	return int32(b)
}

func randLogits(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64() * 3)
	}
	return x
}

// chiSquare compares counts with the expected probabilities.
func chiSquare(counts []int, probs []float64) float64 {
	total := 0
	for _, c := range counts {
		total += c
	}
	var chi float64
	for i, p := range probs {
		e := p * float64(total)
		chi += (float64(counts[i]) - e) * (float64(counts[i]) - e) / e
	}
	return chi
}

func softmax(x []float64, temp float64) []float64 {
	p := make([]float64, len(x))
	var sum float64
	for i, v := range x {
		p[i] = math.Exp(v / temp)
		sum += p[i]
	}
	for i := range p {
		p[i] /= sum
	}
	return p
}

func TestTemperatureDistribution(t *testing.T) {
	logits := []float32{1, 0.5, 0, -1}
	l64 := []float64{1, 0.5, 0, -1}
	const draws = 20000
	for _, temp := range []float32{0.5, 1, 2} {
		s := New(Params{Temperature: temp, Seed: 42})
		counts := make([]int, len(logits))
		for range draws {
			counts[s.Sample(logits, nil)]++
		}
		// 3 degrees of freedom: P(χ² > 30) < 1e-5 for a correct sampler.
		if chi := chiSquare(counts, softmax(l64, float64(temp))); chi > 30 {
			t.Errorf("T=%v: counts %v, χ² = %.1f against softmax(l/T)", temp, counts, chi)
		}
		// The same counts must be far from the distribution at T=1 (or, for
		// T=1, at T=2), so an ignored temperature fails.
		other := 1.0
		if temp == 1 {
			other = 2
		}
		if chi := chiSquare(counts, softmax(l64, other)); chi < 200 {
			t.Errorf("T=%v: counts %v fit T=%v too well (χ² = %.1f)", temp, counts, other, chi)
		}
	}
}

func TestTopK(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	lg := randLogits(r, 1000)
	order := make([]int32, len(lg))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int { return cmp.Compare(lg[b], lg[a]) })
	top := order[:5]
	s := New(Params{Temperature: 20, TopK: 5, Seed: 3}) // hot: all five show up
	seen := map[int32]int{}
	for range 2000 {
		id := s.Sample(lg, nil)
		if !slices.Contains(top, id) {
			t.Fatalf("drew %d (logit %v), not among the top 5 %v", id, lg[id], top)
		}
		seen[id]++
	}
	if len(seen) != 5 {
		t.Errorf("drew %v, want all of the top 5", seen)
	}
}

// cutoffLogits are the logs of the probabilities 0.5, 0.3, 0.15, 0.05.
var cutoffLogits = []float32{float32(math.Log(0.5)), float32(math.Log(0.3)), float32(math.Log(0.15)), float32(math.Log(0.05))}

func TestTopPMinP(t *testing.T) {
	cases := []struct {
		p    Params
		keep []int32
	}{
		{Params{TopP: 0.45}, []int32{0}},
		{Params{TopP: 0.75}, []int32{0, 1}}, // 0.5 < 0.75 ≤ 0.8: the crossing token stays
		{Params{TopP: 0.85}, []int32{0, 1, 2}},
		{Params{TopP: 0.99}, []int32{0, 1, 2, 3}},
		{Params{MinP: 0.2}, []int32{0, 1, 2}}, // cut at 0.1
		{Params{MinP: 0.5}, []int32{0, 1}},    // cut at 0.25
		{Params{MinP: 0.9}, []int32{0}},
		{Params{TopP: 0.85, MinP: 0.5}, []int32{0, 1}},
		{Params{TopK: 3, TopP: 0.99}, []int32{0, 1, 2}},
	}
	for _, c := range cases {
		for _, shuffle := range []bool{false, true} {
			lg := slices.Clone(cutoffLogits)
			ids := []int32{0, 1, 2, 3}
			if shuffle { // the cut-offs must not depend on the order of ids
				slices.Reverse(lg)
				slices.Reverse(ids)
			}
			want := map[int32]bool{}
			for _, k := range c.keep {
				want[ids[k]] = true
			}
			p := c.p
			p.Temperature, p.Seed = 1, 9
			s := New(p)
			got := map[int32]int{}
			for range 3000 {
				got[s.Sample(lg, nil)]++
			}
			for id := range got {
				if !want[id] {
					t.Errorf("%+v: drew %d, want only %v", c.p, id, c.keep)
				}
			}
			if len(got) != len(want) {
				t.Errorf("%+v: drew %v, want every one of %v", c.p, got, c.keep)
			}
		}
	}
}

func TestPenalty(t *testing.T) {
	s := New(Params{RepeatPenalty: 2, RepeatLastN: 5})
	lg := []float32{2, -2, 1, 0.5, 3, 0}
	// The window is [1 99 1 -1 0]: token 4 is outside it; 1 appears twice
	// but is penalized once; 99 and -1 are not in the vocabulary.
	s.penalize(lg, []int32{4, 1, 99, 1, -1, 0})
	if want := []float32{1, -4, 1, 0.5, 3, 0}; !slices.Equal(lg, want) {
		t.Errorf("last 5: got %v, want %v", lg, want)
	}

	s = New(Params{RepeatPenalty: 2, RepeatLastN: -1})
	lg = []float32{2, -2, 1, 0.5, 3, 0}
	s.penalize(lg, []int32{4, 1, 1, 0})
	if want := []float32{1, -4, 1, 0.5, 1.5, 0}; !slices.Equal(lg, want) {
		t.Errorf("all: got %v, want %v", lg, want)
	}
	// A penalty below 1 favours repeats.
	s = New(Params{RepeatPenalty: 0.5})
	lg = []float32{2, -2}
	s.penalize(lg, []int32{0, 1})
	if want := []float32{4, -1}; !slices.Equal(lg, want) {
		t.Errorf("0.5: got %v, want %v", lg, want)
	}

	// Through Sample: greedy with a penalty moves off the repeated argmax,
	// and the default window is 64 tokens.
	s = New(Params{RepeatPenalty: 1.5})
	logits := []float32{3, 2.5, 1}
	if got := s.Sample(logits, []int32{0}); got != 1 {
		t.Errorf("penalized argmax: got %d, want 1", got)
	}
	hist := make([]int32, 65)
	hist[0] = 0
	for i := range hist[1:] {
		hist[i+1] = 2
	}
	if got := s.Sample(logits, hist); got != 0 {
		t.Errorf("token 0 is 65 tokens back, outside the default window: got %d, want 0", got)
	}
	if !slices.Equal(logits, []float32{3, 2.5, 1}) {
		t.Errorf("Sample changed the caller's logits: %v", logits)
	}
}

func TestSeedDeterminism(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	lg := randLogits(r, 500)
	p := Params{Temperature: 1.2, TopK: 100, TopP: 0.95, MinP: 0.01, RepeatPenalty: 1.1, Seed: 1234}
	run := func(p Params) []int32 {
		s := New(p)
		var out []int32
		for range 200 {
			out = append(out, s.Sample(lg, out))
		}
		return out
	}
	a, b := run(p), run(p)
	if !slices.Equal(a, b) {
		t.Errorf("same seed gave different sequences")
	}
	p.Seed++
	if slices.Equal(a, run(p)) {
		t.Errorf("different seeds gave the same 200 tokens")
	}
}

// refDistribution is the sampling chain written plainly in float64: sort
// everything, cut, then softmax at the temperature.
func refDistribution(logits []float32, history []int32, p Params) map[int32]float64 {
	lg := slices.Clone(logits)
	n := p.RepeatLastN
	if n == 0 {
		n = 64
	}
	if n < 0 || n > len(history) {
		n = len(history)
	}
	count := map[int32]int{}
	for _, id := range history[len(history)-n:] {
		if id >= 0 && int(id) < len(lg) {
			count[id]++
		}
	}
	for id, c := range count {
		if p.RepeatPenalty != 0 && p.RepeatPenalty != 1 {
			if lg[id] > 0 {
				lg[id] /= p.RepeatPenalty
			} else {
				lg[id] *= p.RepeatPenalty
			}
		}
		lg[id] -= float32(c)*p.FrequencyPenalty + p.PresencePenalty
	}
	ids := make([]int32, len(lg))
	for i := range ids {
		ids[i] = int32(i)
	}
	slices.SortStableFunc(ids, func(a, b int32) int { return cmp.Compare(lg[b], lg[a]) })
	if p.TopK > 0 && p.TopK < len(ids) {
		ids = ids[:p.TopK]
	}
	probs := func(ids []int32, temp float64) []float64 {
		x := make([]float64, len(ids))
		for i, id := range ids {
			x[i] = float64(lg[id]) - float64(lg[ids[0]])
		}
		return softmax(x, temp)
	}
	if p.TopP > 0 && p.TopP < 1 {
		var cum float64
		for i, q := range probs(ids, 1) {
			cum += q
			if cum >= float64(p.TopP) {
				ids = ids[:i+1]
				break
			}
		}
	}
	if p.MinP > 0 {
		q := probs(ids, 1)
		n := 0
		for n < len(ids) && q[n] >= float64(p.MinP)*q[0] {
			n++
		}
		ids = ids[:n]
	}
	out := map[int32]float64{}
	for i, q := range probs(ids, float64(p.Temperature)) {
		out[ids[i]] = q
	}
	return out
}

// distribution is what Sample draws from: the candidates after the chain
// and their probabilities.
func (s *Sampler) distribution(logits []float32, history []int32) map[int32]float64 {
	lg := slices.Clone(logits)
	if s.p.penalizes() {
		s.penalize(lg, history)
	}
	c := s.filter(lg)
	top := maxLogit(c)
	var sum float64
	w := make([]float64, len(c))
	for i, x := range c {
		w[i] = math.Exp((float64(x.logit) - top) / float64(s.p.Temperature))
		sum += w[i]
	}
	out := map[int32]float64{}
	for i, x := range c {
		out[x.id] = w[i] / sum
	}
	return out
}

func TestChainAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	for i := range 3000 {
		n := 1 + r.IntN(300)
		lg := randLogits(r, n)
		if i%3 == 0 { // many ties
			for j := range lg {
				lg[j] = float32(math.Round(float64(lg[j])))
			}
		}
		p := Params{
			Temperature:      []float32{0.3, 1, 2.5}[r.IntN(3)],
			TopK:             []int{0, 2, 7, 50, 1000}[r.IntN(5)],
			TopP:             []float32{0, 0.3, 0.9, 0.97, 1}[r.IntN(5)],
			MinP:             []float32{0, 0.02, 0.3, 1}[r.IntN(4)],
			RepeatPenalty:    []float32{1, 1.3, 0.7}[r.IntN(3)],
			PresencePenalty:  []float32{0, 0.5, -0.4, 2}[r.IntN(4)],
			FrequencyPenalty: []float32{0, 0.3, -1, 1.7}[r.IntN(4)],
			RepeatLastN:      []int{0, -1, 3}[r.IntN(3)],
		}
		hist := make([]int32, r.IntN(100))
		for j := range hist {
			hist[j] = int32(r.IntN(n+10)) - 5
		}
		want := refDistribution(lg, hist, p)
		got := New(p).distribution(lg, hist)
		if len(got) != len(want) {
			t.Fatalf("case %d %+v (n=%d): kept %d tokens, reference keeps %d", i, p, n, len(got), len(want))
		}
		for id, q := range want {
			if g, ok := got[id]; !ok || math.Abs(g-q) > 1e-9+1e-6*q {
				t.Fatalf("case %d %+v: p(%d) = %v, reference %v", i, p, id, g, q)
			}
		}
	}
}

func TestNoAllocs(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	lg := randLogits(r, 32000)
	hist := []int32{1, 2, 3, 500, 31999}
	for _, p := range []Params{
		{},
		Defaults(),
		{Temperature: 1, TopP: 0.9, RepeatPenalty: 1.1},
		{Temperature: 0.7, MinP: 0.05},
	} {
		s := New(p)
		s.Sample(lg, hist)
		if a := testing.AllocsPerRun(5, func() { s.Sample(lg, hist) }); a != 0 {
			t.Errorf("%+v: %v allocations per Sample", p, a)
		}
	}
}

func TestParams(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Errorf("Defaults: %v", err)
	}
	if err := (Params{}).Validate(); err != nil {
		t.Errorf("zero Params: %v", err)
	}
	nan := float32(math.NaN())
	bad := []Params{
		{Temperature: -0.1}, {Temperature: nan}, {Temperature: float32(math.Inf(1))},
		{TopK: -1},
		{TopP: -0.1}, {TopP: 1.01}, {TopP: nan},
		{MinP: -0.1}, {MinP: 1.5},
		{RepeatPenalty: -1}, {RepeatPenalty: nan},
		{RepeatLastN: -2},
		{LogitBias: map[int32]float32{-1: 1}}, {LogitBias: map[int32]float32{3: nan}},
	}
	for _, p := range bad {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v: Validate accepted it", p)
		}
		New(p).Sample([]float32{1, 2, 3}, []int32{0, 1}) // must not panic
	}
	greedy := map[string]struct {
		p    Params
		want bool
	}{
		"zero":             {Params{}, true},
		"top-k 1":          {Params{Temperature: 1, TopK: 1}, true},
		"penalty 1":        {Params{RepeatPenalty: 1}, true},
		"temperature":      {Params{Temperature: 0.1}, false},
		"penalty":          {Params{RepeatPenalty: 1.1}, false},
		"defaults":         {Defaults(), false},
		"top-k 1, penalty": {Params{TopK: 1, Temperature: 1, RepeatPenalty: 1.2}, false},
		"logit bias":       {Params{LogitBias: map[int32]float32{0: 1}}, false},
	}
	for name, c := range greedy {
		if got := c.p.Greedy(); got != c.want {
			t.Errorf("%s: Greedy() = %v, want %v", name, got, c.want)
		}
	}
}

// TestLogitBias checks that a bias moves the argmax, that -100 bans a
// token from a draw, that ids outside the logits are ignored and that the
// caller's logits are left alone.
func TestLogitBias(t *testing.T) {
	lg := []float32{1, 3, 2, 0.5}
	orig := slices.Clone(lg)
	for _, c := range []struct {
		bias map[int32]float32
		want int32
	}{
		{map[int32]float32{2: 1.5}, 2},
		{map[int32]float32{1: -100}, 2},
		{map[int32]float32{3: 100, 99: 1000, 4: 1000}, 3},
	} {
		if got := New(Params{LogitBias: c.bias}).Sample(lg, nil); got != c.want {
			t.Errorf("bias %v: greedy gave %d, want %d", c.bias, got, c.want)
		}
	}
	s := New(Params{Temperature: 1, Seed: 3, LogitBias: map[int32]float32{1: -100, 2: -100}})
	for range 200 {
		if id := s.Sample(lg, nil); id == 1 || id == 2 {
			t.Fatalf("drew token %d, banned by a bias of -100", id)
		}
	}
	if !slices.Equal(lg, orig) {
		t.Errorf("the bias changed the caller's logits: %v", lg)
	}
}

func BenchmarkSample(b *testing.B) {
	for _, n := range []int{32000, 128256} {
		r := rand.New(rand.NewPCG(uint64(n), 1))
		lg := randLogits(r, n)
		hist := make([]int32, 64)
		for i := range hist {
			hist[i] = int32(r.IntN(n))
		}
		for _, c := range []struct {
			name string
			p    Params
		}{
			{"greedy", Params{}},
			{"defaults", Defaults()},
			{"topp", Params{Temperature: 1, TopP: 0.95}},
			{"full", Params{Temperature: 1}},
		} {
			b.Run(fmt.Sprintf("vocab=%d/%s", n, c.name), func(b *testing.B) {
				s := New(c.p)
				b.ReportAllocs()
				for b.Loop() {
					s.Sample(lg, hist)
				}
			})
		}
	}
}
