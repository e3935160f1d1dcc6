package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"headinfer/engine/gguf"
)

// greedy is how go-openai asks for temperature 0: it leaves a zero
// temperature out of the request, and the server treats a tiny one as 0.
const greedy = math.SmallestNonzeroFloat32

// serverProc is a running `headinfer serve`.
type serverProc struct {
	cmd  *exec.Cmd
	url  string // http://127.0.0.1:PORT
	exit chan error
	log  *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) add(line string) {
	l.mu.Lock()
	l.b.WriteString(line + "\n")
	l.mu.Unlock()
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var listeningRE = regexp.MustCompile(`msg=listening addr=(\S+)`)

// startServer starts the binary on a free port of 127.0.0.1 and waits for
// GET /health to answer 200. The process is stopped when the test ends.
func startServer(t *testing.T, args ...string) *serverProc {
	t.Helper()
	return startServerEnv(t, nil, args...)
}

// startServerEnv is startServer with env ("NAME=value") added to the
// process's environment.
func startServerEnv(t *testing.T, env []string, args ...string) *serverProc {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"serve", "--port", "0"}, args...)...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProc{cmd: cmd, exit: make(chan error, 1), log: &lockedBuffer{}}
	addr := make(chan string, 1)
	go func() {
		// Keep reading to the end: a full pipe would block the server.
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.log.add(sc.Text())
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		p.exit <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.exit:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-p.exit
			}
		}
		if t.Failed() {
			t.Logf("server log:\n%s", p.log.String())
		}
		if log := p.log.String(); strings.Contains(log, "panic") || strings.Contains(log, "DATA RACE") {
			t.Errorf("the server panicked or raced:\n%s", log)
		}
	})
	select {
	case a := <-addr:
		p.url = "http://" + a
	case err := <-p.exit:
		p.exit <- err
		t.Fatalf("the server exited (%v):\n%s", err, p.log.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("the server did not say where it listens:\n%s", p.log.String())
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(p.url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("GET /health: status %d", resp.StatusCode)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not become ready:\n%s", p.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// client is an OpenAI client for the server.
func (p *serverProc) client(key string, hc *http.Client) *openai.Client {
	cfg := openai.DefaultConfig(key)
	cfg.BaseURL = p.url + "/v1"
	if hc != nil {
		cfg.HTTPClient = hc
	}
	return openai.NewClientWithConfig(cfg)
}

// metric reads one unlabelled (or fully labelled) sample from /metrics;
// absent samples read as 0.
func (p *serverProc) metric(t *testing.T, name string) float64 {
	t.Helper()
	return p.metricKey(t, "", name)
}

// metricKey is metric from a server that wants the API key.
func (p *serverProc) metricKey(t *testing.T, key, name string) float64 {
	t.Helper()
	// The whole body is read (by get), so that the scrapes share one
	// kept-alive connection: a connection closed under an unread body
	// leaves a server goroutine behind for a moment, which goroutine
	// counts would see.
	status, body := p.get(t, "/metrics", key)
	if status != 200 {
		t.Fatalf("/metrics: %d %s", status, body)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	return 0
}

// get sends GET path with key (if any) and returns the status and body.
func (p *serverProc) get(t *testing.T, path, key string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", p.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// postJSON sends body to path and returns the status and the body.
func (p *serverProc) post(t *testing.T, path, key string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", p.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// expected runs `generate --temp 0 --json` and returns its text and the
// number of prompt tokens.
func expected(t *testing.T, model, prompt string, n int, extra ...string) (text string, promptTokens int) {
	t.Helper()
	args := append([]string{"generate", "-m", model, "-p", prompt, "-n", strconv.Itoa(n), "--temp", "0", "--json"}, extra...)
	stdout, stderr, err := run(t, args...)
	if err != nil {
		t.Fatalf("generate: %v\n%s", err, stderr)
	}
	var out generateOutput
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("generate output: %v\n%s", err, stdout)
	}
	return out.Text, len(out.PromptIDs)
}

// llama2Template is the Llama-2 chat format: the system prompt folded into
// the first user turn, roles that must alternate.
const llama2Template = `{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}` +
	`{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}` +
	`{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}` +
	`{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}`

// withChatTemplate copies a model, adding tokenizer.chat_template.
func withChatTemplate(t *testing.T, src, dst, template string) {
	rewriteModel(t, src, dst, func(kv []gguf.KV) []gguf.KV {
		kv = slices.DeleteFunc(kv, func(e gguf.KV) bool { return e.Key == "tokenizer.chat_template" })
		return append(kv, gguf.KV{Key: "tokenizer.chat_template", Value: template})
	})
}

// TestServer runs the API on a copy of stories260K with a Llama-2 chat
// template, behind an API key.
func TestServer(t *testing.T) {
	model := filepath.Join(t.TempDir(), "stories260K-chat.gguf")
	withChatTemplate(t, filepath.Join(modelsDir(t), "stories260K.gguf"), model, llama2Template)
	const key = "test-key"
	srv := startServer(t, "-m", model, "-c", "512", "--api-key", key)
	c := srv.client(key, nil)
	ctx := context.Background()

	t.Run("models", func(t *testing.T) {
		list, err := c.ListModels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Models) != 1 || list.Models[0].ID != "stories260K-chat" {
			t.Fatalf("models: %+v", list.Models)
		}
	})
	t.Run("completion", func(t *testing.T) { testCompletion(t, c, model) })
	t.Run("stop", func(t *testing.T) { testStop(t, c, model) })
	t.Run("chat", func(t *testing.T) { testChat(t, c, model) })
	t.Run("seed", func(t *testing.T) { testSeed(t, c) })
	t.Run("badinput", func(t *testing.T) { testBadInput(t, srv, key) })
}

func testCompletion(t *testing.T, c *openai.Client, model string) {
	ctx := context.Background()
	const prompt, n = "Once upon a time", 48
	want, promptTokens := expected(t, model, prompt, n, "-c", "512")
	req := openai.CompletionRequest{Model: "stories260K-chat", Prompt: prompt, MaxTokens: n, Temperature: greedy}
	resp, err := c.CreateCompletion(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Choices) != 1 || resp.Choices[0].Text != want {
		t.Fatalf("completion %+v\nwant text %q", resp.Choices, want)
	}
	if resp.Object != "text_completion" || !strings.HasPrefix(resp.ID, "cmpl-") || resp.Choices[0].FinishReason != "length" {
		t.Errorf("response %+v", resp)
	}
	if u := resp.Usage; u == nil || u.PromptTokens != promptTokens || u.CompletionTokens != n || u.TotalTokens != promptTokens+n {
		t.Errorf("usage %+v, want %d + %d", resp.Usage, promptTokens, n)
	}

	// Streamed, with the usage chunk; the file name is a valid model name too.
	req.Stream = true
	req.Model = "stories260K-chat.gguf"
	req.StreamOptions = &openai.StreamOptions{IncludeUsage: true}
	s, err := c.CreateCompletionStream(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := readStream(s)
	if err != nil {
		t.Fatal(err)
	}
	if got.text != want || got.finish != "length" {
		t.Fatalf("stream: %q (finish %q)\nwant %q (length)", got.text, got.finish, want)
	}
	if got.chunks < n/2 {
		t.Errorf("the stream came in %d chunks for %d tokens", got.chunks, n)
	}
	if got.usage == nil || got.usage.CompletionTokens != n || got.usage.PromptTokens != promptTokens {
		t.Errorf("stream usage %+v", got.usage)
	}
}

// testStop checks stop strings that straddle tokens, streamed and not.
func testStop(t *testing.T, c *openai.Client, model string) {
	ctx := context.Background()
	const prompt, n = "Once upon a time", 64
	full, _ := expected(t, model, prompt, n, "-c", "512")
	for _, at := range []int{10, 23, 41} {
		stop := full[at : at+5]
		want := full[:strings.Index(full, stop)]
		req := openai.CompletionRequest{Prompt: prompt, MaxTokens: n, Temperature: greedy, Stop: []string{"never in the text", stop}}
		resp, err := c.CreateCompletion(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.Choices[0]; got.Text != want || got.FinishReason != "stop" {
			t.Errorf("stop %q: %q (%s), want %q (stop)", stop, got.Text, got.FinishReason, want)
		}
		req.Stream = true
		s, err := c.CreateCompletionStream(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := readStream(s)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if got.text != want || got.finish != "stop" {
			t.Errorf("streamed, stop %q: %q (%s), want %q (stop)", stop, got.text, got.finish, want)
		}
	}
}

// testChat checks that chat prompts go through the template: the answer
// equals `generate` on the prompt the template renders (less the "<s>"
// it writes, as generate adds BOS itself).
func testChat(t *testing.T, c *openai.Client, model string) {
	ctx := context.Background()
	const n = 32
	cases := []struct {
		msgs     []openai.ChatCompletionMessage
		rendered string
	}{
		{[]openai.ChatCompletionMessage{{Role: "user", Content: "Tell me a story."}}, "[INST] Tell me a story. [/INST]"},
		{[]openai.ChatCompletionMessage{{Role: "system", Content: "Be kind."}, {Role: "user", Content: "Hi"}}, "[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nHi [/INST]"},
	}
	for _, tc := range cases {
		want, promptTokens := expected(t, model, tc.rendered, n, "-c", "512")
		req := openai.ChatCompletionRequest{Messages: tc.msgs, MaxCompletionTokens: n, Temperature: greedy}
		resp, err := c.CreateChatCompletion(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Object != "chat.completion" || len(resp.Choices) != 1 {
			t.Fatalf("response %+v", resp)
		}
		ch := resp.Choices[0]
		if ch.Message.Role != "assistant" || ch.Message.Content != want || ch.FinishReason != "length" {
			t.Errorf("chat %q: %+v\nwant %q", tc.rendered, ch, want)
		}
		if resp.Usage.PromptTokens != promptTokens || resp.Usage.CompletionTokens != n {
			t.Errorf("usage %+v, want %d prompt tokens (BOS once)", resp.Usage, promptTokens)
		}

		req.Stream = true
		s, err := c.CreateChatCompletionStream(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		var text strings.Builder
		first, finish := true, ""
		for {
			r, err := s.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Object != "chat.completion.chunk" || len(r.Choices) != 1 {
				t.Fatalf("chunk %+v", r)
			}
			d := r.Choices[0].Delta
			if first && (d.Role != "assistant" || d.Content != "") {
				t.Errorf("first chunk %+v, want the role alone", d)
			}
			first = false
			text.WriteString(d.Content)
			if r.Choices[0].FinishReason != "" {
				finish = string(r.Choices[0].FinishReason)
			}
		}
		s.Close()
		if text.String() != want || finish != "length" {
			t.Errorf("streamed chat: %q (%s), want %q", text.String(), finish, want)
		}
	}
}

// testSeed checks that sampling with a seed is reproducible.
func testSeed(t *testing.T, c *openai.Client) {
	seed := 1234
	req := openai.CompletionRequest{Prompt: "The dog", MaxTokens: 24, Temperature: 0.9, TopP: 0.95, Seed: &seed}
	var texts []string
	for range 2 {
		resp, err := c.CreateCompletion(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		texts = append(texts, resp.Choices[0].Text)
	}
	if texts[0] != texts[1] || texts[0] == "" {
		t.Fatalf("the same seed gave %q and %q", texts[0], texts[1])
	}
}

// apiErr is OpenAI's error object.
type apiErr struct {
	Error *struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Code    string  `json:"code"`
		Param   *string `json:"param"`
	} `json:"error"`
}

// checkError asserts status and an error object of errType and code.
func checkError(t *testing.T, what string, status int, body []byte, wantStatus int, errType, code string) {
	t.Helper()
	if status != wantStatus {
		t.Errorf("%s: status %d, want %d (%s)", what, status, wantStatus, body)
		return
	}
	var e apiErr
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil {
		t.Errorf("%s: body %q is not an error object", what, body)
		return
	}
	if e.Error.Type != errType || e.Error.Code != code || e.Error.Message == "" {
		t.Errorf("%s: error %+v, want type %q code %q", what, *e.Error, errType, code)
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprint(err))
	}
	return b
}
