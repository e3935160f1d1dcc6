package server

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"headinfer/engine"
	"headinfer/engine/tokenizer"
)

// refLogSoftmax is the reference the server's logprobs are checked
// against: the whole log-softmax in float64, computed the plain way
// (log of the normalized exponentials), and the ids sorted by it, most
// likely first, ties by the lower id.
func refLogSoftmax(logits []float32) (lp []float64, order []int32) {
	lp = make([]float64, len(logits))
	var sum float64
	for _, v := range logits {
		if !math.IsNaN(float64(v)) {
			sum += math.Exp(float64(v))
		}
	}
	for i, v := range logits {
		lp[i] = math.Log(math.Exp(float64(v)) / sum)
		if math.IsNaN(float64(v)) || lp[i] < minLogprob {
			lp[i] = minLogprob
		}
	}
	order = make([]int32, len(logits))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortStableFunc(order, func(a, b int32) int {
		switch {
		case lp[a] > lp[b]:
			return -1
		case lp[a] < lp[b]:
			return 1
		}
		return 0
	})
	return lp, order
}

// randomLogits are logits of the size a small vocabulary has, in the
// range a model's take, with some ties, NaN and -Inf among them.
func randomLogits(rng *rand.Rand, n int) []float32 {
	lg := make([]float32, n)
	for i := range lg {
		lg[i] = float32(rng.NormFloat64() * 4)
	}
	for range 8 {
		lg[rng.IntN(n)] = lg[rng.IntN(n)] // ties
	}
	lg[rng.IntN(n)] = float32(math.NaN())
	lg[rng.IntN(n)] = float32(math.Inf(-1))
	return lg
}

func TestLogSoftmaxStep(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := range 200 {
		lg := randomLogits(rng, 300+rng.IntN(200))
		if trial%10 == 0 {
			// Large logits: exp overflows without the max subtracted.
			for i := range lg {
				lg[i] += 1000
			}
		}
		n := rng.IntN(maxTopLogprobs + 1)
		id := int32(rng.IntN(len(lg)))
		got := logSoftmaxStep(lg, id, n)
		// The plain reference overflows at +1000: shift its input (exact
		// in float64) to compare.
		shifted := make([]float32, len(lg))
		for i, v := range lg {
			shifted[i] = v
			if trial%10 == 0 {
				shifted[i] = v - 1000
			}
		}
		lp, order := refLogSoftmax(shifted)
		if got.chosen.id != id || math.Abs(got.chosen.logprob-lp[id]) > 1e-9 {
			t.Fatalf("trial %d: chosen %+v, want id %d logprob %v", trial, got.chosen, id, lp[id])
		}
		if len(got.top) != n {
			t.Fatalf("trial %d: %d alternatives, want %d", trial, len(got.top), n)
		}
		for k, tp := range got.top {
			if tp.id != order[k] || math.Abs(tp.logprob-lp[order[k]]) > 1e-9 {
				t.Fatalf("trial %d: alternative %d is %+v, want id %d logprob %v", trial, k, tp, order[k], lp[order[k]])
			}
		}
	}
}

// TestLogSoftmaxStepRuledOut checks that a token the logits rule out gets
// minLogprob, which JSON can write, not -Inf or NaN.
func TestLogSoftmaxStepRuledOut(t *testing.T) {
	lg := []float32{0, float32(math.Inf(-1)), float32(math.NaN()), -1e30}
	for id := int32(1); id < 4; id++ {
		if s := logSoftmaxStep(lg, id, 4); s.chosen.logprob != minLogprob {
			t.Errorf("id %d: logprob %v, want %v", id, s.chosen.logprob, minLogprob)
		}
	}
	s := logSoftmaxStep(lg, 0, 4)
	if s.chosen.logprob != 0 || s.top[0].id != 0 || s.top[1].id != 3 {
		t.Errorf("%+v", s)
	}
	for _, tp := range s.top {
		if math.IsInf(tp.logprob, 0) || math.IsNaN(tp.logprob) {
			t.Errorf("alternative %+v: JSON cannot write it", tp)
		}
	}
}

// scripted is a generation stand-in that does what generate and the
// engine do with a job's trace: it draws ids[i] from steps[i] (calling
// sampled as the engine does, only when logprobs are asked for), then an
// end-of-generation token that is never emitted, and emits each token's
// text as it comes.
func scripted(steps [][]float32, ids []int32) func(context.Context, *loaded, *job, func(string) error) (outcome, error) {
	return func(ctx context.Context, l *loaded, j *job, emit func(string) error) (outcome, error) {
		for i, id := range ids {
			if j.trace.logprobs() {
				j.trace.sampled(id, steps[i])
			}
			j.trace.token(id)
			if err := emit(l.tok.Piece(id)); err != nil {
				return outcome{completion: i + 1}, err
			}
		}
		if j.trace.logprobs() {
			j.trace.sampled(l.tok.EOS(), steps[len(ids)])
		}
		return outcome{finish: engine.FinishStop, completion: len(ids)}, nil
	}
}

