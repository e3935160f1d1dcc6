package server

import (
	"context"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"headinfer/engine"
	"headinfer/engine/sample"
	"headinfer/engine/tokenizer"
)

// jobCapture is a generation stand-in that keeps the job it was given.
type jobCapture struct{ j atomic.Pointer[job] }

func (c *jobCapture) gen(ctx context.Context, l *loaded, j *job, emit func(string) error) (outcome, error) {
	c.j.Store(j)
	return answerOK(ctx, l, j, emit)
}

// TestNativeParams checks how /completion's fields become the job's
// settings: llama.cpp's defaults, and llama-server's meanings of
// temperature ≤ 0, n_predict -1, repeat_last_n 0 and seed -1.
func TestNativeParams(t *testing.T) {
	c := &jobCapture{}
	const ctx = 256
	s := fakeServer(t, Options{}, testVocabs()[0], ctx, c.gen)
	d := sample.Defaults()
	cases := []struct {
		body  string
		check func(j *job) bool
	}{
		{`{"prompt": "hi"}`, func(j *job) bool {
			p := j.params
			return p.Temperature == d.Temperature && p.TopK == d.TopK && p.TopP == d.TopP && p.MinP == d.MinP &&
				p.RepeatPenalty == 1 && j.maxTokens == ctx-len(j.prompt) && j.native.settings.Seed == -1 && !j.trace.logprobs()
		}},
		{`{"prompt": "hi", "n_predict": 5, "temperature": -1, "top_k": 3, "top_p": 0.5, "min_p": 0.1, "seed": 42}`, func(j *job) bool {
			p := j.params
			return j.maxTokens == 5 && p.Temperature == 0 && p.TopK == 3 && p.TopP == 0.5 && p.MinP == 0.1 && p.Seed == 42 && j.native.settings.Seed == 42
		}},
		{`{"prompt": "hi", "n_predict": 100000}`, func(j *job) bool { return j.maxTokens == ctx-len(j.prompt) }},
		{`{"prompt": "hi", "n_predict": -1, "seed": -1}`, func(j *job) bool { return j.maxTokens == ctx-len(j.prompt) }},
		{`{"prompt": "hi", "repeat_penalty": 1.3, "repeat_last_n": 16}`, func(j *job) bool {
			return j.params.RepeatPenalty == 1.3 && j.params.RepeatLastN == 16
		}},
		{`{"prompt": "hi", "ignore_eos": true}`, func(j *job) bool {
			eos := j.params.LogitBias[int32(s.model.Load().tok.EOS())]
			return eos < -1e29
		}},
		{`{"prompt": "hi", "presence_penalty": 0.5, "frequency_penalty": -1}`, func(j *job) bool {
			return j.params.PresencePenalty == 0.5 && j.params.FrequencyPenalty == -1 &&
				j.native.settings.PresencePenalty == 0.5 && j.native.settings.FrequencyPenalty == -1
		}},
		{`{"prompt": "hi", "repeat_penalty": 1.3, "presence_penalty": 1, "repeat_last_n": 0}`, func(j *job) bool {
			return j.params.RepeatPenalty == 1 && j.params.PresencePenalty == 0
		}},
		{`{"prompt": "hi", "repeat_penalty": 1.3, "repeat_last_n": -1}`, func(j *job) bool { return j.params.RepeatLastN == -1 }},
		{`{"prompt": "hi", "n_probs": 7, "stop": ["x", "yz"]}`, func(j *job) bool {
			return j.trace.top == 7 && slices.Equal(j.stop, []string{"x", "yz"})
		}},
		{`{"prompt": [1, 5, 6]}`, func(j *job) bool { return slices.Equal(j.prompt, []int32{1, 5, 6}) }},
		{`{"prompt": ["hi", 5, " there"]}`, func(j *job) bool {
			tok := s.model.Load().tok
			want := append(append(tok.Encode("hi", true), 5), tok.Encode(" there", false)...)
			return slices.Equal(j.prompt, want)
		}},
		// The values of unsupported fields that ask for nothing, and
		// cache_prompt, are accepted.
		{`{"prompt": "hi", "grammar": "root ::= \"a\""}`, func(j *job) bool { return j.grammar != nil && j.grammar.Match("a") }},
		{`{"prompt": "hi", "json_schema": {"type": "integer"}}`, func(j *job) bool { return j.grammar != nil && j.grammar.Match("12") }},
		{`{"prompt": "hi", "grammar": "", "json_schema": null, "mirostat": 0, "typical_p": 1.0, "ignore_eos": false,
			"post_sampling_probs": false, "presence_penalty": 0, "frequency_penalty": 0, "cache_prompt": false, "n_cmpl": 1}`,
			func(j *job) bool { return true }},
	}
	for _, tc := range cases {
		c.j.Store(nil)
		status, body := post(t, s, "/completion", tc.body)
		j := c.j.Load()
		if status != 200 || j == nil || !tc.check(j) {
			t.Errorf("%s: %d %s; job %+v", tc.body, status, body, j)
		}
	}

	for _, tc := range []struct{ body, param string }{
		{`{"prompt": "hi", "grammar": "root ::= \"a"}`, "grammar"},
		{`{"prompt": "hi", "json_schema": {"not": {}}}`, "json_schema"},
		{`{"prompt": "hi", "mirostat": 2}`, "mirostat"},
		{`{"prompt": "hi", "typical_p": 0.5}`, "typical_p"},
		{`{"prompt": "hi", "samplers": ["top_k"]}`, "samplers"},
		{`{"prompt": "hi", "post_sampling_probs": true}`, "post_sampling_probs"},
		{`{"prompt": "hi", "presence_penalty": 2.5}`, "presence_penalty"},
		{`{"prompt": "hi", "frequency_penalty": -3}`, "frequency_penalty"},
		{`{"prompt": "hi", "n_probs": 21}`, "n_probs"},
		{`{"prompt": "hi", "n_probs": -1}`, "n_probs"},
		{`{"prompt": "hi", "n_predict": 0}`, "n_predict"},
		{`{"prompt": "hi", "n_predict": -2}`, "n_predict"},
		{`{"prompt": "hi", "repeat_last_n": -2}`, "repeat_last_n"},
		{`{"prompt": "hi", "temperature": "hot"}`, "temperature"},
		{`{"prompt": [1, 99999]}`, "prompt"},
		{`{}`, "prompt"},
	} {
		status, body := post(t, s, "/completion", tc.body)
		var e errorBody
		if err := json.Unmarshal([]byte(body), &e); err != nil || status != 400 || e.Error.Param == nil || *e.Error.Param != tc.param {
			t.Errorf("%s: %d %s, want 400 naming %s", tc.body, status, body, tc.param)
		}
	}
}

