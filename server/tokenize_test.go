package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"headinfer/engine/sample"
	"headinfer/engine/tokenizer"
)

type tokenizeAnswer struct {
	Tokens []struct {
		ID    int32
		Piece json.RawMessage
	}
}

func TestTokenize(t *testing.T) {
	tv := testVocabs()[0] // SentencePiece with byte tokens
	tok, _ := tokenizer.New(tv.vocab)
	s := fakeServer(t, Options{}, tv, 1<<12, nil)
	const text = "héllo </s> you"

	status, body := post(t, s, "/tokenize", `{"content": "`+text+`", "with_pieces": true}`)
	if status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	var got tokenizeAnswer
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	// parse_special is on by default, as in llama-server; add_special off.
	want := tok.EncodeSpecial(text, false)
	if !slices.Contains(want, tok.EOS()) || want[0] == tok.BOS() {
		t.Fatalf("the test's premise does not hold: %v", want)
	}
	var joined []byte
	bytePieces := 0
	for i, e := range got.Tokens {
		if i >= len(want) || e.ID != want[i] {
			t.Fatalf("tokens %+v, want ids %v", got.Tokens, want)
		}
		// A string where the piece is valid UTF-8, else its bytes.
		var str string
		var raw []byte
		if err := json.Unmarshal(e.Piece, &str); err == nil {
			raw = []byte(str)
		} else {
			var nums []int
			if err := json.Unmarshal(e.Piece, &nums); err != nil {
				t.Fatalf("piece %s is neither a string nor bytes", e.Piece)
			}
			bytePieces++
			for _, n := range nums {
				raw = append(raw, byte(n))
			}
		}
		if e.ID == tok.EOS() {
			if string(raw) != "</s>" {
				t.Errorf("the control token's piece is %q", raw)
			}
			raw = nil
		}
		joined = append(joined, raw...)
	}
	if len(got.Tokens) != len(want) || string(joined) != " "+tok.Decode(want) {
		t.Errorf("pieces join to %q (%d tokens, want %d)", joined, len(got.Tokens), len(want))
	}
	if bytePieces != 2 { // é is two byte tokens
		t.Errorf("%d pieces as bytes, want 2: %s", bytePieces, body)
	}

	// Ids only; parse_special off; add_special on.
	_, body = post(t, s, "/tokenize", `{"content": "`+text+`", "parse_special": false, "add_special": true}`)
	var ids struct{ Tokens []int32 }
	if err := json.Unmarshal([]byte(body), &ids); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids.Tokens, tok.Encode(text, true)) || ids.Tokens[0] != tok.BOS() || slices.Contains(ids.Tokens, tok.EOS()) {
		t.Errorf("tokens %v, want %v", ids.Tokens, tok.Encode(text, true))
	}

	// /detokenize undoes /tokenize, BOS or not.
	for _, add := range []string{"false", "true"} {
		_, body = post(t, s, "/tokenize", `{"content": "`+text+`", "parse_special": false, "add_special": `+add+`}`)
		if err := json.Unmarshal([]byte(body), &ids); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(map[string]any{"tokens": ids.Tokens})
		status, body = post(t, s, "/detokenize", string(b))
		var de struct{ Content string }
		if err := json.Unmarshal([]byte(body), &de); err != nil || status != 200 || de.Content != text {
			t.Errorf("add_special %s: detokenize answered %d %s, want %q", add, status, body, text)
		}
	}

	for _, c := range []struct{ path, body, param string }{
		{"/detokenize", `{"tokens": [5, 354]}`, "tokens"},
		{"/detokenize", `{"tokens": [-1]}`, "tokens"},
		{"/detokenize", `{"tokens": "abc"}`, "tokens"},
		{"/tokenize", `{"with_pieces": true}`, "content"},
		{"/tokenize", `{"content": 5}`, "content"},
	} {
		status, body := post(t, s, c.path, c.body)
		var e errorBody
		if err := json.Unmarshal([]byte(body), &e); err != nil || status != 400 || e.Error.Param == nil || *e.Error.Param != c.param {
			t.Errorf("%s %s: %d %s, want 400 naming %s", c.path, c.body, status, body, c.param)
		}
	}
}

