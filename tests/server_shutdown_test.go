package tests

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// TestServerTimeout checks --timeout, on a whole answer and on a stream.
// The requests cannot end before it on any device: they ask for nearly a
// million tokens, one step (a host round trip) each, with attention over
// up to a million positions, and the greedy continuation of this model
// holds no end-of-sequence token (none in its first 20000 tokens).
func TestServerTimeout(t *testing.T) {
	srv := startServer(t, "-m", filepath.Join(modelsDir(t), "llama-2-tiny-random.gguf"), "-c", "1000000", "--timeout", "1s")
	status, body := srv.post(t, "/v1/completions", "", []byte(`{"prompt": "Once", "max_tokens": 999000, "temperature": 0}`))
	checkError(t, "timeout", status, body, http.StatusGatewayTimeout, "server_error", "timeout")

	s, err := srv.client("", nil).CreateCompletionStream(context.Background(),
		openai.CompletionRequest{Prompt: "Once", MaxTokens: 999000, Temperature: greedy, Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = readStream(s)
	s.Close()
	if err == nil || !strings.Contains(err.Error(), "--timeout") {
		t.Fatalf("stream past the timeout ended with %v", err)
	}
	status, body = srv.post(t, "/v1/completions", "", []byte(`{"prompt": "Once", "max_tokens": 4}`))
	if status != 200 {
		t.Fatalf("after timeouts: %d %s", status, body)
	}
}

// TestServerShutdown sends SIGTERM during streams: one that ends within
// the grace period completes; one that does not is cancelled; the process
// exits 0 either way.
func TestServerShutdown(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	t.Run("finishes", func(t *testing.T) {
		const n = 200
		want, _ := expected(t, model, "Once upon a time", n)
		// The grace is long enough for any device to finish the stream.
		srv := startServer(t, "-m", model, "--grace", "2m")
		s, err := srv.client("", nil).CreateCompletionStream(context.Background(),
			openai.CompletionRequest{Prompt: "Once upon a time", MaxTokens: n, Temperature: greedy, Stream: true})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		first, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		srv.cmd.Process.Signal(syscall.SIGTERM)
		rest, err := readStream(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := first.Choices[0].Text + rest.text; got != want || rest.finish != "length" {
			t.Errorf("stream during shutdown: %q (%s), want %q", got, rest.finish, want)
		}
		waitExit(t, srv)
		log := srv.log.String()
		shut, done := strings.Index(log, `msg="shutting down"`), strings.Index(log, "route=/v1/completions status=200")
		if shut < 0 || done < shut {
			t.Errorf("the stream was not running when the shutdown began:\n%s", log)
		}
	})
	t.Run("cancels", func(t *testing.T) {
		// A stream that cannot end within the grace (see TestServerTimeout).
		srv := startServer(t, "-m", filepath.Join(modelsDir(t), "llama-2-tiny-random.gguf"), "-c", "1000000", "--grace", "300ms")
		s, err := srv.client("", nil).CreateCompletionStream(context.Background(),
			openai.CompletionRequest{Prompt: "Once", MaxTokens: 999000, Temperature: greedy, Stream: true})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for range 2 {
			if _, err := s.Recv(); err != nil {
				t.Fatal(err)
			}
		}
		srv.cmd.Process.Signal(syscall.SIGTERM)
		_, err = readStream(s)
		if err == nil || !strings.Contains(err.Error(), "shutting down") {
			t.Errorf("a stream cut by shutdown ended with %v", err)
		}
		waitExit(t, srv)
	})
}

// TestServerLoadFails checks that a model that cannot be loaded ends the
// server with an error, and that bad flags are refused.
func TestServerLoadFails(t *testing.T) {
	_, stderr, err := run(t, "serve", "-m", filepath.Join(t.TempDir(), "none.gguf"), "--port", "0")
	if err == nil || !strings.Contains(stderr, "no such file") {
		t.Errorf("serve with a missing model: %v\n%s", err, stderr)
	}
	_, stderr, err = run(t, "serve", "-m", filepath.Join(modelsDir(t), "stories260K.gguf"), "--port", "70000")
	if err == nil || !strings.Contains(stderr, "not a TCP port") {
		t.Errorf("serve --port 70000: %v\n%s", err, stderr)
	}
}

// waitExit waits for the server to exit and checks it exited 0. The
// deadline is generous: it only tells a hung shutdown from a slow one.
func waitExit(t *testing.T, srv *serverProc) {
	t.Helper()
	select {
	case err := <-srv.exit:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the server did not exit within 2 minutes of SIGTERM")
	}
}
