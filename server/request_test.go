package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"headinfer/engine/sample"
)

func TestSamplingDefaults(t *testing.T) {
	seed := int64(7)
	p, e := samplingOf(&samplingFields{Seed: &seed})
	if e != nil {
		t.Fatal(e)
	}
	if p.Temperature != 1 || p.TopP != 0 && p.TopP != 1 || p.TopK != 0 || p.MinP != 0 || p.RepeatPenalty != 1 || p.Seed != 7 {
		t.Fatalf("defaults: %+v", p)
	}
	pres, freq := 0.75, -1.5
	if p, _ = samplingOf(&samplingFields{PresencePenalty: &pres, FrequencyPenalty: &freq}); p.PresencePenalty != 0.75 || p.FrequencyPenalty != -1.5 {
		t.Fatalf("presence_penalty 0.75, frequency_penalty -1.5: %+v", p)
	}
	tiny := 1e-30
	p, _ = samplingOf(&samplingFields{Temperature: &tiny})
	if !p.Greedy() {
		t.Fatalf("temperature %g is not greedy: %+v", tiny, p)
	}
	for _, body := range []string{`{"temperature": 2.5}`, `{"top_p": 1.5}`, `{"top_k": -1}`, `{"min_p": -0.1}`, `{"repeat_penalty": 0}`, `{"presence_penalty": 3}`} {
		var f samplingFields
		if err := json.Unmarshal([]byte(body), &f); err != nil {
			t.Fatal(err)
		}
		if _, e := samplingOf(&f); e == nil || e.Status != http.StatusBadRequest || e.Param == nil {
			t.Errorf("%s: got %v, want a 400 naming the field", body, e)
		}
	}
}

func TestParseStop(t *testing.T) {
	for body, want := range map[string][]string{`null`: nil, `"x"`: {"x"}, `["a","bc"]`: {"a", "bc"}} {
		got, e := parseStop(json.RawMessage(body))
		if e != nil || strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%s: got %q %v, want %q", body, got, e, want)
		}
	}
	for _, body := range []string{`5`, `[1]`, `[""]`, `{"a":1}`} {
		if _, e := parseStop(json.RawMessage(body)); e == nil || e.Status != 400 {
			t.Errorf("%s: got %v, want 400", body, e)
		}
	}
}

func TestDecodeJSON(t *testing.T) {
	cases := []struct {
		body   string
		status int
		want   string
	}{
		{`{"prompt": "x", "max_tokens": 3, "unknown": [1]}`, 0, ""},
		{``, 400, "empty"},
		{`{"prompt": `, 400, "not valid JSON"},
		{`{"prompt": "x"} {}`, 400, "after its JSON object"},
		{`[1]`, 400, "must be a JSON object"},
		{`{"max_tokens": "3"}`, 400, "max_tokens must be an integer"},
		{`{"stream": 1}`, 400, "stream must be true or false"},
		{`{"prompt": "` + strings.Repeat("x", 200) + `"}`, 413, "larger than 100 bytes"},
	}
	for _, c := range cases {
		r := httptest.NewRequest("POST", "/v1/completions", strings.NewReader(c.body))
		var req completionRequest
		body, e := readBody(httptest.NewRecorder(), r, 100)
		if e == nil {
			e = decodeJSON(body, &req)
		}
		switch {
		case c.status == 0 && e != nil:
			t.Errorf("%q: %v", c.body, e)
		case c.status != 0 && (e == nil || e.Status != c.status || !strings.Contains(e.Message, c.want)):
			t.Errorf("%q: got %+v, want %d mentioning %q", c.body, e, c.status, c.want)
		}
	}
}