// TestTokenizeDoesNotQueue checks that /tokenize, /detokenize and /props
// answer while the queue is busy, and that they take an admission place
// like every request.
func TestTokenizeDoesNotQueue(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 4)
	gen := func(ctx context.Context, l *loaded, j *job, emit func(string) error) (outcome, error) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return outcome{}, context.Cause(ctx)
		}
		return answerOK(ctx, l, j, emit)
	}
	s := fakeServer(t, Options{Parallel: 1, MaxQueue: 1}, testVocabs()[0], 1<<12, gen)
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	defer close(release)
	send := func(path, body string) (int, string) {
		req, _ := http.NewRequest("POST", ts.URL+path, strings.NewReader(body))
		if body == "" {
			req.Method = "GET"
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	go send("/v1/completions", `{"prompt": "hi"}`)
	<-entered // the one place running is taken; one admission place is left

	light := []struct{ path, body string }{
		{"/tokenize", `{"content": "hi"}`}, {"/detokenize", `{"tokens": [5]}`}, {"/props", ""},
	}
	for _, c := range light {
		done := make(chan int, 1)
		go func() {
			st, _ := send(c.path, c.body)
			done <- st
		}()
		select {
		case st := <-done:
			if st != 200 {
				t.Errorf("%s beside a running generation: status %d", c.path, st)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s waited behind the running generation", c.path)
		}
	}

	// A generation waits in the queue now, holding the last admission
	// place: the next request of any route is turned away.
	go send("/v1/completions", `{"prompt": "hi"}`)
	deadline := time.Now().Add(10 * time.Second)
	for s.admit.held() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	for _, c := range light {
		if st, body := send(c.path, c.body); st != 429 {
			t.Errorf("%s with every admission place held: %d %s", c.path, st, body)
		}
	}
}

func TestProps(t *testing.T) {
	tv := testVocabs()[1]
	s := fakeServer(t, Options{Parallel: 3, ModelPath: "/models/tiny-chat.gguf"}, tv, 2048, nil)
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/props", nil))
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var p struct {
		DefaultGenerationSettings struct {
			NCtx   int `json:"n_ctx"`
			Params struct {
				NPredict      int     `json:"n_predict"`
				Temperature   float32 `json:"temperature"`
				TopK          int     `json:"top_k"`
				TopP          float32 `json:"top_p"`
				MinP          float32 `json:"min_p"`
				RepeatPenalty float32 `json:"repeat_penalty"`
				RepeatLastN   int     `json:"repeat_last_n"`
			} `json:"params"`
		} `json:"default_generation_settings"`
		TotalSlots   int    `json:"total_slots"`
		ModelAlias   string `json:"model_alias"`
		ModelPath    string `json:"model_path"`
		ChatTemplate string `json:"chat_template"`
		BuildInfo    string `json:"build_info"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	d, g := sample.Defaults(), p.DefaultGenerationSettings
	if g.NCtx != 2048 || p.TotalSlots != 3 || p.ModelAlias != "tiny-chat" || p.ModelPath != "/models/tiny-chat.gguf" ||
		p.ChatTemplate != tv.template || !strings.HasPrefix(p.BuildInfo, "headinfer ") {
		t.Errorf("props %s", w.Body)
	}
	if g.Params.NPredict != -1 || g.Params.Temperature != d.Temperature || g.Params.TopK != d.TopK || g.Params.TopP != d.TopP ||
		g.Params.MinP != d.MinP || g.Params.RepeatPenalty != d.RepeatPenalty || g.Params.RepeatLastN != d.RepeatLastN {
		t.Errorf("default settings %+v, want llama.cpp's %+v", g.Params, d)
	}
}