type nativeAnswer struct {
	Content         string
	Tokens          []int32
	Stop            bool
	TokensPredicted int    `json:"tokens_predicted"`
	TokensEvaluated int    `json:"tokens_evaluated"`
	StopType        string `json:"stop_type"`
	StoppingWord    string `json:"stopping_word"`
	Timings         *struct {
		PredictedN int `json:"predicted_n"`
	}
	Probs []struct {
		ID          int32
		Token       string
		Logprob     float64
		TopLogprobs []struct {
			ID      int32
			Logprob float64
		} `json:"top_logprobs"`
	} `json:"completion_probabilities"`
}

func TestNativeAnswer(t *testing.T) {
	tv := testVocabs()[0]
	tok, _ := tokenizer.New(tv.vocab)
	steps, ids := scriptFor(tok, 9)
	s := fakeServer(t, Options{}, tv, 1<<12, scripted(steps, ids))
	var text string
	for _, id := range ids {
		text += tok.Piece(id)
	}
	checkProbs := func(what string, a nativeAnswer, top int) {
		t.Helper()
		if len(a.Probs) != len(ids) {
			t.Fatalf("%s: %d probabilities for %d tokens", what, len(a.Probs), len(ids))
		}
		for i, p := range a.Probs {
			lp, order := refLogSoftmax(steps[i])
			if p.ID != ids[i] || p.Token != tok.Piece(ids[i]) || math.Abs(p.Logprob-lp[ids[i]]) > 1e-9 || len(p.TopLogprobs) != top {
				t.Fatalf("%s: token %d: %+v, want id %d logprob %v and %d alternatives", what, i, p, ids[i], lp[ids[i]], top)
			}
			for k, a := range p.TopLogprobs {
				if a.ID != order[k] || math.Abs(a.Logprob-lp[order[k]]) > 1e-9 {
					t.Fatalf("%s: token %d alternative %d: %+v, want %d %v", what, i, k, a, order[k], lp[order[k]])
				}
			}
		}
	}

	status, body := post(t, s, "/completion", `{"prompt": "hi", "n_probs": 4, "return_tokens": true}`)
	var a nativeAnswer
	if err := json.Unmarshal([]byte(body), &a); err != nil || status != 200 {
		t.Fatalf("%d %s", status, body)
	}
	if a.Content != text || !a.Stop || a.TokensPredicted != len(ids) || a.TokensEvaluated != len(tok.Encode("hi", true)) ||
		a.StopType != "eos" || a.Timings == nil || a.Timings.PredictedN != len(ids) || !slices.Equal(a.Tokens, ids) {
		t.Errorf("answer %s", body)
	}
	checkProbs("whole", a, 4)

	_, body = post(t, s, "/completion", `{"prompt": "hi"}`)
	if strings.Contains(body, "completion_probabilities") || !strings.Contains(body, `"tokens":[]`) {
		t.Errorf("without n_probs and return_tokens: %s", body)
	}

	// Streamed: an event per token with its id, then the last with the
	// totals, and no [DONE].
	_, body = post(t, s, "/completion", `{"prompt": "hi", "n_probs": 2, "stream": true}`)
	events := sseEvents(t, body)
	var all nativeAnswer
	var got []int32
	for i, ev := range events {
		var e nativeAnswer
		if err := json.Unmarshal([]byte(ev), &e); err != nil {
			t.Fatalf("event %q: %v", ev, err)
		}
		last := i == len(events)-1
		if e.Stop != last || (e.StopType != "") != last || (!last && (len(e.Tokens) != 1 || e.Content != tok.Piece(e.Tokens[0]))) {
			t.Errorf("event %d of %d: %s", i, len(events), ev)
		}
		all.Content += e.Content
		all.Probs = append(all.Probs, e.Probs...)
		got = append(got, e.Tokens...)
		if last && (e.TokensPredicted != len(ids) || e.StopType != "eos") {
			t.Errorf("last event %s", ev)
		}
	}
	if all.Content != text || !slices.Equal(got, ids) {
		t.Errorf("streamed %q %v, want %q %v", all.Content, got, text, ids)
	}
	checkProbs("stream", all, 2)
}

// TestNativeStopType checks stop_type and stopping_word for each way a
// generation ends.
func TestNativeStopType(t *testing.T) {
	cases := []struct {
		o              outcome
		stopType, word string
	}{
		{outcome{finish: engine.FinishStop}, "eos", ""},
		{outcome{finish: engine.FinishLength}, "limit", ""},
		{outcome{finish: engine.FinishStop, stopWord: "\n\n"}, "word", "\n\n"},
	}
	for _, c := range cases {
		s := fakeServer(t, Options{}, testVocabs()[0], 1<<12, func(ctx context.Context, l *loaded, j *job, emit func(string) error) (outcome, error) {
			return c.o, emit("ok")
		})
		_, body := post(t, s, "/completion", `{"prompt": "hi"}`)
		var a nativeAnswer
		if err := json.Unmarshal([]byte(body), &a); err != nil || a.StopType != c.stopType || a.StoppingWord != c.word {
			t.Errorf("%+v: %s", c.o, body)
		}
	}
}
