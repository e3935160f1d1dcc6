package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"headinfer/server"
)

func benchServeCommand() *cli.Command {
	flags := modelFlags()
	for i, f := range flags {
		if sf, ok := f.(*cli.StringFlag); ok && sf.Name == "model" {
			// Not with --url.
			opt := *sf
			opt.Required = false
			flags[i] = &opt
		}
	}
	flags = append(flags,
		&cli.StringFlag{Name: "url", Usage: "measure the server (or load balancer) at this base `URL`, e.g. http://127.0.0.1:8080, instead of one started in this process with -m"},
		&cli.StringFlag{Name: "api-key", Usage: "the key to send to --url", EnvVars: []string{"HEADINFER_API_KEY"}},
		&cli.IntFlag{Name: "sessions", Usage: "`S` conversations: request i continues conversation i mod S, whose own --shared-prefix tokens it begins with, and says so in X-Session-Id (for a balancer's affinity); 0: one prefix shared by all, no header"},
		parallelFlag(server.DefaultParallel),
		&cli.StringFlag{Name: "clients", Value: "1,2,4,8", Usage: "numbers of concurrent clients to measure, comma-separated"},
		&cli.IntFlag{Name: "requests", Value: 16, Usage: "requests per client count, shared among its clients"},
		&cli.IntFlag{Name: "prompt-tokens", Value: 128, Usage: "tokens per prompt"},
		&cli.IntFlag{Name: "max-tokens", Value: 64, Usage: "tokens to generate per request (fewer if the model ends its text)"},
		&cli.IntFlag{Name: "shared-prefix", Usage: "the first `K` prompt tokens are the same in every request (a system prompt); the rest are random per request"},
		&cli.BoolFlag{Name: "no-prefix-cache", Usage: "prefill every prompt whole (to measure what prefix reuse saves)"},
		&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the random prompt tokens"},
		&cli.StringFlag{Name: "csv", Usage: "write the results as CSV to this file"},
		&cli.StringFlag{Name: "plot", Usage: "draw throughput and latencies against clients into this PNG file"},
	)
	return &cli.Command{
		Name:  "serve",
		Usage: "throughput and latency of the HTTP server under concurrent streaming clients",
		UsageText: "headinfer bench serve -m MODEL [--parallel N] [--clients 1,2,4,8] [--requests R] [--prompt-tokens P] [--max-tokens T] [--shared-prefix K] [--sessions S] [--csv F] [--plot F.png]\n" +
			"headinfer bench serve --url URL [--api-key KEY] [options as above]\n\n" +
			"Starts the server in this process on a loopback port (or uses the one at --url) and, for every client count, sends R greedy\n" +
			"streamed completions of random token prompts from that many concurrent clients. It reports the\n" +
			"generated tokens per second of all clients together, and per request the time to the first token\n" +
			"and the time per token after it (median and 95th percentile). Untimed requests from as many clients as the most measured warm up first.\n" +
			"With -m it also reports the engine's decode steps: their median wall time on the device (submit to results, no sampling,\n" +
			"no HTTP) and the mean sequences per step; ms/token p50 less step ms p50 is the host and server's share of a token.",
		Flags:  flags,
		Action: benchServe,
	}
}

// serveResult is one row: one client count.
type serveResult struct {
	Clients      int
	Requests     int
	Errors       int
	Tokens       int     // generated, over all requests
	Seconds      float64 // wall time of the whole run
	TTFT50       float64 // seconds
	TTFT95       float64
	TPOT50       float64 // seconds per token after the first
	TPOT95       float64
	CachedTokens int // prompt tokens reused, over all requests
	// The engine's decode steps, with the server in this process (none
	// with --url): how many ran, their median wall time in seconds, and
	// the mean sequences decoded together.
	Steps       int
	StepP50     float64
	SeqsPerStep float64
}

func (r serveResult) tokensPerSecond() float64 { return rate(r.Tokens, r.Seconds) }

// requestTiming is what one client saw of one request.
type requestTiming struct {
	ttft, tpot     time.Duration
	tokens, cached int
	err            error
}