// scriptFor makes the logits and ids of a scripted generation of n tokens
// on tok's vocabulary, drawing among the printable ASCII tokens so that
// the text is valid UTF-8 token by token.
func scriptFor(tok tokenizer.Tokenizer, n int) ([][]float32, []int32) {
	rng := rand.New(rand.NewPCG(5, 6))
	steps := make([][]float32, n+1)
	var ids []int32
	for i := range steps {
		steps[i] = randomLogits(rng, tok.VocabSize())
		if i < n {
			ids = append(ids, int32(tok.VocabSize()-1-rng.IntN(90)))
		}
	}
	return steps, ids
}

type chatLogprobsBody struct {
	Content []struct {
		Token       string
		Logprob     float64
		Bytes       []int
		TopLogprobs []struct {
			Token   string
			Logprob float64
			Bytes   []int
		} `json:"top_logprobs"`
	}
}

// checkChatLogprobs compares chat logprobs with the reference.
func checkChatLogprobs(t *testing.T, tok tokenizer.Tokenizer, got chatLogprobsBody, steps [][]float32, ids []int32, top int) {
	t.Helper()
	if len(got.Content) != len(ids) {
		t.Fatalf("%d logprobs entries for %d tokens", len(got.Content), len(ids))
	}
	for i, c := range got.Content {
		lp, order := refLogSoftmax(steps[i])
		piece := tok.Piece(ids[i])
		if c.Token != piece || !slices.Equal(c.Bytes, byteList(piece)) || math.Abs(c.Logprob-lp[ids[i]]) > 1e-9 {
			t.Fatalf("token %d: %+v, want %q logprob %v", i, c, piece, lp[ids[i]])
		}
		if len(c.TopLogprobs) != top {
			t.Fatalf("token %d: %d alternatives, want %d", i, len(c.TopLogprobs), top)
		}
		for k, a := range c.TopLogprobs {
			want := tokenPiece(tok, order[k])
			if !slices.Equal(a.Bytes, byteList(want)) || math.Abs(a.Logprob-lp[order[k]]) > 1e-9 {
				t.Fatalf("token %d alternative %d: %+v, want %q logprob %v", i, k, a, want, lp[order[k]])
			}
		}
	}
}

// sseEvents reads the data of a stream's events.
func sseEvents(t *testing.T, body string) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			out = append(out, d)
		}
	}
	return out
}

func TestChatLogprobs(t *testing.T) {
	tv := testVocabs()[0]
	tok, _ := tokenizer.New(tv.vocab)
	steps, ids := scriptFor(tok, 12)
	s := fakeServer(t, Options{}, tv, 1<<12, scripted(steps, ids))
	const msgs = `"messages": [{"role": "user", "content": "hi"}]`

	status, body := post(t, s, "/v1/chat/completions", `{`+msgs+`, "logprobs": true, "top_logprobs": 5}`)
	if status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	var whole struct {
		Choices []struct {
			Message  struct{ Content string }
			Logprobs chatLogprobsBody
		}
	}
	if err := json.Unmarshal([]byte(body), &whole); err != nil {
		t.Fatal(err)
	}
	checkChatLogprobs(t, tok, whole.Choices[0].Logprobs, steps, ids, 5)

	// logprobs without top_logprobs: the chosen tokens only.
	_, body = post(t, s, "/v1/chat/completions", `{`+msgs+`, "logprobs": true}`)
	if err := json.Unmarshal([]byte(body), &whole); err != nil {
		t.Fatal(err)
	}
	checkChatLogprobs(t, tok, whole.Choices[0].Logprobs, steps, ids, 0)

	// Not asked: null.
	_, body = post(t, s, "/v1/chat/completions", `{`+msgs+`}`)
	if !strings.Contains(body, `"logprobs":null`) {
		t.Errorf("without logprobs: %s", body)
	}

	// Streamed: each token's entry comes with its text.
	_, body = post(t, s, "/v1/chat/completions", `{`+msgs+`, "logprobs": true, "top_logprobs": 3, "stream": true}`)
	var all chatLogprobsBody
	text := ""
	for _, ev := range sseEvents(t, body) {
		if ev == "[DONE]" {
			continue
		}
		var c struct {
			Choices []struct {
				Delta    struct{ Content *string }
				Logprobs *chatLogprobsBody
			}
		}
		if err := json.Unmarshal([]byte(ev), &c); err != nil {
			t.Fatal(err)
		}
		ch := c.Choices[0]
		if ch.Delta.Content != nil && *ch.Delta.Content != "" {
			text += *ch.Delta.Content
			if ch.Logprobs == nil || len(ch.Logprobs.Content) != 1 || ch.Logprobs.Content[0].Token != *ch.Delta.Content {
				t.Errorf("chunk %q came with logprobs %+v", *ch.Delta.Content, ch.Logprobs)
			}
		}
		if ch.Logprobs != nil {
			all.Content = append(all.Content, ch.Logprobs.Content...)
		}
	}
	checkChatLogprobs(t, tok, all, steps, ids, 3)
	if text != whole.Choices[0].Message.Content {
		t.Errorf("streamed %q, whole %q", text, whole.Choices[0].Message.Content)
	}
}

