package server

import (
	"math"
	"strings"
	"sync"
	"unicode/utf8"

	"headinfer/engine/tokenizer"
)

// maxTopLogprobs bounds the alternatives a request may ask for per token:
// OpenAI's chat API allows 20 (its completions API 5; this server takes 20
// there too, and for llama-server's n_probs).
const maxTopLogprobs = 20

// minLogprob stands for the log-probability of a token the model rules out
// (a logit of -Inf), which JSON cannot write; OpenAI sends -9999 alike.
const minLogprob = -9999.0

// tokenProb is a token and its log-probability.
type tokenProb struct {
	id      int32
	logprob float64
}

// stepProbs is one generated token with its log-probability and the most
// likely tokens of its step, best first.
type stepProbs struct {
	chosen tokenProb
	top    []tokenProb
}

// trace follows a job's generated tokens from the engine to the text that
// carries them. With top ≥ 0 it computes each token's log-probability and
// its step's top alternatives from the raw logits (log-softmax in float64,
// before temperature, penalties, bias or filters), on the batch's
// goroutine as the token is drawn: there the logits are at hand, so no
// step's logits need be kept until the token reaches the caller. With top
// < 0 it records the ids only.
//
// The tokens reach the caller in order; those whose text the stop strings
// or an unfinished character hold back wait in pending until text is sent,
// and go with it, so that a stream's logprobs come with the text they
// produced.
type trace struct {
	top     int
	mu      sync.Mutex
	drawn   []stepProbs // computed on the batch's goroutine, not yet emitted
	pending []stepProbs // emitted tokens whose text has not been sent
}

func newTrace(top int) *trace { return &trace{top: top} }

// logprobs reports whether the trace computes log-probabilities.
func (t *trace) logprobs() bool { return t != nil && t.top >= 0 }

// sampled is engine.GenerateParams.Sampled: it runs on the batch's
// goroutine for each token drawn, the end-of-generation token included
// (which is never emitted: its entry is dropped with the trace).
func (t *trace) sampled(id int32, logits []float32) {
	s := logSoftmaxStep(logits, id, t.top)
	t.mu.Lock()
	t.drawn = append(t.drawn, s)
	t.mu.Unlock()
}

// token takes the next emitted token, on the caller's goroutine.
func (t *trace) token(id int32) {
	if t == nil {
		return
	}
	s := stepProbs{chosen: tokenProb{id: id}}
	if t.top >= 0 {
		t.mu.Lock()
		// The engine calls sampled before it hands the token on, so its
		// entry is first in line.
		if len(t.drawn) > 0 && t.drawn[0].chosen.id == id {
			s = t.drawn[0]
			t.drawn = t.drawn[1:]
		}
		t.mu.Unlock()
	}
	t.pending = append(t.pending, s)
}

// take returns the tokens emitted since the last take.
func (t *trace) take() []stepProbs {
	if t == nil || len(t.pending) == 0 {
		return nil
	}
	p := t.pending
	t.pending = nil
	return p
}

// logSoftmaxStep computes, in float64, the log-softmax of logits at id and
// at the n largest logits (ties: the lower id first). NaN logits count as
// -Inf.
func logSoftmaxStep(logits []float32, id int32, n int) stepProbs {
	m := math.Inf(-1)
	for _, v := range logits {
		if x := float64(v); x > m {
			m = x
		}
	}
	var sum float64
	for _, v := range logits {
		if v == v {
			sum += math.Exp(float64(v) - m)
		}
	}
	lse := m + math.Log(sum)
	lp := func(v float32) float64 {
		x := float64(v) - lse
		if v != v || !(x >= minLogprob) {
			return minLogprob
		}
		return min(x, 0)
	}
	s := stepProbs{chosen: tokenProb{id: id, logprob: minLogprob}}
	if id >= 0 && int(id) < len(logits) {
		s.chosen.logprob = lp(logits[id])
	}
	if n <= 0 {
		return s
	}
	// The n best so far, best first: ids come in increasing order, so a
	// later one displaces an entry only with a strictly larger logit.
	best := make([]int32, 0, n)
	val := func(i int32) float32 {
		if v := logits[i]; v == v {
			return v
		}
		return float32(math.Inf(-1))
	}
	for i := range logits {
		v := val(int32(i))
		if len(best) == n && !(v > val(best[n-1])) {
			continue
		}
		k := len(best)
		if k < n {
			best = append(best, 0)
		} else {
			k = n - 1
		}
		for k > 0 && v > val(best[k-1]) {
			best[k] = best[k-1]
			k--
		}
		best[k] = int32(i)
	}
	s.top = make([]tokenProb, len(best))
	for i, b := range best {
		s.top[i] = tokenProb{id: b, logprob: lp(logits[b])}
	}
	return s
}

