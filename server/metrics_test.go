package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"headinfer/engine"
	"headinfer/vk/vktest"
)

// setTestModel loads a model of shared/models on a device of its own and
// gives it to s; when the test ends it checks the validation layer's
// messages and closes s.
func setTestModel(t *testing.T, s *Server, name string, opt engine.Options) {
	t.Helper()
	opt.Validation = vktest.Validation()
	if opt.CtxSize == 0 {
		opt.CtxSize = 256
	}
	m, err := engine.Load(filepath.Join(modelsDir, name), opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetModel(m); err != nil {
		m.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if msgs := m.Device().ValidationMessages(); len(msgs) > 0 {
			t.Errorf("Vulkan validation messages:\n%s", strings.Join(msgs, "\n"))
		}
		if err := s.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
}

// modelsDir is shared/models beside the checkout.
var modelsDir = filepath.Join("..", "..", "shared", "models")

// needModels skips a test when the test models are not there.
func needModels(t *testing.T) {
	if _, err := os.Stat(filepath.Join(modelsDir, "stories260K.gguf")); err != nil {
		t.Skip("test models not found:", err)
	}
}

// testServer serves stories260K over loopback HTTP.
func testServer(t *testing.T, opt Options, model engine.Options) (*Server, *httptest.Server) {
	t.Helper()
	needModels(t)
	if opt.ModelPath == "" {
		opt.ModelPath = "stories260K.gguf"
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := New(opt)
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	setTestModel(t, s, "stories260K.gguf", model)
	return s, ts
}

// scrape reads /metrics as metric families.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: status %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// series finds the one series of a family whose labels are exactly
// labels (name, value pairs); it fails the test when there is none or
// the family has another type.
func series(t *testing.T, fams map[string]*dto.MetricFamily, name string, typ dto.MetricType, labels ...string) *dto.Metric {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no series %s", name)
	}
	if f.GetType() != typ {
		t.Fatalf("%s has type %v, want %v", name, f.GetType(), typ)
	}
next:
	for _, m := range f.Metric {
		if len(m.Label) != len(labels)/2 {
			continue
		}
		for i, l := range m.Label {
			if l.GetName() != labels[2*i] || l.GetValue() != labels[2*i+1] {
				continue next
			}
		}
		return m
	}
	t.Fatalf("no series %s%v", name, labels)
	return nil
}

func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no series %s", name)
	}
	m := series(t, fams, name, f.GetType(), labels...)
	switch f.GetType() {
	case dto.MetricType_COUNTER:
		return m.Counter.GetValue()
	case dto.MetricType_GAUGE:
		return m.Gauge.GetValue()
	}
	t.Fatalf("%s is a %v", name, f.GetType())
	return 0
}

// completion posts a completion request and returns its usage; for a
// stream, the usage chunk's.
func completion(t *testing.T, url string, body map[string]any) usageDetails {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(url+"/v1/completions", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("completion: status %d: %s", resp.StatusCode, raw)
	}
	var r struct {
		Choices []struct{ Text string }
		Usage   *usageDetails
	}
	if stream, _ := body["stream"].(bool); !stream {
		if err := json.Unmarshal(raw, &r); err != nil || r.Usage == nil {
			t.Fatalf("completion: %v: %s", err, raw)
		}
		r.Usage.text = r.Choices[0].Text
		return *r.Usage
	}
	var u *usageDetails
	var text strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		r.Usage = nil
		r.Choices = nil
		if err := json.Unmarshal([]byte(data), &r); err != nil {
			t.Fatalf("stream chunk %q: %v", data, err)
		}
		if len(r.Choices) > 0 {
			text.WriteString(r.Choices[0].Text)
		}
		if r.Usage != nil {
			u = r.Usage
		}
	}
	if u == nil {
		t.Fatalf("stream without a usage chunk: %s", raw)
	}
	u.text = text.String()
	return *u
}

// usageDetails is a response's usage as a client reads it.
type usageDetails struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	text string
}

