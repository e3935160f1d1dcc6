package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"headinfer/engine"
)

// loadCall posts body to url and returns the status and, for a 200, the
// completion's text (a stream's pieces joined; an error event or a
// stream without [DONE] is an error). It is safe in any goroutine.
func loadCall(hc *http.Client, url string, body map[string]any) (int, string, error) {
	b, _ := json.Marshal(body)
	resp, err := hc.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		return resp.StatusCode, "", err
	}
	var r struct{ Choices []struct{ Text string } }
	if stream, _ := body["stream"].(bool); !stream {
		if err := json.Unmarshal(raw, &r); err != nil || len(r.Choices) != 1 {
			return resp.StatusCode, "", fmt.Errorf("answer %q: %v", raw, err)
		}
		return resp.StatusCode, r.Choices[0].Text, nil
	}
	var text strings.Builder
	done := false
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		switch {
		case !ok:
			continue
		case data == "[DONE]":
			done = true
			continue
		case strings.Contains(data, `"error"`):
			return resp.StatusCode, "", fmt.Errorf("error event %s", data)
		}
		r.Choices = nil
		if err := json.Unmarshal([]byte(data), &r); err != nil {
			return resp.StatusCode, "", fmt.Errorf("event %q: %v", data, err)
		}
		if len(r.Choices) > 0 {
			text.WriteString(r.Choices[0].Text)
		}
	}
	if !done {
		return resp.StatusCode, "", fmt.Errorf("a stream without [DONE]: %q", raw)
	}
	return resp.StatusCode, text.String(), nil
}