func benchServe(c *cli.Context) error {
	clients, err := parseCounts(c.String("clients"))
	if err != nil {
		return fmt.Errorf("--clients: %w", err)
	}
	p, t, k, reqs := c.Int("prompt-tokens"), c.Int("max-tokens"), c.Int("shared-prefix"), c.Int("requests")
	if p <= 0 || t <= 0 || reqs <= 0 || k < 0 || k >= p {
		return fmt.Errorf("--prompt-tokens, --max-tokens and --requests must be positive, and --shared-prefix below --prompt-tokens")
	}
	sessions := c.Int("sessions")
	if sessions < 0 {
		return fmt.Errorf("--sessions must be 0 or positive")
	}
	tg := target{client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: slices.Max(clients)}}, key: c.String("api-key")}
	var vocab int
	var steps *stepRecorder // the in-process server's decode steps
	if base := strings.TrimSuffix(c.String("url"), "/"); base != "" {
		tg.url = base + "/v1/completions"
		if vocab, err = remoteVocab(tg, base); err != nil {
			return err
		}
	} else {
		if !c.IsSet("model") {
			return errors.New("bench serve needs -m MODEL, or --url of a running server")
		}
		path, err := modelPath(c, c.String("model"))
		if err != nil {
			return err
		}
		m, err := loadModel(c, path, false)
		if err != nil {
			return err
		}
		steps = &stepRecorder{}
		s := server.New(server.Options{
			ModelPath: path, Parallel: c.Int("parallel"), MaxQueue: slices.Max(clients), Timeout: 24 * time.Hour,
			NoPrefixReuse: c.Bool("no-prefix-cache"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Steps: steps,
		})
		if err := s.SetModel(m); err != nil {
			m.Close()
			return err
		}
		defer s.Close(context.Background())
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		hs := &http.Server{Handler: s.Handler()}
		go hs.Serve(ln)
		defer hs.Close()
		tg.url = "http://" + ln.Addr().String() + "/v1/completions"
		vocab = m.Config.Vocab
	}

	r := rand.New(rand.NewPCG(c.Uint64("seed"), 7))
	randomIDs := func(n int) []int32 {
		ids := make([]int32, n)
		for i := range ids {
			ids[i] = int32(3 + r.IntN(vocab-3)) // past the usual control tokens
		}
		return ids
	}
	shared := [][]int32{randomIDs(k)}
	for range sessions - 1 {
		shared = append(shared, randomIDs(k))
	}
	next := 0
	prompt := func() request {
		i := next % len(shared)
		next++
		q := request{ids: append(slices.Clone(shared[i]), randomIDs(p-k)...)}
		if sessions > 0 {
			q.session = fmt.Sprintf("bench-%d", i)
		}
		return q
	}

	// The warm-up runs as many clients as the most measured, so that every
	// batch size the timed runs meet has its kernels compiled and its steps
	// recorded (a CPU device compiles a batched kernel in seconds): the
	// timings then measure serving, not first use.
	most := slices.Max(clients)
	if w := runClients(tg, most, most, t, prompt); w.Errors > 0 {
		return fmt.Errorf("warm-up: %d of %d requests failed", w.Errors, w.Requests)
	}
	var rs []serveResult
	for _, n := range clients {
		steps.take() // not the warm-up's or the last count's
		res := runClients(tg, n, reqs, t, prompt)
		res.Steps, res.StepP50, res.SeqsPerStep = steps.take()
		rs = append(rs, res)
		fmt.Fprintf(c.App.ErrWriter, "%d clients: %.1f tok/s\n", n, res.tokensPerSecond())
	}
	fmt.Fprint(c.App.Writer, serveTable(rs))
	if f := c.String("csv"); f != "" {
		if err := writeFile(f, func(w io.Writer) error { return serveCSV(w, rs) }); err != nil {
			return err
		}
	}
	if f := c.String("plot"); f != "" {
		if err := writeFile(f, func(w io.Writer) error { return plotServe(w, rs) }); err != nil {
			return err
		}
	}
	for _, r := range rs {
		if r.Errors > 0 {
			return fmt.Errorf("%d of %d requests failed with %d clients", r.Errors, r.Requests, r.Clients)
		}
	}
	return nil
}

// stepRecorder keeps the decode steps of the server that bench serve
// runs in this process (a server.StepObserver). A nil recorder (with
// --url) keeps nothing.
type stepRecorder struct {
	mu        sync.Mutex
	took      []float64 // seconds, one per step
	sequences int       // over all steps
}

// ObserveStep records one decode step.
func (r *stepRecorder) ObserveStep(sequences int, took time.Duration) {
	r.mu.Lock()
	r.took = append(r.took, took.Seconds())
	r.sequences += sequences
	r.mu.Unlock()
}

// take returns the steps since the last take (the number, their median
// time in seconds and the mean sequences per step) and forgets them.
func (r *stepRecorder) take() (steps int, p50, seqsPerStep float64) {
	if r == nil {
		return 0, 0, 0
	}
	r.mu.Lock()
	took, seqs := r.took, r.sequences
	r.took, r.sequences = nil, 0
	r.mu.Unlock()
	if len(took) == 0 {
		return 0, 0, 0
	}
	return len(took), percentile(took, 50), float64(seqs) / float64(len(took))
}