// TestMetricsScrape serves two generations and a refused request, then
// checks the series that /metrics reports against what the responses
// said.
func TestMetricsScrape(t *testing.T) {
	needModels(t)
	var steps stepCounter
	s := New(Options{ModelPath: "stories260K.gguf", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Steps: &steps})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()

	before := scrape(t, ts.URL)
	if v := value(t, before, "headinfer_model_ready"); v != 0 {
		t.Errorf("model_ready %v before the load", v)
	}
	if before["headinfer_device_memory_bytes"] != nil {
		t.Errorf("device memory reported before the load")
	}
	setTestModel(t, s, "stories260K.gguf", engine.Options{})

	u1 := completion(t, ts.URL, map[string]any{"prompt": "Once upon a time", "max_tokens": 12, "temperature": 0})
	u2 := completion(t, ts.URL, map[string]any{"prompt": "The cat", "max_tokens": 9, "temperature": 0,
		"stream": true, "stream_options": map[string]any{"include_usage": true}})
	resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(`{"prompt": 7}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	fams := scrape(t, ts.URL)
	check := func(name string, got, want float64) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	check("requests 200", value(t, fams, "headinfer_requests_total", "route", "/v1/completions", "status", "200"), 2)
	check("requests 400", value(t, fams, "headinfer_requests_total", "route", "/v1/completions", "status", "400"), 1)
	// Both prompts begin with BOS: the second reuses its KV.
	cached := u2.PromptTokensDetails.CachedTokens
	check("cached tokens reported", float64(cached), 1)
	check("prompt tokens", value(t, fams, "headinfer_prompt_tokens_total"), float64(u1.PromptTokens+u2.PromptTokens-cached))
	generated := u1.CompletionTokens + u2.CompletionTokens
	check("generated tokens", value(t, fams, "headinfer_generated_tokens_total"), float64(generated))
	check("model ready", value(t, fams, "headinfer_model_ready"), 1)
	check("queue depth", value(t, fams, "headinfer_queue_depth"), 0)
	check("requests running", value(t, fams, "headinfer_requests_running"), 0)
	check("sequences running", value(t, fams, "headinfer_sequences_running"), 0)
	check("batch size", value(t, fams, "headinfer_batch_size"), 1)
	check("prefix hits", value(t, fams, "headinfer_prefix_cache_hits_total"), 1)
	check("cached tokens", value(t, fams, "headinfer_prefix_cache_cached_tokens_total"), float64(cached))

	hist := func(name string) *dto.Histogram {
		return series(t, fams, name, dto.MetricType_HISTOGRAM).Histogram
	}
	for _, name := range []string{"headinfer_time_to_first_token_seconds", "headinfer_queue_wait_seconds", "headinfer_request_duration_seconds"} {
		h := hist(name)
		check(name+" count", float64(h.GetSampleCount()), 2)
		if name != "headinfer_queue_wait_seconds" && h.GetSampleSum() <= 0 {
			t.Errorf("%s sum %v", name, h.GetSampleSum())
		}
	}
	tpot := hist("headinfer_time_per_output_token_seconds")
	check("time per token count", float64(tpot.GetSampleCount()), float64(generated-2))
	if ttft, dur := hist("headinfer_time_to_first_token_seconds"), hist("headinfer_request_duration_seconds"); ttft.GetSampleSum() > dur.GetSampleSum() {
		t.Errorf("time to first token (%v s) exceeds the request durations (%v s)", ttft.GetSampleSum(), dur.GetSampleSum())
	}
	// Every token after a request's first took one decode step, of one
	// sequence (the requests ran one after the other); Options.Steps
	// heard the same steps.
	step := series(t, fams, "headinfer_batch_step_seconds", dto.MetricType_HISTOGRAM, "sequences", "1").Histogram
	check("decode steps", float64(step.GetSampleCount()), float64(generated-2))
	if sum, dur := step.GetSampleSum(), hist("headinfer_request_duration_seconds").GetSampleSum(); sum <= 0 || sum > dur {
		t.Errorf("decode steps took %v s in all, want more than 0 and at most the requests' %v s", sum, dur)
	}
	steps.mu.Lock()
	check("steps heard", float64(steps.steps), float64(step.GetSampleCount()))
	check("sequences heard", float64(steps.sequences), float64(step.GetSampleCount()))
	if math.Abs(steps.took.Seconds()-step.GetSampleSum()) > 1e-6 {
		t.Errorf("Options.Steps heard %v of steps, the histogram %v s", steps.took, step.GetSampleSum())
	}
	steps.mu.Unlock()
	if v := value(t, fams, "headinfer_device_memory_bytes"); v <= 0 {
		t.Errorf("device memory %v", v)
	}
	if v := value(t, fams, "headinfer_weight_bytes"); v <= 0 {
		t.Errorf("weight bytes %v", v)
	}
	if v := value(t, fams, "go_goroutines"); v <= 0 {
		t.Errorf("go_goroutines %v", v)
	}
	if v := value(t, fams, "process_uptime_seconds"); v <= 0 {
		t.Errorf("uptime %v", v)
	}
	if fams["go_memstats_heap_alloc_bytes"] == nil {
		t.Errorf("no go_memstats_heap_alloc_bytes")
	}
}

// stepCounter is a StepObserver that adds up what it hears.
type stepCounter struct {
	mu               sync.Mutex
	steps, sequences int
	took             time.Duration
}

func (c *stepCounter) ObserveStep(sequences int, took time.Duration) {
	c.mu.Lock()
	c.steps++
	c.sequences += sequences
	c.took += took
	c.mu.Unlock()
}
