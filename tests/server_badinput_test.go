package tests

import (
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
)

// testBadInput sends each kind of bad request and checks the status and
// the error object, then that the server still answers.
func testBadInput(t *testing.T, srv *serverProc, key string) {
	long := strings.Repeat("once upon a time there was a dog. ", 60) // > 512 tokens
	const comp, chat = "/v1/completions", "/v1/chat/completions"
	inv := "invalid_request_error"
	cases := []struct {
		name, path, key, body string
		status                int
		errType, code         string
	}{
		{"malformed JSON", comp, key, `{"prompt": "hi", `, 400, inv, "invalid_json"},
		{"not an object", comp, key, `["hi"]`, 400, inv, "invalid_json"},
		{"empty body", comp, key, ``, 400, inv, "invalid_json"},
		{"trailing data", comp, key, `{"prompt": "hi"} {}`, 400, inv, "invalid_json"},
		{"max_tokens a string", comp, key, `{"prompt": "hi", "max_tokens": "ten"}`, 400, inv, "invalid_type"},
		{"temperature a string", comp, key, `{"prompt": "hi", "temperature": "hot"}`, 400, inv, "invalid_type"},
		{"stream a number", comp, key, `{"prompt": "hi", "stream": 1}`, 400, inv, "invalid_type"},
		{"prompt a number", comp, key, `{"prompt": 42}`, 400, inv, "invalid_type"},
		{"no prompt", comp, key, `{"max_tokens": 4}`, 400, inv, "missing_prompt"},
		{"two prompts", comp, key, `{"prompt": ["a", "b"]}`, 400, inv, "invalid_value"},
		{"token id out of range", comp, key, `{"prompt": [1, 99999]}`, 400, inv, "invalid_value"},
		{"stop a number", comp, key, `{"prompt": "hi", "stop": 3}`, 400, inv, "invalid_type"},
		{"empty stop", comp, key, `{"prompt": "hi", "stop": [""]}`, 400, inv, "invalid_value"},
		{"unknown model", comp, key, `{"model": "gpt-4", "prompt": "hi"}`, 404, inv, "model_not_found"},
		{"max_tokens 0", comp, key, `{"prompt": "hi", "max_tokens": 0}`, 400, inv, "invalid_value"},
		{"max_tokens negative", comp, key, `{"prompt": "hi", "max_tokens": -3}`, 400, inv, "invalid_value"},
		{"max_tokens beyond the context", comp, key, `{"prompt": "hi", "max_tokens": 600}`, 400, inv, "context_length_exceeded"},
		{"prompt longer than the context", comp, key, `{"prompt": "` + long + `", "max_tokens": 1}`, 400, inv, "context_length_exceeded"},
		{"negative temperature", comp, key, `{"prompt": "hi", "temperature": -0.5}`, 400, inv, "invalid_value"},
		{"top_p above 1", comp, key, `{"prompt": "hi", "top_p": 1.5}`, 400, inv, "invalid_value"},
		{"n = 2", comp, key, `{"prompt": "hi", "n": 2}`, 400, inv, "invalid_value"},
		{"logprobs above 20", comp, key, `{"prompt": "hi", "logprobs": 21}`, 400, inv, "invalid_value"},
		{"logprobs negative", comp, key, `{"prompt": "hi", "logprobs": -1}`, 400, inv, "invalid_value"},
		{"logprobs true on completions", comp, key, `{"prompt": "hi", "logprobs": true}`, 400, inv, "invalid_type"},
		{"no API key", comp, "", `{"prompt": "hi"}`, 401, "authentication_error", "invalid_api_key"},
		{"wrong API key", comp, "nope", `{"prompt": "hi"}`, 401, "authentication_error", "invalid_api_key"},
		{"chat without messages", chat, key, `{"max_tokens": 4}`, 400, inv, "invalid_value"},
		{"chat message content a number", chat, key, `{"messages": [{"role": "user", "content": 1}]}`, 400, inv, "invalid_type"},
		{"chat image part", chat, key, `{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}`, 400, inv, "unsupported"},
		{"chat template raise_exception", chat, key, `{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}`, 400, inv, "chat_template_error"},
		{"chat max_completion_tokens 0", chat, key, `{"messages": [{"role": "user", "content": "a"}], "max_completion_tokens": 0}`, 400, inv, "invalid_value"},
		{"chat unknown model", chat, key, `{"model": "llama", "messages": [{"role": "user", "content": "a"}]}`, 404, inv, "model_not_found"},
		{"chat top_logprobs above 20", chat, key, `{"messages": [{"role": "user", "content": "a"}], "logprobs": true, "top_logprobs": 21}`, 400, inv, "invalid_value"},
		{"chat top_logprobs negative", chat, key, `{"messages": [{"role": "user", "content": "a"}], "logprobs": true, "top_logprobs": -1}`, 400, inv, "invalid_value"},
		{"chat top_logprobs without logprobs", chat, key, `{"messages": [{"role": "user", "content": "a"}], "top_logprobs": 3}`, 400, inv, "invalid_value"},
		{"chat top_logprobs with logprobs false", chat, key, `{"messages": [{"role": "user", "content": "a"}], "logprobs": false, "top_logprobs": 3}`, 400, inv, "invalid_value"},
		{"chat logprobs a number", chat, key, `{"messages": [{"role": "user", "content": "a"}], "logprobs": 3}`, 400, inv, "invalid_type"},
		{"native bad grammar", "/completion", key, `{"prompt": "hi", "grammar": "root ::= \"a"}`, 400, inv, "invalid_grammar"},
		{"native unsupported json_schema", "/completion", key, `{"prompt": "hi", "json_schema": {"not": {}}}`, 400, inv, "invalid_schema"},
		{"chat response_format of an unknown type", chat, key, `{"messages": [{"role": "user", "content": "a"}], "response_format": {"type": "yaml"}}`, 400, inv, "invalid_value"},
		{"chat grammar and response_format", chat, key, `{"messages": [{"role": "user", "content": "a"}], "grammar": "root ::= \"a\"", "response_format": {"type": "json_object"}}`, 400, inv, "invalid_value"},
		{"native mirostat", "/completion", key, `{"prompt": "hi", "mirostat": 2}`, 400, inv, "unsupported"},
		{"native presence_penalty out of range", "/completion", key, `{"prompt": "hi", "presence_penalty": 2.5}`, 400, inv, "invalid_value"},
		{"native n_probs above 20", "/completion", key, `{"prompt": "hi", "n_probs": 21}`, 400, inv, "invalid_value"},
		{"native n_predict 0", "/completion", key, `{"prompt": "hi", "n_predict": 0}`, 400, inv, "invalid_value"},
		{"native malformed JSON", "/completion", key, `{"prompt": `, 400, inv, "invalid_json"},
		{"native no API key", "/completion", "", `{"prompt": "hi"}`, 401, "authentication_error", "invalid_api_key"},
		{"tokenize malformed JSON", "/tokenize", key, `{"content": `, 400, inv, "invalid_json"},
		{"tokenize without content", "/tokenize", key, `{}`, 400, inv, "invalid_value"},
		{"tokenize no API key", "/tokenize", "", `{"content": "hi"}`, 401, "authentication_error", "invalid_api_key"},
		{"detokenize id out of range", "/detokenize", key, `{"tokens": [1, 99999]}`, 400, inv, "invalid_value"},
		{"detokenize negative id", "/detokenize", key, `{"tokens": [-1]}`, 400, inv, "invalid_value"},
		{"detokenize fractional id", "/detokenize", key, `{"tokens": [1.5]}`, 400, inv, "invalid_type"},
		{"detokenize malformed JSON", "/detokenize", key, `{"tokens": [1,`, 400, inv, "invalid_json"},
		{"chat tool without a function", chat, key, `{"messages": [{"role": "user", "content": "a"}], "tools": [{"type": "function"}]}`, 400, inv, "invalid_value"},
	}
	for _, c := range cases {
		status, body := srv.post(t, c.path, c.key, []byte(c.body))
		checkError(t, c.name, status, body, c.status, c.errType, c.code)
	}

	// Over 8 MiB, with and without a Content-Length.
	big := []byte(`{"prompt": "` + strings.Repeat("a", 9<<20) + `"}`)
	status, body := srv.post(t, comp, key, big)
	checkError(t, "9 MiB body", status, body, 413, inv, "request_too_large")
	req, _ := http.NewRequest("POST", srv.url+comp, struct{ *strings.Reader }{strings.NewReader(string(big))})
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4096)
	n, _ := resp.Body.Read(b)
	resp.Body.Close()
	if req.ContentLength > 0 {
		t.Fatal("the chunked request had a length")
	}
	checkError(t, "9 MiB chunked body", resp.StatusCode, b[:n], 413, inv, "request_too_large")

	// Unknown fields are ignored.
	status, body = srv.post(t, comp, key, []byte(`{"prompt": "hi", "max_tokens": 2, "temperature": 0, "frobnicate": {"x": [1]}}`))
	if status != 200 {
		t.Errorf("unknown field: status %d (%s)", status, body)
	}

	// Mangled versions of a good request: never a 5xx.
	good := `{"model": "", "prompt": "Once", "max_tokens": 3, "temperature": 0.5, "top_k": 5, "stop": ["x"], "stream": false}`
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 60; i++ {
		b := []byte(good)
		const junk = "{}[]\":,0-9e.ntfx \\"
		for range 1 + rng.IntN(4) {
			b[rng.IntN(len(b))] = junk[rng.IntN(len(junk))]
		}
		status, body := srv.post(t, comp, key, b)
		if status >= 500 || (status != 200 && !strings.Contains(string(body), `"error"`)) {
			t.Errorf("mangled %q: status %d (%s)", b, status, body)
		}
	}

	resp, err = http.Get(srv.url + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("unhealthy after bad input: %v %v", err, resp)
	}
	resp.Body.Close()
}
