package server

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// TestStopperAnySplit feeds texts cut into random pieces and checks that
// the output is exactly the text before the first stop string, and that
// no piece sent before the stop contains the start of a stop string that
// later completes.
func TestStopperAnySplit(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := "ab\n<|>é"
	for iter := 0; iter < 3000; iter++ {
		text := randText(rng, alphabet, rng.IntN(40))
		var stops []string
		for range 1 + rng.IntN(3) {
			stops = append(stops, randText(rng, alphabet, 1+rng.IntN(4)))
		}
		want, wantStop := text, false
		cut := -1
		for _, s := range stops {
			if i := strings.Index(text, s); i >= 0 && (cut < 0 || i < cut) {
				cut = i
			}
		}
		if cut >= 0 {
			want, wantStop = text[:cut], true
		}

		st := &stopper{stops: stops}
		var got strings.Builder
		stopped := false
		rest := text
		for len(rest) > 0 && !stopped {
			n := min(len(rest), 1+rng.IntN(5))
			var out string
			out, stopped = st.add(rest[:n])
			got.WriteString(out)
			if !strings.HasPrefix(want, got.String()) {
				t.Fatalf("text %q stops %q: sent %q, which is not a prefix of %q", text, stops, got.String(), want)
			}
			rest = rest[n:]
		}
		if !stopped {
			got.WriteString(st.flush())
		}
		if got.String() != want || stopped != wantStop {
			t.Fatalf("text %q stops %q: got %q (stopped %v), want %q (%v)", text, stops, got.String(), stopped, want, wantStop)
		}
	}
}

// TestStopperHoldsBack checks that text that may begin a stop string is
// held back until it is known not to.
func TestStopperHoldsBack(t *testing.T) {
	st := &stopper{stops: []string{"</end>"}}
	steps := []struct{ in, out string }{
		{"Hello <", "Hello "},
		{"/en", ""},
		{"x", "</enx"},
		{" and </", " and "},
	}
	for _, s := range steps {
		out, stopped := st.add(s.in)
		if out != s.out || stopped {
			t.Fatalf("add(%q) = %q, %v; want %q, false", s.in, out, stopped, s.out)
		}
	}
	out, stopped := st.add("end> tail")
	if out != "" || !stopped {
		t.Fatalf("add completing the stop string = %q, %v; want \"\", true", out, stopped)
	}
}

func randText(rng *rand.Rand, alphabet string, n int) string {
	runes := []rune(alphabet)
	var b strings.Builder
	for range n {
		b.WriteRune(runes[rng.IntN(len(runes))])
	}
	return b.String()
}
