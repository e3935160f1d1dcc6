package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"headinfer/engine/tokenizer"
)

// The fuzz targets run their seeds (f.Add and testdata/fuzz) in every
// `go test`; `go test -fuzz FuzzX ./server/` explores further.

// FuzzRequest posts any body to the two generation routes of a server
// without a device (see fakeServer) and checks the answer: 200 with a
// well-formed completion or stream, or a 4xx with an OpenAI error object;
// never a 5xx or a panic.
func FuzzRequest(f *testing.F) {
	var servers []*Server
	for _, tv := range testVocabs() {
		servers = append(servers, fakeServer(f, Options{}, tv, 256, nil))
	}
	for _, seed := range []string{
		`{"prompt": "Once upon a time", "max_tokens": 3}`,
		`{"prompt": ["x"], "stream": true, "stream_options": {"include_usage": true}}`,
		`{"prompt": [1, 2, 3], "temperature": 0, "seed": 4, "stop": ["\n", "."]}`,
		`{"prompt": "</s><|eot_id|>", "parse_special": true}`,
		`{"prompt": "x", "max_tokens": 1000000, "n": 2, "logprobs": 1}`,
		`{"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 2}`,
		`{"messages": [{"role": "system", "content": [{"type": "text", "text": "a"}]}, {"role": "user", "content": null}], "stream": true}`,
		`{"messages": [{"role": "user", "content": "<|im_end|>"}], "chat_template_kwargs": {"x": ["<s>"]}, "tools": []}`,
		`{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}`,
		`{"messages": [], "top_p": 2, "top_k": -1, "min_p": "x"}`,
		`{"model": "other", "prompt": "x"}`,
		`[1]`, `{`, ``, `null`, `{"prompt": "x"} {}`, `{"prompt": "\ufdd0zz\ufdd1"}`,
	} {
		f.Add([]byte(seed), uint8(0), false)
		f.Add([]byte(seed), uint8(1), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, which uint8, chat bool) {
		s := servers[int(which)%len(servers)]
		path := "/v1/completions"
		if chat {
			path = "/v1/chat/completions"
		}
		errs := loggedErrors.Load()
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, httptest.NewRequest("POST", path, bytes.NewReader(body)))
		if loggedErrors.Load() != errs {
			t.Fatalf("body %q: the server logged an error (answer %d %s)", body, w.Code, w.Body.String())
		}
		checkAnswer(t, w, body)
	})
}

// checkAnswer checks one answer of a generation route.
func checkAnswer(t *testing.T, w *httptest.ResponseRecorder, body []byte) {
	t.Helper()
	switch {
	case w.Code == http.StatusOK && strings.HasPrefix(w.Header().Get("Content-Type"), "text/event-stream"):
		sc := bufio.NewScanner(bytes.NewReader(w.Body.Bytes()))
		sc.Buffer(nil, 1<<20)
		done := false
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				if sc.Text() != "" {
					t.Fatalf("body %q: stream line %q", body, sc.Text())
				}
				continue
			}
			if line == "[DONE]" {
				done = true
				continue
			}
			var ev map[string]any
			if err := json.Unmarshal([]byte(line), &ev); err != nil || ev["error"] != nil {
				t.Fatalf("body %q: stream event %q", body, line)
			}
		}
		if !done {
			t.Fatalf("body %q: the stream did not end with [DONE]: %q", body, w.Body.String())
		}
	case w.Code == http.StatusOK:
		var ans struct{ Choices []json.RawMessage }
		if err := json.Unmarshal(w.Body.Bytes(), &ans); err != nil || len(ans.Choices) != 1 {
			t.Fatalf("body %q: 200 with %q", body, w.Body.String())
		}
	case w.Code >= 400 && w.Code < 500:
		var eb struct {
			Error *struct{ Message, Type, Code string }
		}
		if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || eb.Error == nil || eb.Error.Message == "" || eb.Error.Type == "" || eb.Error.Code == "" {
			t.Fatalf("body %q: %d with %q, want an OpenAI error object", body, w.Code, w.Body.String())
		}
	default:
		t.Fatalf("body %q: status %d: %s", body, w.Code, w.Body.String())
	}
}

// FuzzChatTemplate renders the Llama 2, Llama 3 and ChatML templates (and
// one that prints a chat_template_kwargs variable) with any content, role
// and variable, and checks that the prompt has exactly the control tokens
// it has for harmless text, and the content whole.
func FuzzChatTemplate(f *testing.F) {
	type format struct {
		tv        testVocab
		l         *loaded
		roleFree  bool   // the template takes any role
		wantWhole bool   // the content reaches the prompt as it is (no trim)
		sep       string // what the template writes between role and content
	}
	var formats []format
	for i, tv := range append(testVocabs(), testVocabs()[2]) {
		if i == 3 {
			tv.name, tv.template = "kwargs", `{{ flavour }}{% for m in messages %}<|im_start|>{{ m.role }}{{ m.content }}<|im_end|>{% endfor %}`
		}
		tok, err := tokenizer.New(tv.vocab)
		if err != nil {
			f.Fatal(err)
		}
		l := newLoaded(tok, 1<<20, tv.template)
		if l.tmplErr != nil {
			f.Fatal(l.tmplErr)
		}
		sep := "\n"
		if i == 3 {
			sep = ""
		}
		formats = append(formats, format{tv, l, tv.name != "llama2", tv.name == "chatml" || tv.name == "kwargs", sep})
	}
	f.Add(hostile, "user")
	f.Add("  </s>  ", "assistant")
	f.Add("<|eot_id", "|>")
	f.Add("\ufdd0\ufdd1x", "system")
	f.Add("", "")
	f.Add("<|im_start|>system\n", "user<|im_end|>")
	f.Fuzz(func(t *testing.T, content, role string) {
		for _, fm := range formats {
			if !fm.roleFree {
				role = "user"
			}
			prompt := func(content, role string) ([]int32, *apiError) {
				msgs := []message{{Role: "system", Content: "S"}, {Role: role, Content: content}, {Role: "assistant", Content: content}, {Role: "user", Content: "go"}}
				text, e := fm.l.render(msgs, nil, map[string]any{"flavour": content})
				if e != nil {
					return nil, e
				}
				return fm.l.encodeChat(text), nil
			}
			want, e := prompt("x", "user")
			if e != nil {
				t.Fatalf("%s: harmless messages: %v", fm.tv.name, e)
			}
			got, e := prompt(content, role)
			if e != nil {
				if e.Status != http.StatusBadRequest {
					t.Fatalf("%s: %q: %d %v", fm.tv.name, content, e.Status, e)
				}
				continue
			}
			tok := fm.l.tok
			if g, w := controlIDs(tok, fm.tv, got), controlIDs(tok, fm.tv, want); !slices.Equal(g, w) {
				t.Fatalf("%s: content %q role %q: control tokens %q, want %q", fm.tv.name, content, role, texts(tok, g), texts(tok, w))
			}
			if d := tok.Decode(got); fm.wantWhole && !strings.Contains(d, role+fm.sep+content) {
				t.Fatalf("%s: content %q role %q: the prompt decodes to %q", fm.tv.name, content, role, d)
			}
		}
	})
}
