package server

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAdmissionBoundsHeap sends many large prompts at once and checks that
// the server's heap grows by about what the requests it admits need (the
// queue's size, 1 running + MaxQueue waiting), not by what all of them
// would: rendering and tokenizing a prompt come before the queue. Every
// sender's body is read (admission comes after it, so that slow bodies
// hold no place), which costs little beside that.
//
// The heap is read from runtime.MemStats.HeapSys, the heap's high-water
// mark in this process (it never shrinks), which is what /metrics reports
// as the server's memory; memory an earlier test freed can hide some
// growth, which only makes the check lenient.
func TestAdmissionBoundsHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 16 MiB of prompts")
	}
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	const (
		maxQueue  = 2
		admitted  = maxQueue + 1 // one running (Options.Parallel 1)
		senders   = 32
		promptLen = 512 << 10
	)
	release := make(chan struct{})
	entered := make(chan struct{}, senders)
	gen := func(ctx context.Context, l *loaded, j *job, emit func(string) error) (outcome, error) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return outcome{}, context.Cause(ctx)
		}
		return answerOK(ctx, l, j, emit)
	}
	tv := testVocabs()[0] // SentencePiece: a whole prompt is one merge
	s := fakeServer(t, Options{MaxQueue: maxQueue, MaxBodyBytes: 1 << 20}, tv, 1<<22, gen)

	words := []string{"the ", "quick ", "brown ", "fox\n", "jumps, ", "over ", "日本 ", "42 "}
	var b strings.Builder
	b.WriteString(`{"prompt": "`)
	for i := 0; b.Len() < promptLen; i++ {
		b.WriteString(strings.ReplaceAll(words[i*7%len(words)], "\n", `\n`))
	}
	b.WriteString(`", "max_tokens": 1}`)
	body := []byte(b.String())
	send := func() int {
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, httptest.NewRequest("POST", "/v1/completions", bytes.NewReader(body)))
		return w.Code
	}

	errs := loggedErrors.Load()
	// What one request allocates on its own.
	close(release)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	if code := send(); code != http.StatusOK {
		t.Fatalf("one request alone: %d", code)
	}
	runtime.ReadMemStats(&ms1)
	<-entered
	perRequest := ms1.TotalAlloc - ms0.TotalAlloc
	release = make(chan struct{})

	runtime.GC()
	runtime.ReadMemStats(&ms0)
	codes := make(chan int, senders)
	var wg sync.WaitGroup
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes <- send()
		}()
	}
	// All but the admitted are turned away at once; of those admitted one
	// runs and the others wait in the queue.
	busy := 0
	for range senders - admitted {
		if code := <-codes; code == http.StatusTooManyRequests {
			busy++
		}
	}
	<-entered
	deadline := time.Now().Add(2 * time.Minute)
	for n, _ := s.queue.depth(); n < maxQueue; n, _ = s.queue.depth() {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests waiting in the queue, want %d", n, maxQueue)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	wg.Wait()
	close(codes)
	ok := 0
	for code := range codes {
		if code == http.StatusOK {
			ok++
		}
	}
	runtime.ReadMemStats(&ms1)
	growth := ms1.HeapSys - ms0.HeapSys
	t.Logf("one request allocates %.1f MiB; %d at once grew the heap by %.1f MiB; %d answered, %d turned away",
		mib(perRequest), senders, mib(growth), ok, busy)
	if loggedErrors.Load() != errs {
		t.Errorf("the server logged errors")
	}
	if busy != senders-admitted || ok != admitted {
		t.Errorf("%d answered and %d turned away, want %d and %d", ok, busy, admitted, senders-admitted)
	}
	// The admitted requests' work, twice over for the garbage collector's
	// headroom, and as much again for slack: far below what all senders'
	// work would take.
	if limit := 4 * admitted * perRequest; growth > limit {
		t.Errorf("the heap grew by %.1f MiB, more than %.1f MiB (4 × %d admitted requests × %.1f MiB)",
			mib(growth), mib(limit), admitted, mib(perRequest))
	}
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }
