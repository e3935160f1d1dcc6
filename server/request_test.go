package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
		e := decodeJSON(httptest.NewRecorder(), r, 100, &req)
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