func TestCompletionLogprobs(t *testing.T) {
	tv := testVocabs()[0]
	tok, _ := tokenizer.New(tv.vocab)
	steps, ids := scriptFor(tok, 10)
	s := fakeServer(t, Options{}, tv, 1<<12, scripted(steps, ids))
	type legacy struct {
		Tokens        []string
		TokenLogprobs []float64            `json:"token_logprobs"`
		TopLogprobs   []map[string]float64 `json:"top_logprobs"`
		TextOffset    []int                `json:"text_offset"`
	}
	check := func(what string, text string, got legacy, top int) {
		t.Helper()
		if len(got.Tokens) != len(ids) || len(got.TokenLogprobs) != len(ids) || len(got.TopLogprobs) != len(ids) || len(got.TextOffset) != len(ids) {
			t.Fatalf("%s: %+v for %d tokens", what, got, len(ids))
		}
		if strings.Join(got.Tokens, "") != text {
			t.Errorf("%s: tokens %q, text %q", what, got.Tokens, text)
		}
		off := 0
		for i, id := range ids {
			lp, order := refLogSoftmax(steps[i])
			if got.Tokens[i] != tok.Piece(id) || math.Abs(got.TokenLogprobs[i]-lp[id]) > 1e-9 || got.TextOffset[i] != off {
				t.Errorf("%s: token %d: %q %v at %d, want %q %v at %d", what, i, got.Tokens[i], got.TokenLogprobs[i], got.TextOffset[i], tok.Piece(id), lp[id], off)
			}
			off += utf8.RuneCountInString(tok.Piece(id))
			// The top alternatives and the chosen token, each under its
			// text; a text two tokens share keeps the larger.
			want := map[string]float64{}
			for _, k := range append(slices.Clone(order[:top]), id) {
				p := strings.ToValidUTF8(tokenPiece(tok, k), "\uFFFD") // the pieces are one byte at most
				if v, ok := want[p]; !ok || lp[k] > v {
					want[p] = lp[k]
				}
			}
			if len(got.TopLogprobs[i]) != len(want) {
				t.Errorf("%s: token %d: top %v, want %v", what, i, got.TopLogprobs[i], want)
			}
			for p, v := range want {
				if g, ok := got.TopLogprobs[i][p]; !ok || math.Abs(g-v) > 1e-9 {
					t.Errorf("%s: token %d: top %v, want %v", what, i, got.TopLogprobs[i], want)
				}
			}
		}
	}
	for _, n := range []int{0, 5, 20} {
		_, body := post(t, s, "/v1/completions", `{"prompt": "hi", "logprobs": `+strconv.Itoa(n)+`}`)
		var whole struct {
			Choices []struct {
				Text     string
				Logprobs legacy
			}
		}
		if err := json.Unmarshal([]byte(body), &whole); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		check("whole", whole.Choices[0].Text, whole.Choices[0].Logprobs, n)
	}

	// Streamed: the offsets run on from chunk to chunk.
	_, body := post(t, s, "/v1/completions", `{"prompt": "hi", "logprobs": 2, "stream": true}`)
	var all legacy
	text := ""
	for _, ev := range sseEvents(t, body) {
		if ev == "[DONE]" {
			continue
		}
		var c struct {
			Choices []struct {
				Text     string
				Logprobs *legacy
			}
		}
		if err := json.Unmarshal([]byte(ev), &c); err != nil {
			t.Fatal(err)
		}
		text += c.Choices[0].Text
		if lp := c.Choices[0].Logprobs; lp != nil {
			all.Tokens = append(all.Tokens, lp.Tokens...)
			all.TokenLogprobs = append(all.TokenLogprobs, lp.TokenLogprobs...)
			all.TopLogprobs = append(all.TopLogprobs, lp.TopLogprobs...)
			all.TextOffset = append(all.TextOffset, lp.TextOffset...)
		}
	}
	check("stream", text, all, 2)
}

// TestTraceHoldsBack checks that tokens whose text is not sent yet wait
// for the next text, and that the end-of-generation step is dropped.
func TestTraceHoldsBack(t *testing.T) {
	tr := newTrace(1)
	lg := []float32{1, 2, 3}
	tr.sampled(2, lg)
	tr.token(2)
	tr.sampled(1, lg)
	tr.token(1)
	tr.sampled(0, lg) // end of generation: never emitted
	got := tr.take()
	if len(got) != 2 || got[0].chosen.id != 2 || got[1].chosen.id != 1 || len(got[0].top) != 1 || got[0].top[0].id != 2 {
		t.Fatalf("%+v", got)
	}
	if tr.take() != nil {
		t.Error("taken twice")
	}
	var none *trace
	none.token(1)
	if none.take() != nil || none.logprobs() {
		t.Error("a nil trace recorded something")
	}
}
