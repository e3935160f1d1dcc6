package tests

import (
	"bufio"
	"bytes"
	"context"
	bin "encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// logitsRun is a `generate --json --logits-out` run: its tokens and the
// raw logits before each token drawn (one more than the tokens when an
// end-of-generation token ended it).
type logitsRun struct {
	IDs    []int32 `json:"ids"`
	Text   string  `json:"text"`
	logits [][]float32
}

func generateLogits(t *testing.T, model, prompt string, n int, extra ...string) logitsRun {
	t.Helper()
	path := filepath.Join(t.TempDir(), "logits.f32")
	args := append([]string{"generate", "--json", "-m", model, "-p", prompt, "-n", strconv.Itoa(n), "-c", "512", "--logits-out", path}, extra...)
	stdout, stderr, err := run(t, args...)
	if err != nil {
		t.Fatalf("generate %v: %v\n%s", args, err, stderr)
	}
	var r logitsRun
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("generate output: %v\n%s", err, stdout)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	steps := len(r.IDs)
	if len(raw)%(4*steps) != 0 {
		steps++ // the end-of-generation token's step
	}
	vocab := len(raw) / 4 / steps
	if vocab*4*steps != len(raw) {
		t.Fatalf("%d bytes of logits for %d tokens", len(raw), len(r.IDs))
	}
	for i := range steps {
		lg := make([]float32, vocab)
		for k := range lg {
			lg[k] = math.Float32frombits(bin.LittleEndian.Uint32(raw[4*(i*vocab+k):]))
		}
		r.logits = append(r.logits, lg)
	}
	return r
}

// logSoftmax is the reference: log-softmax of the raw logits in float64.
func logSoftmax(logits []float32) []float64 {
	m := math.Inf(-1)
	for _, v := range logits {
		m = math.Max(m, float64(v))
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v) - m)
	}
	out := make([]float64, len(logits))
	for i, v := range logits {
		out[i] = float64(v) - m - math.Log(sum)
	}
	return out
}

// nativeProbs is /completion's completion_probabilities.
type nativeProbs []nativeProb

type nativeProb struct {
	ID          int32     `json:"id"`
	Token       string    `json:"token"`
	Logprob     float64   `json:"logprob"`
	TopLogprobs []topProb `json:"top_logprobs"`
}

type topProb struct {
	ID      int32   `json:"id"`
	Logprob float64 `json:"logprob"`
}

type nativeResult struct {
	Content         string      `json:"content"`
	Probs           nativeProbs `json:"completion_probabilities"`
	TokensPredicted int         `json:"tokens_predicted"`
	StopType        string      `json:"stop_type"`
	StoppingWord    string      `json:"stopping_word"`
}

func (p *serverProc) native(t *testing.T, body string) nativeResult {
	t.Helper()
	status, b := p.post(t, "/completion", "", []byte(body))
	var r nativeResult
	if err := json.Unmarshal(b, &r); err != nil || status != 200 {
		t.Fatalf("/completion %s: %d %s", body, status, b)
	}
	return r
}

// checkAgainstLogits checks a run's logprobs against generate's raw
// logits: the same tokens, each token's logprob and its step's top
// alternatives within 1e-4 of the float64 log-softmax.
func checkAgainstLogits(t *testing.T, what string, got nativeProbs, want logitsRun, top int) {
	t.Helper()
	if len(got) != len(want.IDs) {
		t.Fatalf("%s: %d tokens, generate %d", what, len(got), len(want.IDs))
	}
	for i, p := range got {
		lp := logSoftmax(want.logits[i])
		if p.ID != want.IDs[i] || math.Abs(p.Logprob-lp[p.ID]) > 1e-4 {
			t.Fatalf("%s: token %d: id %d logprob %v; generate: id %d, log-softmax %v", what, i, p.ID, p.Logprob, want.IDs[i], lp[want.IDs[i]])
		}
		sorted := slices.Sorted(slices.Values(lp))
		slices.Reverse(sorted)
		if len(p.TopLogprobs) != top {
			t.Fatalf("%s: token %d: %d alternatives, want %d", what, i, len(p.TopLogprobs), top)
		}
		for k, a := range p.TopLogprobs {
			if math.Abs(a.Logprob-lp[a.ID]) > 1e-4 || math.Abs(a.Logprob-sorted[k]) > 1e-4 {
				t.Fatalf("%s: token %d: alternative %d is id %d logprob %v; its log-softmax %v, the %d-th largest %v", what, i, k, a.ID, a.Logprob, lp[a.ID], k+1, sorted[k])
			}
		}
	}
}