func TestMessagesOf(t *testing.T) {
	var msgs []chatMessage
	json.Unmarshal([]byte(`[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":null}]`), &msgs)
	got, e := messagesOf(msgs)
	if e != nil || got[0].Content != "ab" || got[1].Content != "" {
		t.Fatalf("got %+v %v", got, e)
	}
	for _, body := range []string{`[]`, `[{"content":"x"}]`, `[{"role":"user","content":5}]`, `[{"role":"user","content":[{"type":"image_url"}]}]`} {
		var msgs []chatMessage
		json.Unmarshal([]byte(body), &msgs)
		if _, e := messagesOf(msgs); e == nil || e.Status != 400 {
			t.Errorf("%s: got %v, want 400", body, e)
		}
	}
}

// TestTokenIDFields sends token ids in every field that takes them, in
// range and out of it: an id equal to the vocabulary size, a negative one,
// one past int32 and a bias outside [-100, 100] are answered 400 naming
// the id (and the vocabulary size); ids in range reach the job.
func TestTokenIDFields(t *testing.T) {
	tv := testVocabs()[0]
	c := &capture{}
	var params atomic.Pointer[sample.Params]
	s := fakeServer(t, Options{}, tv, 1<<12, func(ctx context.Context, l *loaded, j *job, emit func(string) error) (outcome, error) {
		params.Store(&j.params)
		return c.gen(ctx, l, j, emit)
	})
	vocab := len(tv.vocab.Tokens)
	for _, path := range []string{"/v1/completions", "/v1/chat/completions"} {
		base := `"prompt": "hi"`
		if path == "/v1/chat/completions" {
			base = `"messages": [{"role": "user", "content": "hi"}]`
		}
		for _, bad := range []struct{ field, want string }{
			{fmt.Sprintf(`"logit_bias": {"%d": 5}`, vocab), fmt.Sprintf("token id %d is outside the vocabulary of %d tokens", vocab, vocab)},
			{`"logit_bias": {"-1": 5}`, "token id -1 is outside"},
			{`"logit_bias": {"99999999999": 5}`, "token id 99999999999 is outside"},
			{`"logit_bias": {"abc": 5}`, "token ids must be integers"},
			{`"logit_bias": {"5": 100.5}`, "the bias of token 5 is 100.5"},
			{`"logit_bias": {"5": -101}`, "the bias of token 5 is -101"},
			{`"logit_bias": {"5": 1, "05": 2}`, "names token 5 twice"},
		} {
			status, body := post(t, s, path, "{"+base+", "+bad.field+"}")
			if status != http.StatusBadRequest || !strings.Contains(body, bad.want) || !strings.Contains(body, `"param":"logit_bias"`) {
				t.Errorf("%s %s: %d %s, want 400 saying %q", path, bad.field, status, body, bad.want)
			}
		}
		status, body := post(t, s, path, "{"+base+`, "logit_bias": {"3": -100, "7": 100}, "temperature": 0}`)
		if p := params.Load(); status != 200 || p == nil || len(p.LogitBias) != 2 || p.LogitBias[3] != -100 || p.LogitBias[7] != 100 || p.Greedy() {
			t.Errorf("%s with a valid logit_bias: %d %s, sampling %+v", path, status, body, p)
		}
	}
	for _, bad := range []struct{ prompt, want string }{
		{fmt.Sprintf("[1, %d]", vocab), fmt.Sprintf("token id %d is outside the vocabulary of %d tokens", vocab, vocab)},
		{"[1, -1]", "token id -1 is outside"},
		{"[1, 4294967297]", "token id 4294967297 is outside"},
		{"[1, 2.5]", "token ids must be integers"},
	} {
		status, body := post(t, s, "/v1/completions", `{"prompt": `+bad.prompt+`}`)
		if status != http.StatusBadRequest || !strings.Contains(body, bad.want) {
			t.Errorf("prompt %s: %d %s, want 400 saying %q", bad.prompt, status, body, bad.want)
		}
	}
	if status, body := post(t, s, "/v1/completions", fmt.Sprintf(`{"prompt": [1, %d]}`, vocab-1)); status != 200 || !slices.Equal(*c.prompt.Load(), []int32{1, int32(vocab - 1)}) {
		t.Errorf("prompt of ids in range: %d %s", status, body)
	}
}
