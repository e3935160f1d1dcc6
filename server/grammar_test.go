package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"headinfer/engine"
)

// TestConstraintFields checks that every generation route turns
// response_format, grammar and json_schema into the job's grammar.
func TestConstraintFields(t *testing.T) {
	c := &jobCapture{}
	s := fakeServer(t, Options{}, testVocabs()[0], 256, c.gen)
	chat := `"messages": [{"role": "user", "content": "hi"}]`
	cases := []struct {
		path, body string
		yes, no    string // a text the grammar takes, and one it refuses
	}{
		{"/v1/chat/completions", `{` + chat + `, "response_format": {"type": "json_object"}}`, `{"a": [1, "x"]}`, `[1]`},
		{"/v1/chat/completions", `{` + chat + `, "response_format": {"type": "json_schema", "json_schema": {"name": "n", "strict": true,
			"schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": false}}}}`, `{"n": 3}`, `{"n": "3"}`},
		{"/v1/completions", `{"prompt": "hi", "response_format": {"type": "json_object", "schema": {"type": "boolean"}}}`, `true`, `{}`},
		{"/v1/completions", `{"prompt": "hi", "grammar": "root ::= [ab]+"}`, `abba`, `abc`},
		{"/v1/chat/completions", `{` + chat + `, "json_schema": {"enum": ["x", "y"]}}`, `"y"`, `"z"`},
		{"/completion", `{"prompt": "hi", "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "string", "format": "date"}}}}`, `"2024-05-06"`, `"2024-5-6"`},
	}
	for _, tc := range cases {
		c.j.Store(nil)
		status, body := post(t, s, tc.path, tc.body)
		j := c.j.Load()
		if status != 200 || j == nil || j.grammar == nil {
			t.Errorf("%s %s: %d %s, no grammar", tc.path, tc.body, status, body)
			continue
		}
		if !j.grammar.Match(tc.yes) || j.grammar.Match(tc.no) {
			t.Errorf("%s %s: grammar takes %s: %v, %s: %v", tc.path, tc.body, tc.yes, j.grammar.Match(tc.yes), tc.no, j.grammar.Match(tc.no))
		}
	}
	for _, body := range []string{`{"prompt": "hi"}`, `{"prompt": "hi", "response_format": {"type": "text"}, "grammar": ""}`} {
		c.j.Store(nil)
		if status, _ := post(t, s, "/v1/completions", body); status != 200 || c.j.Load().grammar != nil {
			t.Errorf("%s: a grammar where none was asked for", body)
		}
	}
}

// TestConstraintErrors: a grammar or schema that cannot be used is a 400
// that names the field and says where the problem is.
func TestConstraintErrors(t *testing.T) {
	s := fakeServer(t, Options{}, testVocabs()[0], 256, nil)
	chat := `"messages": [{"role": "user", "content": "hi"}]`
	cases := []struct{ path, body, param, msg string }{
		{"/v1/completions", `{"prompt": "hi", "grammar": "root ::= \"a\"\nx ::= [z-a]"}`, "grammar", "2:9: character range"},
		{"/completion", `{"prompt": "hi", "grammar": "root ::= foo"}`, "grammar", `rule "foo" is used but not defined`},
		{"/v1/chat/completions", `{` + chat + `, "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object", "patternProperties": {}}}}}`, "response_format", `unsupported keyword "patternProperties"`},
		{"/v1/chat/completions", `{` + chat + `, "json_schema": {"properties": {"a": {"type": "string", "format": "email"}}}}`, "json_schema", `/properties/a/format`},
		{"/v1/chat/completions", `{` + chat + `, "response_format": {"type": "xml"}}`, "response_format", "xml"},
		{"/v1/chat/completions", `{` + chat + `, "response_format": {"type": "json_schema"}}`, "response_format", "needs a json_schema"},
		{"/v1/completions", `{"prompt": "hi", "grammar": "root ::= \"a\"", "json_schema": {}}`, "json_schema", "send one of them"},
		{"/completion", `{"prompt": "hi", "json_schema": "{}"}`, "json_schema", "must be a JSON object"},
	}
	for _, tc := range cases {
		status, body := post(t, s, tc.path, tc.body)
		var e errorBody
		if err := json.Unmarshal([]byte(body), &e); err != nil || status != 400 || e.Error.Param == nil || *e.Error.Param != tc.param || !strings.Contains(e.Error.Message, tc.msg) {
			t.Errorf("%s %s: %d %s, want 400 naming %s with %q", tc.path, tc.body, status, body, tc.param, tc.msg)
		}
	}
}