// TestServerLogprobs checks the logprobs of every route against the raw
// logits `generate --logits-out` writes, greedy and sampled (where they
// must be those of the raw logits, not of the tempered ones), and that a
// request decoded beside others gets the logprobs it gets alone.
func TestServerLogprobs(t *testing.T) {
	model := filepath.Join(t.TempDir(), "stories260K-chat.gguf")
	withChatTemplate(t, filepath.Join(modelsDir(t), "stories260K.gguf"), model, llama2Template)
	srv := startServer(t, "-m", model, "-c", "512", "--parallel", "2")
	const prompt, n = "Once upon a time", 24

	greedyRun := generateLogits(t, model, prompt, n, "--temp", "0")
	got := srv.native(t, `{"prompt": "`+prompt+`", "n_predict": 24, "temperature": 0, "n_probs": 5}`)
	checkAgainstLogits(t, "/completion greedy", got.Probs, greedyRun, 5)
	if got.Content != greedyRun.Text {
		t.Errorf("/completion: %q, generate %q", got.Content, greedyRun.Text)
	}

	// A stop string: the text before it, and why it ended.
	stop := greedyRun.Text[20:26]
	got = srv.native(t, string(mustJSON(map[string]any{"prompt": prompt, "n_predict": n, "temperature": 0, "stop": []string{stop}})))
	if want := greedyRun.Text[:strings.Index(greedyRun.Text, stop)]; got.Content != want || got.StopType != "word" || got.StoppingWord != stop {
		t.Errorf("/completion with stop %q: %+v, want content %q", stop, got, want)
	}
	got = srv.native(t, `{"prompt": "`+prompt+`", "n_predict": 3}`)
	if got.StopType != "limit" || got.TokensPredicted != 3 {
		t.Errorf("/completion n_predict 3: %+v", got)
	}

	// Sampled hot, with the same seed as generate: the logprobs are still
	// those of the raw logits.
	hot := []string{"--temp", "1.7", "--top-k", "0", "--top-p", "1", "--min-p", "0", "--seed", "7"}
	hotRun := generateLogits(t, model, prompt, n, hot...)
	got = srv.native(t, `{"prompt": "`+prompt+`", "n_predict": 24, "temperature": 1.7, "top_k": 0, "top_p": 1, "min_p": 0, "seed": 7, "n_probs": 3}`)
	checkAgainstLogits(t, "/completion sampled", got.Probs, hotRun, 3)

	// /v1/completions: the legacy shape, the same values.
	status, body := srv.post(t, "/v1/completions", "", mustJSON(map[string]any{"prompt": prompt, "max_tokens": n, "temperature": 0, "logprobs": 5}))
	var legacy struct {
		Choices []struct {
			Text     string
			Logprobs struct {
				Tokens        []string
				TokenLogprobs []float64            `json:"token_logprobs"`
				TopLogprobs   []map[string]float64 `json:"top_logprobs"`
				TextOffset    []int                `json:"text_offset"`
			}
		}
	}
	if err := json.Unmarshal(body, &legacy); err != nil || status != 200 {
		t.Fatalf("/v1/completions: %d %s", status, body)
	}
	lc := legacy.Choices[0]
	if lc.Text != greedyRun.Text || strings.Join(lc.Logprobs.Tokens, "") != lc.Text || len(lc.Logprobs.TokenLogprobs) != n || len(lc.Logprobs.TextOffset) != n {
		t.Fatalf("/v1/completions: %s", body)
	}
	for i, v := range lc.Logprobs.TokenLogprobs {
		lp := logSoftmax(greedyRun.logits[i])
		sorted := slices.Sorted(slices.Values(lp))
		floor := min(sorted[len(sorted)-5], lp[greedyRun.IDs[i]]) - 1e-4 // the 5 best and the chosen
		top := lc.Logprobs.TopLogprobs[i]
		if math.Abs(v-lp[greedyRun.IDs[i]]) > 1e-4 || len(top) > 6 || top[lc.Logprobs.Tokens[i]] < v-1e-4 {
			t.Errorf("/v1/completions token %d: %v, top %v; log-softmax %v", i, v, top, lp[greedyRun.IDs[i]])
		}
		for tok, x := range top {
			if x < floor || x > sorted[len(sorted)-1]+1e-4 {
				t.Errorf("/v1/completions token %d: %q at %v is not among the 5 most likely", i, tok, x)
			}
		}
		if lc.Logprobs.TextOffset[i] != len(strings.Join(lc.Logprobs.Tokens[:i], "")) { // ASCII text
			t.Errorf("/v1/completions: text_offset %v", lc.Logprobs.TextOffset)
		}
	}

	// Streamed, the same again, token by token.
	status, body = srv.post(t, "/completion", "", mustJSON(map[string]any{"prompt": prompt, "n_predict": n, "temperature": 0, "n_probs": 5, "stream": true}))
	if status != 200 {
		t.Fatalf("stream: %d %s", status, body)
	}
	var streamedProbs nativeProbs
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			var ev nativeResult
			if err := json.Unmarshal([]byte(d), &ev); err != nil {
				t.Fatalf("event %s: %v", d, err)
			}
			streamedProbs = append(streamedProbs, ev.Probs...)
		}
	}
	checkAgainstLogits(t, "/completion streamed", streamedProbs, greedyRun, 5)

	// Chat, through an OpenAI client: greedy picks the most likely token,
	// so each chosen logprob is its step's first alternative.
	c := srv.client("", nil)
	resp, err := c.CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Messages:  []openai.ChatCompletionMessage{{Role: "user", Content: "Tell me a story"}},
		MaxTokens: 16, Temperature: greedy, LogProbs: true, TopLogProbs: 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	ch := resp.Choices[0]
	if ch.LogProbs == nil || len(ch.LogProbs.Content) != resp.Usage.CompletionTokens {
		t.Fatalf("chat logprobs %+v for %d tokens", ch.LogProbs, resp.Usage.CompletionTokens)
	}
	var joined string
	for i, lp := range ch.LogProbs.Content {
		joined += lp.Token
		if len(lp.TopLogProbs) != 4 || lp.TopLogProbs[0].LogProb != lp.LogProb || lp.TopLogProbs[0].Token != lp.Token || string(lp.Bytes) != lp.Token {
			t.Errorf("chat token %d: %+v", i, lp)
		}
		for k := 1; k < 4; k++ {
			if lp.TopLogProbs[k].LogProb > lp.TopLogProbs[k-1].LogProb {
				t.Errorf("chat token %d: alternatives out of order: %+v", i, lp.TopLogProbs)
			}
		}
	}
	if strings.TrimSpace(joined) != strings.TrimSpace(ch.Message.Content) {
		t.Errorf("chat tokens join to %q, content %q", joined, ch.Message.Content)
	}

	t.Run("batched", func(t *testing.T) { testBatchedLogprobs(t, srv) })
}

