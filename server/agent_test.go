package server

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestBalancerSignals checks what a load balancer reads from a replica as
// its places fill: /health's ok, busy and loading (with Retry-After), the
// agent check's weight, drain and down, and Retry-After on a 429.
func TestBalancerSignals(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 4)
	gen := func(ctx context.Context, l *loaded, j *job, emit func(string) error) (outcome, error) {
		started <- struct{}{}
		<-release
		return answerOK(ctx, l, j, emit)
	}
	s := fakeServer(t, Options{Parallel: 1, MaxQueue: 1}, testVocabs()[0], 256, gen)
	health := func() (int, string, string) {
		t.Helper()
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/health", nil))
		var body struct{ Status string }
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatalf("/health: %s", w.Body)
		}
		return w.Code, body.Status, w.Header().Get("Retry-After")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go s.ServeAgent(ln)
	agent := func() string {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return line
	}
	check := func(when string, wantStatus, wantAgent string) {
		t.Helper()
		if code, status, _ := health(); code != 200 || status != wantStatus {
			t.Errorf("%s: /health %d %q, want 200 %q", when, code, status, wantStatus)
		}
		if line := agent(); line != wantAgent {
			t.Errorf("%s: agent %q, want %q", when, line, wantAgent)
		}
	}
	check("idle", "ok", "up ready 100%\n")

	answers := make(chan int, 2)
	// waitFor sends a request and waits until the queue holds it as
	// running and waiting say.
	waitFor := func(running, waiting int) {
		t.Helper()
		go func() {
			code, _ := post(t, s, "/v1/completions", `{"prompt": "a", "max_tokens": 1}`)
			answers <- code
		}()
		deadline := time.Now().Add(5 * time.Second)
		for w, r := s.queue.depth(); w != waiting || r != running; w, r = s.queue.depth() {
			if time.Now().After(deadline) {
				t.Fatalf("the queue never held %d running and %d waiting", running, waiting)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor(1, 0)
	check("one running", "ok", "up ready 50%\n")
	waitFor(1, 1)
	check("one running, one waiting", "busy", "up ready 1%\n")
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest("POST", "/v1/completions", strings.NewReader(`{"prompt": "a", "max_tokens": 1}`)))
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" {
		t.Errorf("a request beyond the queue: %d, Retry-After %q, want 429 and 1", w.Code, w.Header().Get("Retry-After"))
	}
	close(release)
	for range 2 {
		if code := <-answers; code != 200 {
			t.Errorf("a held request was answered %d", code)
		}
	}
	check("idle again", "ok", "up ready 100%\n")

	s.draining.Store(true)
	if line := agent(); line != "up drain\n" {
		t.Errorf("draining: agent %q, want \"up drain\"", line)
	}
	s.draining.Store(false)
	s.model.Store(nil)
	if code, status, retry := health(); code != 503 || status != "loading" || retry != "5" {
		t.Errorf("loading: /health %d %q, Retry-After %q, want 503 loading 5", code, status, retry)
	}
	if line := agent(); line != "down\n" {
		t.Errorf("loading: agent %q, want \"down\"", line)
	}
}
