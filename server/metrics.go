package server

import (
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"headinfer/engine"
)

// metrics are the server's Prometheus series, served by GET /metrics from
// a registry of the server's own (so that two servers in one process, as
// in tests and `bench serve`, do not share counters).
type metrics struct {
	reg     *prometheus.Registry
	started time.Time

	requests        *prometheus.CounterVec
	promptTokens    prometheus.Counter
	generatedTokens prometheus.Counter
	lastPrefillRate prometheus.Gauge
	lastDecodeRate  prometheus.Gauge
	deviceFailed    prometheus.Gauge
	reloads         prometheus.Counter

	timeToFirstToken   prometheus.Histogram
	timePerToken       prometheus.Histogram
	queueWait          prometheus.Histogram
	requestDuration    prometheus.Histogram
	sequencesRunning   prometheus.Gauge
	batchSize          prometheus.Gauge
	batchStep          *prometheus.HistogramVec
	prefixHits         prometheus.Counter
	prefixCachedTokens prometheus.Counter
	snapshots          *prometheus.CounterVec
	connections        prometheus.Gauge
	connsRefused       prometheus.Counter

	mem memoryCollector
}

// queueState is what the gauges of the queue and the model show at
// scrape time.
type queueState struct {
	waiting, running int
	held             int // admission places taken
	ready            bool
	kvUsage          float64 // share of the KV positions the running sequences hold
}

func newMetrics(state func() queueState) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), started: time.Now()}
	f := factory{m.reg}
	m.requests = f.counterVec("headinfer_requests_total", "HTTP requests answered, by route and status (499: the client went away).", "route", "status")
	m.promptTokens = f.counter("headinfer_prompt_tokens_total", "Prompt tokens prefilled.")
	m.generatedTokens = f.counter("headinfer_generated_tokens_total", "Tokens generated.")
	f.gaugeFunc("headinfer_queue_depth", "Requests waiting for the model.", func() float64 { return float64(state().waiting) })
	f.gaugeFunc("headinfer_requests_running", "Requests being generated.", func() float64 { return float64(state().running) })
	f.gaugeFunc("headinfer_requests_held", "Generation requests past reading their body, not yet answered: rendering, tokenizing, waiting or running (at most --parallel + --max-queue).",
		func() float64 { return float64(state().held) })
	f.gaugeFunc("headinfer_kv_cache_usage_ratio", "Share (0 to 1) of the KV cache's positions (--parallel × context) that running sequences hold.",
		func() float64 { return state().kvUsage })
	f.gaugeFunc("headinfer_model_ready", "1 once the model is loaded, while its device works.", func() float64 { return b2f(state().ready) })
	m.connections = f.gauge("headinfer_connections", "HTTP connections open (served by Serve).")
	m.connsRefused = f.counter("headinfer_connections_refused_total", "Connections refused because their client address held --max-conns-per-ip already.")
	m.deviceFailed = f.gauge("headinfer_device_failed", "1 while the model's device has failed (requests are answered 503).")
	m.reloads = f.counter("headinfer_model_reloads_total", "Models loaded again after a device failure.")
	m.lastPrefillRate = f.gauge("headinfer_last_prefill_tokens_per_second", "Prefill speed of the last request.")
	m.lastDecodeRate = f.gauge("headinfer_last_decode_tokens_per_second", "Decode speed of the last request.")

	m.timeToFirstToken = f.histogram("headinfer_time_to_first_token_seconds",
		"Time from a generation request's admission to its first token (queue wait and prefill).",
		prometheus.ExponentialBuckets(0.005, 2, 14))
	m.timePerToken = f.histogram("headinfer_time_per_output_token_seconds",
		"Time between consecutive generated tokens of a request.",
		prometheus.ExponentialBuckets(0.0005, 2, 14))
	m.queueWait = f.histogram("headinfer_queue_wait_seconds",
		"Time a generation request waited for the model.",
		prometheus.ExponentialBuckets(0.001, 2, 16))
	m.requestDuration = f.histogram("headinfer_request_duration_seconds",
		"Time from a generation request's admission to its last byte.",
		prometheus.ExponentialBuckets(0.01, 2, 14))
	m.sequencesRunning = f.gauge("headinfer_sequences_running", "Sequences being generated.")
	m.batchSize = f.gauge("headinfer_batch_size", "Sequences decoded together in the last decode step.")
	m.batchStep = f.histogramVec("headinfer_batch_step_seconds",
		"Wall time of a decode step on the device, recording through submit to the wait for its results (no sampling, no HTTP), by the sequences it decoded together.",
		prometheus.ExponentialBuckets(0.0001, 2, 16), "sequences")
	m.prefixHits = f.counter("headinfer_prefix_cache_hits_total", "Requests whose prompt began with tokens whose KV was kept, and reused it (a shared BOS token alone counts).")
	m.prefixCachedTokens = f.counter("headinfer_prefix_cache_cached_tokens_total", "Prompt tokens whose KV was reused instead of prefilled.")
	m.snapshots = f.counterVec("headinfer_kv_snapshots_total", "KV snapshots written to or read from --kv-cache-dir, by operation (save, restore) and result (ok, error).", "op", "result")

	f.gaugeFunc("process_uptime_seconds", "Seconds since the server started.", func() float64 { return time.Since(m.started).Seconds() })
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), &m.mem)
	return m
}

