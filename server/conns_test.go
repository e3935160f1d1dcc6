package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// serveHTTP serves s as Serve does, with its http.Server and its listener,
// on a loopback port until the test ends, and returns the address.
func serveHTTP(t testing.TB, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := s.httpServer(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		hs.Serve(s.listener(ln))
	}()
	t.Cleanup(func() {
		hs.Close()
		<-done
	})
	return ln.Addr().String()
}

// slowBody opens a connection to addr that sends the headers of a
// completion whose body is to be 100000 bytes long, then one byte of it
// every gap, until the server answers or for at most limit. It returns
// the answer's status line ("" when the server closed the connection
// without one) and when the answer came.
func slowBody(addr string, gap, limit time.Duration) (status string, at time.Time, err error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", time.Time{}, err
	}
	defer c.Close()
	head := "POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
	if _, err := io.WriteString(c, head); err != nil {
		return "", time.Time{}, err
	}
	answered := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(c).ReadString('\n')
		answered <- strings.TrimSpace(line)
	}()
	tick := time.NewTicker(gap)
	defer tick.Stop()
	giveUp := time.After(limit)
	for {
		select {
		case line := <-answered:
			return line, time.Now(), nil
		case <-giveUp:
			return "", time.Now(), fmt.Errorf("no answer within %v", limit)
		case <-tick.C:
			// The write fails once the server has closed the connection;
			// the reader then says how it ended.
			_, _ = io.WriteString(c, " ")
		}
	}
}

