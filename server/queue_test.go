package server

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestQueueOrderAndLimit checks first-come first-served order, the limit
// on waiters, and that a waiter whose context ends frees its place.
func TestQueueOrderAndLimit(t *testing.T) {
	q := newQueue(1, 2)
	bg := context.Background()
	if err := q.acquire(bg); err != nil {
		t.Fatal(err)
	}
	order := make(chan int, 2)
	ctxs := []context.Context{}
	cancels := []context.CancelFunc{}
	for i := range 2 {
		ctx, cancel := context.WithCancel(bg)
		ctxs, cancels = append(ctxs, ctx), append(cancels, cancel)
		waitFor(t, func() bool { n, _ := q.depth(); return n == i })
		go func() {
			if err := q.acquire(ctx); err != nil {
				order <- -1
				return
			}
			order <- i
			q.release()
		}()
	}
	waitFor(t, func() bool { n, _ := q.depth(); return n == 2 })
	if err := q.acquire(bg); !errors.Is(err, errQueueFull) {
		t.Fatalf("third waiter: %v, want errQueueFull", err)
	}
	cancels[0]()
	if got := <-order; got != -1 {
		t.Fatalf("cancelled waiter got the session (%d)", got)
	}
	waitFor(t, func() bool { n, _ := q.depth(); return n == 1 })
	// The freed place can be taken again.
	done := make(chan error, 1)
	go func() {
		err := q.acquire(bg)
		if err == nil {
			q.release()
		}
		done <- err
	}()
	waitFor(t, func() bool { n, _ := q.depth(); return n == 2 })
	q.release()
	if got := <-order; got != 1 {
		t.Fatalf("next served %d, want waiter 1", got)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { n, running := q.depth(); return n == 0 && running == 0 })
	cancels[1]()
}

// TestQueueClose checks that close turns waiters away and waits for the
// running request.
func TestQueueClose(t *testing.T) {
	q := newQueue(1, 4)
	bg := context.Background()
	if err := q.acquire(bg); err != nil {
		t.Fatal(err)
	}
	waiter := make(chan error, 1)
	go func() { waiter <- q.acquire(bg) }()
	waitFor(t, func() bool { n, _ := q.depth(); return n == 1 })
	closed := make(chan error, 1)
	go func() { closed <- q.close(bg) }()
	if err := <-waiter; !errors.Is(err, errClosed) {
		t.Fatalf("waiter: %v, want errClosed", err)
	}
	select {
	case <-closed:
		t.Fatal("close returned while a request was running")
	case <-time.After(20 * time.Millisecond):
	}
	q.release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if err := q.acquire(bg); !errors.Is(err, errClosed) {
		t.Fatalf("acquire after close: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
		time.Sleep(time.Millisecond)
	}
}