// testBatchedLogprobs runs two requests alone and then at once (two
// sequences of one batch), and checks that each gets the same logprobs,
// bit for bit. The server's batch-size gauge shows that they overlapped.
func testBatchedLogprobs(t *testing.T, srv *serverProc) {
	bodies := []string{
		`{"prompt": "The little dog ran", "n_predict": 120, "temperature": 0, "n_probs": 5}`,
		`{"prompt": "Lily had a red ball", "n_predict": 120, "temperature": 0.9, "seed": 3, "n_probs": 2}`,
	}
	solo := make([]nativeResult, len(bodies))
	for i, b := range bodies {
		solo[i] = srv.native(t, b)
	}
	for try := 0; ; try++ {
		var wg sync.WaitGroup
		batched := make([]nativeResult, len(bodies))
		done, polled := make(chan struct{}), make(chan bool)
		go func() {
			overlapped := false
			for {
				select {
				case <-done:
					polled <- overlapped
					return
				default:
				}
				overlapped = overlapped || batchSize(srv) >= 2
				time.Sleep(2 * time.Millisecond)
			}
		}()
		for i, b := range bodies {
			wg.Add(1)
			go func() {
				defer wg.Done()
				status, body := srv.post(t, "/completion", "", []byte(b))
				if err := json.Unmarshal(body, &batched[i]); err != nil || status != 200 {
					t.Errorf("/completion %s: %d %s", b, status, body)
				}
			}()
		}
		wg.Wait()
		close(done)
		overlapped := <-polled
		for i := range bodies {
			same := slices.EqualFunc(solo[i].Probs, batched[i].Probs, func(a, b nativeProb) bool {
				return a.ID == b.ID && a.Logprob == b.Logprob && slices.Equal(a.TopLogprobs, b.TopLogprobs)
			})
			if !same || len(solo[i].Probs) == 0 {
				t.Fatalf("request %d: batched logprobs differ from its solo run's", i)
			}
		}
		if overlapped {
			return
		}
		if try == 4 {
			t.Fatal("the two requests never ran in one batch")
		}
	}
}

// batchSize reads the server's headinfer_batch_size gauge (0 on error).
func batchSize(srv *serverProc) float64 {
	resp, err := http.Get(srv.url + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "headinfer_batch_size "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}