// tokenPiece is the text a logprobs entry or /tokenize shows for id: its
// share of decoded text, or for a control token (which decodes to
// nothing) its name, such as "</s>".
func tokenPiece(tok tokenizer.Tokenizer, id int32) string {
	if p := tok.Piece(id); p != "" {
		return p
	}
	return tok.TokenText(id)
}

// byteList is a string's bytes as a JSON array of numbers (a []byte would
// be written as base64).
func byteList(s string) []int {
	b := make([]int, len(s))
	for i := range len(s) {
		b[i] = int(s[i])
	}
	return b
}

// OpenAI's chat logprobs: choices[].logprobs = {"content": [...]}.
type chatLogprobs struct {
	Content []chatLogprob `json:"content"`
}

type chatLogprob struct {
	Token       string           `json:"token"`
	Logprob     float64          `json:"logprob"`
	Bytes       []int            `json:"bytes"`
	TopLogprobs []chatTopLogprob `json:"top_logprobs"`
}

type chatTopLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// OpenAI's legacy completions logprobs.
type legacyLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float64            `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

// nativeProb is one entry of llama-server's completion_probabilities.
type nativeProb struct {
	ID          int32         `json:"id"`
	Token       string        `json:"token"`
	Bytes       []int         `json:"bytes"`
	Logprob     float64       `json:"logprob"`
	TopLogprobs []nativeTopLP `json:"top_logprobs"`
}

type nativeTopLP struct {
	ID      int32   `json:"id"`
	Token   string  `json:"token"`
	Bytes   []int   `json:"bytes"`
	Logprob float64 `json:"logprob"`
}

// logprobFormat writes a request's logprobs in its API's shape. It is
// shared by the events of a stream: offset carries the legacy format's
// text_offset from one event to the next.
type logprobFormat struct {
	tok    tokenizer.Tokenizer
	offset int // characters of the completion so far (text_offset)
}

func (f *logprobFormat) chat(steps []stepProbs) *chatLogprobs {
	out := &chatLogprobs{Content: make([]chatLogprob, len(steps))}
	for i, s := range steps {
		p := tokenPiece(f.tok, s.chosen.id)
		c := chatLogprob{Token: p, Logprob: s.chosen.logprob, Bytes: byteList(p), TopLogprobs: make([]chatTopLogprob, len(s.top))}
		for k, t := range s.top {
			tp := tokenPiece(f.tok, t.id)
			c.TopLogprobs[k] = chatTopLogprob{Token: tp, Logprob: t.logprob, Bytes: byteList(tp)}
		}
		out.Content[i] = c
	}
	return out
}

// legacy writes the completions format, whose top_logprobs maps hold the
// chosen token too, as OpenAI's do (so up to N+1 entries). Two tokens
// with the same text, as JSON writes it, share a key: the more likely one
// is kept.
func (f *logprobFormat) legacy(steps []stepProbs) *legacyLogprobs {
	out := &legacyLogprobs{Tokens: []string{}, TokenLogprobs: []float64{}, TopLogprobs: []map[string]float64{}, TextOffset: []int{}}
	for _, s := range steps {
		p := tokenPiece(f.tok, s.chosen.id)
		top := make(map[string]float64, len(s.top)+1)
		for _, t := range append(s.top, s.chosen) {
			tp := jsonText(tokenPiece(f.tok, t.id))
			if v, ok := top[tp]; !ok || t.logprob > v {
				top[tp] = t.logprob
			}
		}
		out.Tokens = append(out.Tokens, p)
		out.TokenLogprobs = append(out.TokenLogprobs, s.chosen.logprob)
		out.TopLogprobs = append(out.TopLogprobs, top)
		out.TextOffset = append(out.TextOffset, f.offset)
		f.offset += utf8.RuneCountInString(p)
	}
	return out
}

// jsonText is s as encoding/json writes it: each byte that is not part of
// valid UTF-8 becomes U+FFFD. A map's keys must differ as the client will
// read them, or the object would repeat a key.
func jsonText(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for _, r := range s { // an invalid byte ranges as one U+FFFD
		b.WriteRune(r)
	}
	return b.String()
}

func (f *logprobFormat) native(steps []stepProbs) []nativeProb {
	out := make([]nativeProb, len(steps))
	for i, s := range steps {
		p := tokenPiece(f.tok, s.chosen.id)
		n := nativeProb{ID: s.chosen.id, Token: p, Bytes: byteList(p), Logprob: s.chosen.logprob, TopLogprobs: make([]nativeTopLP, len(s.top))}
		for k, t := range s.top {
			tp := tokenPiece(f.tok, t.id)
			n.TopLogprobs[k] = nativeTopLP{ID: t.id, Token: tp, Bytes: byteList(tp), Logprob: t.logprob}
		}
		out[i] = n
	}
	return out
}
