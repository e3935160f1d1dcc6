package tests

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// is429 reports whether err is the server's queue-full answer.
func is429(err error) bool {
	var e *openai.APIError
	return errors.As(err, &e) && e.HTTPStatusCode == http.StatusTooManyRequests
}

// streamed is what a completion stream carried.
type streamed struct {
	text, finish string
	usage        *openai.Usage
	chunks       int
}

// readStream reads a completion stream to its end.
func readStream(s *openai.CompletionStream) (streamed, error) {
	var out streamed
	var text strings.Builder
	for {
		r, err := s.Recv()
		if err != nil {
			out.text = text.String()
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return out, err
		}
		if r.Usage != nil {
			out.usage = r.Usage
		}
		for _, ch := range r.Choices {
			text.WriteString(ch.Text)
			if ch.FinishReason != "" {
				out.finish = ch.FinishReason
			}
		}
		out.chunks++
	}
}

// TestServerQueue runs stories260K with no chat template, 4 sequences at
// once and a queue of 3.
func TestServerQueue(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	srv := startServer(t, "-m", model, "-c", "512", "--parallel", "4", "--max-queue", "3")
	t.Run("full", func(t *testing.T) { testQueueFull(t, srv, model) })
	t.Run("plainchat", func(t *testing.T) { testPlainChat(t, srv, model) })
	t.Run("load", func(t *testing.T) { testLoad(t, srv, model) })
}

// testQueueFull fills the queue behind four running streams and checks
// that the next request is turned away at once with 429, and that the
// waiting ones are served, correctly, once the streams' clients leave.
func testQueueFull(t *testing.T, srv *serverProc, model string) {
	ctx := context.Background()
	c := srv.client("", nil)
	want, _ := expected(t, model, "The cat", 8, "-c", "512")
	var running []*openai.CompletionStream
	for range 4 {
		s, err := c.CreateCompletionStream(ctx, openai.CompletionRequest{Prompt: "Once", MaxTokens: 500, Temperature: greedy, Stream: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
		running = append(running, s)
	}
	results := make(chan error, 3)
	for range 3 {
		go func() {
			r, err := c.CreateCompletion(ctx, openai.CompletionRequest{Prompt: "The cat", MaxTokens: 8, Temperature: greedy})
			if err == nil && r.Choices[0].Text != want {
				err = fmt.Errorf("got %q, want %q", r.Choices[0].Text, want)
			}
			results <- err
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.metric(t, "headinfer_queue_depth") != 3 {
		if time.Now().After(deadline) {
			t.Fatal("the queue never held 3 requests")
		}
		time.Sleep(5 * time.Millisecond)
	}
	status, body := srv.post(t, "/v1/completions", "", []byte(`{"prompt": "hi", "max_tokens": 2}`))
	checkError(t, "queue full", status, body, 429, "rate_limit_error", "queue_full")

	_, err := c.CreateChatCompletion(ctx, openai.ChatCompletionRequest{Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "x"}}})
	if !is429(err) {
		t.Errorf("chat with a full queue: %v, want 429", err)
	}
	for _, s := range running {
		s.Close() // the running clients leave
	}
	for range 3 {
		if err := <-results; err != nil {
			t.Error(err)
		}
	}
	// Turned away at once, not after a wait for room: the server logged
	// the 429 before it served any of the waiting requests.
	log := srv.log.String()
	full, served := strings.Index(log, "route=/v1/completions status=429"), strings.Index(log, "route=/v1/completions status=200")
	if full < 0 || (served >= 0 && served < full) {
		t.Errorf("the 429 was logged after a waiting request was served:\n%s", log)
	}
}

// testPlainChat checks the prompt used without a chat template.
func testPlainChat(t *testing.T, srv *serverProc, model string) {
	want, _ := expected(t, model, "user: Tell me about a dog.\nassistant:", 24, "-c", "512")
	resp, err := srv.client("", nil).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "Tell me about a dog."}}, MaxTokens: 24, Temperature: greedy,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Choices[0].Message.Content; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// testLoad sends 50 requests from each of 8 clients at once, some of
// which leave mid-stream or while waiting, at random, against 4 running
// sequences and a queue of 3: every answer that completes must be its own
// prompt's, as the command line generates it alone; the queue must turn
// some away with 429, each client that left must be counted as such, and
// afterwards the queue must be empty, the server healthy and its
// goroutines back to their number.
func testLoad(t *testing.T, srv *serverProc, model string) {
	prompts := []string{"Once upon a time", "The little dog", "Lily and Ben", "One day, a bird"}
	const n = 24
	want := make([]string, len(prompts))
	for i, p := range prompts {
		want[i], _ = expected(t, model, p, n, "-c", "512")
	}
	time.Sleep(100 * time.Millisecond) // let connections of earlier tests close
	goroutines := srv.metric(t, "go_goroutines")
	gone0 := srv.metric(t, `headinfer_requests_total{route="/v1/completions",status="499"}`)
	full0 := srv.metric(t, `headinfer_requests_total{route="/v1/completions",status="429"}`)

	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	c := srv.client("", &http.Client{Transport: tr})
	const perClient = 50
	var mu sync.Mutex
	var completed, left, rejected, leaving int
	var failures []string
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for cl := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(cl), 1))
			<-start
			for k := range perClient {
				p := (cl + k) % len(prompts)
				kind := "whole"
				switch r := rng.IntN(100); {
				case r < 10:
					kind = "disconnect"
				case r < 13:
					kind = "abandon"
				case r < 55:
					kind = "stream"
				}
				if kind == "disconnect" || kind == "abandon" {
					mu.Lock()
					leaving++
					mu.Unlock()
				}
				for {
					err := loadRequest(c, kind, prompts[p], want[p], n)
					if is429(err) {
						mu.Lock()
						rejected++
						mu.Unlock()
						time.Sleep(time.Duration(20+rng.IntN(40)) * time.Millisecond)
						continue
					}
					switch {
					case err != nil:
						fail("client %d request %d (%s): %v", cl, k, kind, err)
					case kind == "disconnect" || kind == "abandon":
						mu.Lock()
						left++
						mu.Unlock()
					default:
						mu.Lock()
						completed++
						mu.Unlock()
					}
					break
				}
			}
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	t.Logf("%d completed, %d left, %d answered 429, in %v", completed, left, rejected, time.Since(t0).Round(time.Millisecond))
	for _, f := range failures {
		t.Error(f)
	}
	if completed != 8*perClient-leaving || left != leaving || leaving == 0 {
		t.Errorf("%d completed and %d left, want %d and %d (> 0)", completed, left, 8*perClient-leaving, leaving)
	}
	if rejected == 0 {
		t.Error("8 clients against a queue of 3 never got a 429")
	}
	if d := srv.metric(t, `headinfer_requests_total{route="/v1/completions",status="429"}`) - full0; int(d) != rejected {
		t.Errorf("the server counted %v answers 429, the clients %d", d, rejected)
	}

	tr.CloseIdleConnections()
	deadline := time.Now().Add(time.Minute)
	for {
		gone := srv.metric(t, `headinfer_requests_total{route="/v1/completions",status="499"}`) - gone0
		g := srv.metric(t, "go_goroutines")
		depth, running := srv.metric(t, "headinfer_queue_depth"), srv.metric(t, "headinfer_requests_running")
		if int(gone) == leaving && g <= goroutines+2 && depth == 0 && running == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the load: %v requests counted as gone (want %d), %v goroutines (%v before), queue %v, running %v",
				gone, leaving, g, goroutines, depth, running)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Still serving, correctly.
	r, err := srv.client("", nil).CreateCompletion(context.Background(), openai.CompletionRequest{Prompt: prompts[0], MaxTokens: n, Temperature: greedy})
	if err != nil || r.Choices[0].Text != want[0] {
		t.Fatalf("after the load: %v %+v", err, r)
	}
}