// handler serves the registry in the Prometheus text format.
func (m *metrics) handler(log *slog.Logger) http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	})
}

func (m *metrics) request(route string, status int) {
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
}

// generation records one finished generation's tokens and timings, and
// the memory in use after it.
func (m *metrics) generation(generated int, st engine.Stats, mem engine.Memory) {
	m.promptTokens.Add(float64(st.PrefillTokens))
	m.generatedTokens.Add(float64(generated))
	m.lastPrefillRate.Set(perSecond(st.PrefillTokens, st.Prefill))
	m.lastDecodeRate.Set(perSecond(st.DecodeTokens, st.Decode))
	m.mem.set(mem)
}

// step records one decode step of n sequences that took took.
func (m *metrics) step(n int, took time.Duration) {
	m.batchSize.Set(float64(n))
	m.batchStep.WithLabelValues(strconv.Itoa(n)).Observe(took.Seconds())
}

// prefixReuse counts a request that reused the KV of cached tokens.
func (m *metrics) prefixReuse(cached int) {
	if cached > 0 {
		m.prefixHits.Inc()
		m.prefixCachedTokens.Add(float64(cached))
	}
}

// snapshot counts one save or restore of a KV snapshot.
func (m *metrics) snapshot(op string, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.snapshots.WithLabelValues(op, result).Inc()
}

func (m *metrics) setMemory(mem engine.Memory) { m.mem.set(mem) }

func perSecond(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// setDeviceFailed sets the gauge of a failed device.
func (m *metrics) setDeviceFailed(failed bool) { m.deviceFailed.Set(b2f(failed)) }

// reloaded counts a model loaded again after a device failure.
func (m *metrics) reloaded() { m.reloads.Inc() }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// factory makes series and registers them in reg.
type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) gaugeFunc(name, help string, v func() float64) {
	f.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, v))
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(h)
	return h
}

// memoryCollector reports the engine's memory once the model is loaded,
// and nothing before: a zero would read as a measurement.
type memoryCollector struct {
	mu   sync.Mutex
	mem  engine.Memory
	have bool
}

var memoryDescs = []struct {
	desc *prometheus.Desc
	of   func(engine.Memory) uint64
}{
	{prometheus.NewDesc("headinfer_device_memory_bytes", "Device-local memory in use.", nil, nil), func(m engine.Memory) uint64 { return m.DeviceBytes }},
	{prometheus.NewDesc("headinfer_device_memory_peak_bytes", "Peak device-local memory.", nil, nil), func(m engine.Memory) uint64 { return m.DeviceBytesPeak }},
	{prometheus.NewDesc("headinfer_host_memory_bytes", "Host-visible Vulkan memory in use (staging, readback).", nil, nil), func(m engine.Memory) uint64 { return m.HostBytes }},
	{prometheus.NewDesc("headinfer_weight_bytes", "Bytes of weights on the device.", nil, nil), func(m engine.Memory) uint64 { return m.WeightBytes }},
	{prometheus.NewDesc("headinfer_kv_cache_bytes", "Bytes of the KV cache.", nil, nil), func(m engine.Memory) uint64 { return m.KVBytes }},
}

func (c *memoryCollector) set(m engine.Memory) {
	c.mu.Lock()
	c.mem, c.have = m, true
	c.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (c *memoryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range memoryDescs {
		ch <- d.desc
	}
}

// Collect implements prometheus.Collector.
func (c *memoryCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	mem, have := c.mem, c.have
	c.mu.Unlock()
	if !have {
		return
	}
	for _, d := range memoryDescs {
		ch <- prometheus.MustNewConstMetric(d.desc, prometheus.GaugeValue, float64(d.of(mem)))
	}
}