// TestConstrainedGeneration generates with a real model under a schema
// on the chat route, greedy and sampled, and two requests at once.
func TestConstrainedGeneration(t *testing.T) {
	s := New(Options{ModelPath: "stories260K.gguf", Parallel: 2, MaxQueue: 4})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	setTestModel(t, s, "stories260K.gguf", engine.Options{Parallel: 2})
	schema := `{"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 1, "maximum": 120},
		"pets": {"type": "array", "items": {"enum": ["cat", "dog"]}, "maxItems": 3}}, "required": ["name", "age", "pets"], "additionalProperties": false}`
	type person struct {
		Name *string
		Age  *int
		Pets []string
	}
	done := make(chan string, 4)
	for _, temp := range []string{"0", "1", "0.7", "1.5"} {
		go func() {
			body := `{"messages": [{"role": "user", "content": "Who is Lily?"}], "max_tokens": 120, "temperature": ` + temp + `, "seed": 5,
				"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": ` + schema + `}}}`
			resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
			if err != nil {
				done <- err.Error()
				return
			}
			defer resp.Body.Close()
			var out chatResponse
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || len(out.Choices) != 1 {
				done <- "temperature " + temp + ": answer " + resp.Status
				return
			}
			var p person
			content := out.Choices[0].Message.Content
			dec := json.NewDecoder(strings.NewReader(content))
			dec.DisallowUnknownFields()
			if out.Choices[0].FinishReason != "stop" {
				done <- "temperature " + temp + ": finish " + out.Choices[0].FinishReason + ": " + content
			} else if err := dec.Decode(&p); err != nil || p.Name == nil || p.Age == nil || *p.Age < 1 || *p.Age > 120 || len(p.Pets) > 3 || len([]rune(*p.Name)) > 12 {
				done <- "temperature " + temp + ": " + content + " does not follow the schema"
			} else {
				done <- ""
			}
		}()
	}
	for range 4 {
		if msg := <-done; msg != "" {
			t.Error(msg)
		}
	}

	// A grammar whose stacks double with each "a", and a bias that draws
	// "a" while it may: the request fails as the client's, not the server's.
	tok := s.model.Load().tok
	a := -1
	for id := range tok.VocabSize() {
		if tok.Piece(int32(id)) == "a" {
			a = id
		}
	}
	body := `{"prompt": "x", "max_tokens": 60, "grammar": "root ::= \"a\" | \"a\" root \")\" | \"a\" root \"]\"", "logit_bias": {"` + strconv.Itoa(a) + `": 100}}`
	resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e errorBody
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != 400 || e.Error.Code != "grammar_failed" || !strings.Contains(e.Error.Message, "too ambiguous") {
		t.Errorf("an exploding grammar: %s %+v", resp.Status, e.Error)
	}
}

// TestConstrainedLogprobs: logprobs stay those of the raw logits, so the
// alternatives the grammar forbade still show with their probabilities.
func TestConstrainedLogprobs(t *testing.T) {
	s := New(Options{ModelPath: "stories260K.gguf"})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	setTestModel(t, s, "stories260K.gguf", engine.Options{})
	body := `{"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0, "logprobs": 5, "grammar": "root ::= \"x\"{4}"}`
	resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Choices []struct {
			Text     string
			Logprobs struct {
				Tokens        []string
				TokenLogprobs []float64            `json:"token_logprobs"`
				TopLogprobs   []map[string]float64 `json:"top_logprobs"`
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || len(out.Choices) != 1 {
		t.Fatalf("%s: %v", resp.Status, err)
	}
	c := out.Choices[0]
	if c.Text != "xxxx" || len(c.Logprobs.TopLogprobs) == 0 {
		t.Fatalf("text %q, logprobs %+v", c.Text, c.Logprobs)
	}
	others := 0
	for i, top := range c.Logprobs.TopLogprobs {
		for tok, lp := range top {
			if tok != "x" && lp > c.Logprobs.TokenLogprobs[i] {
				others++
			}
		}
	}
	if others == 0 {
		t.Errorf("no forbidden token is more likely than the chosen one in %v: the logprobs look masked", c.Logprobs.TopLogprobs)
	}
}
