package server

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"headinfer/engine"
)

// metrics are the server's counters, written in the Prometheus text format
// by GET /metrics.
type metrics struct {
	mu              sync.Mutex
	requests        map[routeStatus]uint64
	promptTokens    uint64
	generatedTokens uint64
	lastPrefillRate float64 // tokens/s of the last request's prefill
	lastDecodeRate  float64
	mem             engine.Memory // after the last request (or the load)
	haveMem         bool
	started         time.Time
	deviceFailed    bool   // the model's device failed and no reload replaced it yet
	reloads         uint64 // models loaded again after a device failure
}

type routeStatus struct {
	route  string
	status int
}

func newMetrics() *metrics {
	return &metrics{requests: map[routeStatus]uint64{}, started: time.Now()}
}

func (m *metrics) request(route string, status int) {
	m.mu.Lock()
	m.requests[routeStatus{route, status}]++
	m.mu.Unlock()
}

// generation records one finished generation's tokens and timings, and
// the memory in use after it.
func (m *metrics) generation(generated int, st engine.Stats, mem engine.Memory) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.promptTokens += uint64(st.PrefillTokens)
	m.generatedTokens += uint64(generated)
	m.lastPrefillRate = 0
	if st.Prefill > 0 {
		m.lastPrefillRate = float64(st.PrefillTokens) / st.Prefill.Seconds()
	}
	m.lastDecodeRate = 0
	if st.Decode > 0 {
		m.lastDecodeRate = float64(st.DecodeTokens) / st.Decode.Seconds()
	}
	m.memory(mem)
}

func (m *metrics) setMemory(mem engine.Memory) {
	m.mu.Lock()
	m.memory(mem)
	m.mu.Unlock()
}

func (m *metrics) memory(mem engine.Memory) {
	m.mem, m.haveMem = mem, true
}

func (m *metrics) setDeviceFailed(failed bool) {
	m.mu.Lock()
	m.deviceFailed = failed
	m.mu.Unlock()
}

func (m *metrics) reloaded() {
	m.mu.Lock()
	m.reloads++
	m.mu.Unlock()
}

// write writes every metric; queue state and readiness are read by the
// caller.
func (m *metrics) write(w io.Writer, waiting int, running, ready bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	pw := &promWriter{w: w}
	pw.family("headinfer_requests_total", "counter", "HTTP requests answered, by route and status (499: the client went away).")
	keys := make([]routeStatus, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b routeStatus) int {
		if a.route != b.route {
			if a.route < b.route {
				return -1
			}
			return 1
		}
		return a.status - b.status
	})
	for _, k := range keys {
		pw.sample("headinfer_requests_total", fmt.Sprintf(`{route=%q,status="%d"}`, k.route, k.status), float64(m.requests[k]))
	}
	pw.metric("headinfer_prompt_tokens_total", "counter", "Prompt tokens prefilled.", float64(m.promptTokens))
	pw.metric("headinfer_generated_tokens_total", "counter", "Tokens generated.", float64(m.generatedTokens))
	pw.metric("headinfer_queue_depth", "gauge", "Requests waiting for the model.", float64(waiting))
	pw.metric("headinfer_requests_running", "gauge", "Requests being generated (0 or 1).", b2f(running))
	pw.metric("headinfer_model_ready", "gauge", "1 once the model is loaded, while its device works.", b2f(ready))
	pw.metric("headinfer_device_failed", "gauge", "1 while the model's device has failed (requests are answered 503).", b2f(m.deviceFailed))
	pw.metric("headinfer_model_reloads_total", "counter", "Models loaded again after a device failure.", float64(m.reloads))
	pw.metric("headinfer_last_prefill_tokens_per_second", "gauge", "Prefill speed of the last request.", m.lastPrefillRate)
	pw.metric("headinfer_last_decode_tokens_per_second", "gauge", "Decode speed of the last request.", m.lastDecodeRate)
	if m.haveMem {
		pw.metric("headinfer_device_memory_bytes", "gauge", "Device-local memory in use.", float64(m.mem.DeviceBytes))
		pw.metric("headinfer_device_memory_peak_bytes", "gauge", "Peak device-local memory.", float64(m.mem.DeviceBytesPeak))
		pw.metric("headinfer_host_memory_bytes", "gauge", "Host-visible Vulkan memory in use (staging, readback).", float64(m.mem.HostBytes))
		pw.metric("headinfer_weight_bytes", "gauge", "Bytes of weights on the device.", float64(m.mem.WeightBytes))
		pw.metric("headinfer_kv_cache_bytes", "gauge", "Bytes of the KV cache.", float64(m.mem.KVBytes))
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	pw.metric("go_goroutines", "gauge", "Number of goroutines that currently exist.", float64(runtime.NumGoroutine()))
	pw.metric("go_memstats_heap_alloc_bytes", "gauge", "Go heap bytes allocated and in use.", float64(ms.HeapAlloc))
	pw.metric("process_uptime_seconds", "gauge", "Seconds since the server started.", time.Since(m.started).Seconds())
	return pw.err
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// promWriter writes the Prometheus text exposition format, keeping the
// first error.
type promWriter struct {
	w   io.Writer
	err error
}

func (p *promWriter) family(name, typ, help string) {
	p.printf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

func (p *promWriter) sample(name, labels string, v float64) {
	p.printf("%s%s %s\n", name, labels, strconv.FormatFloat(v, 'f', -1, 64))
}

func (p *promWriter) metric(name, typ, help string, v float64) {
	p.family(name, typ, help)
	p.sample(name, "", v)
}

func (p *promWriter) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}