// settled waits until the process runs at most base goroutines and the
// server holds no admission place and no queue place: every request
// that ended gave back what it took.
func settled(t *testing.T, s *Server, base int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g := runtime.NumGoroutine()
		waiting, running := s.queue.depth()
		if g <= base && s.admit.held() == 0 && waiting == 0 && running == 0 {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines (%d before), %d admission places held, queue %d waiting, %d running; goroutines:\n%s",
				g, base, s.admit.held(), waiting, running, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// baseline is the number of goroutines once client connections are
// closed and the server's have ended.
func baseline(hc *http.Client) int {
	hc.CloseIdleConnections()
	n := runtime.NumGoroutine()
	for range 50 {
		time.Sleep(20 * time.Millisecond)
		n = min(n, runtime.NumGoroutine())
	}
	return n
}

// TestSlowBodies opens 2 × Parallel + MaxQueue connections that send their
// headers and then trickle their bodies, more than the server admits at
// once, and checks that a normal request is still served within the read
// timeout (the slow ones hold no admission place), that each slow one is
// answered 408 after the read timeout, and that goroutines and places come
// back to their baseline.
func TestSlowBodies(t *testing.T) {
	const readTimeout = time.Second
	opt := Options{Parallel: 2, MaxQueue: 2, ReadTimeout: readTimeout}
	s := fakeServer(t, opt, testVocabs()[0], 1<<12, nil)
	addr := serveHTTP(t, s)
	hc := &http.Client{Transport: &http.Transport{}}
	normal := func() (int, error) {
		resp, err := hc.Post("http://"+addr+"/v1/completions", "application/json", strings.NewReader(`{"prompt": "hi", "max_tokens": 1}`))
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, err
	}
	if code, err := normal(); code != 200 {
		t.Fatalf("before the slow clients: %d %v", code, err)
	}
	base := baseline(hc)

	n := 2*opt.Parallel + opt.MaxQueue
	type result struct {
		status string
		took   time.Duration
		err    error
	}
	results := make(chan result, n)
	t0 := time.Now()
	for range n {
		go func() {
			status, at, err := slowBody(addr, 100*time.Millisecond, readTimeout+3*time.Second)
			results <- result{status, at.Sub(t0), err}
		}()
	}
	// Their headers are in and they are reading their bodies.
	waitFor(t, func() bool { return connsOpen(s) >= n })
	time.Sleep(100 * time.Millisecond)
	if held := s.admit.held(); held != 0 {
		t.Errorf("clients still sending their bodies hold %d admission places", held)
	}
	start := time.Now()
	code, err := normal()
	if took := time.Since(start); code != 200 || took >= readTimeout {
		t.Errorf("a normal request beside %d slow ones: status %d (%v) after %v, want 200 within %v", n, code, err, took, readTimeout)
	}
	for range n {
		r := <-results
		if r.err != nil || !strings.HasPrefix(r.status, "HTTP/1.1 408") {
			t.Errorf("a slow body was answered %q (%v), want 408", r.status, r.err)
		}
		if r.took < readTimeout || r.took > readTimeout+2*time.Second {
			t.Errorf("a slow body was answered after %v, want about %v", r.took, readTimeout)
		}
	}
	hc.CloseIdleConnections()
	settled(t, s, base)
	if v := s.metrics.requests.WithLabelValues("/v1/completions", "408"); metricValue(v) != float64(n) {
		t.Errorf("%v requests counted 408, want %d", metricValue(v), n)
	}
}

// TestSlowBodyRefused sends a slow body to a route that refuses it
// without reading it (no API key): the answer must still come by the read
// timeout, not wait for the body, as net/http reads what is left of a
// small body before it answers.
func TestSlowBodyRefused(t *testing.T) {
	const readTimeout = 500 * time.Millisecond
	s := fakeServer(t, Options{APIKey: "k", ReadTimeout: readTimeout}, testVocabs()[0], 1<<12, nil)
	addr := serveHTTP(t, s)
	base := baseline(&http.Client{})
	start := time.Now()
	status, at, err := slowBody(addr, 100*time.Millisecond, readTimeout+3*time.Second)
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 401") || at.Sub(start) > readTimeout+time.Second {
		t.Errorf("a slow body without the key: %q after %v (%v), want 401 by %v", status, at.Sub(start), err, readTimeout)
	}
	settled(t, s, base)
}

// TestSlowHeaders checks that a connection whose headers do not arrive
// within the read timeout is closed, and holds nothing afterwards.
func TestSlowHeaders(t *testing.T) {
	s := fakeServer(t, Options{ReadTimeout: 300 * time.Millisecond}, testVocabs()[0], 1<<12, nil)
	addr := serveHTTP(t, s)
	base := baseline(&http.Client{})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /v1/completions HTTP/1.1\r\nHost: test\r\n")
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("a connection whose headers never end: %v, want it closed", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("closed after %v", took)
	}
	c.Close()
	settled(t, s, base)
}

// TestLongRequestsOutliveTimeouts checks that the read timeout bounds the
// request's arrival only, and the write timeout each write only: a
// generation that takes several times both, streamed or not, completes.
func TestLongRequestsOutliveTimeouts(t *testing.T) {
	const timeout = 300 * time.Millisecond
	slow := func(ctx context.Context, l *loaded, j *job, emit func(string) error) (outcome, error) {
		for i := range 10 {
			select {
			case <-time.After(timeout / 3):
			case <-ctx.Done():
				return outcome{completion: i}, context.Cause(ctx)
			}
			if err := emit("x"); err != nil {
				return outcome{completion: i + 1}, err
			}
		}
		return outcome{finish: "length", completion: 10}, nil
	}
	s := fakeServer(t, Options{ReadTimeout: timeout, WriteTimeout: timeout}, testVocabs()[0], 1<<12, slow)
	addr := serveHTTP(t, s)
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	for _, stream := range []bool{false, true} {
		for range 2 { // the second on the kept-alive connection
			body := fmt.Sprintf(`{"prompt": "hi", "max_tokens": 10, "stream": %v}`, stream)
			resp, err := hc.Post("http://"+addr+"/v1/completions", "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			got := strings.Count(string(b), `"text":"x"`) == 10 && strings.Contains(string(b), "[DONE]")
			if !stream {
				got = strings.Contains(string(b), `"text":"xxxxxxxxxx"`)
			}
			if err != nil || resp.StatusCode != 200 || !got {
				t.Errorf("stream %v: %d %v %s", stream, resp.StatusCode, err, b)
			}
		}
	}
}

// TestConnsPerIP checks the cap on one address's connections: the one
// over it is answered 429 and closed before its request is read, counted,
// and a place freed by a close is taken again.
func TestConnsPerIP(t *testing.T) {
	s := fakeServer(t, Options{MaxConnsPerIP: 2}, testVocabs()[0], 1<<12, nil)
	addr := serveHTTP(t, s)
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	waitFor(t, func() bool { return connsOpen(s) == 2 })
	request := func() (string, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		body := `{"prompt": "hi", "max_tokens": 1}`
		fmt.Fprintf(c, "POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
		b, err := io.ReadAll(c)
		return string(b), err
	}
	out, err := request()
	if err != nil || !strings.HasPrefix(out, "HTTP/1.1 429") || !strings.Contains(out, `"code":"too_many_connections"`) {
		t.Errorf("a third connection: %q %v, want 429 too_many_connections", out, err)
	}
	if v := metricValue(s.metrics.connsRefused); v != 1 {
		t.Errorf("%v connections counted refused, want 1", v)
	}
	held[0].Close()
	waitFor(t, func() bool { return connsOpen(s) == 1 })
	if out, err := request(); err != nil || !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Errorf("after one closed: %q %v, want 200", out, err)
	}
}

// connsOpen reads the gauge of open connections.
func connsOpen(s *Server) int { return int(metricValue(s.metrics.connections)) }

// metricValue reads a counter or a gauge.
func metricValue(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue() + m.GetGauge().GetValue()
}