// loadRequest makes one request of the load test: "whole" and "stream"
// must return want; "disconnect" reads two chunks of a long stream and
// leaves; "abandon" gives up after 150 ms on a long request.
func loadRequest(c *openai.Client, kind, prompt, want string, n int) error {
	ctx := context.Background()
	req := openai.CompletionRequest{Prompt: prompt, MaxTokens: n, Temperature: greedy}
	switch kind {
	case "whole":
		r, err := c.CreateCompletion(ctx, req)
		if err != nil {
			return err
		}
		if r.Choices[0].Text != want || r.Choices[0].FinishReason != "length" {
			return fmt.Errorf("got %q (%s), want %q", r.Choices[0].Text, r.Choices[0].FinishReason, want)
		}
	case "stream":
		req.Stream = true
		s, err := c.CreateCompletionStream(ctx, req)
		if err != nil {
			return err
		}
		defer s.Close()
		got, err := readStream(s)
		if err != nil {
			return err
		}
		if got.text != want || got.finish != "length" {
			return fmt.Errorf("streamed %q (%s), want %q", got.text, got.finish, want)
		}
	case "disconnect":
		req.Stream, req.MaxTokens = true, 400
		s, err := c.CreateCompletionStream(ctx, req)
		if err != nil {
			return err
		}
		for range 2 {
			if _, err := s.Recv(); err != nil {
				s.Close()
				return err
			}
		}
		return s.Close()
	case "abandon":
		ctx, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
		defer cancel()
		req.MaxTokens = 400
		_, err := c.CreateCompletion(ctx, req)
		if is429(err) {
			return err
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("a request given up after 150 ms returned %v", err)
		}
	}
	return nil
}
