package tests

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"headinfer/engine/gguf"
)

// trickle opens a connection to the server that sends the headers of a
// completion whose body is to be 100000 bytes long, then one byte of it
// every 100 ms, until the server answers or limit passes. It returns the
// answer's status line ("" when there was none).
func trickle(srv *serverProc, limit time.Duration) (string, error) {
	u, err := url.Parse(srv.url)
	if err != nil {
		return "", err
	}
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"); err != nil {
		return "", err
	}
	answered := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(c).ReadString('\n')
		answered <- strings.TrimSpace(line)
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	giveUp := time.After(limit)
	for {
		select {
		case line := <-answered:
			return line, nil
		case <-giveUp:
			return "", fmt.Errorf("no answer within %v", limit)
		case <-tick.C:
			_, _ = io.WriteString(c, " ")
		}
	}
}

// TestServerSlowBodies opens 2 × --parallel + --max-queue connections that
// send their headers and then trickle their bodies, and checks that a
// normal request is still served within the read timeout, that the slow
// ones are answered 408, and that the server's goroutines and admission
// places return to their baseline.
func TestServerSlowBodies(t *testing.T) {
	const parallel, maxQueue, readTimeout = 2, 2, 2 * time.Second
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	srv := startServer(t, "-m", model, "-c", "256", "--parallel", fmt.Sprint(parallel), "--max-queue", fmt.Sprint(maxQueue),
		"--read-timeout", readTimeout.String())
	hc := &http.Client{Transport: &http.Transport{}, Timeout: time.Minute}
	normal := func() (int, error) {
		resp, err := hc.Post(srv.url+"/v1/completions", "application/json", strings.NewReader(`{"prompt": "Once", "max_tokens": 4}`))
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, err
	}
	if code, err := normal(); code != 200 {
		t.Fatalf("before the slow clients: %d %v", code, err)
	}
	hc.CloseIdleConnections()
	time.Sleep(200 * time.Millisecond)
	goroutines := srv.metric(t, "go_goroutines")

	const n = 2*parallel + maxQueue
	answers := make(chan string, n)
	for range n {
		go func() {
			status, err := trickle(srv, readTimeout+5*time.Second)
			if err != nil {
				status = err.Error()
			}
			answers <- status
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.metric(t, "headinfer_connections") < n+1 { // the slow ones and the scrape's
		if time.Now().After(deadline) {
			t.Fatal("the slow connections never opened")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if held := srv.metric(t, "headinfer_requests_held"); held != 0 {
		t.Errorf("clients still sending their bodies hold %v admission places", held)
	}
	start := time.Now()
	if code, err := normal(); code != 200 || time.Since(start) >= readTimeout {
		t.Errorf("a normal request beside %d slow ones: status %d (%v) after %v, want 200 within %v", n, code, err, time.Since(start), readTimeout)
	}
	for range n {
		if status := <-answers; !strings.HasPrefix(status, "HTTP/1.1 408") {
			t.Errorf("a slow body was answered %q, want 408", status)
		}
	}
	hc.CloseIdleConnections()
	deadline = time.Now().Add(10 * time.Second)
	for {
		g, held := srv.metric(t, "go_goroutines"), srv.metric(t, "headinfer_requests_held")
		if g <= goroutines && held == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the slow clients: %v goroutines (%v before), %v admission places held", g, goroutines, held)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if v := srv.metric(t, `headinfer_requests_total{route="/v1/completions",status="408"}`); v != n {
		t.Errorf("%v requests counted 408, want %d", v, n)
	}
}

// TestServerAuth checks which routes --api-key guards: all but /health,
// /metrics and /slots included; --metrics-public opens /metrics alone.
func TestServerAuth(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	const key = "test-key"
	get := func(srv *serverProc, method, path, key, body string) int {
		t.Helper()
		req, err := http.NewRequest(method, srv.url+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	routes := []struct{ method, path, body string }{
		{"GET", "/metrics", ""},
		{"GET", "/v1/models", ""},
		{"GET", "/v1/models/stories260K", ""},
		{"POST", "/slots/0?action=save", `{"filename": "a.bin"}`},
	}
	srv := startServer(t, "-m", model, "-c", "256", "--api-key", key, "--kv-cache-dir", t.TempDir())
	for _, r := range routes {
		if code := get(srv, r.method, r.path, "", r.body); code != 401 {
			t.Errorf("%s %s without the key: %d, want 401", r.method, r.path, code)
		}
		if code := get(srv, r.method, r.path, "wrong", r.body); code != 401 {
			t.Errorf("%s %s with a wrong key: %d, want 401", r.method, r.path, code)
		}
		if code := get(srv, r.method, r.path, key, r.body); code != 200 {
			t.Errorf("%s %s with the key: %d, want 200", r.method, r.path, code)
		}
	}
	for _, k := range []string{"", "wrong", key} {
		if code := get(srv, "GET", "/health", k, ""); code != 200 {
			t.Errorf("/health with key %q: %d, want 200", k, code)
		}
	}

	pub := startServer(t, "-m", model, "-c", "256", "--api-key", key, "--metrics-public")
	if code := get(pub, "GET", "/metrics", "", ""); code != 200 {
		t.Errorf("--metrics-public: /metrics without the key: %d, want 200", code)
	}
	if code := get(pub, "GET", "/v1/models", "", ""); code != 401 {
		t.Errorf("--metrics-public: /v1/models without the key: %d, want 401", code)
	}
}

// vocabSize reads the number of tokens of a model's vocabulary.
func vocabSize(t *testing.T, model string) int {
	t.Helper()
	f, err := gguf.Open(model)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	toks, ok := f.Strings("tokenizer.ggml.tokens")
	if !ok {
		t.Fatalf("%s has no tokenizer.ggml.tokens", model)
	}
	return len(toks)
}

// TestServerTokenIDs checks that token ids outside the vocabulary, in a
// prompt or in logit_bias, and biases outside [-100, 100] are answered
// 400 naming the id and the vocabulary size.
func TestServerTokenIDs(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	vocab := vocabSize(t, model)
	srv := startServer(t, "-m", model, "-c", "256")
	for _, c := range []struct{ body, want string }{
		{fmt.Sprintf(`{"prompt": "Once", "logit_bias": {"%d": 1}}`, vocab), fmt.Sprintf("token id %d is outside the vocabulary of %d tokens", vocab, vocab)},
		{fmt.Sprintf(`{"prompt": [1, %d]}`, vocab), fmt.Sprintf("token id %d is outside the vocabulary of %d tokens", vocab, vocab)},
		{`{"prompt": "Once", "logit_bias": {"5": 101}}`, "between -100 and 100"},
	} {
		status, body := srv.post(t, "/v1/completions", "", []byte(c.body))
		checkError(t, c.body, status, body, 400, "invalid_request_error", "invalid_value")
		if !strings.Contains(string(body), c.want) {
			t.Errorf("%s: %s, want it to say %q", c.body, body, c.want)
		}
	}
	status, body := srv.post(t, "/v1/completions", "", []byte(fmt.Sprintf(`{"prompt": "Once", "max_tokens": 3, "logit_bias": {"%d": 1}}`, vocab-1)))
	if status != 200 {
		t.Errorf("logit_bias of the last id: %d %s", status, body)
	}
}