// leave starts a long stream at url, reads two events and goes away. It
// reports whether the stream started (false: the server was busy).
func leave(hc *http.Client, url string, body map[string]any) (bool, error) {
	b, _ := json.Marshal(body)
	resp, err := hc.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusTooManyRequests {
		return false, nil
	}
	if resp.StatusCode != 200 {
		return false, fmt.Errorf("status %d", resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	for events := 0; events < 2; {
		line, err := br.ReadString('\n')
		if err != nil {
			return true, fmt.Errorf("the stream ended after %d events: %v", events, err)
		}
		if strings.HasPrefix(line, "data: ") {
			events++
		}
	}
	return true, nil
}

// TestMixedLoad serves stories260K as Serve does (2 sequences, a queue of
// 2, a read timeout of 1 s, a KV cache directory) to, all at once, clients
// that ask for completions (streamed and whole, retrying on 429), clients
// that send their bodies too slowly, clients that leave streams after two
// events, and a client that restores missing and corrupt snapshots. Run
// under -race (make test does), it checks that no request is lost (every
// one the clients sent is answered and counted, every completion with the
// text of a fresh session), that slow bodies get 408, missing snapshots
// 404, corrupt ones 400, and that afterwards the goroutines, the admission
// and queue places, the Go heap and the engine's memory are back to their
// baseline.
func TestMixedLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("a load test")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "corrupt.bin"), []byte("HIKVSNAP but nothing a snapshot holds"), 0o644); err != nil {
		t.Fatal(err)
	}
	const readTimeout = time.Second
	s, _ := testServer(t, Options{Parallel: 2, MaxQueue: 2, ReadTimeout: readTimeout, KVCacheDir: dir}, engine.Options{Parallel: 2})
	addr := serveHTTP(t, s)
	url := "http://" + addr
	l := s.model.Load()
	eos := l.tok.EOS()

	prompts := []string{storyA, storyB, "Lily and Ben went to the park"}
	const n = 12
	want := make([]string, len(prompts))
	for i, p := range prompts {
		want[i] = reference(t, s, p, n)
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	normal := func(i int, stream bool) map[string]any {
		return map[string]any{"prompt": prompts[i%len(prompts)], "max_tokens": n, "temperature": 0, "stream": stream}
	}
	// A long stream: the end of text is banned, so it outlasts two events.
	long := map[string]any{"prompt": storyB, "max_tokens": 200, "temperature": 0, "stream": true,
		"logit_bias": map[string]float64{fmt.Sprint(eos): -100}}
	restore := func(id int, name string) int {
		b, _ := json.Marshal(map[string]string{"filename": name})
		resp, err := hc.Post(fmt.Sprintf("%s/slots/%d?action=restore", url, id), "application/json", bytes.NewReader(b))
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}

	// One of each first, so that what the server keeps for good (pooled
	// buffers, metric series, spilled prefixes) is in the baseline.
	if code, text, err := loadCall(hc, url+"/v1/completions", normal(0, true)); code != 200 || text != want[0] || err != nil {
		t.Fatalf("warm-up: %d %q %v", code, text, err)
	}
	if ok, err := leave(hc, url+"/v1/completions", long); !ok || err != nil {
		t.Fatalf("warm-up leave: %v %v", ok, err)
	}
	if code := restore(0, "missing.bin"); code != 404 {
		t.Fatalf("warm-up restore: %d", code)
	}
	hc.CloseIdleConnections()
	settled(t, s, 1<<30)
	base := baseline(hc)
	var heap0 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&heap0)
	mem0 := l.batch.Memory()
	requests0 := requestsCounted(s, "/v1/completions")
	gone0 := metricValue(s.metrics.requests.WithLabelValues("/v1/completions", "499"))

	var (
		mu       sync.Mutex
		failures []string
		sent     int // completion requests the clients sent, answered or not
		left     int
		slow408  int
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	count := func(p *int) {
		mu.Lock()
		*p++
		mu.Unlock()
	}
	var wg sync.WaitGroup
	t0 := time.Now()
	for c := range 3 {
		wg.Go(func() {
			for k := range 6 {
				for {
					count(&sent)
					code, text, err := loadCall(hc, url+"/v1/completions", normal(c+k, k%2 == 0))
					if code == http.StatusTooManyRequests {
						time.Sleep(20 * time.Millisecond)
						continue
					}
					if code != 200 || err != nil || text != want[(c+k)%len(prompts)] {
						fail("client %d request %d: %d %q %v, want %q", c, k, code, text, err, want[(c+k)%len(prompts)])
					}
					break
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for range 2 {
				count(&sent)
				status, _, err := slowBody(addr, 100*time.Millisecond, readTimeout+3*time.Second)
				if err != nil || !strings.HasPrefix(status, "HTTP/1.1 408") {
					fail("a slow body: %q %v, want 408", status, err)
					continue
				}
				count(&slow408)
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for started := 0; started < 3; {
				count(&sent)
				ok, err := leave(hc, url+"/v1/completions", long)
				if err != nil {
					fail("a client leaving a stream: %v", err)
					return
				}
				if !ok {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				started++
				count(&left)
			}
		})
	}
	wg.Go(func() {
		for k := range 6 {
			name, want := "missing.bin", http.StatusNotFound
			if k%2 == 1 {
				name, want = "corrupt.bin", http.StatusBadRequest
			}
			for {
				// A slot running a request answers 409, a full queue 429.
				code := restore(k%2, name)
				if code == http.StatusConflict || code == http.StatusTooManyRequests {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				if code != want {
					fail("restore %s: %d, want %d", name, code, want)
				}
				break
			}
		}
	})
	wg.Wait()
	t.Logf("%d completion requests (%d left mid-stream, %d slow bodies) in %v", sent, left, slow408, time.Since(t0).Round(time.Millisecond))
	for _, f := range failures {
		t.Error(f)
	}

	hc.CloseIdleConnections()
	settled(t, s, base)
	if got := requestsCounted(s, "/v1/completions") - requests0; got != float64(sent) {
		t.Errorf("the server counted %v completion requests, the clients sent %d", got, sent)
	}
	// The server learns of a departure on its next write; settled waited
	// for the requests to end.
	if gone := metricValue(s.metrics.requests.WithLabelValues("/v1/completions", "499")) - gone0; gone != float64(left) {
		t.Errorf("%v requests counted as gone, %d clients left", gone, left)
	}
	if mem := l.batch.Memory(); mem.DeviceBytes != mem0.DeviceBytes || mem.HostBytes != mem0.HostBytes || mem.KVBytes != mem0.KVBytes {
		t.Errorf("engine memory after the load: %+v, before %+v", mem, mem0)
	}
	var heap1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&heap1)
	t.Logf("Go heap in use: %.1f MiB before the load, %.1f MiB after", mib(heap0.HeapAlloc), mib(heap1.HeapAlloc))
	if limit := heap0.HeapAlloc + heap0.HeapAlloc/4 + 4<<20; heap1.HeapAlloc > limit {
		t.Errorf("the Go heap holds %.1f MiB after the load, %.1f MiB before", mib(heap1.HeapAlloc), mib(heap0.HeapAlloc))
	}
}

// requestsCounted sums the requests counted for route, whatever their
// status.
func requestsCounted(s *Server, route string) float64 {
	fams, err := s.metrics.reg.Gather()
	if err != nil {
		panic(err)
	}
	total := 0.0
	for _, f := range fams {
		if f.GetName() != "headinfer_requests_total" {
			continue
		}
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if l.GetName() == "route" && l.GetValue() == route {
					total += m.GetCounter().GetValue()
				}
			}
		}
	}
	return total
}