// target is where bench serve sends its completions.
type target struct {
	client *http.Client
	url    string // .../v1/completions
	key    string // API key, if any
}

// request is one prompt, of a session when it has a name.
type request struct {
	ids     []int32
	session string
}

// remoteVocab asks the server at base for its vocabulary size (GET
// /v1/models, llama-server's meta.n_vocab), for the random prompts.
func remoteVocab(tg target, base string) (int, error) {
	req, err := http.NewRequest("GET", base+"/v1/models", nil)
	if err != nil {
		return 0, err
	}
	if tg.key != "" {
		req.Header.Set("Authorization", "Bearer "+tg.key)
	}
	resp, err := tg.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var list struct {
		Data []struct {
			Meta struct {
				NVocab int `json:"n_vocab"`
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || resp.StatusCode != 200 || len(list.Data) == 0 || list.Data[0].Meta.NVocab < 4 {
		return 0, fmt.Errorf("%s/v1/models (status %d) does not give the vocabulary size (meta.n_vocab): %v", base, resp.StatusCode, err)
	}
	return list.Data[0].Meta.NVocab, nil
}

// runClients sends reqs requests from n concurrent clients, each taking
// the next request when its last one ends.
func runClients(tg target, n, reqs, maxTokens int, prompt func() request) serveResult {
	prompts := make(chan request, reqs)
	for range reqs {
		prompts <- prompt()
	}
	close(prompts)
	var mu sync.Mutex
	var timings []requestTiming
	var wg sync.WaitGroup
	t0 := time.Now()
	for range n {
		wg.Go(func() {
			for q := range prompts {
				tm := streamCompletion(tg, q, maxTokens)
				mu.Lock()
				timings = append(timings, tm)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res := serveResult{Clients: n, Requests: reqs, Seconds: time.Since(t0).Seconds()}
	var ttft, tpot []float64
	for _, tm := range timings {
		if tm.err != nil {
			res.Errors++
			continue
		}
		res.Tokens += tm.tokens
		res.CachedTokens += tm.cached
		ttft = append(ttft, tm.ttft.Seconds())
		if tm.tokens > 1 {
			tpot = append(tpot, tm.tpot.Seconds())
		}
	}
	res.TTFT50, res.TTFT95 = percentile(ttft, 50), percentile(ttft, 95)
	res.TPOT50, res.TPOT95 = percentile(tpot, 50), percentile(tpot, 95)
	return res
}

// streamCompletion sends one greedy streamed completion and times it.
func streamCompletion(tg target, q request, maxTokens int) (tm requestTiming) {
	body, _ := json.Marshal(map[string]any{"prompt": q.ids, "max_tokens": maxTokens, "temperature": 0,
		"stream": true, "stream_options": map[string]any{"include_usage": true}})
	t0 := time.Now()
	req, err := http.NewRequest("POST", tg.url, bytes.NewReader(body))
	if err != nil {
		return requestTiming{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	if tg.key != "" {
		req.Header.Set("Authorization", "Bearer "+tg.key)
	}
	if q.session != "" {
		req.Header.Set("X-Session-Id", q.session)
	}
	resp, err := tg.client.Do(req)
	if err != nil {
		return requestTiming{err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return requestTiming{err: fmt.Errorf("status %d: %s", resp.StatusCode, b)}
	}
	var first, last time.Time
	done := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			break
		}
		var chunk struct {
			Choices []struct{ Text string }
			Usage   *struct {
				CompletionTokens    int `json:"completion_tokens"`
				PromptTokensDetails struct {
					CachedTokens int `json:"cached_tokens"`
				} `json:"prompt_tokens_details"`
			}
			Error *struct{ Message string }
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			return requestTiming{err: fmt.Errorf("stream chunk %q: %w", data, err)}
		}
		switch {
		case chunk.Error != nil:
			return requestTiming{err: errors.New(chunk.Error.Message)}
		case chunk.Usage != nil:
			tm.tokens, tm.cached = chunk.Usage.CompletionTokens, chunk.Usage.PromptTokensDetails.CachedTokens
		case len(chunk.Choices) > 0 && chunk.Choices[0].Text != "":
			last = time.Now()
			if first.IsZero() {
				first = last
			}
		}
	}
	if err := sc.Err(); err != nil || !done {
		return requestTiming{err: fmt.Errorf("the stream ended early: %v", err)}
	}
	if first.IsZero() {
		first, last = time.Now(), time.Now() // no text: the first token was the end
	}
	tm.ttft = first.Sub(t0)
	if tm.tokens > 1 {
		tm.tpot = last.Sub(first) / time.Duration(tm.tokens-1)
	}
	return tm
}

// percentile is the nearest-rank percentile of vs (0 for none).
func percentile(vs []float64, p float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(vs))
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func serveTable(rs []serveResult) string {
	var b strings.Builder
	b.WriteString("| clients | requests | tokens | tok/s | TTFT p50 ms | TTFT p95 ms | ms/token p50 | ms/token p95 | step ms p50 | seqs/step | cached prompt tokens | errors |\n")
	b.WriteString("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rs {
		step, seqs := "-", "-" // not measured (--url)
		if r.Steps > 0 {
			step, seqs = fmt.Sprintf("%.2f", 1e3*r.StepP50), fmt.Sprintf("%.2f", r.SeqsPerStep)
		}
		fmt.Fprintf(&b, "| %d | %d | %d | %.1f | %.1f | %.1f | %.2f | %.2f | %s | %s | %d | %d |\n", r.Clients, r.Requests, r.Tokens,
			r.tokensPerSecond(), 1e3*r.TTFT50, 1e3*r.TTFT95, 1e3*r.TPOT50, 1e3*r.TPOT95, step, seqs, r.CachedTokens, r.Errors)
	}
	return b.String()
}

func serveCSV(w io.Writer, rs []serveResult) error {
	if _, err := fmt.Fprintln(w, "clients,requests,tokens,seconds,tokens_per_second,ttft_p50_s,ttft_p95_s,tpot_p50_s,tpot_p95_s,step_p50_s,seqs_per_step,steps,cached_tokens,errors"); err != nil {
		return err
	}
	for _, r := range rs {
		step, seqs := "", "" // not measured (--url)
		if r.Steps > 0 {
			step, seqs = fmt.Sprintf("%.6f", r.StepP50), fmt.Sprintf("%.3f", r.SeqsPerStep)
		}
		if _, err := fmt.Fprintf(w, "%d,%d,%d,%.4f,%.3f,%.6f,%.6f,%.6f,%.6f,%s,%s,%d,%d,%d\n", r.Clients, r.Requests, r.Tokens, r.Seconds,
			r.tokensPerSecond(), r.TTFT50, r.TTFT95, r.TPOT50, r.TPOT95, step, seqs, r.Steps, r.CachedTokens, r.Errors); err != nil {
			return err
		}
	}
	return nil
}

// plotServe draws aggregate throughput (left) and the latencies (right,
// log scale: time to first token solid, time per token dashed; median
// blue, 95th percentile red) against the number of clients.
func plotServe(w io.Writer, rs []serveResult) error {
	if len(rs) == 0 {
		return fmt.Errorf("plot: no results")
	}
	cv := newCanvas(1400, 560)
	tput := panel{title: "GENERATED TOKENS/S, ALL CLIENTS", x0: 90, y0: 60, w: 560, h: 400}
	lat := panel{title: "SECONDS (LOG): TTFT SOLID, PER TOKEN DASHED", x0: 790, y0: 60, w: 560, h: 400, logY: true}
	series := []plotSeries{{panel: &tput, col: plotColors[0]}}
	ttft50 := plotSeries{panel: &lat, col: plotColors[0]}
	ttft95 := plotSeries{panel: &lat, col: plotColors[1]}
	tpot50 := plotSeries{panel: &lat, col: plotColors[0], dashed: true}
	tpot95 := plotSeries{panel: &lat, col: plotColors[1], dashed: true}
	var xs []int
	for _, r := range rs {
		x := float64(r.Clients)
		xs = append(xs, r.Clients)
		series[0].pts = append(series[0].pts, [2]float64{x, r.tokensPerSecond()})
		for _, s := range []struct {
			ser *plotSeries
			v   float64
		}{{&ttft50, r.TTFT50}, {&ttft95, r.TTFT95}, {&tpot50, r.TPOT50}, {&tpot95, r.TPOT95}} {
			if s.v > 0 {
				s.ser.pts = append(s.ser.pts, [2]float64{x, s.v})
			}
		}
	}
	series = append(series, ttft50, ttft95, tpot50, tpot95)
	for _, p := range []*panel{&tput, &lat} {
		p.fit(series)
		p.draw(cv, xs, "CLIENTS")
	}
	for _, s := range series {
		s.draw(cv)
	}
	for i, name := range []string{"MEDIAN", "95TH PERCENTILE"} {
		x := 790 + 300*i
		cv.rect(x, 520, x+30, 524, plotColors[i])
		cv.text(x+40, 515, name, 2, black)
	}
	return png.Encode(w, cv.img)
}
